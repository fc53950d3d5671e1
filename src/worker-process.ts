/**
 * How a worker process (acceptor or relay) hears its primary: SIGTERM/SIGINT and the primary's `trap:shutdown`
 * stop it once; `trap:reload` reaches `reload` if it has one; SIGHUP is ignored, because the primary owns reloads
 * and a SIGHUP sent to the whole process group must not kill a worker (its default action would).
 */
import type { PrimaryToWorker } from './ipc';
import type { WorkerMetricsHandle } from './metrics';

/** Returns the guarded stop, for other reasons to stop (e.g. the primary's IPC channel closing). */
export function onPrimarySignals(handlers: { shutdown(why: string): void; reload?(): void }): (why: string) => void {
  let stopping = false;
  const stop = (why: string) => {
    if (stopping) return;
    stopping = true;
    handlers.shutdown(why);
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGHUP', () => undefined);
  process.on('message', (msg: PrimaryToWorker) => {
    if (msg?.type === 'trap:shutdown') stop('primary');
    else if (msg?.type === 'trap:reload') handlers.reload?.();
  });
  return stop;
}

/** The last thing a worker does: the final metrics push makes its counters exact, then exit 0. */
export async function exitAfterFinalPush(metrics: WorkerMetricsHandle): Promise<never> {
  await metrics.pushNow().catch(() => undefined);
  process.exit(0);
}
