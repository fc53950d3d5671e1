/**
 * How a forked process (acceptor or relay) hears its primary: it asks for its configuration and gets every reload;
 * SIGTERM/SIGINT and the primary's `trap:shutdown` stop it once; SIGHUP is ignored, because the primary owns reloads
 * and a SIGHUP sent to the whole process group must not kill a worker (its default action would).
 */
import type { RunningConfig } from './config/running-config';
import type { PrimaryToWorker, WorkerToPrimary } from './ipc';
import type { WorkerMetricsHandle } from './metrics';

/** How long a new process waits for its configuration before it gives up (the primary answers at once). */
const CONFIG_WAIT_MS = 30_000;

export interface PrimaryLink {
  /** The configuration the primary handed over at start. */
  config: RunningConfig;
  /** The guarded stop, for other reasons to stop (e.g. the primary's IPC channel closing). */
  stop(why: string): void;
}

export function connectToPrimary(handlers: { shutdown(why: string): void; reload?(config: RunningConfig): void }): Promise<PrimaryLink> {
  let stopping = false;
  const stop = (why: string) => {
    if (stopping) return;
    stopping = true;
    handlers.shutdown(why);
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGHUP', () => undefined);
  return new Promise((resolve, reject) => {
    let first = true;
    const timer = setTimeout(() => reject(new Error(`no configuration from the primary within ${CONFIG_WAIT_MS} ms`)), CONFIG_WAIT_MS);
    timer.unref();
    process.on('message', (msg: PrimaryToWorker) => {
      if (msg?.type === 'trap:shutdown') stop('primary');
      else if (msg?.type === 'trap:config') {
        if (first) {
          first = false;
          clearTimeout(timer);
          resolve({ config: msg.config, stop });
        } else handlers.reload?.(msg.config);
      }
    });
    if (typeof process.send !== 'function') {
      reject(new Error('not started by the spamtrapd primary (no IPC channel)'));
      return;
    }
    process.send({ type: 'worker:hello' } satisfies WorkerToPrimary);
  });
}

/** The last thing a worker does: the final metrics push makes its counters exact, then exit (0 unless it failed). */
export async function exitAfterFinalPush(metrics: WorkerMetricsHandle, code = 0): Promise<never> {
  await metrics.pushNow().catch(() => undefined);
  process.exit(code);
}
