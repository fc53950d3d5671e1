/**
 * Runs DirQueueWriter on a thread of its own, over synchronous file-system calls (sync-fs.ts), and hands its
 * PendingJobs to the event loop as messages. Per message the loop then pays a few message-port posts instead of
 * about ten libuv thread-pool round trips, and a slow disk stalls this thread, never the SMTP sessions.
 *
 * Ordering: the thread applies messages strictly in the order posted (one promise chain), so a job's writes land
 * in order and a reply (to a commit, an abort or a `ping`) proves everything posted before it written: that is
 * what the in-flight bound below counts on. Message bytes cross by transfer, never by clone.
 * A job's first error is latched in the thread (the writer has already removed the job's files) and reported at
 * commit, which is the only point where the SMTP session decides between 250 and 4xx anyway.
 *
 * A thread that dies is not replaced: its raw fds stay open in this process and its tmp files carry this (live)
 * pid, so no sweep could take them. Every call fails from then on and `onDeath` tells the owner, whose only sound
 * move is to stop the process (the acceptor drains and exits; the primary, which saw the exit, sweeps).
 */
import path from 'node:path';
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import type { Metadata } from './control';
import { failpoint } from '../failpoints';
import { syncBackedFs } from './sync-fs';
import { DirQueueWriter, type BeginOptions, type CommittedJob, type LastWrite, type PendingJob, type WriteOptions } from './writer';

const ROLE = 'spamtrapd-spool-writer';

/** How to start a job; it travels with the job's first write (or its commit), saving a post per message. */
interface BeginRequest {
  dir: string;
  hostname?: string;
  priority?: number;
  metadata?: Metadata;
}

type Request =
  | { op: 'write'; id: number; begin?: BeginRequest; chunk: Uint8Array }
  | { op: 'commit'; id: number; begin?: BeginRequest; metadata?: Metadata; chunk?: Uint8Array }
  | { op: 'abort'; id: number }
  | { op: 'ping'; id: number };

type Reply = { id: number; ok?: CommittedJob; error?: { message: string; code?: string } };

/** Anything that can start a queue job: the in-process writer or a queue served by the writer thread. */
export interface JobStarter {
  begin(opts?: BeginOptions): Promise<PendingJob>;
}

/**
 * Bytes posted to the thread and not yet proven written, past which writers wait (bounds memory under a storm).
 * A write is admitted only while it fits under the mark, or when nothing is in flight, so the bytes in flight per
 * acceptor never exceed max(HIGH_WATER_BYTES, the largest single write), however many sessions write at once.
 */
export const HIGH_WATER_BYTES = 8 * 1024 * 1024;

/** A request waiting for room under the high-water mark (requests are posted strictly in the order sent). */
interface Waiting {
  req: Request;
  bytes: number;
  transfer: ArrayBuffer | null;
  resolve: () => void;
  reject: (e: Error) => void;
}

export class SpoolWriterThread {
  private worker: Worker | null = null;
  private dead: Error | null = null;
  private closing = false;
  private nextId = 1;
  private readonly waiting = new Map<number, { resolve: (r: Reply) => void; reject: (e: Error) => void }>();
  /**
   * Running totals, never reset: bytes of writes posted, and of those the bytes a reply has proven written. The
   * thread applies requests in posting order, so a reply to a request proves every write posted before it.
   */
  private posted = 0;
  private acked = 0;
  /** For each request awaiting a reply: the posted total its reply will prove written. */
  private readonly covers = new Map<number, number>();
  private readonly backlog: Waiting[] = [];
  /** The id of the ping awaiting its reply, or 0. */
  private pingId = 0;

  constructor(private readonly onDeath: (err: Error) => void = () => undefined) {}

  /** A JobStarter for the queue in `dir`, served by this thread. */
  queue(dir: string, opts: { hostname?: string } = {}): JobStarter {
    const absolute = path.resolve(dir);
    return {
      begin: async (o: BeginOptions = {}) =>
        new ThreadJob(this, this.nextId++, { dir: absolute, hostname: opts.hostname, priority: o.priority, metadata: o.metadata }),
    };
  }

  /**
   * @internal Posts `req` once it fits under the high-water mark (carrying `bytes` of message, moved by transfer),
   * behind every request already waiting; resolves when posted.
   */
  send(req: Request, bytes = 0, transfer: ArrayBuffer | null = null): Promise<void> {
    if (this.dead) return Promise.reject(this.dead);
    if (this.backlog.length === 0 && this.fits(bytes)) {
      this.postNow(req, bytes, transfer);
      return Promise.resolve();
    }
    return new Promise((resolve, reject) => {
      this.backlog.push({ req, bytes, transfer, resolve, reject });
      this.ping();
    });
  }

