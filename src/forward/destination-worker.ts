/**
 * One forward target's scheduler: picks up due jobs from its queue (a few at a time, one while the target is down),
 * sends each with one SMTP attempt, records the outcome durably and then acts on it (finish, retry later, split,
 * dead letter). The relay (relay.ts) owns one per forward queue.
 */
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { DirQueueReader, type Job } from '../dirqueue';
import type { Logger } from '../log';
import { processExists } from '../pid';
import { sendOnce, type AttemptResult, type RecipientResult, type SmtpOptions, type SmtpTransaction } from './smtp-attempt';
import { stateFromMetadata, type FollowUp, type JobState, type RelayStateStore } from './state';
import { backoffMs, type ForwardTarget } from './targets';

export interface CounterLike {
  inc(value?: number): void;
}

/** What a destination worker needs from the relay that owns it. */
export interface RelayServices {
  readonly spoolDir: string;
  readonly store: RelayStateStore;
  readonly metrics?: { delivered: CounterLike; deferred: CounterLike; failed: CounterLike };
  readonly afterResolved?: (queue: string, jobId: string) => Promise<void> | void;
  deadLetter(job: Job, dest: ForwardTarget, f: FollowUp, attempts: number): Promise<void>;
  requeue(job: Job, dest: ForwardTarget, f: FollowUp, attempts: number, nextAttemptAt: number): Promise<void>;
}

export interface RelaySettings {
  retryBaseMs: number;
  retryMaxMs: number;
  maxAttempts: number;
  concurrency: number;
  destinationBackoffMaxMs: number;
  pollIntervalMs: number;
  rescanIntervalMs: number;
  smtp: SmtpOptions;
}

