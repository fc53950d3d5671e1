/**
 * A miniature of the daemon's process layout for the metrics integration test: a node:cluster primary with the
 * MetricsAggregator and the metrics HTTP server, and two workers that count, push and obey commands (count exactly,
 * block the event loop, exit gracefully). The primary replaces a worker that dies, in the same slot, as the daemon
 * will. Run with child_process.fork(); it talks to its parent over IPC.
 */
import cluster, { Worker } from 'node:cluster';
import { MetricsAggregator, startMetricsServer, startWorkerMetrics } from '../../src/metrics';

/** Parent -> primary. */
export type ClusterCommand =
  | { cmd: 'count'; slot: number; n: number; id: number }
  | { cmd: 'graceful'; slot: number; n: number }
  | { cmd: 'block'; slot: number; ms: number }
  | { cmd: 'kill'; slot: number }
  | { cmd: 'shutdown' };

/** Primary -> parent. */
export type ClusterEvent =
  | { ev: 'ready'; port: number }
  | { ev: 'started'; slot: number; pid: number }
  | { ev: 'exited'; slot: number; pid: number; signal: string | null; code: number | null }
  | { ev: 'counted'; id: number };

const PUSH_MS = 100;

function runPrimary(): void {
  const aggregator = new MetricsAggregator();
  const slotOf = new Map<number, number>();
  const bySlot = new Map<number, Worker>();
  let stopping = false;
  const tell = (e: ClusterEvent): void => {
    if (process.connected) process.send!(e);
  };

  cluster.setupPrimary({ exec: __filename });
  const fork = (slot: number): void => {
    const w = cluster.fork({ METRICS_TEST_SLOT: String(slot) });
    slotOf.set(w.id, slot);
    bySlot.set(slot, w);
    w.on('online', () => {
      aggregator.workerStarted(slot, w.process.pid!);
      tell({ ev: 'started', slot, pid: w.process.pid! });
    });
  };
  cluster.on('message', (_w, msg: unknown) => {
    if (aggregator.handleMessage(msg)) return;
    const m = msg as { ev?: string; id?: number };
    if (m.ev === 'counted') tell({ ev: 'counted', id: m.id! });
  });
  cluster.on('exit', (w, code, signal) => {
    const slot = slotOf.get(w.id)!;
    aggregator.workerExited(slot, w.process.pid!);
    tell({ ev: 'exited', slot, pid: w.process.pid!, signal, code });
    if (!stopping) fork(slot);
  });

  const shutdown = (): void => {
    if (stopping) return;
    stopping = true;
    for (const w of bySlot.values()) w.process.kill('SIGKILL');
    void server.then((s) => s.close()).finally(() => process.exit(0));
  };
  process.on('disconnect', shutdown);
  process.on('message', (c: ClusterCommand) => {
    if (c.cmd === 'shutdown') return shutdown();
    const w = bySlot.get(c.slot);
    if (!w) return;
    if (c.cmd === 'kill') w.process.kill('SIGKILL');
    else w.send(c);
  });

  const server = startMetricsServer({ host: '127.0.0.1', port: 0, aggregator });
  void server.then((s) => {
    fork(0);
    fork(1);
    tell({ ev: 'ready', port: s.address().port });
  });
}

function runWorker(): void {
  const slot = Number(process.env.METRICS_TEST_SLOT);
  const wm = startWorkerMetrics({ slot, intervalMs: PUSH_MS });
  // Background traffic, so counters keep moving while the test checks they never go back.
  const tick = setInterval(() => wm.metrics.connectionsTotal.inc(), 5);
  process.on('message', (c: ClusterCommand) => {
    if (c.cmd === 'count') {
      wm.metrics.messagesAccepted.inc({ queue: 'incoming' }, c.n);
      wm.metrics.spoolWriteSeconds.observe(0.002);
      // Acknowledged only once the primary has the values, so the test can expect exact totals.
      void wm.pushNow().then(() => process.send!({ ev: 'counted', id: c.id }));
    } else if (c.cmd === 'graceful') {
      clearInterval(tick);
      wm.metrics.messagesAccepted.inc({ queue: 'incoming' }, c.n);
      wm.stop();
      void wm.pushNow().finally(() => process.exit(0));
    } else if (c.cmd === 'block') {
      const end = Date.now() + c.ms;
      while (Date.now() < end) {
        // The event loop is stuck here: no pushes, no IPC, as with a worker hung in a sync call.
      }
    }
  });
}

/** Set by the test that forks this file; `node --test dist/test/` also runs every file under test/, helpers included. */
export const HELPER_ENV = 'SPAMTRAPD_METRICS_CLUSTER_HELPER';

if (require.main === module && process.env[HELPER_ENV] === '1') {
  if (cluster.isPrimary) runPrimary();
  else runWorker();
}
