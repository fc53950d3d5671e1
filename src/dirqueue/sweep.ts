/**
 * Removes the tmp/ leftovers of writers that died mid-enqueue (IPC::DirQueue never cleans tmp/). Only files named
 * by our writer (`NAME0.spamtrapd.HOST.PIDsSTART.SEQ.data|ctrl`), from this host, whose writer (pid and start time)
 * is gone are touched; consumers' `*.active` lock files and Perl writers' files never match that name. A file must also be older than minAgeMs,
 * unless its pid is one the caller saw exit (the primary forked every writer and saw each die): the age guard is for
 * pids nobody here knows (a writer in another pid namespace, a clock step).
 *
 * Classification of one job's pair (the writer unlinks the tmp data name before the ctrl name):
 * - ctrl with 2 links: the control file is in queue/, the job is committed: unlink the tmp names only;
 * - else data with 2 links: the data file was linked into data/H1/H2/ but no control file points at it (or a
 *   consumer finished the job half-way): remove that data file, found by dev+inode, then the tmp names;
 * - else: nothing outside tmp/ refers to them: remove them.
 */
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { writerAlive } from '../pid';
import { dirNameBatches } from './dir-stream';
import { dataLocation, encodeHostForTmp, parseTmpName, TmpName } from './names';

export interface SweepOptions {
  hostname?: string;
  /** Files younger than this are left alone even if their pid looks dead (pid namespaces, clock skew). */
  minAgeMs?: number;
  /** Pids the caller saw exit: their files need no age. A pid that is alive again (reused) is still left alone. */
  knownDead?: ReadonlySet<number>;
  log?: (msg: string) => void;
}

export interface SweepSummary {
  /** tmp names of committed jobs that were unlinked. */
  committed: number;
  /** data/H1/H2 files of jobs that never reached queue/, removed. */
  orphansRemoved: number;
  /** tmp files removed, of every kind. */
  tmpRemoved: number;
  /** Our files kept because the writer is alive, the file is too young, or it is another host's. */
  kept: number;
  errors: number;
}

interface Pair {
  key: string;
  t: TmpName;
  data?: { path: string; st: fs.BigIntStats };
  ctrl?: { path: string; st: fs.BigIntStats };
}

function emptySummary(): SweepSummary {
  return { committed: 0, orphansRemoved: 0, tmpRemoved: 0, kept: 0, errors: 0 };
}

function errCode(e: unknown): string | undefined {
  return (e as NodeJS.ErrnoException | null)?.code;
}

/** The names in `dir` a batch at a time; a missing directory, or a file where one was expected, has none. */
async function* namesIn(dir: string): AsyncGenerator<string, void, undefined> {
  try {
    for await (const batch of dirNameBatches(dir)) yield* batch;
  } catch (e) {
    if (errCode(e) === 'ENOTDIR') return;
    throw e;
  }
}

export async function sweepTmp(dir: string, opts: SweepOptions = {}): Promise<SweepSummary> {
  const hostname = opts.hostname ?? os.hostname();
  const minAgeMs = opts.minAgeMs ?? 60_000;
  const log = opts.log ?? (() => undefined);
  const summary = emptySummary();
  const tmpDir = path.join(dir, 'tmp');
  const myHost = encodeHostForTmp(hostname);
  const pairs = new Map<string, Pair>();
  const keep = new Set<string>();

  // tmp/ is small at rest but holds consumers' pickup locks while they work: streamed, only our names are kept.
  for await (const name of namesIn(tmpDir)) {
    const t = parseTmpName(name);
    if (!t) continue;
    const key = `${t.base}|${t.host}|${t.pid}|${t.start ?? ''}|${t.seq}`;
    let st: fs.BigIntStats;
    try {
      st = await fsp.lstat(path.join(tmpDir, name), { bigint: true });
    } catch {
      continue;
    }
    const young = Date.now() - Number(st.mtimeMs) < minAgeMs && !opts.knownDead?.has(t.pid);
    if (t.host !== myHost || young || writerAlive(t.pid, t.start)) {
      summary.kept++;
      keep.add(key);
      continue;
    }
    const pair = pairs.get(key) ?? { key, t };
    pair[t.kind] = { path: path.join(tmpDir, name), st };
    pairs.set(key, pair);
  }
  for (const pair of pairs.values()) {
    // One young half keeps the whole pair: its classification needs both names.
    if (keep.has(pair.key)) {
      summary.kept += (pair.data ? 1 : 0) + (pair.ctrl ? 1 : 0);
      continue;
    }
    await sweepPair(dir, pair, summary, log);
  }
  return summary;
}

