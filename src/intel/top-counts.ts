/**
 * Heavy hitters in bounded memory: the Space-Saving algorithm. At most `capacity` keys are counted; a new key
 * replaces the one with the smallest count and inherits that count as its possible overestimate (`error`). Every key seen more than total/capacity times is guaranteed to be held, and for each
 * held key `count - error <= true count <= count`. Used for the most-hit trap recipients (a dictionary attack sends
 * millions of distinct ones) and behind the fingerprint metric's label choice (stable-labels.ts).
 *
 * The keys sit in a binary min-heap by count with a Map from key to heap position: O(log capacity) per add.
 */
export interface TopItem {
  readonly key: string;
  readonly count: number;
  /** How much of `count` may belong to keys this one replaced. */
  readonly error: number;
}

export class TopCounts {
  private readonly keys: string[] = [];
  private readonly counts: number[] = [];
  private readonly errors: number[] = [];
  private readonly pos = new Map<string, number>();
  private total = 0;

  constructor(readonly capacity: number) {
    if (!Number.isInteger(capacity) || capacity < 1) throw new RangeError(`capacity must be >= 1, got ${capacity}`);
  }

  get size(): number {
    return this.keys.length;
  }

  /** Everything ever added, held or not. */
  get observed(): number {
    return this.total;
  }

  add(key: string, n = 1): void {
    this.total += n;
    const at = this.pos.get(key);
    if (at !== undefined) {
      this.counts[at] += n;
      this.down(at);
      return;
    }
    if (this.keys.length < this.capacity) {
      this.keys.push(key);
      this.counts.push(n);
      this.errors.push(0);
      this.pos.set(key, this.keys.length - 1);
      this.up(this.keys.length - 1);
      return;
    }
    // Replace the smallest: the newcomer may have been among the keys it pushed out, so it inherits their count.
    const min = this.counts[0];
    this.pos.delete(this.keys[0]);
    this.keys[0] = key;
    this.counts[0] = min + n;
    this.errors[0] = min;
    this.pos.set(key, 0);
    this.down(0);
  }

  get(key: string): TopItem | undefined {
    const at = this.pos.get(key);
    return at === undefined ? undefined : { key, count: this.counts[at], error: this.errors[at] };
  }

  /** The `limit` largest counts, largest first (ties by key, so the order is stable). */
  top(limit: number): TopItem[] {
    const items = this.keys.map((key, i) => ({ key, count: this.counts[i], error: this.errors[i] }));
    items.sort((a, b) => b.count - a.count || (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
    return items.slice(0, Math.max(0, limit));
  }

  private swap(i: number, j: number): void {
    [this.keys[i], this.keys[j]] = [this.keys[j], this.keys[i]];
    [this.counts[i], this.counts[j]] = [this.counts[j], this.counts[i]];
    [this.errors[i], this.errors[j]] = [this.errors[j], this.errors[i]];
    this.pos.set(this.keys[i], i);
    this.pos.set(this.keys[j], j);
  }

  private up(i: number): void {
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (this.counts[parent] <= this.counts[i]) return;
      this.swap(i, parent);
      i = parent;
    }
  }

  private down(i: number): void {
    const n = this.keys.length;
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let m = i;
      if (l < n && this.counts[l] < this.counts[m]) m = l;
      if (r < n && this.counts[r] < this.counts[m]) m = r;
      if (m === i) return;
      this.swap(i, m);
      i = m;
    }
  }
}
