/**
 * The DATA phase's un-stuffer on its own (src/smtp/dot-unstuff.ts), without sockets: on random bytes cut into random
 * chunks it gives what the whole-message reference gives, and the trap's parser (TrapSMTPStream) gives what
 * smtp-server's own SMTPStream gives, payload and the commands after the final dot alike, with one write to the data
 * stream per chunk instead of one per dot-stuffed line.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { SMTPStream } from 'smtp-server/lib/smtp-stream.js';
import { DotUnstuffer, unstuffWhole } from '../src/smtp/dot-unstuff';
import { TrapSMTPStream } from '../src/smtp/overrides';

const b = (s: string) => Buffer.from(s, 'latin1');
const TERMINATOR = b('\r\n.\r\n');

/** Cuts `d` at the given points (any numbers; taken modulo the length, sorted, deduplicated). */
function cut(d: Buffer, points: number[]): Buffer[] {
  const at = [...new Set(points.map((p) => (d.length ? p % (d.length + 1) : 0)))].sort((x, y) => x - y);
  const out: Buffer[] = [];
  let prev = 0;
  for (const p of [...at, d.length]) {
    if (p > prev) out.push(d.subarray(prev, p));
    prev = Math.max(prev, p);
  }
  return out;
}

/** Feeds the chunks until the un-stuffer ends; the payload and what followed the terminator. */
function streamed(chunks: Buffer[]): { payload: Buffer; rest: Buffer; ended: boolean; payloads: number } {
  const u = new DotUnstuffer();
  const parts: Buffer[] = [];
  const rests: Buffer[] = [];
  let payloads = 0;
  for (const c of chunks) {
    if (u.ended) {
      rests.push(c);
      continue;
    }
    const step = u.feed(c);
    if (step.payload.length) payloads++;
    parts.push(step.payload);
    if (step.ended) rests.push(step.rest);
  }
  return { payload: Buffer.concat(parts), rest: Buffer.concat(rests), ended: u.ended, payloads };
}

/** Bytes over a small alphabet, so dots, CR and LF meet often. */
const dataBytes = (maxLength: number) =>
  fc
    .array(fc.constantFrom(...['.', '.', '.', '\r', '\n', '\n', 'a', '\0', '\r\n', '\r\n.', '\n..', '\r\n.\r\n'].map(b)), { maxLength })
    .map((parts) => Buffer.concat(parts));

describe('dot un-stuffing, pure', () => {
  test('random bytes in random chunks: the same as the whole-message reference', () => {
    fc.assert(
      fc.property(dataBytes(40), fc.array(fc.nat(), { maxLength: 12 }), (body, points) => {
        const d = Buffer.concat([body, TERMINATOR, b('NOOP\r\n')]);
        const want = unstuffWhole(d);
        assert.ok(want, 'the appended terminator always ends it');
        const got = streamed(cut(d, points));
        assert.ok(got.ended);
        assert.deepEqual(got.payload, want.payload);
        assert.deepEqual(got.rest, d.subarray(want.consumed));
      }),
      { numRuns: 3000 },
    );
  });

  test('one byte at a time, as a slow client sends it: the same as the reference', () => {
    fc.assert(
      fc.property(dataBytes(30), (body) => {
        const d = Buffer.concat([body, TERMINATOR]);
        const want = unstuffWhole(d)!;
        const got = streamed([...d].map((x) => Buffer.from([x])));
        assert.deepEqual(got.payload, want.payload);
        assert.deepEqual(got.rest, d.subarray(want.consumed));
      }),
      { numRuns: 1000 },
    );
  });

  test('the shapes the smuggling defence depends on', () => {
    const cases: Array<[string, string | null]> = [
      ['.\r\n', ''], // an empty message
      ['..\r\n.\r\n', '.\r\n'], // a first line "." is content, not a terminator
      ['\r\n.\r\n', '\r\n'],
      ['a\r\n..\r\n.\r\n', 'a\r\n.\r\n'],
      ['a\n.\nb', null], // bare LF around the dot: not an end
      ['a\r\n.\nb', null],
      ['a\n.\r\nb', null],
      ['a\r.\r\nb', null],
      ['a\n..b\r\n..\r\n', null],
      ['a\n..b\r\n.\r\n', 'a\n.b\r\n'], // a dot after a bare LF is un-stuffed all the same
      ['\n..\r\n.\r\n', '\n..\r\n'], // upstream never looks at the second byte of DATA
    ];
    for (const [data, want] of cases) {
      const whole = unstuffWhole(b(data));
      assert.equal(whole === null ? null : whole.payload.toString('latin1'), want, JSON.stringify(data));
      for (let k = 0; k <= data.length; k++) {
        const got = streamed([b(data.slice(0, k)), b(data.slice(k))]);
        assert.equal(got.ended ? got.payload.toString('latin1') : null, want, `${JSON.stringify(data)} cut at ${k}`);
      }
    }
  });

  test('one payload per chunk, however many lines are dot-stuffed, and linear work', () => {
    const lines = 200_000;
    const dots = Buffer.concat([b('..a\r\n'.repeat(lines)), b('.\r\n')]);
    const chunks = cut(dots, Array.from({ length: Math.ceil(dots.length / 65536) }, (_, i) => (i + 1) * 65536));
    const got = streamed(chunks);
    assert.ok(got.payloads <= chunks.length, `${got.payloads} payloads for ${chunks.length} chunks`);
    assert.deepEqual(got.payload, b('.a\r\n'.repeat(lines)));
  });
});