async function sweepPair(dir: string, pair: Pair, summary: SweepSummary, log: (msg: string) => void): Promise<void> {
  const rm = async (p: string): Promise<boolean> => {
    try {
      await fsp.unlink(p);
      summary.tmpRemoved++;
      return true;
    } catch (e) {
      if (errCode(e) === 'ENOENT') return true;
      summary.errors++;
      log(`sweep: cannot remove ${p}: ${errCode(e) ?? e}`);
      return false;
    }
  };
  const { data, ctrl } = pair;
  if (ctrl && ctrl.st.nlink >= 2n) {
    log(`sweep: ${pair.t.base} from dead pid ${pair.t.pid} is committed: removing its tmp names`);
    summary.committed++;
    if (data && !(await rm(data.path))) return;
    await rm(ctrl.path);
    return;
  }
  if (data && data.st.nlink >= 2n) {
    const orphan = await findDataFile(dir, pair.t.base, data.st);
    if (!orphan) {
      summary.errors++;
      log(`sweep: ${data.path} has another link but none in data/ under its name; left for an operator`);
      return;
    }
    try {
      await fsp.unlink(orphan);
      summary.orphansRemoved++;
      log(`sweep: removed orphan data file ${orphan} (its job never reached queue/)`);
    } catch (e) {
      summary.errors++;
      log(`sweep: cannot remove orphan ${orphan}: ${errCode(e) ?? e}`);
      return;
    }
  }
  if (ctrl) await rm(ctrl.path);
  if (data) await rm(data.path);
}

/**
 * The data file is in data/H1/H2/ under DNAME or NAME0.PID.RAND: a first pass tries those names, a second every
 * other entry. data/H1/H2/ holds one file per queued job that ends in H1H2, so it is streamed, not read whole.
 */
async function findDataFile(dir: string, base: string, st: fs.BigIntStats): Promise<string | null> {
  const loc = dataLocation(base);
  const hdir = path.join(dir, 'data', loc.h1, loc.h2);
  const likely = (n: string) => n === loc.dname || n.startsWith(base + '.');
  for (const wanted of [likely, (n: string) => !likely(n)]) {
    for await (const n of namesIn(hdir)) {
      if (!wanted(n)) continue;
      const p = path.join(hdir, n);
      const s = await fsp.lstat(p, { bigint: true }).catch(() => null);
      if (s && s.dev === st.dev && s.ino === st.ino) return p;
    }
  }
  return null;
}

/** A queue directory is a directory under the spool that holds queue/, tmp/ or data/. */
export async function findQueueDirs(spoolDir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await fsp.readdir(spoolDir, { withFileTypes: true })) {
    if (!e.isDirectory()) continue;
    const d = path.join(spoolDir, e.name);
    for await (const s of namesIn(d)) {
      if (s === 'queue' || s === 'tmp' || s === 'data') {
        out.push(d);
        break;
      }
    }
  }
  return out.sort();
}

export async function sweepSpool(
  spoolDir: string,
  opts: SweepOptions = {},
): Promise<{ total: SweepSummary; byQueue: Record<string, SweepSummary> }> {
  const total = emptySummary();
  const byQueue: Record<string, SweepSummary> = {};
  for (const d of await findQueueDirs(spoolDir)) {
    const s = await sweepTmp(d, opts);
    byQueue[path.basename(d)] = s;
    for (const k of Object.keys(total) as (keyof SweepSummary)[]) total[k] += s[k];
  }
  return { total, byQueue };
}
