import * as path from 'node:path';
import client, { Registry } from 'prom-client';
import { forEachName } from '../dirqueue/dir-stream';
import { SERIES } from './definitions';

export interface QueueScanResult {
  /** Control files in queue/ (queued and in-progress jobs alike: a picked-up job stays there until finish()). */
  jobs: number;
  /** Unix time in seconds (fractional) of the oldest job's STAMP, null when the queue is empty. */
  oldestSeconds: number | null;
}

export type QueueScanFn = (queue: string) => Promise<QueueScanResult>;

/** `PP.STAMP.` at the start of an IPC::DirQueue job name; STAMP is UTC `YYYYMMDDhhmmss` + microseconds. */
const JOB_NAME = /^\d\d\.(\d{20})\./;

/** Unix seconds of a 20-digit IPC::DirQueue STAMP (UTC). */
export function parseStampSeconds(stamp: string): number {
  const n = (a: number, b: number): number => Number(stamp.slice(a, b));
  const ms = Date.UTC(n(0, 4), n(4, 6) - 1, n(6, 8), n(8, 10), n(10, 12), n(12, 14));
  return ms / 1000 + n(14, 20) / 1e6;
}

/**
 * Counts the jobs of `dir`/queue and finds the oldest by its STAMP. Names sort by priority first, so the first sorted
 * name is the oldest only within one priority: the minimum STAMP over all names is taken instead. Fixed-width digit
 * strings compare like the numbers they spell, so no parsing happens per name. One streamed pass, no sort, no stat
 * or read per job: memory stays flat however deep the queue is (queue/ is created by the first enqueue, so a
 * missing one is simply empty).
 */
export async function scanQueueDir(dir: string): Promise<QueueScanResult> {
  let jobs = 0;
  let minStamp: string | undefined;
  await forEachName(path.join(dir, 'queue'), (name) => {
    const m = JOB_NAME.exec(name);
    if (!m) return;
    jobs++;
    const stamp = m[1]!;
    if (minStamp === undefined || stamp < minStamp) minStamp = stamp;
  });
  return { jobs, oldestSeconds: minStamp === undefined ? null : parseStampSeconds(minStamp) };
}

/** The scan for queues living at `<spoolDir>/<queue>/queue`. */
export function dirQueueScanner(spoolDir: string): QueueScanFn {
  return (queue) => scanQueueDir(path.join(spoolDir, queue));
}

export const DEFAULT_QUEUE_SCAN_INTERVAL_MS = 5000;

/**
 * Scans start at least this many times their own duration apart, so that they take at most 1/50 = 2 % of a core
 * however deep the queues are (one scan of 1M names costs 0.7-1.2 s of CPU: every 5 s that would be 14-25 %).
 */
export const SCAN_DUTY_FACTOR = 50;

/** Start-to-start period of the scans: QUEUE_SCAN_INTERVAL_MS, or SCAN_DUTY_FACTOR times the last scan if longer. */
export function scanPeriodMs(intervalMs: number, lastScanMs: number): number {
  return Math.max(intervalMs, SCAN_DUTY_FACTOR * lastScanMs);
}

export interface QueueGaugesOptions {
  /** Registry the two gauges are created on (the primary's). */
  registry: Registry;
  scan: QueueScanFn;
  /** Queues to scan from the start; queues first seen in enqueue events are added on the fly. */
  queues?: Iterable<string>;
  /** Period of the correcting directory scan (QUEUE_SCAN_INTERVAL_MS), stretched for slow scans (scanPeriodMs). */
  scanIntervalMs?: number;
  /** Told about a failed scan (the counts are kept as they were). */
  onError?: (queue: string, err: unknown) => void;
  /** Wall clock in ms; tests pin it. */
  now?: () => number;
  /** Monotonic clock in ms that times the scans (performance.now); tests pin it. */
  monotonicNow?: () => number;
}

interface QueueState {
  jobs: number;
  oldest: number | null;
  /** Start (Unix s) of the last scan whose result was applied: jobs committed before it were in that listing. */
  appliedScanStart: number;
  /** Start of the scan in progress, if any. */
  scanStart: number | null;
  /** Commit times reported while a scan ran that may have been too late for its listing. */
  duringScan: number[];
}

/**
 * `spamtrapd_queue_jobs{queue}` and `spamtrapd_queue_oldest_seconds{queue}`, kept in the primary. Workers report each
 * commit; consumers' pickups are invisible to the trap, so a directory scan every scanIntervalMs replaces the count
 * (less often when scans are slow: scanPeriodMs).
 * Scrapes never scan. The count is exact up to pickups since the last scan and, for jobs committed while a scan was
 * reading the directory, may count such a job twice until the next scan.
 */
export class QueueGauges {
  private readonly state = new Map<string, QueueState>();
  private readonly scanFn: QueueScanFn;
  private readonly intervalMs: number;
  private readonly onError: (queue: string, err: unknown) => void;
  private readonly now: () => number;
  private readonly monotonicNow: () => number;
  private timer: NodeJS.Timeout | undefined;
  /** Bumped by start() and stop(): a scan loop whose generation is gone schedules nothing more. */
  private generation = 0;
  private started = false;
  private running: Promise<void> | undefined;
  private lastScanMs = 0;

