import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  compareNames,
  dataLocation,
  dirqueueHash,
  dirqueueHashBytes,
  encodeHostForTmp,
  formatStamp,
  name0,
  parseName,
  parseTmpName,
  retryName,
  sortNames,
  tmpName,
} from '../src/dirqueue';

test('HASH of the worked example in docs/dirqueue.md: trap1 + pid 1234 -> DNjkw', () => {
  assert.equal(dirqueueHash('trap1', 1234), 'DNjkw');
  // The hash is a byte sum: 4321 has the same digits, so the same hash.
  assert.equal(dirqueueHash('trap1', 4321), 'DNjkw');
});

test('HASH drops zero sextets and encodes the digit count', () => {
  // sum 0 -> D = "0" (0x30): sextets 12, 0, 0, 0 -> "B" (length 1) + "M"
  assert.equal(dirqueueHashBytes(Buffer.alloc(0)), 'BM');
  // sum 65535 wraps: 65536 bytes of 0xff... sum = (65536*255) & 0xffff = 0 -> same as empty
  assert.equal(dirqueueHashBytes(Buffer.alloc(65536, 0xff)), 'BM');
  // 5 digits "12345": two groups, the second padded with NULs whose zero sextets vanish
  const h = dirqueueHashBytes(Buffer.from([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x99]));
  // sum = 48*255 + 153 = 12393: "123" = 0x313233 -> 12,19,8,51 ; "93\0\0"... = 0x393300 -> 14,19,12,0
  assert.equal(h, 'FMTIzOTM');
  assert.match(dirqueueHash('a.very.long.host.example.org', 4194304), /^[A-Za-z0-9+_]{2,8}$/);
});

test('STAMP is UTC with %06d microseconds', () => {
  assert.equal(formatStamp({ sec: 1704110400, usec: 123456 }), '20240101120000123456');
  assert.equal(formatStamp({ sec: 0, usec: 7 }), '19700101000000000007');
  assert.equal(formatStamp({ sec: 1709164799, usec: 999999 }), '20240228235959999999');
});

test('NAME0, data split and retry names of the worked example', () => {
  const base = name0(50, { sec: 1704110400, usec: 123456 }, 'DNjkw');
  assert.equal(base, '50.20240101120000123456.DNjkw');
  assert.deepEqual(dataLocation(base), { h1: 'k', h2: 'w', dname: '50.20240101120000123456.DNj' });
  assert.equal(retryName(base, 1234, 23251), '50.20240101120000123456.DNjkw.1234.23251');
  assert.equal(name0(0, { sec: 1704110400, usec: 5 }, 'BM'), '00.20240101120000000005.BM');
  assert.equal(name0(99, { sec: 1704110400, usec: 5 }, 'BM').slice(0, 3), '99.');
});

test('priorities outside 0..99 are refused', () => {
  for (const p of [-1, 100, 1.5, NaN]) {
    assert.throws(() => name0(p, { sec: 1, usec: 0 }, 'BM'), /bad priority/);
  }
});

test('parseName accepts both name forms and nothing else', () => {
  assert.deepEqual(parseName('50.20240101120000123456.DNjkw'), {
    priority: 50,
    stamp: '20240101120000123456',
    hash: 'DNjkw',
    retry: null,
  });
  assert.deepEqual(parseName('07.20240101120000123456.DNjkw.1234.23251')?.retry, { pid: 1234, rand: 23251 });
  for (const bad of ['5.20240101120000123456.DNjkw', '50.2024010112000012345.DNjkw', '50.20240101120000123456.', '50.20240101120000123456.DN-k', '50.20240101120000123456.DNjkw.1234']) {
    assert.equal(parseName(bad), null, bad);
  }
});

test('sort order is priority, then stamp, then hash and suffix, by bytes', () => {
  const names = [
    '50.20240101120000123457.AAAA',
    '99.20200101000000000000.AAAA',
    '50.20240101120000123456.DNjkw.1234.5',
    '00.20990101000000000000.zzzz',
    '50.20240101120000123456.DNjkw',
    '50.20240101120000123456.CNjkw',
  ];
  assert.deepEqual(sortNames(names), [
    '00.20990101000000000000.zzzz',
    '50.20240101120000123456.CNjkw',
    '50.20240101120000123456.DNjkw',
    '50.20240101120000123456.DNjkw.1234.5',
    '50.20240101120000123457.AAAA',
    '99.20200101000000000000.AAAA',
  ]);
  // '_' (0x5f) sorts before 'a' and after 'Z' in bytes; '+' before digits.
  assert.ok(compareNames('50.1.+', '50.1.0') < 0);
  assert.ok(compareNames('50.1.Z', '50.1._') < 0 && compareNames('50.1._', '50.1.a') < 0);
  // UTF-16 order would put U+FF5E after U+1F600's surrogates wrongly; byte order does not.
  assert.ok(compareNames('5\uff5e', '5\u{1f600}') < 0);
});

test('tmp names carry host and real pid and round-trip, dotted host names included', () => {
  const t = { base: '50.20240101120000123456.DNjkw', host: 'mx1.example.org', pid: 4242, seq: 7 };
  const n = tmpName(t, 'data');
  assert.equal(n, '50.20240101120000123456.DNjkw.spamtrapd.mx1.example.org.4242.7.data');
  assert.deepEqual(parseTmpName(n), { ...t, kind: 'data' });
  assert.equal(parseTmpName(tmpName(t, 'ctrl'))?.kind, 'ctrl');
  assert.equal(encodeHostForTmp('a/b c%'), 'a%2Fb%20c%25');
  assert.equal(parseTmpName(tmpName({ ...t, host: 'we/ird' }, 'ctrl'))?.host, 'we%2Fird');
  // What IPC::DirQueue and its consumers put in tmp/ is never ours.
  assert.deepEqual(parseTmpName(tmpName({ ...t, start: '123456789' }, 'data')), { ...t, start: '123456789', kind: 'data' });
  assert.equal(tmpName({ ...t, start: '77' }, 'ctrl').includes(`.${t.pid}s77.`), true);
  assert.equal(parseTmpName('50.20240101120000123456.DNjkw.data'), null);
  assert.equal(parseTmpName('50.20240101120000123456.DNjkw.ctrl'), null);
  assert.equal(parseTmpName('50.20240101120000123456.DNjkw.1704110400.mx1.4242.active'), null);
});
