/**
 * Job names of IPC::DirQueue 1.1 (docs/dirqueue.md#job-names, docs/dirqueue.md#order-and-priority). Pure functions
 * only: the writer, reader and sweep must agree on every byte, so nothing here touches the file system or the clock.
 */

const SAFE = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+_';

/** A wall-clock reading split the way gettimeofday() returns it. */
export interface Clock {
  sec: number;
  usec: number;
}

/** The HASH of `hash_string_to_filename(HOSTNAME . PID)`: a 16-bit byte sum, uuencoded, zero sextets dropped. */
export function dirqueueHashBytes(bytes: Uint8Array): string {
  let sum = 0;
  for (const b of bytes) sum = (sum + b) & 0xffff;
  const d = Buffer.from(String(sum), 'latin1');
  let out = SAFE[d.length] as string;
  for (let i = 0; i < d.length; i += 3) {
    const n = ((d[i] ?? 0) << 16) | ((d[i + 1] ?? 0) << 8) | (d[i + 2] ?? 0);
    for (const v of [n >>> 18, (n >>> 12) & 63, (n >>> 6) & 63, n & 63]) {
      // Perl's uuencode writes 0 as "`", which the tr/// range leaves out and then deletes.
      if (v !== 0) out += SAFE[v];
    }
  }
  return out;
}

/** Host name bytes are UTF-8, as Node hands os.hostname() to the kernel and Perl reads them back. */
export function dirqueueHash(hostname: string, pid: number): string {
  return dirqueueHashBytes(Buffer.from(hostname + String(pid), 'utf8'));
}

function pad(n: number, width: number): string {
  return String(n).padStart(width, '0');
}

/** STAMP: the seconds as UTC YYYYMMDDhhmmss, then the microseconds as %06d. */
export function formatStamp(clock: Clock): string {
  const d = new Date(clock.sec * 1000);
  return (
    pad(d.getUTCFullYear(), 4) +
    pad(d.getUTCMonth() + 1, 2) +
    pad(d.getUTCDate(), 2) +
    pad(d.getUTCHours(), 2) +
    pad(d.getUTCMinutes(), 2) +
    pad(d.getUTCSeconds(), 2) +
    pad(clock.usec, 6)
  );
}

export function checkPriority(priority: number): void {
  if (!Number.isInteger(priority) || priority < 0 || priority > 99) {
    throw new RangeError(`IPC::DirQueue: bad priority ${priority}: must be an integer from 0 to 99`);
  }
}

/** NAME0 = PP.STAMP.HASH, the first-try name of both the control file and (minus two characters) the data file. */
export function name0(priority: number, clock: Clock, hash: string): string {
  checkPriority(priority);
  return `${pad(priority, 2)}.${formatStamp(clock)}.${hash}`;
}

/** The name used after link(2) found the first one taken: NAME0.PID.RAND with RAND in 0..65535. */
export function retryName(base: string, pid: number, rand: number): string {
  return `${base}.${pid}.${rand}`;
}

export interface DataLocation {
  h1: string;
  h2: string;
  /** DNAME for the first try: NAME0 without its last two characters. */
  dname: string;
}

/** data/H1/H2/DNAME: the last two characters of NAME0 become directories and leave the file name. */
export function dataLocation(base: string): DataLocation {
  if (base.length < 3) throw new Error(`job name too short for a data path: '${base}'`);
  return { h1: base.charAt(base.length - 2), h2: base.charAt(base.length - 1), dname: base.slice(0, -2) };
}

export const NAME_RE = /^(\d\d)\.(\d{20})\.([A-Za-z0-9+_]+)(?:\.(\d+)\.(\d+))?$/;

export interface ParsedName {
  priority: number;
  stamp: string;
  hash: string;
  retry: { pid: number; rand: number } | null;
}

export function parseName(name: string): ParsedName | null {
  const m = NAME_RE.exec(name);
  if (!m) return null;
  return {
    priority: Number(m[1]),
    stamp: m[2] as string,
    hash: m[3] as string,
    retry: m[4] === undefined ? null : { pid: Number(m[4]), rand: Number(m[5]) },
  };
}

