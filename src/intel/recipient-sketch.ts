/**
 * Distinct trap recipients per address in K 32-bit words: a K-minimum-values sketch. The slot keeps the K smallest
 * distinct hashes it has seen, sorted. While fewer than K+1 distinct recipients were seen the count is exact (they
 * are all there); beyond that it is the KMV estimate (K-1) / (K-th smallest hash / 2^32), whose relative standard
 * error is about 1/sqrt(K-2) (41% for K = 8): enough to tell a bot that hit 3 addresses from one that hit 300,
 * which is what the number is for, at 4K bytes per entry whatever the bot sends. A saturating counter would say
 * "8 or more" for both.
 *
 * `state` (one byte per entry) is the number of hashes stored, or K+1 once a hash was ever left out (estimated).
 */

/** FNV-1a over the lower-cased address, then murmur3's finaliser so the low and high bits are both uniform. */
export function recipientHash(address: string): number {
  const s = address.toLowerCase();
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** Adds hash `h` to the sorted run hashes[base .. base+stored); returns the new state byte. */
export function addRecipientHash(hashes: Uint32Array, base: number, state: number, k: number, h: number): number {
  const stored = state > k ? k : state;
  let pos = 0;
  while (pos < stored && hashes[base + pos] < h) pos++;
  if (pos < stored && hashes[base + pos] === h) return state;
  if (stored < k) {
    hashes.copyWithin(base + pos + 1, base + pos, base + stored);
    hashes[base + pos] = h;
    return state + 1;
  }
  // Full: h is new, so one hash (h itself or the current largest) is left out from now on.
  if (pos < k) {
    hashes.copyWithin(base + pos + 1, base + pos, base + k - 1);
    hashes[base + pos] = h;
  }
  return k + 1;
}

/** Exact while the sketch never left a hash out, else the KMV estimate (never below K+1, which is known). */
export function distinctRecipients(hashes: Uint32Array, base: number, state: number, k: number): number {
  if (state <= k) return state;
  const kth = hashes[base + k - 1] + 1; // +1: a K-th hash of 0 must not divide by zero
  return Math.max(k + 1, Math.round(((k - 1) * 2 ** 32) / kth));
}
