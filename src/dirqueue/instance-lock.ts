/**
 * One trap instance per spool per host: two instances would sweep each other's tmp/ files and double-count queues.
 * proper-lockfile keeps a lock directory fresh by touching it; a SIGKILLed holder stops touching and its lock is
 * taken over once it is older than staleMs. A pid file beside the lock names the holder ("PID\nHOST\nSTART\n", START
 * being its start time in clock ticks since boot) in the refusal message, and tells a dead local holder from a live one.
 */
import * as fsp from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import lockfile from 'proper-lockfile';
import { ownStartTicks, writerAlive } from '../pid';
import { EXIT_LOCK_LOST } from '../exit-codes';

export const LOCK_NAME = '.spamtrapd.lock';
export const PID_FILE_NAME = '.spamtrapd.lock.pid';

export interface SpoolLockOptions {
  /** A lock untouched for this long is taken over; proper-lockfile raises anything under 2000 ms to 2000. */
  staleMs?: number;
  /** Called when the lock was lost (its directory removed or not refreshed in time): another instance may run now. */
  onCompromised?: (err: Error) => void;
  /** Called when the holder is a dead process on this host and the lock is awaited until it is stale. */
  onWaiting?: (holder: string, staleMs: number) => void;
}

export class SpoolLockedError extends Error {
  readonly code = 'ELOCKED';
  constructor(
    readonly spoolDir: string,
    readonly holder: string | null,
  ) {
    super(
      `spool ${spoolDir} is in use by another spamtrapd instance` +
        (holder ? ` (${holder})` : ' (holder unknown)') +
        `: one instance per spool; stop it, or wait for its lock ${path.join(spoolDir, LOCK_NAME)} to go stale if it died`,
    );
    this.name = 'SpoolLockedError';
  }
}

function defaultOnCompromised(spoolDir: string): (err: Error) => void {
  return (err) => {
    process.stderr.write(`spamtrapd: lost the lock on spool ${spoolDir}: ${err.message}; exiting\n`);
    process.exit(EXIT_LOCK_LOST);
  };
}

interface Holder {
  pid: number;
  host: string;
  /** Absent in pid files written before it was recorded. */
  start?: string;
}

async function readHolderFile(pidFile: string): Promise<Holder | null> {
  try {
    const [pid, host, start] = (await fsp.readFile(pidFile, 'utf8')).split('\n');
    if (!/^\d+$/.test(pid)) return null;
    return { pid: Number(pid), host: host ?? '', ...(start && /^\d+$/.test(start) ? { start } : {}) };
  } catch {
    return null;
  }
}

function describeHolder(h: Holder | null): string | null {
  return h ? `pid ${h.pid}${h.host ? ` on ${h.host}` : ''}` : null;
}

/**
 * The holder is provably gone: it ran on this host and no process has its pid with its start time. The pid alone
 * is not enough: a trap restarted in a fresh pid namespace (a container's pid 1) gets its dead predecessor's pid,
 * and would otherwise take itself for the holder and refuse to start.
 */
function holderIsDead(h: Holder | null): boolean {
  return !!h && h.host === os.hostname() && !writerAlive(h.pid, h.start);
}

/** Resolves to release(); rejects with SpoolLockedError while another live instance holds the spool. */
export async function acquireSpoolLock(spoolDir: string, opts: SpoolLockOptions = {}): Promise<() => Promise<void>> {
  const dir = path.resolve(spoolDir);
  await fsp.mkdir(dir, { recursive: true });
  const lockfilePath = path.join(dir, LOCK_NAME);
  const pidFile = path.join(dir, PID_FILE_NAME);
  const staleMs = opts.staleMs ?? 10_000;
  const lock = (retries: number) =>
    lockfile.lock(dir, {
      lockfilePath,
      realpath: false,
      stale: staleMs,
      retries: retries > 0 ? { retries, minTimeout: 500, maxTimeout: 500, factor: 1 } : 0,
      onCompromised: opts.onCompromised ?? defaultOnCompromised(dir),
    });
  let release: () => Promise<void>;
  try {
    release = await lock(0);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ELOCKED') throw e;
    const holder = await readHolderFile(pidFile);
    if (!holderIsDead(holder)) throw new SpoolLockedError(dir, describeHolder(holder));
    // A holder SIGKILLed on this host: its lock goes stale within staleMs, so wait for that instead of failing
    // (a service manager restarting the trap right away would otherwise hit its start limit). The lock itself is
    // never removed by hand: proper-lockfile's stale takeover is what keeps two starters from both winning.
    opts.onWaiting?.(describeHolder(holder)!, staleMs);
    try {
      release = await lock(Math.ceil((staleMs + 2000) / 500));
    } catch (e2) {
      if ((e2 as NodeJS.ErrnoException).code === 'ELOCKED') throw new SpoolLockedError(dir, describeHolder(await readHolderFile(pidFile)));
      throw e2;
    }
  }
  // Written after the lock is ours, so a stale pid file from a dead holder is simply replaced.
  await fsp.writeFile(pidFile, `${process.pid}\n${os.hostname()}\n${ownStartTicks() ?? ''}\n`);
  return async () => {
    await fsp.unlink(pidFile).catch(() => undefined);
    await release();
  };
}
