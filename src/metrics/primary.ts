/**
 * The primary's view of every worker's metrics: snapshots pushed over IPC, kept per slot so that counters survive a
 * worker's death, merged at each scrape with the primary's own series (src/metrics/http-server.ts serves them).
 */
import client, { AggregatorRegistry, Registry } from 'prom-client';
import { DEFAULT_METRICS_PREFIX, SERIES, WORKER_LABEL } from './definitions';
import { QueueGauges, QueueScanFn } from './queue-gauges';
import { isMetricsMessage, MetricsMessage, toWire, WireMetric, WireValue } from './worker';

/*
 * How counters survive worker deaths.
 *
 * Each slot keeps the latest snapshot of its live incarnation (process). When that incarnation ends (the daemon calls
 * workerExited, or a snapshot from a new pid shows it was replaced), its counter and histogram samples become the
 * slot's "last retired" snapshot and its gauges are dropped: memory, heap, active connections of a dead process are
 * not true any more. Every scrape sums baseline + last retired + live over all slots, so a counter never goes
 * backwards when a new incarnation starts again from zero. The last retired snapshot stays separate from the folded
 * baseline until the next retirement because the dead process's final push can arrive after its exit event; it then
 * simply replaces the retired values. A SIGKILLed worker sends no final push: what it counted after its last periodic
 * push (at most one push interval) is lost.
 */

interface Incarnation {
  pid: number;
  seq: number;
  metrics: WireMetric[];
  receivedAt: number;
}

interface SlotState {
  baseline: WireMetric[];
  lastRetired: Incarnation | undefined;
  live: Incarnation | undefined;
  /** Pids already folded into the baseline, so a very late message from one cannot count twice. */
  foldedPids: number[];
  /** Pids that exited before any snapshot of theirs arrived: their final push, if it comes, goes straight to retired. */
  silentDead: number[];
  /** Pid of the process the daemon reported as started and not yet exited. */
  upPid: number | undefined;
  everStarted: boolean;
}

const PIDS_KEPT = 16;

function labelKey(v: WireValue): string {
  const keys = Object.keys(v.labels).sort();
  return `${v.metricName ?? ''}\u0000${keys.map((k) => `${k}=${String(v.labels[k])}`).join('\u0001')}`;
}

/**
 * What outlives a process: counters and histograms as they were. Per-process gauges (those with a worker label) go;
 * the trap's own gauges stay as zero, which is what a dead process contributes (it holds no connections), so the
 * series does not vanish when the last worker of a slot dies.
 */
function retainable(metrics: WireMetric[]): WireMetric[] {
  const out: WireMetric[] = [];
  for (const m of metrics) {
    if (m.type === 'counter' || m.type === 'histogram') out.push(m);
    else if (!m.values.some((v) => WORKER_LABEL in v.labels)) {
      out.push({ ...m, values: m.values.map((v) => ({ ...v, value: 0 })) });
    }
  }
  return out;
}

/** a + b, sample by sample; the result shares no objects with b so later mutation of a cannot reach it. */
export function sumSnapshots(a: WireMetric[], b: WireMetric[]): WireMetric[] {
  const byName = new Map<string, { metric: WireMetric; index: Map<string, WireValue> }>();
  const out: WireMetric[] = [];
  for (const src of [a, b]) {
    for (const m of src) {
      let entry = byName.get(m.name);
      if (!entry) {
        const metric: WireMetric = { ...m, values: [] };
        entry = { metric, index: new Map() };
        byName.set(m.name, entry);
        out.push(metric);
      }
      for (const v of m.values) {
        const k = labelKey(v);
        const have = entry.index.get(k);
        if (have) {
          have.value += v.value;
        } else {
          const copy: WireValue = { ...v, labels: { ...v.labels } };
          entry.index.set(k, copy);
          entry.metric.values.push(copy);
        }
      }
    }
  }
  return out;
}

/**
 * prom-client names three gauges `nodejs_active_{handles,requests,resources}_total`; Prometheus reserves `_total` for
 * counters and `promtool check metrics` rejects them, so a gauge loses the suffix on the way out.
 */
function exposedName(m: WireMetric): string {
  return m.type !== 'counter' && m.name.endsWith('_total') ? m.name.slice(0, -'_total'.length) : m.name;
}

