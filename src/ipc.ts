/**
 * Messages between the primary and the processes it forks (metrics messages have their own, in src/metrics).
 * A process asks for its configuration with `worker:hello` once it listens for the answer, so the answer cannot
 * arrive before anyone hears it; later `trap:config` messages are reloads (SIGHUP).
 */
import type { RunningConfig } from './config/running-config';

export type PrimaryToWorker = { type: 'trap:shutdown' } | { type: 'trap:config'; config: RunningConfig };

export type WorkerToPrimary = { type: 'worker:hello' } | { type: 'acceptor:listening'; slot: number };

export function isWorkerHello(msg: unknown): boolean {
  return typeof msg === 'object' && msg !== null && (msg as { type?: unknown }).type === 'worker:hello';
}

export function listeningSlot(msg: unknown): number | null {
  if (typeof msg !== 'object' || msg === null) return null;
  const m = msg as { type?: unknown; slot?: unknown };
  return m.type === 'acceptor:listening' && typeof m.slot === 'number' ? m.slot : null;
}
