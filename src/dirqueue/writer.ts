/**
 * Longer than ~400 lines on purpose: the enqueue sequence and its clean-up after a failure at every step are one
 * state machine (open, committing, committed, failed), and reading them apart would hide what a crash leaves.
 *
 * Enqueues jobs in IPC::DirQueue 1.1 format (docs/dirqueue.md#the-enqueue-sequence) so Perl consumers can take them
 * while we write.
 *
 * Tmp names are `tmp/NAME0.spamtrapd.HOST.PIDsSTART.SEQ.data|ctrl` (see names.ts). Both stay in tmp/ until the control file
 * is linked into queue/; then the data name goes first and the ctrl name second, which is what lets sweepTmp() tell
 * a committed job from an orphaned data file after a crash at any step.
 */
import * as fsp from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { randomInt } from 'node:crypto';
import { Readable } from 'node:stream';
import { finished } from 'node:stream/promises';
import { ownStartTicks } from '../pid';
import { Metadata, serializeControl, validateMetadata } from './control';
import { Clock, dataLocation, dirqueueHash, name0, retryName, tmpWriterPart, checkPriority } from './names';

/** The file-system calls the writer makes, injectable so tests can make any one of them fail. */
export type DirQueueFs = Pick<typeof fsp, 'open' | 'link' | 'unlink' | 'mkdir' | 'lstat'>;

export interface DirQueueWriterOptions {
  hostname?: string;
  /** fsync data file, control file, data/H1/H2/ and queue/ before a job counts as committed. */
  fsync?: boolean;
  fs?: DirQueueFs;
  now?: () => Clock;
  /**
   * The pid that goes into HASH and into `.PID.RAND` retry names; default process.pid (IPC::DirQueue reads $$ at
   * every enqueue, but a Node process never changes its pid). Tests set it to reproduce
   * docs/dirqueue.md#a-worked-example. Tmp names always carry the real pid and its start time, which the sweep
   * checks.
   */
  pid?: number;
}

export interface BeginOptions {
  priority?: number;
  /** Known before DATA in practice; validated now so a bad key fails before any byte is written. */
  metadata?: Metadata;
}

export interface CommittedJob {
  jobId: string;
  dataPath: string;
  queuePath: string;
  size: number;
}

export interface WriteOptions {
  /**
   * The caller never touches the buffer again: a writer on another thread may take it (transfer) instead of
   * copying it. The in-process writer ignores it.
   */
  handOver?: boolean;
}

/** The message's last bytes, written as part of the commit (for the writer thread: one hop instead of two). */
export interface LastWrite extends WriteOptions {
  chunk: Buffer;
}

export interface PendingJob {
  write(chunk: Buffer, opts?: WriteOptions): Promise<void>;
  /** Uses the metadata given to begin() when called without any; writes `last` first when given. */
  commit(metadata?: Metadata, last?: LastWrite): Promise<CommittedJob>;
  abort(): Promise<void>;
  readonly bytes: number;
}

const FILE_MODE = 0o666;
const DIR_MODE = 0o777;
const LINK_ATTEMPTS = 10;

let lastMicros = 0n;
let offsetMicros: bigint | null = null;

/**
 * Wall clock in microseconds. Date.now() has only milliseconds, so the monotonic clock supplies the rest and is
 * re-anchored whenever it drifts a millisecond from the wall clock (NTP steps). Readings are strictly increasing
 * within a process, so one process never produces the same NAME0 twice.
 */
export function wallClockMicros(): Clock {
  const mono = process.hrtime.bigint() / 1000n;
  const wallMs = BigInt(Date.now());
  if (offsetMicros === null || (mono + offsetMicros) / 1000n - wallMs > 1n || wallMs - (mono + offsetMicros) / 1000n > 1n) {
    offsetMicros = wallMs * 1000n - mono;
  }
  let us = mono + offsetMicros;
  if (us <= lastMicros) us = lastMicros + 1n;
  lastMicros = us;
  return { sec: Number(us / 1000000n), usec: Number(us % 1000000n) };
}

function errCode(e: unknown): string | undefined {
  return (e as NodeJS.ErrnoException | null)?.code;
}

const sleepMicros = (us: number) => new Promise<void>((r) => setTimeout(r, us / 1000));