export interface MetricsAggregatorOptions {
  /** Queue gauges: give a scan (e.g. dirQueueScanner(spoolDir)) and the queues known at start. */
  queues?: {
    scan: QueueScanFn;
    queues?: Iterable<string>;
    scanIntervalMs?: number;
    onError?: (queue: string, err: unknown) => void;
  };
  /** Expose the primary's own process metrics with worker="primary". Default true. */
  primaryProcessMetrics?: boolean;
  /** Wall clock in ms; tests pin it. */
  now?: () => number;
  /**
   * Acceptors up, for `spamtrapd_workers`. The daemon gives its health view (listening and answering); without it,
   * processes started and not yet exited are counted.
   */
  workersUp?: () => number;
}

export interface HealthInfo {
  workersUp: number;
  /** Default: workersUp > 0. */
  ok?: boolean;
  workersExpected?: number;
  /** Why not ok, one line each. */
  reasons?: readonly string[];
}

export class MetricsAggregator {
  /** The primary's own series (restarts, workers, queue gauges, snapshot ages, primary process metrics). */
  readonly registry: Registry;
  readonly queueGauges: QueueGauges | undefined;
  private readonly slots = new Map<string, SlotState>();
  private readonly now: () => number;
  private readonly restarts: client.Counter<never>;

  constructor(opts: MetricsAggregatorOptions = {}) {
    this.now = opts.now ?? Date.now;
    this.registry = new Registry();
    const self = this;
    this.restarts = new client.Counter({
      name: SERIES.workerRestarts,
      help: 'Worker processes started to replace one that exited.',
      registers: [this.registry],
    });
    new client.Gauge({
      name: SERIES.workers,
      help: 'SMTP acceptors up: listening and heard from within the last few seconds (the same count as /healthz).',
      registers: [this.registry],
      collect() {
        this.set(opts.workersUp ? opts.workersUp() : self.health().workersUp);
      },
    });
    new client.Gauge({
      name: SERIES.snapshotAgeSeconds,
      help: 'Seconds since the primary last received a metrics snapshot from the worker; grows while its event loop is blocked.',
      labelNames: [WORKER_LABEL],
      registers: [this.registry],
      collect() {
        this.reset();
        const t = self.now();
        for (const [slot, s] of self.slots) {
          if (s.live) this.set({ [WORKER_LABEL]: slot }, Math.max(0, (t - s.live.receivedAt) / 1000));
        }
      },
    });
    if (opts.primaryProcessMetrics !== false) {
      client.collectDefaultMetrics({
        register: this.registry,
        prefix: DEFAULT_METRICS_PREFIX,
        labels: { [WORKER_LABEL]: 'primary' },
      });
    }
    this.queueGauges = opts.queues ? new QueueGauges({ registry: this.registry, now: this.now, ...opts.queues }) : undefined;
  }

  private slot(slot: string): SlotState {
    let s = this.slots.get(slot);
    if (!s) {
      s = {
        baseline: [],
        lastRetired: undefined,
        live: undefined,
        foldedPids: [],
        silentDead: [],
        upPid: undefined,
        everStarted: false,
      };
      this.slots.set(slot, s);
    }
    return s;
  }

  /** Makes `inc` the slot's last retired incarnation, folding the previous one into the baseline. */
  private retireInto(s: SlotState, inc: Incarnation): void {
    if (s.lastRetired) {
      s.baseline = sumSnapshots(s.baseline, s.lastRetired.metrics);
      s.foldedPids.push(s.lastRetired.pid);
      if (s.foldedPids.length > PIDS_KEPT) s.foldedPids.shift();
    }
    s.lastRetired = { ...inc, metrics: retainable(inc.metrics) };
  }

  private retireLive(s: SlotState): void {
    if (!s.live) return;
    this.retireInto(s, s.live);
    s.live = undefined;
  }

  /**
   * Call when a worker process for `slot` is running (cluster 'online'). A slot that had a process before counts as a
   * restart; a live incarnation still on record for the slot is retired now.
   */
  workerStarted(slot: number | string, pid: number): void {
    const s = this.slot(String(slot));
    if (s.everStarted && s.upPid !== pid) this.restarts.inc();
    s.everStarted = true;
    if (s.live && s.live.pid !== pid) this.retireLive(s);
    s.upPid = pid;
  }

