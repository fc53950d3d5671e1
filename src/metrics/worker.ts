import client, { Registry } from 'prom-client';
import { createWorkerMetrics, DEFAULT_METRICS_PREFIX, WORKER_LABEL, WorkerMetrics } from './definitions';

/** One sample as it travels over IPC: what prom-client's getMetricsAsJSON() gives, minus functions and exemplars. */
export interface WireValue {
  value: number;
  labels: Record<string, string | number>;
  /** Set on histogram samples (`..._bucket`, `..._sum`, `..._count`). */
  metricName?: string;
}

export interface WireMetric {
  name: string;
  help: string;
  type: 'counter' | 'gauge' | 'histogram';
  /** prom-client aggregator name (`sum`, `first`, `min`, `max`, `average`, `omit`). */
  aggregator: string;
  values: WireValue[];
}

/** The whole registry of one process, sent every push interval and once more at graceful exit. */
export interface SnapshotMessage {
  type: 'metrics:snapshot';
  slot: string;
  pid: number;
  /** Increases with every snapshot of one process, so the primary can drop one that arrives out of order. */
  seq: number;
  metrics: WireMetric[];
}

/**
 * Jobs committed to queues since the last message, as the commit time (Unix seconds, fractional) of each, by queue.
 * The times let the primary tell which jobs its last directory scan already counted.
 */
export interface EnqueuedMessage {
  type: 'metrics:enqueued';
  slot: string;
  pid: number;
  queues: Record<string, number[]>;
}

export type MetricsMessage = SnapshotMessage | EnqueuedMessage;

/** True for every message this library sends; the daemon routes these to MetricsAggregator.handleMessage(). */
export function isMetricsMessage(msg: unknown): msg is MetricsMessage {
  if (typeof msg !== 'object' || msg === null) return false;
  const m = msg as Record<string, unknown>;
  if (typeof m.slot !== 'string' || typeof m.pid !== 'number') return false;
  if (m.type === 'metrics:snapshot') return typeof m.seq === 'number' && Array.isArray(m.metrics);
  if (m.type === 'metrics:enqueued') return typeof m.queues === 'object' && m.queues !== null;
  return false;
}

/** Longest push interval allowed: a SIGKILLed worker loses at most one interval of counts. */
export const MAX_PUSH_INTERVAL_MS = 1000;

export interface WorkerMetricsOptions {
  /** Worker slot 0..N-1 (stable across restarts), or a role name such as `relay`. Becomes the `worker` label. */
  slot: number | string;
  /** Push period, 10..1000 ms. Default 1000. */
  intervalMs?: number;
  /**
   * How a message reaches the primary. Default: process.send (cluster IPC), resolving once the message is written to
   * the channel so a final push can be awaited before exit.
   */
  send?: (msg: MetricsMessage) => void | Promise<void>;
  /** Registry to fill; default a fresh one, so nothing registered by other code on the global registry leaks in. */
  registry?: Registry;
  /** Collect prom-client's default process/runtime metrics. Default true. */
  defaultMetrics?: boolean;
}

export interface WorkerMetricsHandle {
  readonly registry: Registry;
  readonly metrics: WorkerMetrics;
  readonly slot: string;
  /**
   * Sends queued enqueue events and a fresh snapshot now. Await it before a graceful exit: that final push is what
   * makes counters exact for workers that exit normally.
   */
  pushNow(): Promise<void>;
  /** Records a job committed to `queue` at `committedAtSecs` (Unix seconds) for the primary's queue gauges. */
  reportEnqueue(queue: string, committedAtSecs: number): void;
  /** Stops the push timer (a final pushNow() still works). */
  stop(): void;
}

function defaultSend(msg: MetricsMessage): Promise<void> {
  return new Promise((resolve, reject) => {
    if (typeof process.send !== 'function' || !process.connected) {
      reject(new Error('no IPC channel to the primary'));
      return;
    }
    process.send(msg, undefined, undefined, (err: Error | null) => (err ? reject(err) : resolve()));
  });
}

/**
 * Reduces prom-client's JSON to what the primary needs. Summaries are left out: their quantiles cannot be merged
 * across processes (the trap defines none; this keeps a future one from being summed into nonsense). Non-finite
 * samples (NaN gauges before the first event-loop sample) are dropped because JSON would turn them into null.
 */
export function toWire(metrics: Awaited<ReturnType<Registry['getMetricsAsJSON']>>): WireMetric[] {
  const out: WireMetric[] = [];
  for (const m of metrics) {
    const type = String(m.type);
    if (type !== 'counter' && type !== 'gauge' && type !== 'histogram') continue;
    const values: WireValue[] = [];
    for (const v of m.values) {
      if (!Number.isFinite(v.value)) continue;
      const w: WireValue = { value: v.value, labels: { ...(v.labels as Record<string, string | number>) } };
      const metricName = (v as { metricName?: string }).metricName;
      if (metricName !== undefined) w.metricName = metricName;
      values.push(w);
    }
    out.push({ name: m.name, help: m.help, type, aggregator: m.aggregator ?? 'sum', values });
  }
  return out;
}

export function startWorkerMetrics(opts: WorkerMetricsOptions): WorkerMetricsHandle {
  const intervalMs = opts.intervalMs ?? MAX_PUSH_INTERVAL_MS;
  if (!Number.isFinite(intervalMs) || intervalMs < 10 || intervalMs > MAX_PUSH_INTERVAL_MS) {
    throw new RangeError(`metrics push interval must be 10..${MAX_PUSH_INTERVAL_MS} ms, got ${intervalMs}`);
  }
  const slot = String(opts.slot);
  const registry = opts.registry ?? new Registry();
  const send = opts.send ?? defaultSend;
  const metrics = createWorkerMetrics(registry);
  if (opts.defaultMetrics !== false) {
    client.collectDefaultMetrics({ register: registry, prefix: DEFAULT_METRICS_PREFIX, labels: { [WORKER_LABEL]: slot } });
  }

  let seq = 0;
  let pending: Record<string, number[]> = {};
  let havePending = false;
  let inFlight: Promise<void> | undefined;

  async function push(): Promise<void> {
    // Enqueue events go first and are taken synchronously so none is sent twice or lost between two pushes.
    if (havePending) {
      const queues = pending;
      pending = {};
      havePending = false;
      await send({ type: 'metrics:enqueued', slot, pid: process.pid, queues });
    }
    const mySeq = ++seq;
    const json = await registry.getMetricsAsJSON();
    await send({ type: 'metrics:snapshot', slot, pid: process.pid, seq: mySeq, metrics: toWire(json) });
  }

  const timer = setInterval(() => {
    // A slow channel must not pile up snapshots; the next tick sends fresher values anyway.
    if (inFlight) return;
    inFlight = push()
      .catch(() => {
        // The primary is gone or the channel is closing: the worker is on its way out, nothing to report to.
      })
      .finally(() => {
        inFlight = undefined;
      });
  }, intervalMs);
  timer.unref();

  return {
    registry,
    metrics,
    slot,
    pushNow: () => push(),
    reportEnqueue(queue: string, committedAtSecs: number): void {
      (pending[queue] ??= []).push(committedAtSecs);
      havePending = true;
    },
    stop(): void {
      clearInterval(timer);
    },
  };
}