/** Consumers pick up every queue/ entry whose name starts with a digit, whatever the rest looks like. */
export function isJobName(name: string): boolean {
  return /^\d/.test(name);
}

function compareUtf8Bytes(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
}

/**
 * Perl's `sort`: UTF-8 byte order. Below U+D800 a UTF-16 code unit sorts as its UTF-8 bytes do, so names that first
 * differ there (every ASCII name) are compared in place; a surrogate or U+E000..U+FFFF, where the two orders part,
 * falls back to comparing the encoded bytes. No allocation on the fast path: a deep queue's walk compares millions.
 */
export function compareNames(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const x = a.charCodeAt(i);
    const y = b.charCodeAt(i);
    if (x === y) continue;
    return x < 0xd800 && y < 0xd800 ? x - y : compareUtf8Bytes(a, b);
  }
  if (a.length === b.length) return 0;
  // A prefix ending in a lone surrogate encodes as U+FFFD, which can outsort what the longer name continues with.
  return n > 0 && a.charCodeAt(n - 1) >= 0xd800 ? compareUtf8Bytes(a, b) : a.length - b.length;
}

export function sortNames(names: Iterable<string>): string[] {
  return [...names].sort(compareNames);
}

/**
 * Our tmp/ names: `NAME0.spamtrapd.HOST.PIDsSTART.SEQ.data` and `.ctrl`. The sweep needs the writer's host and real
 * pid (the HASH maps many pids to one value), and START, the writer process's start time in clock ticks since boot
 * (/proc/PID/stat), tells a live writer from a later process that got the same pid: after a restart in a fresh pid
 * namespace, pids repeat at once. SEQ keeps two jobs begun in one microsecond by one process apart. Names without
 * START (older versions, or no /proc) are still read. IPC::DirQueue's own tmp names (`NAME0.data`, `NAME0.ctrl`) and
 * consumers' pickup locks (`NAME.TIME.HOST.PID.active`) never contain `.spamtrapd.`, so the sweep cannot mistake
 * them for ours.
 */
export type TmpKind = 'data' | 'ctrl';

export interface TmpName {
  base: string;
  host: string;
  pid: number;
  /** The writer's start time in clock ticks since boot; absent in names that lack it. */
  start?: string;
  seq: number;
  kind: TmpKind;
}

/** Host names are encoded so that a '/' or a control byte in them cannot escape tmp/ or confuse the parser. */
export function encodeHostForTmp(host: string): string {
  return host.replace(/[^A-Za-z0-9._-]/gu, (ch) =>
    [...Buffer.from(ch, 'utf8')].map((b) => '%' + b.toString(16).toUpperCase().padStart(2, '0')).join(''),
  );
}

export function tmpName(t: Omit<TmpName, 'kind'>, kind: TmpKind): string {
  return `${t.base}${tmpWriterPart(t.host, t.pid, t.start)}${t.seq}.${kind}`;
}

/** What a tmp name holds between the job's NAME0 and its sequence number: the same for every job one writer makes. */
export function tmpWriterPart(host: string, pid: number, start: string | undefined): string {
  return `.spamtrapd.${encodeHostForTmp(host)}.${start === undefined ? pid : `${pid}s${start}`}.`;
}

const TMP_RE = /^(\d\d\.\d{20}\.[A-Za-z0-9+_]+)\.spamtrapd\.([A-Za-z0-9._%-]+)\.(\d+)(?:s(\d+))?\.(\d+)\.(data|ctrl)$/;

/** Parses one of our tmp names; the host comes back still encoded, compare it with encodeHostForTmp(). */
export function parseTmpName(name: string): TmpName | null {
  const m = TMP_RE.exec(name);
  if (!m) return null;
  const t: TmpName = {
    base: m[1] as string,
    host: m[2] as string,
    pid: Number(m[3]),
    seq: Number(m[5]),
    kind: m[6] as TmpKind,
  };
  if (m[4] !== undefined) t.start = m[4];
  return t;
}
