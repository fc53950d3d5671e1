/**
 * The forward relay: drains every `forward-HOST-PORT` queue under the spool into its MTA over SMTP, with the envelope
 * the trap received (sender, and only the recipients routed to that destination) and the stored bytes.
 *
 * Per job, a small state file under SPOOL/.relay-state/QUEUE/JOBID.json (written to a temp name, fsync'd, renamed)
 * records the attempt count, when the next attempt is due and how far the job got. The state survives restarts, so
 * back-off and the attempt limit hold across them, and the `resolved` phase is what keeps a job the MTA already took
 * from being sent again when the relay dies before it could finish() the job. docs/forward.md states the guarantee.
 */
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import SMTPConnection from 'nodemailer/lib/smtp-connection';
import { DEADLETTER_QUEUE, parseForwardUrl } from '../config/routes';
import { DirQueueReader, DirQueueWriter, Job, type Metadata } from '../dirqueue';
import { createLogger, type Logger } from '../log';

export const FORWARD_QUEUE_PREFIX = 'forward-';
/** Relay-owned, dot-named so findQueueDirs() and consumers never take it for a queue. */
export const RELAY_STATE_DIR = '.relay-state';

export interface Destination {
  queue: string;
  host: string;
  port: number;
  /** `smtp://host:port`, IPv6 in brackets. */
  url: string;
}

/**
 * Reverses forwardQueueName(): `forward-HOST-PORT`, where only an IPv6 address had characters (its colons) replaced
 * by `_`, since route hosts are validated names, dotted quads or IPv6. The result is checked by turning it back into
 * the queue name, so a queue this cannot name exactly is refused instead of delivered somewhere else.
 */
export function destinationOfQueue(queue: string): Destination | null {
  if (!queue.startsWith(FORWARD_QUEUE_PREFIX)) return null;
  const m = /^(.+)-(\d{1,5})$/.exec(queue.slice(FORWARD_QUEUE_PREFIX.length));
  if (!m) return null;
  const rawHost = m[1]!;
  const host = rawHost.includes('_') ? rawHost.replace(/_/g, ':') : rawHost;
  const parsed = parseForwardUrl(`smtp://${host.includes(':') ? `[${host}]` : host}:${m[2]}`);
  if (typeof parsed === 'string' || parsed.kind !== 'forward' || parsed.queue !== queue) return null;
  return { queue, host: parsed.host, port: parsed.port, url: parsed.url };
}

/** Exponential back-off after the n-th failure (n >= 1): base, 2*base, 4*base, ... capped at max. */
export function backoffMs(failures: number, baseMs: number, maxMs: number): number {
  const n = Math.max(1, failures);
  // 2**n overflows to Infinity long before a realistic attempt count; min() keeps it at the cap.
  return Math.min(maxMs, baseMs * 2 ** (n - 1));
}

// ---------------------------------------------------------------------------------------------------------------
// Durable per-job state

export type JobPhase = 'deferred' | 'delivering' | 'resolved';

export interface FollowUp {
  rcpts: string[];
  reason: string;
  reply: string;
}

export interface JobState {
  v: 1;
  phase: JobPhase;
  /** Attempts started, the one in progress included. */
  attempts: number;
  /** Epoch ms before which the job is not tried again. */
  nextAttemptAt: number;
  lastReply: string;
  /**
   * Set with phase `resolved`: what the MTA decided, so a restart completes the job the same way without talking to
   * the MTA again. `deadletter` and `retry` are copies still to be enqueued (recipients refused for good, or
   * deferred, while others were accepted) until `followUpsDone`.
   */
  outcome?: {
    delivered: string[];
    deadletter: FollowUp | null;
    retry: FollowUp | null;
    followUpsDone: boolean;
  };
}

/** One JSON file per job; every write is atomic (rename) and durable (file and directory fsync'd). */
export class RelayStateStore {
  readonly root: string;
  private readonly made = new Set<string>();

  constructor(spoolDir: string) {
    this.root = path.join(spoolDir, RELAY_STATE_DIR);
  }

  dir(queue: string): string {
    return path.join(this.root, queue);
  }

  file(queue: string, jobId: string): string {
    return path.join(this.dir(queue), `${jobId}.json`);
  }