let tmpSeq = 0;

export class DirQueueWriter {
  readonly dir: string;
  readonly hostname: string;
  readonly fsync: boolean;
  private readonly fs: DirQueueFs;
  private readonly now: () => Clock;
  private readonly pid: number;
  /** Per-job strings that never change for this writer, made once (a trap writes thousands of jobs a second). */
  private readonly hash: string;
  private readonly tmpPrefix: string;
  private readonly tmpWriter: string;
  readonly queueDir: string;
  private readonly dataDirs = new Map<string, string>();

  constructor(dir: string, opts: DirQueueWriterOptions = {}) {
    // QDFN must be absolute and valid for consumers whatever our cwd does later.
    this.dir = path.resolve(dir);
    this.hostname = opts.hostname ?? os.hostname();
    this.fsync = opts.fsync ?? false;
    this.fs = opts.fs ?? fsp;
    this.now = opts.now ?? wallClockMicros;
    this.pid = opts.pid ?? process.pid;
    if (/[\0\n]/.test(this.dir) || /[\0\n]/.test(this.hostname)) {
      throw new Error('queue directory and host name must not contain NUL or newline (they go into control files)');
    }
    this.hash = dirqueueHash(this.hostname, this.pid);
    this.tmpPrefix = path.join(this.dir, 'tmp') + '/';
    this.tmpWriter = tmpWriterPart(this.hostname, process.pid, ownStartTicks() ?? undefined);
    this.queueDir = path.join(this.dir, 'queue');
  }

  /** data/H1/H2 of a job name: 4096 of them at most per queue. */
  dataDir(h1: string, h2: string): string {
    const key = h1 + h2;
    let d = this.dataDirs.get(key);
    if (d === undefined) this.dataDirs.set(key, (d = path.join(this.dir, 'data', h1, h2)));
    return d;
  }

  async begin(opts: BeginOptions = {}): Promise<PendingJob> {
    const priority = opts.priority ?? 50;
    checkPriority(priority);
    if (opts.metadata) validateMetadata(opts.metadata);
    const clock = this.now();
    const base = name0(priority, clock, this.hash);
    const tmp = `${this.tmpPrefix}${base}${this.tmpWriter}${++tmpSeq}.`;
    const job = new Job(this, { base, clock, pid: this.pid, metadata: opts.metadata, tmpData: tmp + 'data', tmpCtrl: tmp + 'ctrl' });
    await job.open();
    return job;
  }

  /**
   * begin + write every chunk (one at a time, never buffering the message) + commit; removes everything on error.
   * A Readable it is given is closed (and its close awaited) whenever this fails, begin() included.
   */
  async enqueueStream(
    stream: AsyncIterable<Buffer | string> | Iterable<Buffer | string> | Readable,
    metadata: Metadata,
    opts: { priority?: number } = {},
  ): Promise<CommittedJob> {
    let job: PendingJob | null = null;
    try {
      job = await this.begin({ ...opts, metadata });
      for await (const chunk of stream as AsyncIterable<Buffer | string> | Iterable<Buffer | string>) {
        await job.write(typeof chunk === 'string' ? Buffer.from(chunk, 'utf8') : chunk);
      }
      return await job.commit(metadata);
    } catch (e) {
      await job?.abort();
      await release(stream);
      throw e;
    }
  }

  /** @internal */ get fsImpl(): DirQueueFs {
    return this.fs;
  }

  /** Creates `dir` and, with fsync on, makes every directory entry it created durable. */
  async makeDir(dir: string): Promise<void> {
    const first = await this.fs.mkdir(dir, { recursive: true, mode: DIR_MODE });
    if (!this.fsync || first === undefined) return;
    for (let d = dir; ; d = path.dirname(d)) {
      await this.syncDir(path.dirname(d));
      if (d === first || path.dirname(d) === d) break;
    }
  }

  async syncDir(dir: string): Promise<void> {
    const h = await this.fs.open(dir, 'r');
    try {
      await h.sync();
    } finally {
      await h.close();
    }
  }

