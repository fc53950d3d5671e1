/**
 * The forward relay: drains every `forward-HOST-PORT` queue under the spool into its MTA over SMTP, with the envelope
 * stored in the job's metadata (sender, and only the recipients routed to that destination) and the stored bytes.
 *
 * Per job, a small state file under SPOOL/.relay-state/QUEUE/JOBID.json (written to a temp name, fsync'd, renamed)
 * records the attempt count, when the next attempt is due and how far the job got. The state survives restarts, so
 * back-off and the attempt limit hold across them, and the `resolved` phase is what keeps a job the MTA already took
 * from being sent again when the relay dies before it could finish() the job. docs/forward.md states the guarantee.
 */
import * as fsp from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { DirQueueWriter, sanitizeMetadata, type DirQueueFs, type Job } from '../dirqueue';
import { createLogger, type Logger } from '../log';
import { DEADLETTER_QUEUE, FORWARD_QUEUE_PREFIX } from '../spool-layout';
import { DestinationWorker, type CounterLike, type RelayServices, type RelaySettings } from './destination-worker';
import { oneLine } from './smtp-attempt';
import { RelayStateStore, type FollowUp } from './state';
import { destinationOfQueue, type ForwardTarget } from './targets';

export interface ForwardRelayOptions {
  spoolDir: string;
  /** First retry delay of a job; doubles per failure. Default 30000. */
  retryBaseMs?: number;
  /** Cap of a job's retry delay. Default 3600000. */
  retryMaxMs?: number;
  /** Attempts per job before it goes to deadletter. Default 20. */
  maxAttempts?: number;
  /** Deliveries in parallel per destination. Default 4. */
  concurrency?: number;
  /** Cap of the per-destination back-off while its MTA is unreachable. Default min(retryMaxMs, 300000). */
  destinationBackoffMaxMs?: number;
  /** How often each destination looks for due jobs. Default 1000. */
  pollIntervalMs?: number;
  /** How often the spool is listed for new forward queues. Default 5000. */
  rescanIntervalMs?: number;
  /** EHLO name. Default os.hostname(). */
  heloName?: string;
  connectionTimeoutMs?: number;
  greetingTimeoutMs?: number;
  socketTimeoutMs?: number;
  log?: Logger;
  metrics?: { delivered: CounterLike; deferred: CounterLike; failed: CounterLike };
  /** Told about each job the relay commits (deadletter copies, split retries), for the primary's queue gauges. */
  onEnqueue?: (queue: string, committedAtSecs: number) => void;
  /**
   * Test seam: awaited right after a job's `resolved` state is recorded (durable unless the write failed) and before
   * anything else happens to the job, so a test can kill the process exactly in the window the guarantee is about.
   */
  afterResolved?: (queue: string, jobId: string) => Promise<void> | void;
  /** File-system calls of the writers that make the relay's copies (dead letters, split retries); tests fail them. */
  queueFs?: DirQueueFs;
}

export class ForwardRelay implements RelayServices {
  readonly spoolDir: string;
  readonly store: RelayStateStore;
  readonly metrics: ForwardRelayOptions['metrics'];
  readonly afterResolved: ForwardRelayOptions['afterResolved'];
  private readonly s: RelaySettings;
  private readonly log: Logger;
  private readonly onEnqueue: ForwardRelayOptions['onEnqueue'];
  private readonly queueFs: DirQueueFs | undefined;
  private readonly workers = new Map<string, DestinationWorker>();
  private readonly refused = new Set<string>();
  private deadletterWriter: DirQueueWriter | null = null;
  private readonly requeueWriters = new Map<string, DirQueueWriter>();
  private rescanTimer: NodeJS.Timeout | undefined;
  private scanning: Promise<void> | undefined;
  private started = false;
  private stopping: Promise<void> | undefined;

  constructor(opts: ForwardRelayOptions) {
    this.spoolDir = path.resolve(opts.spoolDir);
    this.store = new RelayStateStore(this.spoolDir);
    this.metrics = opts.metrics;
    this.afterResolved = opts.afterResolved;
    this.onEnqueue = opts.onEnqueue;
    this.queueFs = opts.queueFs;
    this.log = opts.log ?? createLogger('info', { proc: 'relay' });
    const retryBaseMs = opts.retryBaseMs ?? 30_000;
    const retryMaxMs = opts.retryMaxMs ?? 3_600_000;
    this.s = {
      retryBaseMs,
      retryMaxMs,
      maxAttempts: opts.maxAttempts ?? 20,
      concurrency: opts.concurrency ?? 4,
      destinationBackoffMaxMs: opts.destinationBackoffMaxMs ?? Math.min(retryMaxMs, 300_000),
      pollIntervalMs: opts.pollIntervalMs ?? 1000,
      rescanIntervalMs: opts.rescanIntervalMs ?? 5000,
      smtp: {
        name: opts.heloName ?? os.hostname(),
        connectionTimeoutMs: opts.connectionTimeoutMs ?? 30_000,
        greetingTimeoutMs: opts.greetingTimeoutMs ?? 30_000,
        socketTimeoutMs: opts.socketTimeoutMs ?? 300_000,
      },
    };
    for (const [k, v] of Object.entries({ retryBaseMs, retryMaxMs, maxAttempts: this.s.maxAttempts, concurrency: this.s.concurrency })) {
      if (!Number.isFinite(v) || v < 1) throw new RangeError(`ForwardRelay: ${k} must be at least 1, got ${v}`);
    }
  }

