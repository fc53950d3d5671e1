/**
 * The shared queue's files as the harness checks them: our tmp names by host, a snapshot of every file (path and
 * inode) to tell exactly what a sweep removed, and planted files a sweep must treat one way or the other.
 */
import fs from 'node:fs';
import path from 'node:path';
import { dataLocation, encodeHostForTmp, parseTmpName, tmpName, type TmpKind, type TmpName } from '../../../src/dirqueue';

export interface TmpFile {
  name: string;
  parsed: TmpName | null;
  ino: bigint;
  nlink: bigint;
}

export function listTmp(queueDir: string): TmpFile[] {
  const dir = path.join(queueDir, 'tmp');
  const out: TmpFile[] = [];
  for (const name of fs.existsSync(dir) ? fs.readdirSync(dir) : []) {
    const st = fs.lstatSync(path.join(dir, name), { bigint: true, throwIfNoEntry: false });
    if (st) out.push({ name, parsed: parseTmpName(name), ino: st.ino, nlink: st.nlink });
  }
  return out;
}

/** Our writer's tmp files whose host is `host` (consumers' `.active` files never parse as ours). */
export function tmpFilesOf(queueDir: string, host: string): TmpFile[] {
  return listTmp(queueDir).filter((f) => f.parsed?.host === encodeHostForTmp(host));
}

/** Every file under the queue: path relative to it -> inode. */
export function snapshot(queueDir: string): Map<string, bigint> {
  const out = new Map<string, bigint>();
  const walk = (d: string) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else {
        const st = fs.lstatSync(p, { bigint: true, throwIfNoEntry: false });
        if (st) out.set(path.relative(queueDir, p), st.ino);
      }
    }
  };
  walk(queueDir);
  return out;
}

/**
 * What a sweep by `host` may remove, all of it its own dead writers' leftovers (docs/dirqueue.md, "Crash leftovers"):
 * its tmp names, and the data/ file of each of its jobs that reached data/ but not queue/.
 */
export function ownLeftovers(queueDir: string, files: Map<string, bigint>, host: string): Set<string> {
  const mine = tmpFilesOf(queueDir, host);
  const out = new Set(mine.map((f) => path.join('tmp', f.name)));
  // One job's pair, as the sweep pairs them.
  const job = (t: TmpName) => `${t.base}|${t.pid}|${t.start ?? ''}|${t.seq}`;
  const committed = new Set(mine.filter((f) => f.parsed!.kind === 'ctrl' && f.nlink >= 2n).map((f) => job(f.parsed!)));
  for (const f of mine) {
    const t = f.parsed!;
    if (t.kind !== 'data' || f.nlink < 2n || committed.has(job(t))) continue;
    const loc = dataLocation(t.base);
    for (const [rel, ino] of files) if (ino === f.ino && rel.startsWith(path.join('data', loc.h1, loc.h2) + path.sep)) out.add(rel);
  }
  return out;
}

/** A one-link tmp file named as our writer names them, dated `ageMs` ago (older than any sweep's age guard). */
export function plantTmp(queueDir: string, t: Omit<TmpName, 'kind'>, kind: TmpKind, ageMs: number): string {
  const name = tmpName(t, kind);
  const p = path.join(queueDir, 'tmp', name);
  fs.writeFileSync(p, `planted by the two-host harness\n`, { flag: 'wx' });
  const then = new Date(Date.now() - ageMs);
  fs.utimesSync(p, then, then);
  return path.join('tmp', name);
}

/**
 * A consumer's pickup lock as IPC::DirQueue leaves it mid-pickup: `tmp/NAME.TIME.HOST.PID.active` linked to
 * `active/NAME`, holding "HOST\nPID\n". The traps never touch either.
 */
export function plantConsumerLock(queueDir: string, jobName: string, host: string, pid: number, ageMs: number): string[] {
  const then = new Date(Date.now() - ageMs);
  const tmp = path.join('tmp', `${jobName}.${Math.floor(then.getTime() / 1000)}.${host}.${pid}.active`);
  const active = path.join('active', jobName);
  fs.mkdirSync(path.join(queueDir, 'active'), { recursive: true });
  fs.writeFileSync(path.join(queueDir, tmp), `${host}\n${pid}\n`, { flag: 'wx' });
  fs.linkSync(path.join(queueDir, tmp), path.join(queueDir, active));
  fs.utimesSync(path.join(queueDir, tmp), then, then);
  return [tmp, active];
}
