/**
 * The coalescer (src/smtp/coalescer.ts) on its own: pieces of any sizes come out as the same bytes in blocks of
 * exactly the block size, each a buffer of its own that the writer thread can take by transfer, and the rest at
 * flush; nothing is held beyond one block.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { Coalescer } from '../src/smtp/coalescer';

describe('coalescer', () => {
  test('pieces of random sizes: the same bytes, in whole blocks of their own, the rest at flush', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 300 }),
        fc.array(fc.uint8Array({ maxLength: 700 }), { maxLength: 20 }),
        (blockSize, pieces) => {
          const c = new Coalescer(blockSize);
          const out: Buffer[] = [];
          for (const p of pieces) {
            // The pieces are views into a larger buffer, as smtp-server's are.
            const backing = Buffer.alloc(p.length + 10);
            backing.set(p, 5);
            for (const block of c.push(backing.subarray(5, 5 + p.length))) {
              assert.equal(block.length, blockSize);
              assert.ok(block.byteOffset === 0 && block.buffer.byteLength === blockSize, 'a block owns its memory');
              out.push(Buffer.from(block));
              block.fill(0); // handed over: the coalescer must never touch it again
            }
            assert.ok(c.held < blockSize);
          }
          const rest = c.flush();
          if (rest) out.push(rest);
          assert.equal(c.flush(), null);
          assert.deepEqual(Buffer.concat(out), Buffer.concat(pieces.map((p) => Buffer.from(p))));
        },
      ),
      { numRuns: 500 },
    );
  });

  test('a short message costs a small block, not a whole one', () => {
    const c = new Coalescer(64 * 1024);
    assert.deepEqual(c.push(Buffer.from('hello\r\n')), []);
    const rest = c.flush()!;
    assert.equal(rest.toString(), 'hello\r\n');
    assert.ok(rest.buffer.byteLength <= 4096, `${rest.buffer.byteLength} bytes allocated`);
  });
});
