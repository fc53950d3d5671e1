/**
 * The DATA phase's dot un-stuffing and end detection, as a pure function of the bytes (no streams, no sockets),
 * so overrides.ts can feed smtp-server's data stream one buffer per socket chunk, in time linear in its length.
 *
 * The rules are exactly those of smtp-server 3.21.6's SMTPStream._feedDataStream (test/dot-unstuff.test.ts checks
 * this one against it on random input and chunkings). With D the bytes after `DATA<CRLF>`:
 *  - D starting with `.<CRLF>` is an empty message; D starting with `..` loses its first dot. E is what remains.
 *  - For every position j >= 2 of E where E[j] is a dot after an LF: if E[j-2..j+2] is `<CRLF>.<CRLF>` the message
 *    ends (its last CRLF is message content); else if E[j+1] is a dot, E[j] is dropped.
 * So DATA ends only on CRLF.CRLF (the smuggling defence in docs/SECURITY.md), whatever the chunking; a dot after a
 * bare LF is un-stuffed all the same, and a dot at E[1] never is (upstream never looks there; kept for identical
 * stored bytes).
 */

const CR = 0x0d;
const LF = 0x0a;
const DOT = 0x2e;
const EMPTY = Buffer.alloc(0);

export interface UnstuffStep {
  /** Message bytes this chunk decided, un-stuffed; a view of a buffer allocated for this step alone. */
  payload: Buffer;
  /** True once the terminator has been seen; no further feed() is allowed. */
  ended: boolean;
  /** When ended: the bytes after the terminator in this chunk (the client's next commands). */
  rest: Buffer;
}

export class DotUnstuffer {
  /** Bytes of D kept while its first bytes cannot yet tell an empty message or a leading `..` (at most 2). */
  private head: Buffer | null = EMPTY;
  /** The two raw bytes of E before `pending` (the look-behind of the next position to check). */
  private ctx0 = 0;
  private ctx1 = 0;
  /** Raw bytes of E not yet decided (at most 2: the look-ahead a dot needs). */
  private pending: Buffer = EMPTY;
  /** Index in E of pending[0]. */
  private ePos = 0;
  private done = false;

  get ended(): boolean {
    return this.done;
  }

  feed(chunk: Buffer): UnstuffStep {
    if (this.done) throw new Error('DotUnstuffer: the message has already ended');
    if (this.head === null) return this.body(chunk);
    // The start of D: decide between an empty message, a leading escape dot, or neither.
    const head = this.head;
    const at = (i: number) => (i < head.length ? head[i] : chunk[i - head.length]);
    const total = head.length + chunk.length;
    if (total === 0) return { payload: EMPTY, ended: false, rest: EMPTY };
    let skip = 0; // bytes of D that are not part of E (the escape dot)
    if (at(0) === DOT) {
      if (total < 2) return this.keepHead(head, chunk);
      if (at(1) === DOT) skip = 1;
      else if (at(1) === CR) {
        if (total < 3) return this.keepHead(head, chunk);
        if (at(2) === LF) {
          this.done = true;
          return { payload: EMPTY, ended: true, rest: chunk.subarray(3 - head.length) };
        }
      }
    }
    this.head = null;
    // E starts here; what the head holds beyond the escape dot goes in front of the chunk as undecided bytes.
    if (skip < head.length) {
      this.pending = head.subarray(skip);
      return this.body(chunk);
    }
    return this.body(chunk.subarray(skip - head.length));
  }

  private keepHead(head: Buffer, chunk: Buffer): UnstuffStep {
    this.head = Buffer.concat([head, chunk]);
    return { payload: EMPTY, ended: false, rest: EMPTY };
  }