  /**
   * link(2) with IPC::DirQueue's collision rule: on EEXIST retry as BASE.PID.RAND, sleeping 250*n µs, 10 tries.
   * Directories are made only when link says ENOENT, so the steady state costs no mkdir/stat round trip. Errors
   * other than EEXIST fail at once: retrying EIO or EACCES under new names only delays the same failure.
   */
  async linkInto(src: string, dir: string, first: string, base: string, pid: number): Promise<string> {
    let name = first;
    let madeDir = false;
    for (let attempt = 1; ; attempt++) {
      // dir is absolute and normalised, name a plain job name: no path.join per job.
      const dest = `${dir}/${name}`;
      try {
        await this.fs.link(src, dest);
        return dest;
      } catch (e) {
        if (errCode(e) === 'ENOENT' && !madeDir) {
          madeDir = true;
          await this.makeDir(dir);
          attempt--;
          continue;
        }
        // link() can report failure after it worked (NFS); the source's link count is the truth.
        const st = await this.fs.lstat(src).catch(() => null);
        if (st && st.nlink === 2) return dest;
        if (errCode(e) !== 'EEXIST' || attempt >= LINK_ATTEMPTS) throw e;
        name = retryName(base, pid, randomInt(65536));
        await sleepMicros(250 * attempt);
      }
    }
  }
}

interface JobInit {
  base: string;
  clock: Clock;
  pid: number;
  metadata: Metadata | undefined;
  tmpData: string;
  tmpCtrl: string;
}

type State = 'open' | 'committing' | 'committed' | 'failed';

class Job implements PendingJob {
  private fh: fsp.FileHandle | null = null;
  private size = 0;
  private state: State = 'open';
  private writing = false;
  private dataLink: string | null = null;
  private ctrlCreated = false;
  private queueLink: string | null = null;

  constructor(
    private readonly w: DirQueueWriter,
    private readonly j: JobInit,
  ) {}

  get bytes(): number {
    return this.size;
  }

  /** @internal O_EXCL: a name we did not create is never written into. */
  async open(): Promise<void> {
    try {
      this.fh = await this.w.fsImpl.open(this.j.tmpData, 'wx', FILE_MODE);
    } catch (e) {
      if (errCode(e) !== 'ENOENT') throw e;
      await this.w.makeDir(path.dirname(this.j.tmpData));
      this.fh = await this.w.fsImpl.open(this.j.tmpData, 'wx', FILE_MODE);
    }
  }

  async write(chunk: Buffer): Promise<void> {
    this.expect('open');
    if (this.writing) throw new Error('PendingJob.write: the previous write has not finished (one write at a time)');
    this.writing = true;
    try {
      const fh = this.fh as fsp.FileHandle;
      for (let off = 0; off < chunk.length; ) {
        const { bytesWritten } = await fh.write(chunk, off, chunk.length - off);
        off += bytesWritten;
        this.size += bytesWritten;
      }
    } catch (e) {
      await this.fail();
      throw e;
    } finally {
      this.writing = false;
    }
  }

  async commit(metadata?: Metadata, last?: LastWrite): Promise<CommittedJob> {
    if (last && last.chunk.length > 0) await this.write(last.chunk);
    this.expect('open');
    if (this.writing) throw new Error('PendingJob.commit: a write is still in flight');
    const meta = metadata ?? this.j.metadata ?? {};
    try {
      // begin() already validated its metadata; only metadata new at commit needs checking.
      if (metadata !== undefined) validateMetadata(meta);
    } catch (e) {
      await this.fail();
      throw e;
    }
    this.state = 'committing';
    try {
      const committed = await this.linkAll(meta);
      this.state = 'committed';
      await this.tidyAfterCommit();
      return committed;
    } catch (e) {
      if (this.queueLink) {
        // The control file is in queue/ (only syncing queue/ failed after the link): consumers may hold the job
        // already, so it stays, and the caller learns it was not made durable (jobVisible).
        this.state = 'committed';
        await this.tidyAfterCommit();
        throw Object.assign(e as Error, { jobVisible: path.basename(this.queueLink) });
      }
      await this.fail();
      throw e;
    }
  }

  async abort(): Promise<void> {
    if (this.state === 'committed' || this.state === 'failed') return;
    await this.fail();
  }

  private expect(state: State): void {
    if (this.state !== state) throw new Error(`PendingJob is ${this.state}, not ${state}`);
  }