  /** @internal Sends `req` (carrying `bytes` of message, moved by transfer) and resolves with the thread's reply. */
  call(req: Request, bytes = 0, transfer: ArrayBuffer | null = null): Promise<Reply> {
    return new Promise((resolve, reject) => {
      this.waiting.set(req.id, { resolve, reject });
      this.send(req, bytes, transfer).catch((e: Error) => {
        this.waiting.delete(req.id);
        reject(e);
      });
    });
  }

  async close(): Promise<void> {
    this.closing = true;
    // Nothing is answered after this: what still waits, and whatever is asked later, fails instead of hanging
    // (or of starting a new thread).
    this.dead ??= Object.assign(new Error('spool writer thread closed'), { code: 'EWRITERTHREAD' });
    const w = this.worker;
    this.worker = null;
    if (w) await w.terminate();
    for (const p of [...this.waiting.values()]) p.reject(this.dead);
    this.waiting.clear();
    for (const b of this.backlog.splice(0)) b.reject(this.dead);
  }

  private fits(bytes: number): boolean {
    const inFlight = this.posted - this.acked;
    return bytes === 0 || inFlight === 0 || inFlight + bytes <= HIGH_WATER_BYTES;
  }

  private postNow(req: Request, bytes: number, transfer: ArrayBuffer | null): void {
    const w = this.start();
    this.posted += bytes;
    if (req.op !== 'write') this.covers.set(req.id, this.posted);
    w.postMessage(req, transfer ? [transfer] : undefined);
    // Asking before the mark is reached keeps acknowledgements coming while writes continue.
    if (this.posted - this.acked > HIGH_WATER_BYTES / 2) this.ping();
  }

  /** One ping at a time; it goes out at once (it carries no bytes), its reply proves what was posted before it. */
  private ping(): void {
    if (this.pingId !== 0 || this.posted === this.acked) return;
    this.pingId = this.nextId++;
    this.postNow({ op: 'ping', id: this.pingId }, 0, null);
  }

  private onReply(r: Reply): void {
    const covered = this.covers.get(r.id);
    this.covers.delete(r.id);
    if (covered !== undefined && covered > this.acked) this.acked = covered;
    const p = this.waiting.get(r.id);
    this.waiting.delete(r.id);
    if (r.id === this.pingId) this.pingId = 0;
    // Admit what now fits, oldest first; ask again while anything still waits or the mark is half reached.
    while (this.backlog.length > 0 && this.fits(this.backlog[0].bytes)) {
      const next = this.backlog.shift() as Waiting;
      this.postNow(next.req, next.bytes, next.transfer);
      next.resolve();
    }
    if (this.backlog.length > 0 || this.posted - this.acked > HIGH_WATER_BYTES / 2) this.ping();
    p?.resolve(r);
  }

  private start(): Worker {
    if (this.dead) throw this.dead;
    if (this.worker) return this.worker;
    const w = new Worker(__filename, { workerData: { role: ROLE } });
    // The thread never keeps a process alive by itself: acceptors wait for their own commits before exiting.
    w.unref();
    w.on('message', (r: Reply) => this.onReply(r));
    const failAll = (err: Error) => {
      if (this.dead) return;
      const dead = Object.assign(new Error(`spool writer thread failed: ${err.message}`), { code: 'EWRITERTHREAD' });
      this.dead = dead;
      this.worker = null;
      // Whatever was posted to this thread is gone with it: nothing is in flight any more.
      this.acked = this.posted;
      this.covers.clear();
      this.pingId = 0;
      const pending = [...this.waiting.values()];
      this.waiting.clear();
      for (const p of pending) p.reject(dead);
      for (const b of this.backlog.splice(0)) b.reject(dead);
      this.onDeath(dead);
    };
    w.on('error', failAll);
    // close() terminates the thread on purpose: that exit is not a death.
    w.on('exit', (code) => {
      if (!this.closing) failAll(new Error(`exited with code ${code}`));
    });
    this.worker = w;
    return w;
  }
}

/** What may cross by transfer: the buffer itself when handed over and it owns its memory, else a copy of it. */
function movable(chunk: Buffer, opts?: WriteOptions): Buffer {
  return opts?.handOver && ownsItsMemory(chunk) ? chunk : copyOf(chunk);
}

function ownsItsMemory(b: Buffer): boolean {
  return b.buffer instanceof ArrayBuffer && b.byteOffset === 0 && b.byteLength === b.buffer.byteLength;
}

function copyOf(b: Buffer): Buffer {
  const c = Buffer.allocUnsafeSlow(b.length);
  b.copy(c);
  return c;
}

function toError(e: { message: string; code?: string }): Error {
  return Object.assign(new Error(e.message), e.code ? { code: e.code } : {});
}

class ThreadJob implements PendingJob {
  private size = 0;
  private settled = false;

  constructor(
    private readonly t: SpoolWriterThread,
    private readonly id: number,
    /** Sent with the first message of this job, then dropped. */
    private begin: BeginRequest | undefined,
  ) {}

  private takeBegin(): BeginRequest | undefined {
    const b = this.begin;
    this.begin = undefined;
    return b;
  }

