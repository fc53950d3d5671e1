import { test } from 'node:test';
import assert from 'node:assert/strict';
import { InvalidMetadatumError, parseControl, serializeControl, validateMetadata } from '../src/dirqueue';

const fields = { dataPath: '/tmp/trap1-example/data/k/w/50.20240101120000123456.DNj', size: 6, sec: 1704110400, usec: 123456, hostname: 'trap1' };

test('control file of the worked example, byte for byte', () => {
  const buf = serializeControl(fields, { rcpt: 'trap@example.org' });
  assert.equal(
    buf.toString('latin1'),
    'QDFN: /tmp/trap1-example/data/k/w/50.20240101120000123456.DNj\n' +
      'QDSB: 6\nQSTT: 1704110400\nQSTM: 123456\nQSHN: trap1\nrcpt: trap@example.org\n',
  );
});

test('QSTM is not zero-padded; strings are written as UTF-8, Buffers as given', () => {
  const buf = serializeControl({ ...fields, usec: 42 }, { s: 'h\u00e9', b: Buffer.from([0xe9, 0xff]) });
  const text = buf.toString('latin1');
  assert.match(text, /\nQSTM: 42\n/);
  assert.ok(buf.includes(Buffer.from('s: h\u00c3\u00a9\n', 'latin1')));
  assert.ok(buf.includes(Buffer.from([0x62, 0x3a, 0x20, 0xe9, 0xff, 0x0a])));
});

test('forbidden metadata are refused with the key in the message', () => {
  const bad: Record<string, string>[] = [
    { Qabc: 'x' },
    { Q123: 'x' },
    { QDFN: '/etc/passwd' },
    { 'Q\u00e9a': 'x' }, // 4 bytes in UTF-8, which is what Perl sees
    { 'a:b': 'x' },
    { 'a\0': 'x' },
    { 'a\nb': 'x' },
    { ok: 'x\ny' },
    { ok: 'x\0y' },
  ];
  for (const md of bad) {
    const key = Object.keys(md)[0] as string;
    assert.throws(() => validateMetadata(md), (e: unknown) => e instanceof InvalidMetadatumError && e.message === `invalid metadatum: '${key}'`);
    assert.throws(() => serializeControl(fields, md), InvalidMetadatumError);
  }
});

test('everything else is allowed', () => {
  const ok = { '': '', Qab: 'x', Qabcd: 'x', qabc: 'x', 'k k': 'a: b\tc\r', hi: '\u00ff\u20ac', 'Q\u00e9': 'x' };
  validateMetadata(ok);
  const parsed = parseControl(serializeControl(fields, ok));
  assert.deepEqual({ ...parsed.metadata }, ok);
});

test('parsing follows read_control_file quirks', () => {
  const p = parseControl(Buffer.from('QDFN: /x/data/a/b/c\r\nQDSB: 6\nk: v: w\nk: later\nlast: abc', 'latin1'));
  assert.equal(p.fields['QDFN'], '/x/data/a/b/c\r', 'CRLF leaves the CR');
  assert.equal(p.fields['QDSB'], '6');
  assert.equal(p.metadata['k'], 'later', 'a repeated key overwrites');
  assert.equal(p.metadata['last'], 'ab', 'a missing final newline costs a real character');
  const q = parseControl(Buffer.from('nocolon\n__proto__: x\nQXYZ: field\n'));
  assert.equal(q.metadata['nocolon\n'], '');
  assert.equal(q.metadata['__proto__'], 'x');
  assert.equal(q.fields['QXYZ'], 'field');
  assert.equal(q.metadata['QXYZ'], undefined);
});