  /**
   * Data complete and linked before the control file exists; control file linked last
   * (docs/dirqueue.md#the-enqueue-sequence).
   */
  private async linkAll(meta: Metadata): Promise<CommittedJob> {
    const { w, j } = this;
    const fh = this.fh as fsp.FileHandle;
    if (w.fsync) await fh.sync();
    this.fh = null;
    await fh.close();

    const loc = dataLocation(j.base);
    const dataDir = w.dataDir(loc.h1, loc.h2);
    this.dataLink = await w.linkInto(j.tmpData, dataDir, loc.dname, j.base, j.pid);

    const ctrl = serializeControl(
      { dataPath: this.dataLink, size: this.size, sec: j.clock.sec, usec: j.clock.usec, hostname: w.hostname },
      meta,
    );
    await settleAll([this.writeControl(ctrl), w.fsync ? w.syncDir(dataDir) : Promise.resolve()]);

    const queueDir = w.queueDir;
    this.queueLink = await w.linkInto(j.tmpCtrl, queueDir, j.base, j.base, j.pid);
    if (w.fsync) await w.syncDir(queueDir);
    return { jobId: path.basename(this.queueLink), dataPath: this.dataLink, queuePath: this.queueLink, size: this.size };
  }

  /** One open + write + close (+ fsync); the name is O_EXCL like every tmp file. */
  private async writeControl(ctrl: Buffer): Promise<void> {
    const h = await this.w.fsImpl.open(this.j.tmpCtrl, 'wx', FILE_MODE);
    this.ctrlCreated = true;
    try {
      // A nearly full disk can take part of a write without an error; a cut control file must never be linked.
      for (let off = 0; off < ctrl.length; ) off += (await h.write(ctrl, off, ctrl.length - off)).bytesWritten;
      if (this.w.fsync) await h.sync();
    } finally {
      await h.close();
    }
  }

  /**
   * The job is complete and visible: failures from here on must not take it back (a consumer may hold it already).
   * A tmp name that cannot be removed stays for the sweep; the ctrl name is kept whenever the data name is, so the
   * sweep still reads the pair as committed. queue/ is not touched with utime as IPC::DirQueue does: the link into it
   * has just set its mtime to now, which is all that pollers (wait_for_queued_job) look at.
   */
  private async tidyAfterCommit(): Promise<void> {
    const { fsImpl } = this.w;
    try {
      await fsImpl.unlink(this.j.tmpData);
      await fsImpl.unlink(this.j.tmpCtrl);
    } catch {
      // left for the sweep
    }
  }

  /** Removes every file of this job, queue/ first so it stops being visible, the tmp data name last. */
  private async fail(): Promise<void> {
    this.state = 'failed';
    const { fsImpl } = this.w;
    const fh = this.fh;
    this.fh = null;
    if (fh) await fh.close().catch(() => undefined);
    const rm = (p: string) =>
      fsImpl.unlink(p).then(
        () => true,
        (e) => errCode(e) === 'ENOENT',
      );
    if (this.queueLink) await rm(this.queueLink);
    if (this.ctrlCreated) await rm(this.j.tmpCtrl);
    // If the data link survives, the tmp data name is what lets the sweep find and remove it later.
    const dataGone = this.dataLink ? await rm(this.dataLink) : true;
    if (dataGone) await rm(this.j.tmpData);
  }
}

/**
 * Closes a stream enqueueStream() gives up on. An fs.ReadStream opens its file as it is created, so one handed to a
 * job that never began (ENOSPC, EACCES, EMFILE) would hold its descriptor until the process exits; a caller that
 * retries such an enqueue would run out of descriptors. Other iterables hold nothing before they are iterated.
 */
async function release(source: unknown): Promise<void> {
  if (!(source instanceof Readable)) return;
  source.destroy();
  // Resolves once the descriptor is closed; rejects with the premature close (or the stream's own error), which
  // changes nothing here.
  await finished(source).catch(() => undefined);
}

/** Waits for every promise (so cleanup never races a still-running step), then throws the first failure. */
async function settleAll(ps: Promise<unknown>[]): Promise<void> {
  const rs = await Promise.allSettled(ps);
  for (const r of rs) if (r.status === 'rejected') throw r.reason;
}
