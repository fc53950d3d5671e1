/**
 * RUN_AS=user[:group]: the account acceptors run as once the port is bound.
 *
 * With node:cluster (SCHED_NONE as in primary.ts) the listening socket is created by the primary when a worker first
 * asks for it, and handed to the worker as a file descriptor. A worker can therefore drop its privileges *before*
 * calling listen() and still receive a port-25 socket, as long as the primary keeps the right to bind (root or
 * CAP_NET_BIND_SERVICE); verified on Node 20 with a setuid(65534) worker listening on port 587. The primary keeps
 * root only for that (it rebinds when the last acceptor died and a new one asks), for the spool lock, the tmp/ sweep
 * and reading the TLS key; it never parses client bytes.
 *
 * Names are resolved from /etc/passwd and /etc/group (no NSS: a trap needs no LDAP account, and a lookup that hangs
 * must not hold start-up). Numeric ids are taken as given.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { ConfigError } from './errors';

export interface RunAsTarget {
  uid: number;
  gid: number;
  user: string;
  group: string;
}

interface Entry {
  name: string;
  id: number;
  gid?: number;
}

function readDb(file: string, withGid: boolean): Entry[] {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError('RUN_AS', `cannot read ${file}: ${(err as Error).message}`);
  }
  const out: Entry[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const f = line.split(':');
    const id = Number(f[2]);
    if (f.length < 3 || !/^\d+$/.test(f[2] ?? '')) continue;
    out.push({ name: f[0], id, gid: withGid && /^\d+$/.test(f[3] ?? '') ? Number(f[3]) : undefined });
  }
  return out;
}

export interface ResolveOptions {
  passwdFile?: string;
  groupFile?: string;
}

/** Ids for RUN_AS; the group defaults to the user's primary group. Throws ConfigError naming RUN_AS. */
export function resolveRunAs(spec: { user: string; group: string | null }, opts: ResolveOptions = {}): RunAsTarget {
  const passwd = readDb(opts.passwdFile ?? '/etc/passwd', true);
  const groups = readDb(opts.groupFile ?? '/etc/group', false);
  const shown = spec.group === null ? spec.user : `${spec.user}:${spec.group}`;

  let uid: number;
  let user: string;
  let primaryGid: number | undefined;
  if (/^\d+$/.test(spec.user)) {
    uid = Number(spec.user);
    const e = passwd.find((p) => p.id === uid);
    user = e?.name ?? spec.user;
    primaryGid = e?.gid;
  } else {
    const e = passwd.find((p) => p.name === spec.user);
    if (!e) throw new ConfigError('RUN_AS', `unknown user ${JSON.stringify(spec.user)} in ${JSON.stringify(shown)} (not in ${opts.passwdFile ?? '/etc/passwd'})`);
    uid = e.id;
    user = e.name;
    primaryGid = e.gid;
  }
  if (!Number.isSafeInteger(uid) || uid > 0xfffffffe) throw new ConfigError('RUN_AS', `user id ${spec.user} is out of range`);

  let gid: number;
  let group: string;
  if (spec.group === null) {
    if (primaryGid === undefined) {
      throw new ConfigError('RUN_AS', `user ${JSON.stringify(spec.user)} has no entry with a primary group: give one as ${spec.user}:GROUP`);
    }
    gid = primaryGid;
    group = groups.find((g) => g.id === gid)?.name ?? String(gid);
  } else if (/^\d+$/.test(spec.group)) {
    gid = Number(spec.group);
    group = groups.find((g) => g.id === gid)?.name ?? spec.group;
  } else {
    const e = groups.find((g) => g.name === spec.group);
    if (!e) throw new ConfigError('RUN_AS', `unknown group ${JSON.stringify(spec.group)} in ${JSON.stringify(shown)} (not in ${opts.groupFile ?? '/etc/group'})`);
    gid = e.id;
    group = e.name;
  }
  if (!Number.isSafeInteger(gid) || gid > 0xfffffffe) throw new ConfigError('RUN_AS', `group id ${spec.group} is out of range`);
  if (uid === 0) throw new ConfigError('RUN_AS', `${JSON.stringify(shown)} is root: leave RUN_AS empty to run as root, or name an unprivileged account`);
  return { uid, gid, user, group };
}