  get bytes(): number {
    return this.size;
  }

  /**
   * Posts exactly the message bytes, moved by transfer: a buffer handed over that owns its whole ArrayBuffer goes
   * as it is, anything else as a copy made now (a view posted as is would clone its whole backing buffer).
   */
  write(chunk: Buffer, opts?: WriteOptions): Promise<void> {
    if (this.settled) return Promise.reject(new Error('PendingJob is already committed or aborted'));
    this.size += chunk.length;
    const own = movable(chunk, opts);
    return this.t.send({ op: 'write', id: this.id, begin: this.takeBegin(), chunk: own }, own.length, own.buffer as ArrayBuffer);
  }

  /** A message that fits one block (most spam) crosses to the thread once: begin, bytes and commit in one post. */
  async commit(metadata?: Metadata, last?: LastWrite): Promise<CommittedJob> {
    if (this.settled) throw new Error('PendingJob is already committed or aborted');
    this.settled = true;
    const own = last && last.chunk.length > 0 ? movable(last.chunk, last) : null;
    if (own) this.size += own.length;
    const req: Request = { op: 'commit', id: this.id, begin: this.takeBegin(), metadata, ...(own ? { chunk: own } : {}) };
    const r = await this.t.call(req, own?.length ?? 0, (own?.buffer as ArrayBuffer | undefined) ?? null);
    if (r.error) throw toError(r.error);
    return r.ok as CommittedJob;
  }

  async abort(): Promise<void> {
    if (this.settled) return;
    this.settled = true;
    // A job that never posted anything has nothing in the thread to remove.
    if (this.takeBegin()) return;
    await this.t.call({ op: 'abort', id: this.id }).catch(() => undefined);
  }
}

/** The thread side: one writer per queue directory, every call applied in posting order. */
function serve(): void {
  const port = parentPort!;
  const writers = new Map<string, DirQueueWriter>();
  const jobs = new Map<number, { job: PendingJob | null; error: Error | null }>();
  const errorOf = (e: unknown) => ({ message: (e as Error).message, code: (e as NodeJS.ErrnoException).code });

  const start = async (id: number, b: BeginRequest): Promise<void> => {
    let w = writers.get(b.dir);
    if (!w) {
      w = new DirQueueWriter(b.dir, { fs: syncBackedFs, hostname: b.hostname });
      writers.set(b.dir, w);
    }
    try {
      jobs.set(id, { job: await w.begin({ priority: b.priority, metadata: b.metadata }), error: null });
    } catch (e) {
      jobs.set(id, { job: null, error: e as Error });
    }
  };

  const handle = async (m: Request): Promise<void> => {
    if ((m.op === 'write' || m.op === 'commit') && m.begin) await start(m.id, m.begin);
    switch (m.op) {
      case 'write': {
        const s = jobs.get(m.id);
        if (!s?.job || s.error) return;
        try {
          await s.job.write(Buffer.from(m.chunk.buffer, m.chunk.byteOffset, m.chunk.byteLength));
        } catch (e) {
          s.error = e as Error;
        }
        return;
      }
      case 'commit': {
        const s = jobs.get(m.id);
        jobs.delete(m.id);
        if (!s || s.error || !s.job) {
          port.postMessage({ id: m.id, error: errorOf(s?.error ?? new Error('unknown job')) } satisfies Reply);
          return;
        }
        try {
          const last = m.chunk ? { chunk: Buffer.from(m.chunk.buffer, m.chunk.byteOffset, m.chunk.byteLength) } : undefined;
          port.postMessage({ id: m.id, ok: await s.job.commit(m.metadata, last) } satisfies Reply);
        } catch (e) {
          port.postMessage({ id: m.id, error: errorOf(e) } satisfies Reply);
        }
        return;
      }
      case 'abort': {
        const s = jobs.get(m.id);
        jobs.delete(m.id);
        await s?.job?.abort().catch(() => undefined);
        port.postMessage({ id: m.id } satisfies Reply);
        return;
      }
      case 'ping':
        port.postMessage({ id: m.id } satisfies Reply);
        return;
    }
  };

  const dieOn = failpoint('writer-thread-exit-on');
  let tail: Promise<void> = Promise.resolve();
  port.on('message', (m: Request) => {
    const chunk = m.op === 'write' || m.op === 'commit' ? m.chunk : undefined;
    if (dieOn && chunk && Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength).includes(dieOn)) process.exit(1);
    // Whatever goes wrong with one message must neither wedge the chain for every later one nor leave a caller
    // waiting for a reply that never comes.
    tail = tail.then(() => handle(m)).catch((e: unknown) => {
      jobs.delete(m.id);
      if (m.op !== 'write') port.postMessage({ id: m.id, error: errorOf(e) } satisfies Reply);
    });
  });
}

if (!isMainThread && (workerData as { role?: string } | null)?.role === ROLE) serve();