/** Runs a parser class over the chunks the way SMTPConnection does (continue() once the data stream ended). */
async function parse(Parser: typeof SMTPStream, chunks: Buffer[]): Promise<{ payload: Buffer; commands: string[]; writes: number }> {
  const p = new Parser();
  const commands: string[] = [];
  p.oncommand = (command: Buffer, callback?: () => void) => {
    commands.push(command.toString('latin1'));
    callback?.();
  };
  const ds = p.startDataMode();
  const parts: Buffer[] = [];
  ds.on('data', (d: Buffer) => parts.push(d));
  const ended = new Promise<void>((resolve) =>
    ds.on('end', () => {
      p.continue();
      resolve();
    }),
  );
  const finished = new Promise<void>((resolve) => p.on('finish', () => resolve()));
  for (const c of chunks) p.write(c);
  p.end();
  await ended;
  await finished;
  return { payload: Buffer.concat(parts), commands, writes: parts.length };
}

describe("the trap's parser against smtp-server's", () => {
  test('random bytes in random chunks: the same message and the same commands after it', async () => {
    await fc.assert(
      fc.asyncProperty(dataBytes(40), dataBytes(12), fc.array(fc.nat(), { maxLength: 10 }), async (body, after, points) => {
        const d = Buffer.concat([body, TERMINATOR, after, b('\r\nQUIT\r\n')]);
        const chunks = cut(d, points);
        const upstream = await parse(SMTPStream, chunks);
        const ours = await parse(TrapSMTPStream, chunks);
        assert.deepEqual(ours.payload, upstream.payload);
        assert.deepEqual(ours.commands, upstream.commands);
        assert.deepEqual(ours.payload, unstuffWhole(d)!.payload);
      }),
      { numRuns: 1500 },
    );
  });

  test('a message of dot-stuffed lines reaches the data stream in one write per chunk, not one per line', async () => {
    const d = Buffer.concat([b('..a\r\n'.repeat(20_000)), b('.\r\nQUIT\r\n')]);
    const chunks = cut(d, [16384, 32768, 49152, 65536, 81920]);
    const upstream = await parse(SMTPStream, chunks);
    const ours = await parse(TrapSMTPStream, chunks);
    assert.deepEqual(ours.payload, upstream.payload);
    assert.deepEqual(ours.commands, ['QUIT']);
    assert.ok(upstream.writes >= 20_000, `upstream wrote ${upstream.writes} times`);
    assert.ok(ours.writes <= chunks.length, `ours wrote ${ours.writes} times for ${chunks.length} chunks`);
  });
});
