/**
 * Reads and consumes IPC::DirQueue 1.1 queues with the same lock protocol as Perl's pickup_queued_job, so Node and
 * Perl consumers can work one queue together: docs/dirqueue.md#pickup-and-locks, docs/dirqueue.md#finishing-a-job,
 * docs/dirqueue.md#visit_all_jobs.
 */
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { randomInt } from 'node:crypto';
import { parseControl, ParsedControl } from './control';
import { dirNameBatches } from './dir-stream';
import { isJobName, sortNames } from './names';
import { sortedNames } from './sorted-names';

/** IPC::DirQueue's active_file_lifetime. */
export const ACTIVE_FILE_LIFETIME_S = 600;

/** pickup() rarely needs more than the first few names: a small page keeps its one pass light. */
const PICKUP_PAGE_SIZE = 1024;
/** A walk of every job costs jobs / page passes over queue/; 16384 names (~1.5 MB) make 1M jobs 62 passes. */
const VISIT_PAGE_SIZE = 16384;

export interface DirQueueReaderOptions {
  hostname?: string;
  /** Where IPC::DirQueue would `warn`; defaults to process.emitWarning. */
  warn?: (msg: string) => void;
  /**
   * Jobs pickup() may take (and list() reports): names it refuses are passed over while queue/ is streamed, without
   * a lock or a read, and take no room in the page of names kept. The relay uses it for jobs still backing off.
   */
  eligible?: (name: string) => boolean;
}

export interface VisitOptions {
  /** false: directory order, one pass over queue/ (for totals that need no order). Default true: byte order. */
  ordered?: boolean;
  /** Stop after this many jobs were visited; an ordered walk then keeps only about that many names. */
  limit?: number;
}

export interface QueueStats {
  jobs: number;
  bytes: number;
  /** Age of the oldest job by its QSTT/QSTM, null for an empty queue. */
  oldestSeconds: number | null;
}

function errCode(e: unknown): string | undefined {
  return (e as NodeJS.ErrnoException | null)?.code;
}

async function isFile(p: string): Promise<boolean> {
  try {
    return (await fsp.stat(p)).isFile();
  } catch {
    return false;
  }
}

async function readIfExists(p: string): Promise<Buffer | null> {
  try {
    return await fsp.readFile(p);
  } catch (e) {
    if (errCode(e) === 'ENOENT') return null;
    throw e;
  }
}

