import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import fc from 'fast-check';
import { compareNames, dirNameBatches, forEachName, SmallestNames, sortedNames, sortNames } from '../src/dirqueue';
import { withDir } from './helpers/temp-dirs';

function byteOrder(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
}

function touchAll(dir: string, names: Iterable<string>): void {
  fs.mkdirSync(dir, { recursive: true });
  for (const n of names) fs.writeFileSync(path.join(dir, n), '');
}

async function collect<T>(it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of it) out.push(x);
  return out;
}

function openFds(): number {
  return fs.readdirSync('/proc/self/fd').length;
}

test('compareNames is UTF-8 byte order, surrogates and lone surrogates included', () => {
  // Code units from every range where UTF-16 and UTF-8 orders differ or meet, lone surrogates too.
  const unit = fc.oneof(
    fc.constantFrom('0', '5', '.', '_', 'A', 'z', '+'),
    fc.integer({ min: 0x80, max: 0xd7ff }).map((c) => String.fromCharCode(c)),
    fc.integer({ min: 0xd800, max: 0xdfff }).map((c) => String.fromCharCode(c)),
    fc.integer({ min: 0xe000, max: 0xffff }).map((c) => String.fromCharCode(c)),
    fc.integer({ min: 0x10000, max: 0x10ffff }).map((c) => String.fromCodePoint(c)),
  );
  const name = fc.array(unit, { maxLength: 6 }).map((u) => u.join(''));
  fc.assert(
    fc.property(name, name, (a, b) => Math.sign(compareNames(a, b)) === Math.sign(byteOrder(a, b))),
    { numRuns: 20000 },
  );
  // A shared prefix is where the fast path returns: same answer for equal names and for a name and its extension.
  assert.equal(compareNames('50.1.A', '50.1.A'), 0);
  assert.ok(compareNames('50.1.A', '50.1.A.12.3') < 0);
  assert.ok(compareNames('x\ud800', 'x\ud800\udc00') < 0);
});

test(
  'dirNameBatches hands out every name once, in batches, and a missing directory as none',
  withDir('batches', async (dir) => {
    const names = Array.from({ length: 2500 }, (_, i) => `50.${String(i).padStart(20, '0')}.AAAA`);
    touchAll(path.join(dir, 'q'), names);
    const batches = await collect(dirNameBatches(path.join(dir, 'q'), { batchSize: 1000, bufferSize: 64 }));
    assert.deepEqual(
      batches.map((b) => b.length),
      [1000, 1000, 500],
    );
    assert.deepEqual(sortNames(batches.flat()), sortNames(names));
    assert.deepEqual(await collect(dirNameBatches(path.join(dir, 'none'))), []);
    let seen = 0;
    await forEachName(path.join(dir, 'q'), () => seen++);
    assert.equal(seen, 2500);
    fs.writeFileSync(path.join(dir, 'file'), '');
    await assert.rejects(collect(dirNameBatches(path.join(dir, 'file'))), /ENOTDIR/);
  }),
);

test(
  'dirNameBatches closes the directory when the caller stops early, and lets timers run between batches',
  withDir('early', async (dir) => {
    touchAll(
      path.join(dir, 'q'),
      Array.from({ length: 3000 }, (_, i) => `n${i}`),
    );
    const before = openFds();
    for await (const batch of dirNameBatches(path.join(dir, 'q'), { batchSize: 100 })) {
      assert.equal(batch.length, 100);
      assert.equal(openFds(), before + 1, 'the directory is open while streaming');
      break;
    }
    assert.equal(openFds(), before, 'and closed after break');
    let ticks = 0;
    const timer = setInterval(() => ticks++, 0);
    let batches = 0;
    for await (const _ of dirNameBatches(path.join(dir, 'q'), { batchSize: 10 })) {
      batches++;
      // Busy for longer than the timer's period: only a yield between batches lets it fire.
      const until = Date.now() + 2;
      while (Date.now() < until);
    }
    clearInterval(timer);
    assert.equal(batches, 300);
    assert.ok(ticks >= 10, `a timer fired ${ticks} times during 300 batches`);
  }),
);

test('SmallestNames keeps the k smallest in byte order', () => {
  fc.assert(
    fc.property(fc.uniqueArray(fc.string({ maxLength: 5 }), { maxLength: 60 }), fc.integer({ min: 1, max: 10 }), (names, k) => {
      const keep = new SmallestNames(k);
      for (const n of names) keep.offer(n);
      assert.deepEqual(keep.drainSorted(), [...names].sort(byteOrder).slice(0, k));
      assert.equal(keep.size, 0);
    }),
  );
  assert.throws(() => new SmallestNames(0), RangeError);
});

test(
  'sortedNames walks a directory in byte order over several passes, filtered, and stops on a short page',
  withDir('sorted', async (dir) => {
    const names = [
      '99.20240101000000000000.AAAA',
      '00.20240301000000000000.ZZZZ',
      '50.20240101120000123456.DNjkw.1234.23251',
      '50.20240101120000123456.DNjkw',
      '50.20240101120000123456.DN_kw',
      '50.20240101120000123456.DN+kw',
      '10.20231231235959999999.B',
      'README',
      '.hidden',
    ];
    for (let i = 0; i < 40; i++) names.push(`${String(i % 7).padStart(2, '0')}.2024010112${String(i * 7919).padStart(10, '0')}.H${i}`);
    touchAll(path.join(dir, 'queue'), names);
    const want = sortNames(names.filter((n) => /^\d/.test(n)));
    for (const pageSize of [1, 3, 7, want.length - 1, want.length, want.length + 1, 1024]) {
      assert.deepEqual(await collect(sortedNames(path.join(dir, 'queue'), { pageSize, filter: (n) => /^\d/.test(n) })), want, `page ${pageSize}`);
    }
    const odd = (n: string) => /^\d/.test(n) && n.endsWith('1');
    assert.deepEqual(await collect(sortedNames(path.join(dir, 'queue'), { pageSize: 2, filter: odd })), want.filter(odd));
    assert.deepEqual(await collect(sortedNames(path.join(dir, 'none'))), []);
  }),
);