  /**
   * One pass over pending + chunk, copied once into a buffer laid out as [ctx0 ctx1 | pending chunk]; escape dots
   * are dropped by moving the kept segments left in place. Positions are checked in order, each once.
   */
  private body(chunk: Buffer): UnstuffStep {
    const pend = this.pending;
    const n = pend.length + chunk.length;
    const end = 2 + n;
    const buf = Buffer.allocUnsafe(end);
    buf[0] = this.ctx0;
    buf[1] = this.ctx1;
    pend.copy(buf, 2);
    chunk.copy(buf, 2 + pend.length);
    // Positions below kMin are E[0] and E[1], never checked; a position k needs k+2 < end (its look-ahead).
    const kMin = 2 + Math.max(0, 2 - this.ePos);
    const limit = end - 2;
    let w = 2; // write position of the compacted payload
    let seg = 2; // start of the raw segment not yet moved to w
    for (let k = nextLineDot(buf, kMin, limit); k < limit; k = nextLineDot(buf, k + 1, limit)) {
      if (buf[k - 2] === CR && buf[k + 1] === CR && buf[k + 2] === LF) {
        w = moveLeft(buf, w, seg, k);
        this.done = true;
        // k + 3 is past the pending bytes (k >= 2 and the terminator's 3 bytes end at k + 2 < end).
        return { payload: buf.subarray(2, w), ended: true, rest: chunk.subarray(k + 3 - 2 - pend.length) };
      }
      if (buf[k + 1] === DOT) {
        w = moveLeft(buf, w, seg, k);
        seg = k + 1;
      }
    }
    // Decided: everything before `limit`, and E[0], E[1] however short the input is.
    const decided = Math.max(2, Math.min(end, Math.max(limit, kMin)));
    // Look-behind for the next chunk, read before the last move can overwrite it.
    this.ctx0 = buf[decided - 2];
    this.ctx1 = buf[decided - 1];
    this.pending = decided < end ? Buffer.from(buf.subarray(decided, end)) : EMPTY;
    this.ePos += decided - 2;
    w = moveLeft(buf, w, seg, decided);
    return { payload: buf.subarray(2, w), ended: false, rest: EMPTY };
  }
}

/**
 * The first k in [from, limit) where a dot follows an LF, or limit. A small loop of its own, which V8 compiles
 * tight; a native indexOf per line costs more than the bytes when lines are short.
 */
function nextLineDot(buf: Uint8Array, from: number, limit: number): number {
  for (let k = from; k < limit; k++) if (buf[k] === DOT && buf[k - 1] === LF) return k;
  return limit;
}

/** Moves buf[from, to) to w (w <= from) and returns the new write position. */
function moveLeft(buf: Buffer, w: number, from: number, to: number): number {
  if (to <= from) return w;
  if (w !== from) {
    if (to - from < 16) for (let i = from; i < to; i++) buf[w + i - from] = buf[i];
    else buf.copyWithin(w, from, to);
  }
  return w + (to - from);
}

/**
 * The same rules over a whole DATA phase at once, written for clarity: the reference the tests compare the
 * streaming un-stuffer (and smtp-server) with. Returns null when `d` holds no terminator.
 */
export function unstuffWhole(d: Buffer): { payload: Buffer; consumed: number } | null {
  if (d.length >= 3 && d[0] === DOT && d[1] === CR && d[2] === LF) return { payload: EMPTY, consumed: 3 };
  const s = d.length >= 2 && d[0] === DOT && d[1] === DOT ? 1 : 0;
  const e = d.subarray(s);
  const parts: Buffer[] = [];
  let last = 0;
  for (let j = 2; j + 2 < e.length; j++) {
    if (e[j] !== DOT || e[j - 1] !== LF) continue;
    if (e[j - 2] === CR && e[j + 1] === CR && e[j + 2] === LF) {
      parts.push(e.subarray(last, j));
      return { payload: Buffer.concat(parts), consumed: s + j + 3 };
    }
    if (e[j + 1] === DOT) {
      parts.push(e.subarray(last, j));
      last = j + 1;
    }
  }
  return null;
}