  async write(queue: string, jobId: string, state: JobState): Promise<void> {
    const dir = this.dir(queue);
    if (!this.made.has(dir)) {
      await fsp.mkdir(dir, { recursive: true, mode: 0o755 });
      await syncDir(this.root);
      this.made.add(dir);
    }
    const final = this.file(queue, jobId);
    const tmp = `${final}.${process.pid}.tmp`;
    const h = await fsp.open(tmp, 'w', 0o644);
    try {
      await h.writeFile(JSON.stringify(state) + '\n');
      await h.sync();
    } finally {
      await h.close();
    }
    await fsp.rename(tmp, final);
    await syncDir(dir);
  }

  async read(queue: string, jobId: string): Promise<JobState | null> {
    try {
      return parseState(await fsp.readFile(this.file(queue, jobId), 'utf8'));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw e;
    }
  }

  /** Losing this file only loses the attempt count; no fsync, a resurrected file is removed by the next load(). */
  async remove(queue: string, jobId: string): Promise<void> {
    await fsp.unlink(this.file(queue, jobId)).catch((e: NodeJS.ErrnoException) => {
      if (e.code !== 'ENOENT') throw e;
    });
  }

  /**
   * Every state of `queue`, by job id. States of jobs no longer in queue/ (the relay died between finish() and
   * remove(), or someone removed the job) are deleted, and so are temp files of a write that a crash cut short.
   */
  async load(queue: string, queueDir: string): Promise<Map<string, JobState>> {
    const out = new Map<string, JobState>();
    let names: string[];
    try {
      names = await fsp.readdir(this.dir(queue));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return out;
      throw e;
    }
    for (const name of names) {
      const p = path.join(this.dir(queue), name);
      if (name.endsWith('.tmp')) {
        await fsp.unlink(p).catch(() => undefined);
        continue;
      }
      if (!name.endsWith('.json')) continue;
      const jobId = name.slice(0, -'.json'.length);
      if (!fs.existsSync(path.join(queueDir, 'queue', jobId))) {
        await fsp.unlink(p).catch(() => undefined);
        continue;
      }
      const st = parseState(await fsp.readFile(p, 'utf8').catch(() => ''));
      if (st) out.set(jobId, st);
    }
    return out;
  }
}

function parseState(text: string): JobState | null {
  try {
    const s = JSON.parse(text) as JobState;
    if (s && s.v === 1 && typeof s.attempts === 'number' && typeof s.phase === 'string') return s;
  } catch {
    // A torn or foreign file: treated as no state, which at worst costs the attempt count.
  }
  return null;
}

async function syncDir(dir: string): Promise<void> {
  const h = await fsp.open(dir, 'r');
  try {
    await h.sync();
  } finally {
    await h.close();
  }
}

// ---------------------------------------------------------------------------------------------------------------
// One SMTP transaction

export interface SmtpOptions {
  /** EHLO name. */
  name: string;
  connectionTimeoutMs: number;
  greetingTimeoutMs: number;
  /** Inactivity limit, also while waiting for the reply to the final dot. */
  socketTimeoutMs: number;
}

interface SmtpError extends Error {
  code?: string;
  responseCode?: number;
  response?: string;
  command?: string;
  rejected?: string[];
  rejectedErrors?: SmtpError[];
  recipient?: string;
}

export interface RecipientResult {
  rcpt: string;
  /** The reply that decided this recipient (the final reply after DATA for accepted ones). */
  reply: string;
  kind: 'delivered' | 'temporary' | 'permanent';
}

export interface AttemptResult {
  recipients: RecipientResult[];
  /** True when the destination itself is unreachable or refusing service: the whole destination backs off. */
  destinationDown: boolean;
  /** A one-line summary for the log. */
  reply: string;
}

/** No NUL/CR/LF: the reply goes into control-file metadata and log lines. */
export function oneLine(s: string): string {
  return s.replace(/[\r\n]+/g, ' ').replace(/[\x00-\x1f\x7f]/g, ' ').trim();
}

/** RFC 5321: 5yz is permanent, except 503 (bad sequence), which a new session can get past. */
function classifyCode(code: number | undefined): 'temporary' | 'permanent' {
  return code !== undefined && code >= 500 && code < 600 && code !== 503 ? 'permanent' : 'temporary';
}