  /**
   * Call on the worker's 'exit'. Its counters stay in the totals; its gauges go. Without `pid`, whatever process the
   * slot has on record is taken to be the one that exited.
   */
  workerExited(slot: number | string, pid?: number): void {
    const s = this.slot(String(slot));
    if (pid === undefined) {
      this.retireLive(s);
      s.upPid = undefined;
      return;
    }
    if (s.live?.pid === pid) {
      this.retireLive(s);
    } else if (s.lastRetired?.pid !== pid && !s.foldedPids.includes(pid) && !s.silentDead.includes(pid)) {
      s.silentDead.push(pid);
      if (s.silentDead.length > PIDS_KEPT) s.silentDead.shift();
    }
    if (s.upPid === pid) s.upPid = undefined;
  }

  /** Routes a message from a worker; returns false when it is not a metrics message (so the daemon can try others). */
  handleMessage(msg: unknown): boolean {
    if (!isMetricsMessage(msg)) return false;
    this.apply(msg);
    return true;
  }

  private apply(msg: MetricsMessage): void {
    if (msg.type === 'metrics:enqueued') {
      if (this.queueGauges) {
        for (const [queue, times] of Object.entries(msg.queues)) {
          for (const t of times) if (typeof t === 'number' && Number.isFinite(t)) this.queueGauges.recordEnqueue(queue, t);
        }
      }
      return;
    }
    const s = this.slot(msg.slot);
    const inc: Incarnation = { pid: msg.pid, seq: msg.seq, metrics: msg.metrics, receivedAt: this.now() };
    if (s.live?.pid === msg.pid) {
      if (msg.seq > s.live.seq) s.live = inc;
    } else if (s.lastRetired?.pid === msg.pid) {
      // The final push of a process whose exit was already handled.
      if (msg.seq > s.lastRetired.seq) s.lastRetired = { ...inc, metrics: retainable(inc.metrics) };
    } else if (s.silentDead.includes(msg.pid)) {
      s.silentDead = s.silentDead.filter((p) => p !== msg.pid);
      this.retireInto(s, inc);
    } else if (!s.foldedPids.includes(msg.pid)) {
      // A new pid for the slot means the previous process is gone even if its exit has not been reported yet.
      this.retireLive(s);
      s.live = inc;
    }
  }

  /** SMTP workers running. Only numeric slots count: the relay (slot `relay`) accepts no mail. */
  health(): HealthInfo {
    let workersUp = 0;
    for (const [slot, s] of this.slots) if (s.upPid !== undefined && /^\d+$/.test(slot)) workersUp++;
    return { workersUp };
  }

  /**
   * All snapshots to merge: per slot its retired baseline, last retired and live process, then the primary's own.
   * Exposed for tests; the scrape goes through metrics().
   */
  async snapshots(): Promise<WireMetric[][]> {
    const parts: WireMetric[][] = [];
    for (const s of this.slots.values()) {
      if (s.baseline.length) parts.push(s.baseline);
      if (s.lastRetired) parts.push(s.lastRetired.metrics);
      if (s.live) parts.push(s.live.metrics);
    }
    parts.push(toWire(await this.registry.getMetricsAsJSON()));
    return parts;
  }

  /** The merged exposition. Uses only data already here, so it answers at once whatever the workers are doing. */
  async metrics(): Promise<{ contentType: string; body: string }> {
    const parts = await this.snapshots();
    // Series that carry a worker label are distinct per process (or, for counters, baseline + live of one slot, which
    // must add up), so they are summed whatever aggregator prom-client gave them: its `omit` would drop
    // process_start_time_seconds and `average` would blend a dead incarnation into a live one. Everything else keeps
    // its own aggregator, which for the trap's series is `sum` (totals over workers).
    const perWorker = new Map<string, boolean>();
    for (const part of parts) {
      for (const m of part) {
        const all = m.values.every((v) => WORKER_LABEL in v.labels);
        perWorker.set(m.name, (perWorker.get(m.name) ?? true) && all);
      }
    }
    const input = parts.map((part) =>
      part.map((m) => ({ ...m, name: exposedName(m), aggregator: perWorker.get(m.name) ? 'sum' : m.aggregator })),
    );
    const merged = AggregatorRegistry.aggregate(input);
    return { contentType: merged.contentType, body: await merged.metrics() };
  }

  /** Starts the queue scans (if configured). */
  start(): void {
    this.queueGauges?.start();
  }

  close(): void {
    this.queueGauges?.stop();
  }
}