  /** Destinations being drained, by queue name. */
  destinations(): ForwardTarget[] {
    return [...this.workers.values()].map((w) => w.dest);
  }

  async start(): Promise<void> {
    if (this.started) throw new Error('ForwardRelay already started');
    this.started = true;
    await fsp.mkdir(this.spoolDir, { recursive: true });
    await this.rescan();
    this.rescanTimer = setInterval(() => void this.rescan(), this.s.rescanIntervalMs);
    this.log.info('relay_started', { spool: this.spoolDir, destinations: this.destinations().map((d) => d.url).join(',') || null });
  }

  /** Lists the spool for forward queues not yet drained. */
  rescan(): Promise<void> {
    this.scanning ??= this.scanOnce().finally(() => {
      this.scanning = undefined;
    });
    return this.scanning;
  }

  private async scanOnce(): Promise<void> {
    if (this.stopping) return;
    let names: string[];
    try {
      names = (await fsp.readdir(this.spoolDir, { withFileTypes: true })).filter((e) => e.isDirectory()).map((e) => e.name);
    } catch (err) {
      this.log.error('relay_scan_failed', { spool: this.spoolDir, error: (err as Error).message });
      return;
    }
    for (const name of names.sort()) {
      if (!name.startsWith(FORWARD_QUEUE_PREFIX) || this.workers.has(name) || this.refused.has(name)) continue;
      const dest = destinationOfQueue(name);
      if (!dest) {
        this.refused.add(name);
        this.log.error('relay_unknown_queue', { queue: name, reason: 'not a forward-HOST-PORT name this relay can map back to a destination; not drained' });
        continue;
      }
      const w = new DestinationWorker(dest, this, this.s, this.log);
      this.workers.set(name, w);
      try {
        await w.start();
        this.log.info('relay_destination', { queue: name, dest: dest.url });
      } catch (err) {
        this.workers.delete(name);
        this.log.error('relay_destination_failed', { queue: name, error: (err as Error).message });
      }
    }
  }

  /**
   * Stops picking up jobs and waits for deliveries in flight, at most graceMs (default 10 s); those still running
   * then are cut off and their jobs go back to their queue. Jobs never picked up were never touched.
   */
  stop(graceMs = 10_000): Promise<void> {
    this.stopping ??= (async () => {
      if (this.rescanTimer) clearInterval(this.rescanTimer);
      await this.scanning;
      await Promise.all([...this.workers.values()].map((w) => w.stop(graceMs)));
      this.log.info('relay_stopped', {});
    })();
    return this.stopping;
  }

  /** @internal Copies the job into deadletter with the reason, reply, destination and attempts recorded. */
  async deadLetter(job: Job, dest: ForwardTarget, f: FollowUp, attempts: number): Promise<void> {
    this.deadletterWriter ??= new DirQueueWriter(path.join(this.spoolDir, DEADLETTER_QUEUE), { fsync: true, fs: this.queueFs });
    const meta: Record<string, string> = {
      ...job.metadata,
      deadletter_reason: f.reason,
      deadletter_reply: oneLine(f.reply),
      deadletter_destination: dest.url,
      deadletter_attempts: String(attempts),
      deadletter_queue: dest.queue,
      deadletter_job: job.jobId,
      deadletter_time: new Date().toISOString(),
    };
    if (f.rcpts.length) meta['rcpt_to'] = f.rcpts.join(',');
    const c = await this.deadletterWriter.enqueueStream(job.openStream(), sanitizeMetadata(meta));
    this.onEnqueue?.(DEADLETTER_QUEUE, Date.now() / 1000);
    this.log.warn('forward_deadletter', { queue: dest.queue, id: job.jobId, deadletter_id: c.jobId, rcpts: meta['rcpt_to'], reason: f.reason, reply: meta['deadletter_reply'] });
  }

  /** @internal A new job in the same forward queue for recipients the MTA deferred while it took others. */
  async requeue(job: Job, dest: ForwardTarget, f: FollowUp, attempts: number, nextAttemptAt: number): Promise<void> {
    let w = this.requeueWriters.get(dest.queue);
    if (!w) {
      w = new DirQueueWriter(path.join(this.spoolDir, dest.queue), { fsync: true, fs: this.queueFs });
      this.requeueWriters.set(dest.queue, w);
    }
    const meta: Record<string, string> = {
      ...job.metadata,
      rcpt_to: f.rcpts.join(','),
      forward_attempts: String(attempts),
      forward_next_attempt: (nextAttemptAt / 1000).toFixed(3),
      forward_last_reply: oneLine(f.reply),
      forward_parent: job.jobId,
    };
    const c = await w.enqueueStream(job.openStream(), sanitizeMetadata(meta));
    this.onEnqueue?.(dest.queue, Date.now() / 1000);
    this.log.info('forward_split', { queue: dest.queue, id: job.jobId, new_id: c.jobId, rcpts: meta['rcpt_to'], reply: meta['forward_last_reply'] });
  }
}