const CONNECTION_CODES = new Set(['ECONNECTION', 'ETIMEDOUT', 'ESOCKET', 'EDNS', 'ETLS', 'EPROXY']);

function describe(err: SmtpError): string {
  if (err.response) return oneLine(err.response);
  const orig = (err as { originalCode?: string }).originalCode;
  return oneLine(`${err.code ?? 'ERROR'}${orig ? `/${orig}` : ''}: ${err.message}`);
}

/** Turns one transaction's outcome into a verdict per recipient. */
export function classifyAttempt(rcpts: string[], err: SmtpError | null, info: { rejectedErrors?: SmtpError[]; response?: string } | null): AttemptResult {
  if (!err) {
    const finalReply = oneLine(info?.response ?? '250');
    const refused = new Map<string, SmtpError>();
    for (const e of info?.rejectedErrors ?? []) if (e.recipient !== undefined) refused.set(e.recipient, e);
    const recipients = rcpts.map((rcpt): RecipientResult => {
      const e = refused.get(rcpt);
      return e ? { rcpt, reply: describe(e), kind: classifyCode(e.responseCode) } : { rcpt, reply: finalReply, kind: 'delivered' };
    });
    return { recipients, destinationDown: false, reply: finalReply };
  }
  // Every recipient refused: nodemailer reports one reply for all, the details per recipient ride along.
  if (err.rejectedErrors && err.rejectedErrors.length && err.command === 'RCPT TO') {
    const byRcpt = new Map(err.rejectedErrors.map((e) => [e.recipient, e]));
    const recipients = rcpts.map((rcpt): RecipientResult => {
      const e = byRcpt.get(rcpt) ?? err;
      return { rcpt, reply: describe(e), kind: classifyCode(e.responseCode) };
    });
    return { recipients, destinationDown: false, reply: describe(err) };
  }
  const reply = describe(err);
  let kind: 'temporary' | 'permanent';
  let destinationDown = false;
  if (err.responseCode !== undefined) {
    kind = classifyCode(err.responseCode);
    // 421 is the server closing the session: it speaks for the destination, not for this message.
    destinationDown = err.responseCode === 421 || (err.command === 'CONN' && kind === 'temporary');
  } else if (err.code === 'EENVELOPE' || (err.code === 'EMESSAGE' && /larger than allowed/.test(err.message))) {
    // Refused before anything was sent (an address SMTP cannot carry, a size over the server's SIZE): no retry
    // will change that.
    kind = 'permanent';
  } else {
    kind = 'temporary';
    destinationDown = err.code === undefined || CONNECTION_CODES.has(err.code) || err.command === 'CONN';
  }
  return { recipients: rcpts.map((rcpt) => ({ rcpt, reply, kind })), destinationDown, reply };
}

export interface SmtpTransaction {
  result: Promise<AttemptResult>;
  /** Drops the connection; the attempt then ends as a temporary failure. */
  abort(): void;
}

/**
 * One connection, one message, QUIT. SMTPConnection is used directly rather than a transport's sendMail() because the
 * mail composer would run the envelope addresses through its address parser: a spammer's odd sender must reach the
 * MTA as the trap received it. STARTTLS is used when offered, without certificate checks (an internal MTA usually
 * has a self-signed one), and a failed upgrade falls back to plain text, as MTAs do for opportunistic TLS.
 */