/** Perl's kill(0, PID): true only when the signal could be sent; EPERM counts as a dead owner, as in Perl. */
export function perlKillZero(pidText: string): boolean {
  // Perl reads "12abc" as 12 and "" as 0; kill(0, 0) probes our own process group and succeeds.
  const m = /^\s*([+-]?\d+)/.exec(pidText);
  const pid = m ? Number(m[1]) : 0;
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

function chompLine(s: string | undefined): string {
  return (s ?? '').replace(/\n$/, '');
}

export class Job {
  readonly jobId: string;
  readonly queuePath: string;
  readonly activePath: string;
  readonly dataPath: string;
  readonly size: number;
  readonly submittedSecs: number;
  readonly submittedUsecs: number;
  readonly hostname: string;
  readonly metadata: Record<string, string>;
  readonly rawMetadata: Map<string, Buffer>;
  /** Only for jobs from visitAll(): who holds the active/ lock, if anyone. */
  readonly activeHost: string | null;
  readonly activePid: string | null;
  /** visitAll() jobs: finish() and returnToQueue() do nothing, as in IPC::DirQueue. */
  readonly readOnly: boolean;

  constructor(
    init: { jobId: string; queuePath: string; activePath: string; readOnly: boolean; activeHost?: string | null; activePid?: string | null },
    parsed: ParsedControl,
    private readonly warn: (msg: string) => void,
  ) {
    this.jobId = init.jobId;
    this.queuePath = init.queuePath;
    this.activePath = init.activePath;
    this.readOnly = init.readOnly;
    this.activeHost = init.activeHost ?? null;
    this.activePid = init.activePid ?? null;
    const f = parsed.fields;
    this.dataPath = f['QDFN'] ?? '';
    this.size = Number(f['QDSB'] ?? NaN);
    this.submittedSecs = Number(f['QSTT'] ?? NaN);
    this.submittedUsecs = Number(f['QSTM'] ?? NaN);
    this.hostname = f['QSHN'] ?? '';
    this.metadata = parsed.metadata;
    this.rawMetadata = parsed.rawMetadata;
  }

  readData(): Promise<Buffer> {
    return fsp.readFile(this.dataPath);
  }

  openStream(): fs.ReadStream {
    return fs.createReadStream(this.dataPath);
  }

  /** Job.pm's finish: queue file, then data file, then the lock; each failure is a warning, not an exception. */
  async finish(): Promise<void> {
    if (this.readOnly) return;
    for (const p of [this.queuePath, this.dataPath, this.activePath]) {
      await fsp.unlink(p).catch((e: unknown) => this.warn(`IPC::DirQueue: unlink failed: ${p}: ${errCode(e) ?? e}`));
    }
  }

  /** The job is at once available again under the same name. */
  async returnToQueue(): Promise<void> {
    if (this.readOnly) return;
    await fsp.unlink(this.activePath).catch((e: unknown) => this.warn(`IPC::DirQueue: unlink failed: ${this.activePath}: ${errCode(e) ?? e}`));
  }

  /** Restarts the 600 s after which other consumers may consider the lock stale. */
  async touchActiveLock(): Promise<void> {
    const now = new Date();
    await fsp.utimes(this.activePath, now, now);
  }
}

export class DirQueueReader {
  readonly dir: string;
  readonly hostname: string;
  private readonly warn: (msg: string) => void;
  private readonly pickable: (name: string) => boolean;
  private readonly ensured = new Set<string>();

  constructor(dir: string, opts: DirQueueReaderOptions = {}) {
    // Kept as given, like IPC::DirQueue: only QDFN (written by the writer) has to be absolute.
    this.dir = dir;
    this.hostname = opts.hostname ?? os.hostname();
    this.warn = opts.warn ?? ((msg) => process.emitWarning(msg, 'DirQueueWarning'));
    const eligible = opts.eligible;
    this.pickable = eligible ? (name) => isJobName(name) && eligible(name) : isJobName;
  }

  private sub(name: 'queue' | 'active' | 'tmp'): string {
    return path.join(this.dir, name);
  }

  /**
   * Job names in pickup order (byte order; entries not starting with a digit are not jobs), all in one array: for
   * small queues and tests. pickup(), visitAll() and stats() stream queue/ instead and hold a bounded page of names.
   */
  async list(): Promise<string[]> {
    const names: string[] = [];
    for await (const batch of dirNameBatches(this.sub('queue'))) {
      for (const name of batch) if (this.pickable(name)) names.push(name);
    }
    return sortNames(names);
  }

  /**
   * Counts jobs in queue/ (active ones included) and sums their QDSB. Cost: one streamed pass plus one read of every
   * control file, so O(jobs) file opens: meant for occasional checks, not for every metrics scrape.
   */
  async stats(): Promise<QueueStats> {
    const out: QueueStats = { jobs: 0, bytes: 0, oldestSeconds: null };
    let oldest = Infinity;
    for await (const batch of dirNameBatches(this.sub('queue'))) {
      for (const name of batch) {
        if (!isJobName(name)) continue;
        const buf = await readIfExists(path.join(this.sub('queue'), name));
        if (!buf) continue;
        const f = parseControl(buf).fields;
        out.jobs++;
        const size = Number(f['QDSB']);
        if (Number.isFinite(size)) out.bytes += size;
        const t = Number(f['QSTT']) + Number(f['QSTM'] ?? 0) / 1e6;
        if (Number.isFinite(t)) oldest = Math.min(oldest, t);
      }
    }
    if (oldest !== Infinity) out.oldestSeconds = Math.max(0, Date.now() / 1000 - oldest);
    return out;
  }

  /**
   * visit_all_jobs: no locking; jobs whose data file is missing are skipped with IPC::DirQueue's warning. Byte order
   * unless told otherwise; memory stays bounded however many jobs there are.
   */
  async visitAll(cb: (job: Job) => void | Promise<void>, opts: VisitOptions = {}): Promise<void> {
    const limit = opts.limit ?? Infinity;
    if (limit <= 0) return;
    let visited = 0;
    for await (const name of this.visitOrder(opts.ordered ?? true, limit)) {
      const job = await this.readJob(name);
      if (!job) continue;
      await cb(job);
      if (++visited >= limit) return;
    }
  }

  /**
   * One job as visitAll() would hand it over (read-only, with its active/ lock owner), or null when `name` is not a
   * queued job or its data file is missing (warned, as visit_all_jobs does).
   */
  async readJob(name: string): Promise<Job | null> {
    // Names come from users too (the queue CLI's show): nothing but a plain entry of queue/ is looked up.
    if (!isJobName(name) || name.includes('/') || name.includes('\0')) return null;
    const queuePath = path.join(this.sub('queue'), name);
    if (!(await isFile(queuePath))) return null;
    const activePath = path.join(this.sub('active'), name);
    const lock = (await readIfExists(activePath).catch(() => null))?.toString('utf8').split('\n');
    const buf = await readIfExists(queuePath);
    if (!buf) return null;
    const parsed = parseControl(buf);
    if (!(await this.dataUsable(parsed))) {
      this.warn(`IPC::DirQueue: cannot read control file: ${queuePath}`);
      return null;
    }
    return new Job(
      { jobId: name, queuePath, activePath, readOnly: true, activeHost: lock ? chompLine(lock[0]) : null, activePid: lock ? chompLine(lock[1]) : null },
      parsed,
      this.warn,
    );
  }

  private async *visitOrder(ordered: boolean, limit: number): AsyncGenerator<string, void, undefined> {
    if (ordered) {
      // A few more than the limit, so that a job or two skipped for a missing data file needs no second pass.
      const pageSize = Math.min(VISIT_PAGE_SIZE, limit + 16);
      yield* sortedNames(this.sub('queue'), { pageSize, filter: isJobName });
      return;
    }
    for await (const batch of dirNameBatches(this.sub('queue'))) {
      for (const name of batch) if (isJobName(name)) yield name;
    }
  }

  /** pickup_queued_job: the first job in order that nobody holds, locked through active/NAME; null when none. */
  async pickup(): Promise<Job | null> {
    await this.ensureDir(this.sub('active'));
    for await (const name of this.pickupOrder()) {
      const job = await this.tryPickup(name);
      if (job) return job;
    }
    return null;
  }

  private pickupOrder(): AsyncIterable<string> {
    return sortedNames(this.sub('queue'), { pageSize: PICKUP_PAGE_SIZE, filter: this.pickable });
  }

  private async ensureDir(dir: string): Promise<void> {
    if (this.ensured.has(dir)) return;
    await fsp.mkdir(dir, { recursive: true, mode: 0o777 });
    this.ensured.add(dir);
  }

  private async dataUsable(parsed: ParsedControl): Promise<boolean> {
    const qdfn = parsed.fields['QDFN'];
    return !!qdfn && (await isFile(qdfn));
  }

  /**
   * Step 1 of docs/dirqueue.md#pickup-and-locks: may we go on with NAME given an existing active/ lock? Breaks the
   * lock when its owner is provably gone.
   */
  private async lockAllowsPickup(activePath: string): Promise<boolean> {
    let st: fs.Stats;
    try {
      st = await fsp.lstat(activePath);
    } catch {
      return true;
    }
    const age = Date.now() / 1000 - Math.floor(st.mtimeMs / 1000);
    if (age < ACTIVE_FILE_LIFETIME_S) return false;
    if (await this.ownerStillWorking(activePath)) return false;
    // The random fudge keeps two consumers from both breaking a lock and the second removing the first's new one.
    if (age < ACTIVE_FILE_LIFETIME_S + randomInt(256)) return false;
    await fsp.unlink(activePath).catch(() => this.warn(`IPC::DirQueue: unlink failed: ${activePath}`));
    this.warn(`IPC::DirQueue: killed stale lockfile: ${activePath}`);
    return true;
  }

  /** An unreadable lock means a dead owner; a lock from another host is never ours to judge. */
  private async ownerStillWorking(activePath: string): Promise<boolean> {
    let text: string;
    try {
      text = (await fsp.readFile(activePath)).toString('utf8');
    } catch {
      return false;
    }
    const [host, pid] = text.split('\n');
    if ((host ?? '') !== this.hostname) return true;
    return perlKillZero(pid ?? '');
  }

  private async tryPickup(name: string): Promise<Job | null> {
    const queuePath = path.join(this.sub('queue'), name);
    const activePath = path.join(this.sub('active'), name);
    if (!(await this.lockAllowsPickup(activePath))) return null;

    await this.ensureDir(this.sub('tmp'));
    const tmpLock = path.join(this.sub('tmp'), `${name}.${Math.floor(Date.now() / 1000)}.${this.hostname}.${process.pid}.active`);
    try {
      await fsp.writeFile(tmpLock, `${this.hostname}\n${process.pid}\n`, { flag: 'wx', mode: 0o666 });
    } catch (e) {
      if (errCode(e) !== 'EEXIST') this.warn(`IPC::DirQueue: cannot open ${tmpLock} for write: ${errCode(e) ?? e}`);
      return null;
    }
    const dropTmp = () => fsp.unlink(tmpLock).catch(() => this.warn(`IPC::DirQueue: unlink failed: ${tmpLock}`));

    if (!(await isFile(queuePath)) || !(await this.linkLock(tmpLock, activePath))) {
      await dropTmp();
      return null;
    }
    await dropTmp();

    const buf = await readIfExists(queuePath).catch(() => null);
    if (!buf) {
      // Another consumer finished the job between our listing and our lock.
      await fsp.unlink(activePath).catch(() => undefined);
      return null;
    }
    const parsed = parseControl(buf);
    // IPC::DirQueue keeps its lock here: the job stays untaken while this process lives.
    if (!(await this.dataUsable(parsed))) return null;
    return new Job({ jobId: name, queuePath, activePath, readOnly: false }, parsed, this.warn);
  }

  /** link_into_dir_no_retry: we hold the lock only if active/NAME is our tmp lock's inode, whatever link returned. */
  private async linkLock(tmpLock: string, activePath: string): Promise<boolean> {
    let mine: fs.BigIntStats;
    try {
      mine = await fsp.lstat(tmpLock, { bigint: true });
    } catch {
      return false;
    }
    if (await isFile(activePath)) return false;
    await fsp.link(tmpLock, activePath).catch(() => undefined);
    try {
      const st = await fsp.lstat(activePath, { bigint: true });
      return st.dev === mine.dev && st.ino === mine.ino && st.uid === mine.uid;
    } catch {
      return false;
    }
  }
}
