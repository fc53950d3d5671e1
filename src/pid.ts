/** Whether a process exists, asked with kill(pid, 0). */

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