export function sendOnce(
  dest: Destination,
  opts: SmtpOptions,
  from: string,
  rcpts: string[],
  message: fs.ReadStream,
  size?: number,
): SmtpTransaction {
  const conn = new SMTPConnection({
    host: dest.host,
    port: dest.port,
    secure: false,
    opportunisticTLS: true,
    tls: { rejectUnauthorized: false },
    name: opts.name,
    connectionTimeout: opts.connectionTimeoutMs,
    greetingTimeout: opts.greetingTimeoutMs,
    socketTimeout: opts.socketTimeoutMs,
    allowInternalNetworkInterfaces: true,
    logger: false,
  });
  let settle!: (r: AttemptResult) => void;
  const result = new Promise<AttemptResult>((resolve) => (settle = resolve));
  let done = false;
  const finish = (err: SmtpError | null, info: { rejectedErrors?: SmtpError[]; response?: string } | null) => {
    if (done) return;
    done = true;
    message.destroy();
    if (err) conn.close();
    else conn.quit();
    settle(classifyAttempt(rcpts, err, info));
  };
  conn.on('error', (err: SmtpError) => finish(err, null));
  conn.once('end', () => finish(Object.assign(new Error('connection closed'), { code: 'ECONNECTION' }), null));
  message.once('error', (err) => finish(Object.assign(new Error(`reading the message: ${err.message}`), { code: 'ESTREAM' }), null));
  conn.connect((err) => {
    if (err) return finish(err as SmtpError, null);
    // from '' is the null sender: SMTPConnection sends MAIL FROM:<>.
    // With the size, an MTA advertising SIZE refuses an oversized message at MAIL FROM instead of after DATA.
    conn.send({ from, to: rcpts, ...(size !== undefined && Number.isFinite(size) ? { size } : {}) }, message, (e, info) => finish((e as SmtpError | null) ?? null, info ?? null));
  });
  return {
    result,
    abort: () => finish(Object.assign(new Error('relay stopping'), { code: 'EABORT' }), null),
  };
}

// ---------------------------------------------------------------------------------------------------------------
// The relay

export interface CounterLike {
  inc(value?: number): void;
}

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
   * Test seam: awaited right after a job's `resolved` state is durable and before anything else happens to the job,
   * so a test can kill the process exactly in the window the guarantee is about.
   */
  afterResolved?: (queue: string, jobId: string) => Promise<void> | void;
}

interface Settings {
  retryBaseMs: number;
  retryMaxMs: number;
  maxAttempts: number;
  concurrency: number;
  destinationBackoffMaxMs: number;
  pollIntervalMs: number;
  rescanIntervalMs: number;
  smtp: SmtpOptions;
}

/**
 * pickup() takes the first unlocked job of list(); narrowing list() to due jobs makes it skip jobs still backing off
 * (or already being delivered here) without locking each one in turn to look at it.
 */
class DueJobReader extends DirQueueReader {
  constructor(
    dir: string,
    warn: (msg: string) => void,
    private readonly eligible: (jobId: string) => boolean,
  ) {
    super(dir, { warn });
  }

  override async list(): Promise<string[]> {
    return (await super.list()).filter(this.eligible);
  }
}

