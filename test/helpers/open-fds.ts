/** Descriptor leak checks: how many files this test process has open, from /proc/self/fd (Linux). */
import fs from 'node:fs';

export function openFdCount(): number {
  return fs.readdirSync('/proc/self/fd').length;
}

/**
 * Waits (bounded) until at most `limit` descriptors are open, and fails with the count and what they point at: a
 * socket or file closed by the code under test may take a turn of the event loop to be released.
 */
export async function expectFdsAtMost(limit: number, what: string, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (openFdCount() > limit) {
    if (Date.now() > deadline) {
      const targets = new Map<string, number>();
      for (const fd of fs.readdirSync('/proc/self/fd')) {
        let t = '?';
        try {
          t = fs.readlinkSync(`/proc/self/fd/${fd}`).replace(/:\[\d+\]$/, '');
        } catch {
          // closed while listing
        }
        targets.set(t, (targets.get(t) ?? 0) + 1);
      }
      const open = [...targets].map(([t, n]) => `${n} x ${t}`).join(', ');
      throw new Error(`${what}: ${openFdCount()} descriptors open, at most ${limit} expected; open now: ${open}`);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
}
