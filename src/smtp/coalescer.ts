/**
 * Gathers a message's bytes, however small the pieces smtp-server hands over, into blocks of a fixed size, so the
 * queue writer gets one write per block instead of one per piece. Each block is a buffer of its own
 * (Buffer.allocUnsafeSlow: no pool slab shared with other buffers), which the writer thread can take by transfer.
 */
export class Coalescer {
  private block: Buffer | null = null;
  private used = 0;

  constructor(readonly blockSize: number) {
    if (!(blockSize >= 1)) throw new Error('Coalescer: blockSize must be at least 1');
  }

  /** Bytes held, waiting for their block to fill. */
  get held(): number {
    return this.used;
  }

  /** Copies `chunk` in and returns the blocks it filled (each exactly blockSize bytes, never touched again). */
  push(chunk: Buffer): Buffer[] {
    const full: Buffer[] = [];
    for (let off = 0; off < chunk.length; ) {
      if (!this.block) {
        // Sized to what is known to come, so a short message does not cost a whole block.
        this.block = Buffer.allocUnsafeSlow(Math.min(this.blockSize, Math.max(chunk.length - off, MIN_BLOCK)));
        this.used = 0;
      } else if (this.used === this.block.length) {
        this.grow(chunk.length - off);
      }
      const n = chunk.copy(this.block, this.used, off, off + Math.min(chunk.length - off, this.block.length - this.used));
      this.used += n;
      off += n;
      if (this.used === this.blockSize) {
        full.push(this.block);
        this.block = null;
        this.used = 0;
      }
    }
    return full;
  }

  /** The bytes held (a view of a buffer no one else holds), or null; the coalescer is then empty. */
  flush(): Buffer | null {
    const b = this.block;
    const n = this.used;
    this.block = null;
    this.used = 0;
    return b && n > 0 ? b.subarray(0, n) : null;
  }

  /** Doubles the block (at most to blockSize), or to what the next piece needs. */
  private grow(want: number): void {
    const old = this.block as Buffer;
    const next = Buffer.allocUnsafeSlow(Math.min(this.blockSize, Math.max(old.length * 2, this.used + want)));
    old.copy(next, 0, 0, this.used);
    this.block = next;
  }
}

const MIN_BLOCK = 4096;