class DestinationWorker {
  readonly reader: DueJobReader;
  readonly queueDir: string;
  private states = new Map<string, JobState>();
  private readonly inFlight = new Map<string, SmtpTransaction | null>();
  private readonly running = new Set<Promise<void>>();
  private consecutiveDown = 0;
  private downUntil = 0;
  private downMarkedAt = 0;
  private pumping = false;
  private stopped = false;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    readonly dest: Destination,
    private readonly relay: ForwardRelay,
    private readonly s: Settings,
    private readonly log: Logger,
  ) {
    this.queueDir = path.join(relay.spoolDir, dest.queue);
    this.reader = new DueJobReader(this.queueDir, (msg) => log.warn('dirqueue', { queue: dest.queue, msg }), (id) => this.isDue(id));
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
      if (host !== this.reader.hostname || !Number.isInteger(pid) || pid <= 0 || pid === process.pid || pidAlive(pid)) continue;
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
              // after a pause instead of staying locked until a restart; whatever state was recorded still rules
              // its next pickup, so a job whose outcome is recorded is not sent again.
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
  }

  private async saveState(jobId: string, st: JobState): Promise<void> {
    await this.relay.store.write(this.dest.queue, jobId, st);
    this.states.set(jobId, st);
  }

  private async dropState(jobId: string): Promise<void> {
    this.states.delete(jobId);
    await this.relay.store.remove(this.dest.queue, jobId);
  }

  private async process(job: Job): Promise<void> {
    const q = this.dest.queue;
    const prev = this.states.get(job.jobId) ?? (await this.relay.store.read(q, job.jobId)) ?? stateFromMetadata(job);
    if (prev?.phase === 'resolved' && prev.outcome) {
      this.log.info('forward_recovered', { queue: q, id: job.jobId, note: 'outcome recorded before a restart; completing without sending again' });
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
      await this.resolve(job, prev?.attempts ?? 0, [], { rcpts: [], reason: 'no_recipients', reply: 'job has no rcpt_to metadata' }, null);
      this.log.warn('forward_attempt', { ...logBase, attempt: 0, result: 'deadletter', reply: 'no recipients in rcpt_to' });
      return;
    }
    if (prev && prev.attempts >= this.s.maxAttempts) {
      // The last allowed attempt was cut short (the relay died during it): no further one.
      await this.resolve(job, prev.attempts, [], { rcpts, reason: 'attempts_exhausted', reply: prev.lastReply }, null);
      this.log.warn('forward_attempt', { ...logBase, attempt: prev.attempts, result: 'deadletter', reply: prev.lastReply });
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
        await this.resolve(job, attempt, [], { rcpts, reason: 'attempts_exhausted', reply }, null);
        this.log.warn('forward_attempt', { ...logBase, attempt, result: 'deadletter', reason: 'attempts_exhausted', reply });
        return;
      }
      // A delivery cut off by stop() is not the MTA's doing: due again at once after the restart.
      const delay = this.stopped ? 0 : backoffMs(attempt, this.s.retryBaseMs, this.s.retryMaxMs);
      await this.saveState(job.jobId, { v: 1, phase: 'deferred', attempts: attempt, nextAttemptAt: Date.now() + delay, lastReply: reply });
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
    await this.resolve(job, attempt, delivered, dead, retry);
    const result = delivered.length === rcpts.length ? 'delivered' : delivered.length ? 'partial' : 'deadletter';
    this.log.info('forward_attempt', {
      ...logBase,
      attempt,
      result,
      reply: delivered.length === rcpts.length ? res.reply : joinReplies(res.recipients),
      delivered: delivered.length && delivered.length < rcpts.length ? delivered.join(',') : undefined,
    });
  }

  /** Records the outcome durably, then acts on it; from the record on, the MTA is never contacted for this job. */
  private async resolve(job: Job, attempts: number, delivered: string[], deadletter: FollowUp | null, retry: FollowUp | null): Promise<void> {
    const st: JobState = {
      v: 1,
      phase: 'resolved',
      attempts,
      nextAttemptAt: 0,
      lastReply: deadletter?.reply ?? retry?.reply ?? '',
      outcome: { delivered, deadletter, retry, followUpsDone: false },
    };
    await this.saveState(job.jobId, st);
    await this.relay.afterResolved?.(this.dest.queue, job.jobId);
    if (delivered.length) this.relay.metrics?.delivered.inc();
    if (deadletter) this.relay.metrics?.failed.inc();
    if (retry) this.relay.metrics?.deferred.inc();
    await this.complete(job, st);
  }

  /**
   * Enqueues the copies the outcome calls for, then finishes the job. A restart between a copy's commit and the
   * followUpsDone record enqueues that copy again: copies are duplicated, never lost.
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
      await this.saveState(job.jobId, { ...st, outcome: { ...out, followUpsDone: true } });
    }
    await job.finish();
    await this.dropState(job.jobId);
  }
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    // EPERM: the pid exists, owned by someone else.
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** A split retry carries its attempt count and due time in its metadata; the state file, once written, wins. */
function stateFromMetadata(job: Job): JobState | null {
  const attempts = Number(job.metadata['forward_attempts']);
  if (!Number.isInteger(attempts) || attempts <= 0) return null;
  const next = Number(job.metadata['forward_next_attempt']);
  return {
    v: 1,
    phase: 'deferred',
    attempts,
    nextAttemptAt: Number.isFinite(next) ? next * 1000 : 0,
    lastReply: job.metadata['forward_last_reply'] ?? '',
  };
}