export class DestinationWorker {
  readonly reader: DirQueueReader;
  readonly queueDir: string;
  /** What this relay knows of each job: it rules every pickup, also when writing it to the store failed. */
  private states = new Map<string, JobState>();
  /** Jobs whose state above the store could not write yet; written again at their next pickup and at stop(). */
  private readonly unsaved = new Set<string>();
  private readonly inFlight = new Map<string, SmtpTransaction | null>();
  private readonly running = new Set<Promise<void>>();
  private consecutiveDown = 0;
  private downUntil = 0;
  private downMarkedAt = 0;
  private pumping = false;
  private stopped = false;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    readonly dest: ForwardTarget,
    private readonly relay: RelayServices,
    private readonly s: RelaySettings,
    private readonly log: Logger,
  ) {
    this.queueDir = path.join(relay.spoolDir, dest.queue);
    // Only due jobs are offered to pickup: one still backing off (or being delivered here) is never locked to look at.
    this.reader = new DirQueueReader(this.queueDir, { warn: (msg) => log.warn('dirqueue', { queue: dest.queue, msg }), eligible: (id) => this.isDue(id) });
  }

  async start(): Promise<void> {
    this.states = await this.relay.store.load(this.dest.queue, this.queueDir);
    await this.releaseDeadRelayLocks();
    this.timer = setInterval(() => this.pump(), this.s.pollIntervalMs);
    this.pump();
  }

  private isDue(jobId: string): boolean {
    if (this.inFlight.has(jobId)) return false;
    const st = this.states.get(jobId);
    return !st || st.nextAttemptAt <= Date.now();
  }

  /**
   * A relay that was killed leaves its active/ locks behind, and IPC::DirQueue honours a lock for 600 s whoever
   * holds it: a restarted relay would sit out those ten minutes. Only the relay consumes forward queues, so a lock
   * naming this host and a pid that no longer exists is a dead relay's, and is removed at start-up.
   */
  private async releaseDeadRelayLocks(): Promise<void> {
    const activeDir = path.join(this.queueDir, 'active');
    let names: string[];
    try {
      names = await fsp.readdir(activeDir);
    } catch {
      return;
    }
    for (const name of names) {
      const p = path.join(activeDir, name);
      const text = await fsp.readFile(p, 'utf8').catch(() => null);
      if (text === null) continue;
      const [host, pidText] = text.split('\n');
      const pid = Number(pidText);
      if (host !== this.reader.hostname || !Number.isInteger(pid) || pid <= 0 || pid === process.pid || processExists(pid)) continue;
      await fsp.unlink(p).catch(() => undefined);
      this.log.warn('forward_stale_lock_removed', { queue: this.dest.queue, id: name, dead_pid: pid });
    }
  }

  private limit(): number {
    // While the destination is failing, one delivery probes it; full concurrency returns with the first success.
    return this.consecutiveDown > 0 ? 1 : this.s.concurrency;
  }

  pump(): void {
    if (this.pumping || this.stopped) return;
    this.pumping = true;
    void (async () => {
      try {
        while (!this.stopped && this.inFlight.size < this.limit() && Date.now() >= this.downUntil) {
          const job = await this.reader.pickup();
          if (!job) break;
          if (this.stopped) {
            await job.returnToQueue();
            break;
          }
          this.inFlight.set(job.jobId, null);
          const p = this.process(job)
            .catch(async (err: Error) => {
              // Only local failures get here (state or spool writes: a full disk, permissions). The job goes back
              // after a pause instead of staying locked until a restart; its state in memory still rules its next
              // pickup, and holds the MTA's outcome even when that could not be written: it is not sent again.
              this.log.error('forward_job_error', { queue: this.dest.queue, id: job.jobId, error: err.message, retry_in_ms: this.s.retryBaseMs });
              const st = this.states.get(job.jobId);
              this.states.set(job.jobId, { ...(st ?? { v: 1, phase: 'deferred', attempts: 0, lastReply: '' }), nextAttemptAt: Date.now() + this.s.retryBaseMs });
              await job.returnToQueue().catch(() => undefined);
            })
            .finally(() => {
              this.inFlight.delete(job.jobId);
              this.running.delete(p);
              this.pump();
            });
          this.running.add(p);
        }
      } catch (err) {
        this.log.error('forward_pickup_error', { queue: this.dest.queue, error: (err as Error).message });
      } finally {
        this.pumping = false;
      }
    })();
  }

  async stop(graceMs: number): Promise<void> {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    const all = Promise.allSettled([...this.running]);
    let t: NodeJS.Timeout | undefined;
    const timedOut = await Promise.race([all.then(() => false), new Promise<boolean>((r) => (t = setTimeout(() => r(true), graceMs)))]);
    if (t) clearTimeout(t);
    if (timedOut) {
      for (const tx of this.inFlight.values()) tx?.abort();
      await all;
    }
    // A pickup that was under way when stop() came returns its job in the loop above.
    while (this.pumping) await new Promise((r) => setTimeout(r, 5));
    // The next relay knows only what is on disk: a last try for outcomes that memory alone holds.
    for (const id of [...this.unsaved]) await this.record(id, this.states.get(id)!);
  }

  /** Before an attempt: the attempt counts only once it is durable, so a failed write means no attempt. */
  private async saveState(jobId: string, st: JobState): Promise<void> {
    await this.relay.store.write(this.dest.queue, jobId, st);
    this.states.set(jobId, st);
    this.unsaved.delete(jobId);
  }

  /**
   * What the MTA answered: kept in memory first, so a failed write (a full disk) cannot make this relay send the job
   * again, then written. A failed write is logged and tried again later; returns whether the state is durable.
   */
  private async record(jobId: string, st: JobState): Promise<boolean> {
    this.states.set(jobId, st);
    try {
      await this.relay.store.write(this.dest.queue, jobId, st);
      this.unsaved.delete(jobId);
      return true;
    } catch (err) {
      this.unsaved.add(jobId);
      this.log.error('forward_state_unsaved', {
        queue: this.dest.queue,
        id: jobId,
        phase: st.phase,
        error: (err as Error).message,
        note: 'kept in memory and written again later; only a restart before that would lose it',
      });
      return false;
    }
  }

  private async dropState(jobId: string): Promise<void> {
    this.states.delete(jobId);
    this.unsaved.delete(jobId);
    await this.relay.store.remove(this.dest.queue, jobId);
  }

  private async process(job: Job): Promise<void> {
    const q = this.dest.queue;
    const prev = this.states.get(job.jobId) ?? (await this.relay.store.read(q, job.jobId)) ?? stateFromMetadata(job);
    if (prev?.phase === 'resolved' && prev.outcome) {
      this.log.info('forward_recovered', { queue: q, id: job.jobId, note: 'the MTA already answered for this job; completing it without sending again' });
      if (this.unsaved.has(job.jobId)) await this.record(job.jobId, prev);
      await this.complete(job, prev);
      return;
    }
    if (prev && prev.nextAttemptAt > Date.now()) {
      // Only a job carrying forward_next_attempt (a split retry) can get here before its time.
      this.states.set(job.jobId, prev);
      await job.returnToQueue();
      return;
    }

    const from = job.metadata['mail_from'] ?? '';
    const rcpts = (job.metadata['rcpt_to'] ?? '').split(',').filter((r) => r !== '');
    const logBase = { queue: q, id: job.jobId, dest: this.dest.url, from, rcpts: rcpts.join(',') };

    if (rcpts.length === 0) {
      await this.resolve(job, prev?.attempts ?? 0, [], { rcpts: [], reason: 'no_recipients', reply: 'job has no rcpt_to metadata' }, null, () =>
        this.log.warn('forward_attempt', { ...logBase, attempt: 0, result: 'deadletter', reply: 'no recipients in rcpt_to' }),
      );
      return;
    }
    if (prev && prev.attempts >= this.s.maxAttempts) {
      // The last allowed attempt was cut short (the relay died during it): no further one.
      await this.resolve(job, prev.attempts, [], { rcpts, reason: 'attempts_exhausted', reply: prev.lastReply }, null, () =>
        this.log.warn('forward_attempt', { ...logBase, attempt: prev.attempts, result: 'deadletter', reply: prev.lastReply }),
      );
      return;
    }
    if (prev?.phase === 'delivering') {
      this.log.warn('forward_ambiguous', {
        ...logBase,
        note: 'a previous attempt was interrupted before its outcome was recorded; sending again (the MTA may get it twice)',
      });
    }

    const attempt = (prev?.attempts ?? 0) + 1;
    await this.saveState(job.jobId, { v: 1, phase: 'delivering', attempts: attempt, nextAttemptAt: 0, lastReply: prev?.lastReply ?? '' });

    const startedAt = Date.now();
    const tx = sendOnce(this.dest, this.s.smtp, from, rcpts, job.openStream(), job.size);
    this.inFlight.set(job.jobId, tx);
    // IPC::DirQueue lets others break a lock after 600 s; keep ours fresh through a slow transaction.
    const touch = setInterval(() => void job.touchActiveLock().catch(() => undefined), 60_000);
    let res: AttemptResult;
    try {
      res = await tx.result;
    } finally {
      clearInterval(touch);
    }

    const delivered = res.recipients.filter((r) => r.kind === 'delivered').map((r) => r.rcpt);
    const perm = res.recipients.filter((r) => r.kind === 'permanent');
    const temp = res.recipients.filter((r) => r.kind === 'temporary');
    const joinReplies = (rs: RecipientResult[]) =>
      [...new Set(rs.map((r) => r.reply))].length === 1 ? rs[0]!.reply : rs.map((r) => `<${r.rcpt}>: ${r.reply}`).join('; ');

    if (res.destinationDown) {
      // Deliveries that were already under way when the destination was marked down fail for the same reason: only
      // a failure of an attempt started after the mark lengthens the back-off.
      if (startedAt >= this.downMarkedAt) {
        this.consecutiveDown++;
        this.downMarkedAt = Date.now();
        this.downUntil = Date.now() + backoffMs(this.consecutiveDown, this.s.retryBaseMs, this.s.destinationBackoffMaxMs);
      }
    } else {
      this.consecutiveDown = 0;
      this.downUntil = 0;
    }

    if (temp.length === rcpts.length) {
      const reply = joinReplies(temp);
      if (attempt >= this.s.maxAttempts) {
        await this.resolve(job, attempt, [], { rcpts, reason: 'attempts_exhausted', reply }, null, () =>
          this.log.warn('forward_attempt', { ...logBase, attempt, result: 'deadletter', reason: 'attempts_exhausted', reply }),
        );
        return;
      }
      // A delivery cut off by stop() is not the MTA's doing: due again at once after the restart.
      const delay = this.stopped ? 0 : backoffMs(attempt, this.s.retryBaseMs, this.s.retryMaxMs);
      await this.record(job.jobId, { v: 1, phase: 'deferred', attempts: attempt, nextAttemptAt: Date.now() + delay, lastReply: reply });
      await job.returnToQueue();
      this.relay.metrics?.deferred.inc();
      this.log.info('forward_attempt', {
        ...logBase,
        attempt,
        result: 'deferred',
        reply,
        retry_in_ms: delay,
        destination_backoff_ms: res.destinationDown ? this.downUntil - Date.now() : undefined,
      });
      return;
    }

    const dead = perm.length ? { rcpts: perm.map((r) => r.rcpt), reason: 'rejected', reply: joinReplies(perm) } : null;
    let retry: FollowUp | null = null;
    if (temp.length) {
      retry = { rcpts: temp.map((r) => r.rcpt), reason: 'deferred', reply: joinReplies(temp) };
    }
    const result = delivered.length === rcpts.length ? 'delivered' : delivered.length ? 'partial' : 'deadletter';
    await this.resolve(job, attempt, delivered, dead, retry, () =>
      this.log.info('forward_attempt', {
        ...logBase,
        attempt,
        result,
        reply: delivered.length === rcpts.length ? res.reply : joinReplies(res.recipients),
        delivered: delivered.length && delivered.length < rcpts.length ? delivered.join(',') : undefined,
      }),
    );
  }

  /**
   * Records the outcome, then acts on it; from here on the MTA is never contacted for this job. When the record
   * cannot be written, the relay acts all the same: a job finished is one that no restart can send again, whereas
   * waiting for the disk would leave it in queue/ with nothing durable to stop that. `report` logs the attempt before
   * the job is acted on, so the log tells what the MTA said even when acting on it fails.
   */
  private async resolve(
    job: Job,
    attempts: number,
    delivered: string[],
    deadletter: FollowUp | null,
    retry: FollowUp | null,
    report: () => void,
  ): Promise<void> {
    const st: JobState = {
      v: 1,
      phase: 'resolved',
      attempts,
      nextAttemptAt: 0,
      lastReply: deadletter?.reply ?? retry?.reply ?? '',
      outcome: { delivered, deadletter, retry, followUpsDone: false },
    };
    await this.record(job.jobId, st);
    await this.relay.afterResolved?.(this.dest.queue, job.jobId);
    if (delivered.length) this.relay.metrics?.delivered.inc();
    if (deadletter) this.relay.metrics?.failed.inc();
    if (retry) this.relay.metrics?.deferred.inc();
    report();
    await this.complete(job, st);
  }

  /**
   * Enqueues the copies the outcome calls for, then finishes the job. A restart between a copy's commit and the
   * followUpsDone record enqueues that copy again: copies are duplicated, never lost. The state goes only once the
   * job has left queue/: Job.finish() merely warns when an unlink fails, and a job still queued without its state
   * would be sent again by the next relay.
   */
  private async complete(job: Job, st: JobState): Promise<void> {
    const out = st.outcome!;
    if (!out.followUpsDone && (out.deadletter || out.retry)) {
      if (out.deadletter) await this.relay.deadLetter(job, this.dest, out.deadletter, st.attempts);
      if (out.retry) {
        if (st.attempts >= this.s.maxAttempts) {
          await this.relay.deadLetter(job, this.dest, { ...out.retry, reason: 'attempts_exhausted' }, st.attempts);
        } else {
          await this.relay.requeue(job, this.dest, out.retry, st.attempts, Date.now() + backoffMs(st.attempts, this.s.retryBaseMs, this.s.retryMaxMs));
        }
      }
      await this.record(job.jobId, { ...st, outcome: { ...out, followUpsDone: true } });
    }
    await job.finish();
    if (await stillQueued(job)) {
      throw new Error(`finish() left ${job.queuePath} in place; the outcome is kept and finishing is tried again`);
    }
    await this.dropState(job.jobId);
  }
}

/** Whether the job's control file is still in queue/ (anything but ENOENT counts as yes: keep the state). */
async function stillQueued(job: Job): Promise<boolean> {
  try {
    await fsp.lstat(job.queuePath);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code !== 'ENOENT';
  }
}