  constructor(opts: QueueGaugesOptions) {
    this.scanFn = opts.scan;
    this.intervalMs = opts.scanIntervalMs ?? DEFAULT_QUEUE_SCAN_INTERVAL_MS;
    if (!Number.isFinite(this.intervalMs) || this.intervalMs <= 0) {
      throw new RangeError(`queue scan interval must be a positive number of ms, got ${this.intervalMs}`);
    }
    this.onError = opts.onError ?? (() => undefined);
    this.now = opts.now ?? Date.now;
    this.monotonicNow = opts.monotonicNow ?? (() => performance.now());
    for (const q of opts.queues ?? []) this.addQueue(q);
    const self = this;
    new client.Gauge({
      name: SERIES.queueJobs,
      help: 'Jobs in the queue (queued or being processed by a consumer).',
      labelNames: ['queue'],
      registers: [opts.registry],
      collect() {
        this.reset();
        for (const [queue, s] of self.state) this.set({ queue }, s.jobs);
      },
    });
    new client.Gauge({
      name: SERIES.queueOldestSeconds,
      help: 'Age in seconds of the oldest job in the queue; 0 when the queue is empty.',
      labelNames: ['queue'],
      registers: [opts.registry],
      collect() {
        this.reset();
        const nowS = self.now() / 1000;
        for (const [queue, s] of self.state) this.set({ queue }, s.oldest === null ? 0 : Math.max(0, nowS - s.oldest));
      },
    });
  }

  addQueue(queue: string): void {
    if (!this.state.has(queue)) {
      this.state.set(queue, { jobs: 0, oldest: null, appliedScanStart: -Infinity, scanStart: null, duringScan: [] });
    }
  }

  /** One job committed to `queue` at `committedAtSecs` (Unix seconds). */
  recordEnqueue(queue: string, committedAtSecs: number): void {
    this.addQueue(queue);
    const s = this.state.get(queue)!;
    if (s.scanStart !== null) {
      if (committedAtSecs >= s.scanStart) s.duringScan.push(committedAtSecs);
    } else if (committedAtSecs < s.appliedScanStart) {
      // Reported after the scan that already listed it (events travel in batches up to a push interval late).
      return;
    }
    s.jobs++;
    s.oldest = s.oldest === null ? committedAtSecs : Math.min(s.oldest, committedAtSecs);
  }

  /** Current values, for tests and the health endpoint. `oldestSeconds` is a Unix time, as in QueueScanResult. */
  values(): Map<string, QueueScanResult> {
    const out = new Map<string, QueueScanResult>();
    for (const [q, s] of this.state) out.set(q, { jobs: s.jobs, oldestSeconds: s.oldest });
    return out;
  }

  /** Scans every known queue now; a call while a scan runs waits for that one instead of starting another. */
  scanNow(): Promise<void> {
    this.running ??= this.scanAll().finally(() => {
      this.running = undefined;
    });
    return this.running;
  }

  /** Wall time of the last complete scan of every queue, and the period it sets for the next ones. */
  scanTiming(): { lastScanMs: number; periodMs: number } {
    return { lastScanMs: this.lastScanMs, periodMs: scanPeriodMs(this.intervalMs, this.lastScanMs) };
  }

  private async scanAll(): Promise<void> {
    // Wall time, not CPU time: it is never less, and it counts the waits of a busy machine too.
    const t0 = this.monotonicNow();
    for (const queue of [...this.state.keys()]) {
      const s = this.state.get(queue)!;
      const start = this.now() / 1000;
      s.scanStart = start;
      s.duringScan = [];
      try {
        const r = await this.scanFn(queue);
        const late = s.duringScan;
        s.jobs = r.jobs + late.length;
        let oldest = r.oldestSeconds;
        for (const t of late) oldest = oldest === null ? t : Math.min(oldest, t);
        s.oldest = oldest;
        s.appliedScanStart = start;
      } catch (err) {
        this.onError(queue, err);
      } finally {
        s.scanStart = null;
        s.duringScan = [];
      }
    }
    this.lastScanMs = this.monotonicNow() - t0;
  }

  /** Scans now and then once per scanPeriodMs (start to start); the timer does not keep the process alive. */
  start(): void {
    if (this.started) return;
    this.started = true;
    void this.scanAndReschedule(++this.generation);
  }

  stop(): void {
    this.started = false;
    this.generation++;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
  }

  private async scanAndReschedule(generation: number): Promise<void> {
    this.timer = undefined;
    await this.scanNow();
    if (generation !== this.generation) return;
    const { lastScanMs, periodMs } = this.scanTiming();
    this.timer = setTimeout(() => void this.scanAndReschedule(generation), Math.max(0, periodMs - lastScanMs));
    this.timer.unref();
  }
}