export class ForwardRelay {
  readonly spoolDir: string;
  readonly store: RelayStateStore;
  readonly metrics: ForwardRelayOptions['metrics'];
  readonly afterResolved: ForwardRelayOptions['afterResolved'];
  private readonly s: Settings;
  private readonly log: Logger;
  private readonly onEnqueue: ForwardRelayOptions['onEnqueue'];
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
  destinations(): Destination[] {
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
  async deadLetter(job: Job, dest: Destination, f: FollowUp, attempts: number): Promise<void> {
    this.deadletterWriter ??= new DirQueueWriter(path.join(this.spoolDir, DEADLETTER_QUEUE), { fsync: true });
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
    const c = await this.deadletterWriter.enqueueStream(job.openStream(), sanitize(meta));
    this.onEnqueue?.(DEADLETTER_QUEUE, Date.now() / 1000);
    this.log.warn('forward_deadletter', { queue: dest.queue, id: job.jobId, deadletter_id: c.jobId, rcpts: meta['rcpt_to'], reason: f.reason, reply: meta['deadletter_reply'] });
  }

  /** @internal A new job in the same forward queue for recipients the MTA deferred while it took others. */
  async requeue(job: Job, dest: Destination, f: FollowUp, attempts: number, nextAttemptAt: number): Promise<void> {
    let w = this.requeueWriters.get(dest.queue);
    if (!w) {
      w = new DirQueueWriter(path.join(this.spoolDir, dest.queue), { fsync: true });
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
    const c = await w.enqueueStream(job.openStream(), sanitize(meta));
    this.onEnqueue?.(dest.queue, Date.now() / 1000);
    this.log.info('forward_split', { queue: dest.queue, id: job.jobId, new_id: c.jobId, rcpts: meta['rcpt_to'], reply: meta['forward_last_reply'] });
  }
}

/** Values read from a control file are already newline-free; keys that IPC::DirQueue would refuse are dropped. */
function sanitize(meta: Record<string, string>): Metadata {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(meta)) {
    if ((k.length === 4 && k.startsWith('Q')) || /[:\0\n]/.test(k)) continue;
    out[k] = v.replace(/[\0\n]/g, ' ');
  }
  return out;
}

export interface ReinjectOptions {
  /** Only dead letters whose deadletter_queue is this forward queue. */
  queue?: string;
  /** Only this dead-letter job. */
  jobId?: string;
  log?: Logger;
}

/**
 * Moves dead letters back into the forward queue they came from (deadletter_queue), with their original metadata and
 * a fresh attempt count; a running relay picks them up on its next poll. Each dead letter is taken with the
 * consumers' lock protocol and finished only after its copy is committed (fsync'd), so a crash in between leaves a
 * duplicate, never a loss. Dead letters without a usable deadletter_queue are left where they are. Returns the new
 * job ids.
 */
export async function reinjectDeadLetters(spoolDir: string, opts: ReinjectOptions = {}): Promise<string[]> {
  const spool = path.resolve(spoolDir);
  const dir = path.join(spool, DEADLETTER_QUEUE);
  const wanted = new Set<string>();
  await new DirQueueReader(dir).visitAll((job) => {
    const q = job.metadata['deadletter_queue'] ?? '';
    if (!destinationOfQueue(q)) {
      opts.log?.warn('reinject_skipped', { id: job.jobId, reason: `deadletter_queue ${JSON.stringify(q)} is not a forward queue` });
      return;
    }
    if ((opts.queue === undefined || opts.queue === q) && (opts.jobId === undefined || opts.jobId === job.jobId)) wanted.add(job.jobId);
  });
  const reader = new DueJobReader(dir, (msg) => opts.log?.warn('dirqueue', { queue: DEADLETTER_QUEUE, msg }), (id) => wanted.has(id));
  const writers = new Map<string, DirQueueWriter>();
  const out: string[] = [];
  for (let job = await reader.pickup(); job; job = await reader.pickup()) {
    wanted.delete(job.jobId);
    const q = job.metadata['deadletter_queue']!;
    let w = writers.get(q);
    if (!w) writers.set(q, (w = new DirQueueWriter(path.join(spool, q), { fsync: true })));
    const meta: Record<string, string> = {};
    for (const [k, v] of Object.entries(job.metadata)) if (!k.startsWith('deadletter_') && !k.startsWith('forward_')) meta[k] = v;
    try {
      const c = await w.enqueueStream(job.openStream(), sanitize(meta));
      out.push(c.jobId);
      opts.log?.info('reinjected', { id: job.jobId, queue: q, new_id: c.jobId, rcpts: meta['rcpt_to'] });
    } catch (err) {
      await job.returnToQueue();
      throw err;
    }
    await job.finish();
  }
  return out;
}
