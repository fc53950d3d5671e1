/** Whether a process exists, and which one it is. */
import fs from 'node:fs';

/**
 * True unless kill(0) says ESRCH: EPERM means a process (someone else's) has that pid. Used wherever a file's owner
 * must be provably dead before the file is touched (tmp sweep, stale locks). The queue reader keeps Perl's own rule
 * (reader.ts), which differs on purpose.
 */
export function processExists(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code !== 'ESRCH';
  }
}

/**
 * A process's start time in clock ticks since boot (field 22 of /proc/PID/stat): with the pid, it names one process
 * for as long as the machine runs, where a pid alone is reused. Null when the process does not exist or there is no
 * /proc to ask.
 */
export function processStartTicks(pid: number | 'self'): string | null {
  let stat: string;
  try {
    stat = fs.readFileSync(`/proc/${pid}/stat`, 'latin1');
  } catch {
    return null;
  }
  // The command name (field 2) is in parentheses and may contain spaces; the fields after it are plain.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return /^\d+$/.test(fields[19] ?? '') ? fields[19] : null;
}

let ownStart: string | null | undefined;

/** This process's start ticks, read once. */
export function ownStartTicks(): string | null {
  if (ownStart === undefined) ownStart = processStartTicks('self');
  return ownStart;
}

/**
 * Whether the writer named by pid and start ticks still runs: the same pid with another start time is not it. A pid
 * whose /proc entry cannot be read while kill(0) still sees it (hidepid, another user's process) is not provably
 * dead, so it counts as alive.
 */
export function writerAlive(pid: number, start: string | undefined): boolean {
  if (start === undefined || ownStartTicks() === null) return processExists(pid);
  const ticks = processStartTicks(pid);
  return ticks === null ? processExists(pid) : ticks === start;
}
