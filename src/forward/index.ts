import cluster, { type Worker } from 'node:cluster';
import * as path from 'node:path';

export * from './relay';

/** The relay's SPAMTRAPD_SLOT and metrics `worker` label. */
export const RELAY_SLOT = 'relay';

/** The compiled relay entry point (dist/workers/relay.js next to dist/src/forward/). */
export function relayEntryPath(): string {
  return path.join(__dirname, '..', '..', 'workers', 'relay.js');
}

/**
 * Forks the relay as a cluster worker. cluster.fork() runs whatever setupPrimary() last named, which in the primary is
 * the acceptor script: the relay's entry is set for this one fork and the previous one put back.
 */
export function forkRelay(env: NodeJS.ProcessEnv = {}): Worker {
  const prev = cluster.settings.exec ?? process.argv[1];
  cluster.setupPrimary({ exec: relayEntryPath() });
  try {
    return cluster.fork({ ...env, SPAMTRAPD_SLOT: RELAY_SLOT });
  } finally {
    cluster.setupPrimary({ exec: prev });
  }
}
