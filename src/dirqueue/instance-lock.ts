/**
 * One trap instance per spool per host: two instances would sweep each other's tmp/ files and double-count queues.
 * proper-lockfile keeps a lock directory fresh by touching it; a SIGKILLed holder stops touching and its lock is
 * taken over once it is older than staleMs. A pid file beside the lock names the holder in the refusal message.
 */
import * as fsp from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import lockfile from 'proper-lockfile';

export const LOCK_NAME = '.spamtrapd.lock';
export const PID_FILE_NAME = '.spamtrapd.lock.pid';

export interface SpoolLockOptions {
  /** A lock untouched for this long is taken over; proper-lockfile raises anything under 2000 ms to 2000. */
  staleMs?: number;
  /** Called when the lock was lost (its directory removed or not refreshed in time): another instance may run now. */
  onCompromised?: (err: Error) => void;
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
    process.exit(70);
  };
}

async function readHolder(pidFile: string): Promise<string | null> {
  try {
    const [pid, host] = (await fsp.readFile(pidFile, 'utf8')).split('\n');
    return pid ? `pid ${pid}${host ? ` on ${host}` : ''}` : null;
  } catch {
    return null;
  }
}

/** Resolves to release(); rejects with SpoolLockedError while another live instance holds the spool. */
export async function acquireSpoolLock(spoolDir: string, opts: SpoolLockOptions = {}): Promise<() => Promise<void>> {
  const dir = path.resolve(spoolDir);
  await fsp.mkdir(dir, { recursive: true });
  const lockfilePath = path.join(dir, LOCK_NAME);
  const pidFile = path.join(dir, PID_FILE_NAME);
  let release: () => Promise<void>;
  try {
    release = await lockfile.lock(dir, {
      lockfilePath,
      realpath: false,
      stale: opts.staleMs ?? 10_000,
      onCompromised: opts.onCompromised ?? defaultOnCompromised(dir),
    });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ELOCKED') throw new SpoolLockedError(dir, await readHolder(pidFile));
    throw e;
  }
  // Written after the lock is ours, so a stale pid file from a dead holder is simply replaced.
  await fsp.writeFile(pidFile, `${process.pid}\n${os.hostname()}\n`);
  return async () => {
    await fsp.unlink(pidFile).catch(() => undefined);
    await release();
  };
}
