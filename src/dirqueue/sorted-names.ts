/**
 * A directory's names in ascending byte order (pickup order, docs/dirqueue.md) without holding them all: each pass
 * streams the directory once and keeps only the pageSize smallest names above the last one handed out.
 */
import { dirNameBatches } from './dir-stream';
import { compareNames } from './names';

/** The k smallest names offered so far, kept in a max-heap so that a name can be judged against the largest kept. */
export class SmallestNames {
  private readonly heap: string[] = [];

  constructor(readonly capacity: number) {
    if (!Number.isInteger(capacity) || capacity < 1) throw new RangeError(`capacity must be a positive integer, got ${capacity}`);
  }

  get size(): number {
    return this.heap.length;
  }

  offer(name: string): void {
    const h = this.heap;
    if (h.length < this.capacity) {
      h.push(name);
      this.siftUp(h.length - 1);
    } else if (compareNames(name, h[0]!) < 0) {
      h[0] = name;
      this.siftDown(0);
    }
  }

  /** The names kept, ascending; the heap is emptied. */
  drainSorted(): string[] {
    return this.heap.splice(0).sort(compareNames);
  }

  private swap(i: number, j: number): void {
    const t = this.heap[i]!;
    this.heap[i] = this.heap[j]!;
    this.heap[j] = t;
  }

  private siftUp(i: number): void {
    const h = this.heap;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (compareNames(h[i]!, h[parent]!) <= 0) return;
      this.swap(i, parent);
      i = parent;
    }
  }

  private siftDown(i: number): void {
    const h = this.heap;
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let top = i;
      if (l < h.length && compareNames(h[l]!, h[top]!) > 0) top = l;
      if (r < h.length && compareNames(h[r]!, h[top]!) > 0) top = r;
      if (top === i) return;
      this.swap(i, top);
      i = top;
    }
  }
}

export interface SortedNamesOptions {
  /** Names kept per pass: memory is O(pageSize), a walk of n names costs about n / pageSize passes. */
  pageSize?: number;
  /** Only names it accepts are kept (and count towards pageSize). */
  filter?: (name: string) => boolean;
}

export const DEFAULT_PAGE_SIZE = 1024;

/**
 * Every name of `dir` that passes the filter, ascending by compareNames; a missing directory has none. A caller that
 * stops after the first few names (pickup) pays for one pass. Names added during a walk appear in it only if they
 * sort after the names already handed out; names removed may still be handed out (callers check what they open).
 */
export async function* sortedNames(dir: string, opts: SortedNamesOptions = {}): AsyncGenerator<string, void, undefined> {
  const pageSize = opts.pageSize ?? DEFAULT_PAGE_SIZE;
  const filter = opts.filter ?? (() => true);
  let after: string | null = null;
  for (;;) {
    const page = new SmallestNames(pageSize);
    for await (const batch of dirNameBatches(dir)) {
      for (const name of batch) {
        if ((after === null || compareNames(name, after) > 0) && filter(name)) page.offer(name);
      }
    }
    const full = page.size === pageSize;
    const names = page.drainSorted();
    yield* names;
    if (!full) return;
    after = names[names.length - 1]!;
  }
}
