/** Queue-test material: job contents that differ in size and bytes, their digests, and a pid nobody has. */
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';

export function sha256(buf: Buffer): string {
  return createHash('sha256').update(buf).digest('hex');
}

/** Deterministic varied content: sizes from 0 to ~9 KB, bytes from a hash chain so every job differs. */
export function jobContent(seed: number, i: number): Buffer {
  const size = (i * 7919 + seed * 104729) % 9000;
  const parts: Buffer[] = [];
  let len = 0;
  for (let blk = 0; len < size; blk++) {
    const b = createHash('sha256').update(`${seed}:${i}:${blk}`).digest();
    parts.push(b);
    len += b.length;
  }
  return Buffer.concat(parts).subarray(0, size);
}

/** A pid that certainly belongs to no process: one of a child that has exited and been reaped. */
export function deadPid(): number {
  const r = spawnSync('true');
  if (r.pid === undefined || r.pid <= 0) throw new Error('could not spawn true');
  return r.pid;
}