/**
 * setgroups, setgid, setuid: in that order, since after setuid the process may no longer change its groups.
 * Then checks that every id took and that root cannot be regained; throws if anything is off, so an acceptor that
 * could not drop never serves.
 */
export function dropPrivileges(target: RunAsTarget): void {
  if (!process.setuid || !process.setgid || !process.setgroups) throw new Error('dropping privileges needs a POSIX platform');
  process.setgroups([target.gid]);
  process.setgid(target.gid);
  process.setuid(target.uid);
  const ids = { uid: process.getuid!(), euid: process.geteuid!(), gid: process.getgid!(), egid: process.getegid!(), groups: process.getgroups!() };
  const ok =
    ids.uid === target.uid &&
    ids.euid === target.uid &&
    ids.gid === target.gid &&
    ids.egid === target.gid &&
    ids.groups.every((g) => g === target.gid);
  if (!ok) throw new Error(`privilege drop to ${target.user}:${target.group} did not take: ${JSON.stringify(ids)}`);
  let regained = false;
  try {
    process.setuid(0);
    regained = true;
  } catch {
    // expected: an unprivileged process cannot become root again
  }
  if (regained) throw new Error(`privilege drop to ${target.user}:${target.group} is reversible: setuid(0) succeeded`);
}

/** How the primary hands the resolved target to its workers (cluster.fork env). */
export function runAsEnv(target: RunAsTarget | null): Record<string, string> {
  return target ? { SPAMTRAPD_RUN_AS: `${target.uid}:${target.gid}:${target.user}:${target.group}` } : {};
}

export function runAsFromEnv(env: NodeJS.ProcessEnv = process.env): RunAsTarget | null {
  const v = env.SPAMTRAPD_RUN_AS;
  if (!v) return null;
  const m = /^(\d+):(\d+):([^:]*):([^:]*)$/.exec(v);
  if (!m) throw new Error(`bad SPAMTRAPD_RUN_AS from the primary: ${JSON.stringify(v)}`);
  return { uid: Number(m[1]), gid: Number(m[2]), user: m[3], group: m[4] };
}

/** Subdirectories of a queue directory that hold files only, never directories. */
const FILES_ONLY = new Set(['queue', 'active', 'tmp']);

/**
 * Whether `target` can create files in the spool and in every queue directory already there (tmp/, queue/,
 * data/ and below): asked of the kernel by a short child process running as that user, so ACLs, read-only mounts
 * and untraversable parents count. Throws ConfigError with the first directory it cannot write and the fix.
 * The spool is the operator's to create and chown; the primary does not chown (a wrong SPOOL_DIR must not hand
 * some other tree to the trap's user).
 */
export function checkSpoolWritable(spoolDir: string, target: RunAsTarget): void {
  const dirs: string[] = [spoolDir];
  const walk = (d: string, depth: number) => {
    let entries: fs.Dirent[];
    try {
      entries = fs.readdirSync(d, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) {
      if (!e.isDirectory() || e.name.startsWith('.')) continue;
      const p = path.join(d, e.name);
      dirs.push(p);
      // queue dir (1) / tmp|queue|active|data (2) / H1 (3) / H2 (4). queue/, active/ and tmp/ hold only files
      // (docs/dirqueue.md), and queue/ one per waiting job: listing it would cost the whole queue in memory.
      if (depth < 4 && !(depth === 2 && FILES_ONLY.has(e.name))) walk(p, depth + 1);
    }
  };
  walk(spoolDir, 1);
  const script =
    "const fs=require('fs');for(const d of JSON.parse(process.argv[1])){try{fs.accessSync(d,fs.constants.W_OK|fs.constants.X_OK)}catch(e){process.stdout.write(d+'\\n'+e.code);process.exit(1)}}";
  const r = spawnSync(process.execPath, ['-e', script, JSON.stringify(dirs)], { uid: target.uid, gid: target.gid, encoding: 'utf8', timeout: 10_000 });
  if (r.status === 0) return;
  const [dir, code] = (r.stdout || '').split('\n');
  const why = dir ? `${code} on ${dir}` : `the check could not run as that user (${r.error?.message ?? r.stderr.trim()})`;
  throw new ConfigError(
    'RUN_AS',
    `user ${target.user} (uid ${target.uid}) cannot write SPOOL_DIR ${spoolDir}: ${why}; ` +
      `create the spool owned by that user (chown -R ${target.user}:${target.group} ${spoolDir}) and make its parents traversable`,
  );
}
