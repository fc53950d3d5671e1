/**
 * The PROXY header parser (src/smtp/proxy-header.ts) on bytes alone: well-formed v1 and v2 headers give the client
 * and where SMTP begins; every prefix of one asks for more; and each way of breaking one is refused with the reason
 * the metrics count (missing, malformed, oversized).
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { parseProxyHeader, PROXY_V1_MAX_BYTES, PROXY_V2_MAX_BLOCK_BYTES, type ProxyParse } from '../src/smtp/proxy-header';
import { PROXY_REJECTION_REASONS } from '../src/metrics/definitions';
import { proxyOpening, validV1, validV2 } from './helpers/proxy-arbitraries';
import { tlv, v1, v2, v2Local, V2_SIGNATURE } from './helpers/proxy-headers';

const b = (s: string) => Buffer.from(s, 'latin1');

function complete(r: ProxyParse) {
  assert.equal(r.status, 'complete', JSON.stringify(r));
  if (r.status !== 'complete') throw new Error('unreachable');
  return r.header;
}

function rejected(r: ProxyParse, reason: string, detail?: RegExp): void {
  assert.equal(r.status, 'rejected', JSON.stringify(r));
  if (r.status !== 'rejected') return;
  assert.equal(r.reason, reason, r.detail);
  assert.ok((PROXY_REJECTION_REASONS as readonly string[]).includes(r.reason));
  if (detail) assert.match(r.detail, detail);
}

describe('v1 (text line)', () => {
  test('TCP4: client, destination and the header length including CRLF', () => {
    const line = 'PROXY TCP4 192.0.2.10 198.51.100.25 40000 25\r\n';
    const h = complete(parseProxyHeader(Buffer.concat([b(line), b('EHLO x\r\n')])));
    assert.deepEqual(h, {
      version: 1,
      source: { address: '192.0.2.10', port: 40000 },
      destination: { address: '198.51.100.25', port: 25 },
      length: line.length,
    });
  });

  test('TCP6: compressed, full and upper-case forms come out canonical; IPv4-mapped comes out as IPv4', () => {
    assert.equal(complete(parseProxyHeader(b('PROXY TCP6 2001:db8::1 2001:db8::2 1 2\r\n'))).source?.address, '2001:db8::1');
    assert.equal(complete(parseProxyHeader(b('PROXY TCP6 2001:0DB8:0000:0000:0000:0000:0000:00A1 ::1 65535 0\r\n'))).source?.address, '2001:db8::a1');
    const mapped = complete(parseProxyHeader(b('PROXY TCP6 ::ffff:192.0.2.7 ::ffff:198.51.100.1 5 25\r\n')));
    assert.equal(mapped.source?.address, '192.0.2.7');
    assert.equal(mapped.destination?.address, '198.51.100.1');
    assert.deepEqual([mapped.source?.port, mapped.destination?.port], [5, 25]);
  });

  test('UNKNOWN, short or with anything after it, names no client', () => {
    assert.deepEqual(complete(parseProxyHeader(b('PROXY UNKNOWN\r\n'))), { version: 1, source: null, destination: null, length: 15 });
    assert.equal(complete(parseProxyHeader(b('PROXY UNKNOWN  not  parsed at all \r\n'))).source, null);
    rejected(parseProxyHeader(b('PROXY UNKNOWNX\r\n')), 'malformed');
    const long = `PROXY UNKNOWN ${'ffff:'.repeat(7)}ffff ${'ffff:'.repeat(7)}ffff 65535 65535\r\n`;
    assert.equal(long.length, PROXY_V1_MAX_BYTES, 'the longest line the protocol allows');
    assert.equal(complete(parseProxyHeader(b(long))).source, null);
  });

  test('every proper prefix of a valid line asks for more', () => {
    for (const line of [v1('192.0.2.10', '198.51.100.25', 40000, 25), v1('2001:db8::1', '2001:db8::2', 1, 25), b('PROXY UNKNOWN\r\n')]) {
      for (let n = 0; n < line.length; n++) assert.equal(parseProxyHeader(line.subarray(0, n)).status, 'incomplete', JSON.stringify(line.subarray(0, n).toString('latin1')));
    }
  });

  test('a line without CRLF within 107 bytes is oversized, decided at 107 bytes', () => {
    const long = b(`PROXY UNKNOWN ${'x'.repeat(200)}`);
    assert.equal(parseProxyHeader(long.subarray(0, PROXY_V1_MAX_BYTES - 1)).status, 'incomplete');
    rejected(parseProxyHeader(long.subarray(0, PROXY_V1_MAX_BYTES)), 'oversized');
    rejected(parseProxyHeader(long), 'oversized');
    // 108 bytes with the CRLF: one too many.
    const line = b(`PROXY UNKNOWN ${'x'.repeat(PROXY_V1_MAX_BYTES - 15)}\r\n`);
    assert.equal(line.length, PROXY_V1_MAX_BYTES + 1);
    rejected(parseProxyHeader(line), 'oversized');
  });

  const MALFORMED: Array<[string, string]> = [
    ['no protocol', 'PROXY\r\n'],
    ['no space after PROXY', 'PROXYTCP4 1.2.3.4 5.6.7.8 1 2\r\n'],
    ['two spaces', 'PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n'],
    ['two spaces between addresses', 'PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n'],
    ['a trailing space', 'PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n'],
    ['a tab for a space', 'PROXY TCP4\t1.2.3.4 5.6.7.8 1 2\r\n'],
    ['a bare LF', 'PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n'],
    ['a CR not followed by LF', 'PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX'],
    ['a CR in the middle', 'PROXY TCP4 1.2.3.4\r5.6.7.8 1 2\r\n'],
    ['an unknown protocol', 'PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n'],
    ['a lower-case protocol', 'PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n'],
    ['UDP4', 'PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n'],
    ['five fields', 'PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n'],
    ['seven fields', 'PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n'],
    ['an IPv6 address in TCP4', 'PROXY TCP4 2001:db8::1 5.6.7.8 1 2\r\n'],
    ['an IPv4 address in TCP6', 'PROXY TCP6 1.2.3.4 2001:db8::1 1 2\r\n'],
    ['a leading zero in IPv4', 'PROXY TCP4 010.0.0.1 5.6.7.8 1 2\r\n'],
    ['three-part IPv4', 'PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n'],
    ['shortened IPv4', 'PROXY TCP4 127.1 5.6.7.8 1 2\r\n'],
    ['hex IPv4', 'PROXY TCP4 0x7f.0.0.1 5.6.7.8 1 2\r\n'],
    ['an octet over 255', 'PROXY TCP4 256.1.1.1 5.6.7.8 1 2\r\n'],
    ['a host name', 'PROXY TCP4 mx.example 5.6.7.8 1 2\r\n'],
    ['two ::', 'PROXY TCP6 1::2::3 ::1 1 2\r\n'],
    ['a zone index', 'PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n'],
    ['brackets', 'PROXY TCP6 [::1] ::1 1 2\r\n'],
    ['a group of five digits', 'PROXY TCP6 00001:: ::1 1 2\r\n'],
    ['a leading zero in embedded IPv4', 'PROXY TCP6 ::ffff:01.2.3.4 ::1 1 2\r\n'],
    ['port 65536', 'PROXY TCP4 1.2.3.4 5.6.7.8 65536 25\r\n'],
    ['port 99999', 'PROXY TCP4 1.2.3.4 5.6.7.8 1 99999\r\n'],
    ['a port with a leading zero', 'PROXY TCP4 1.2.3.4 5.6.7.8 025 25\r\n'],
    ['a negative port', 'PROXY TCP4 1.2.3.4 5.6.7.8 -1 25\r\n'],
    ['a port with a sign', 'PROXY TCP4 1.2.3.4 5.6.7.8 +1 25\r\n'],
    ['a six-digit port', 'PROXY TCP4 1.2.3.4 5.6.7.8 100000 25\r\n'],
    ['a NUL byte', 'PROXY TCP4 1.2.3.4\x005.6.7.8 1 2\r\n'],
    ['an 8-bit byte', 'PROXY TCP4 1.2.3.4 5.6.7.8 1 2\xe9\r\n'],
  ];
  for (const [what, line] of MALFORMED) {
    test(`malformed: ${what}`, () => rejected(parseProxyHeader(b(line)), 'malformed'));
  }

  test('a bad byte is refused as soon as it arrives, without waiting for the CRLF', () => {
    rejected(parseProxyHeader(b('PROXY TCP4 1.2\x00')), 'malformed');
    rejected(parseProxyHeader(b('PROXY TCP4\n')), 'malformed');
    rejected(parseProxyHeader(b('PROXY\rX')), 'malformed');
  });
});

describe('v2 (binary)', () => {
  test('PROXY over TCP/IPv4: client, destination, header length', () => {
    const header = v2({ src: '203.0.113.9', dst: '198.51.100.25', sport: 51234, dport: 25 });
    assert.equal(header.length, 16 + 12);
    const h = complete(parseProxyHeader(Buffer.concat([header, b('EHLO x\r\n')])));
    assert.deepEqual(h, {
      version: 2,
      source: { address: '203.0.113.9', port: 51234 },
      destination: { address: '198.51.100.25', port: 25 },
      length: 28,
    });
  });

  test('PROXY over TCP/IPv6, and an IPv4-mapped IPv6 client as IPv4', () => {
    const h = complete(parseProxyHeader(v2({ src: '2001:db8:0:0:1:0:0:1', dst: '2001:db8::25', sport: 0, dport: 65535 })));
    assert.deepEqual(h.source, { address: '2001:db8::1:0:0:1', port: 0 });
    assert.deepEqual(h.destination, { address: '2001:db8::25', port: 65535 });
    assert.equal(h.length, 16 + 36);
    assert.equal(complete(parseProxyHeader(v2({ src: '::ffff:c000:207', dst: '::1' }))).source?.address, '192.0.2.7');
  });

  test('LOCAL names no client, whatever its block holds', () => {
    assert.deepEqual(complete(parseProxyHeader(v2Local())), { version: 2, source: null, destination: null, length: 16 });
    // A LOCAL block is skipped unread: addresses, or a TLV that would not parse, are not looked at.
    const withAddresses = v2({ command: 0, src: '192.0.2.1', famProto: 0x11 });
    assert.equal(complete(parseProxyHeader(withAddresses)).source, null);
    const junk = v2({ command: 0, famProto: 0x00, block: Buffer.from([0xff, 0xff]) });
    assert.equal(complete(parseProxyHeader(junk)).length, 18);
  });

  test('UNSPEC and UNIX families, UDP, and an unspecified protocol name no client', () => {
    assert.equal(complete(parseProxyHeader(v2({ famProto: 0x00 }))).source, null);
    const unix = complete(parseProxyHeader(v2({ famProto: 0x31, block: Buffer.alloc(216, 0x61) })));
    assert.deepEqual([unix.source, unix.length], [null, 16 + 216]);
    assert.equal(complete(parseProxyHeader(v2({ famProto: 0x12 }))).source, null, 'UDP over IPv4');
    assert.equal(complete(parseProxyHeader(v2({ famProto: 0x22, src: '2001:db8::1' }))).source, null, 'UDP over IPv6');
    assert.equal(complete(parseProxyHeader(v2({ famProto: 0x10 }))).source, null, 'IPv4 with an unspecified protocol');
  });

  test('TLVs are skipped: the header ends after them, the client is still read', () => {
    const header = v2({ src: '192.0.2.44', tlvs: [tlv(0x01, 'smtp'), tlv(0x05, Buffer.alloc(32, 7)), tlv(0x04, ''), tlv(0x20, Buffer.alloc(100))] });
    const h = complete(parseProxyHeader(Buffer.concat([header, b('QUIT\r\n')])));
    assert.equal(h.source?.address, '192.0.2.44');
    assert.equal(h.length, header.length);
    assert.equal(h.length, 16 + 12 + (3 + 4) + (3 + 32) + 3 + (3 + 100));
  });

  test('the largest block allowed is read; one byte more is oversized as soon as the length is known', () => {
    const max = v2({ tlvs: [tlv(0x04, Buffer.alloc(PROXY_V2_MAX_BLOCK_BYTES - 12 - 3))] });
    assert.equal(max.length, 16 + PROXY_V2_MAX_BLOCK_BYTES);
    assert.equal(complete(parseProxyHeader(max)).length, max.length);
    const over = v2({ tlvs: [tlv(0x04, Buffer.alloc(PROXY_V2_MAX_BLOCK_BYTES - 12 - 2))] });
    rejected(parseProxyHeader(over.subarray(0, 16)), 'oversized', /2049/);
    rejected(parseProxyHeader(v2({ lengthField: 0xffff }).subarray(0, 16)), 'oversized');
  });

  test('every proper prefix of a valid header asks for more', () => {
    for (const header of [v2(), v2({ src: '2001:db8::1' }), v2Local(), v2({ tlvs: [tlv(0x02, 'mx.example')] })]) {
      for (let n = 0; n < header.length; n++) assert.equal(parseProxyHeader(header.subarray(0, n)).status, 'incomplete', `${n} of ${header.length}`);
    }
  });

  test('a length field that promises more than arrives waits for it (the deadline ends the wait)', () => {
    const header = v2({ lengthField: 12 + 40 });
    assert.equal(parseProxyHeader(header).status, 'incomplete');
  });

  const MALFORMED: Array<[string, Buffer]> = [
    ['version 1', v2({ version: 1 })],
    ['version 3', v2({ version: 3 })],
    ['version 0 with LOCAL', v2({ version: 0, command: 0 })],
    ['command 2', v2({ command: 2 })],
    ['command 15', v2({ command: 15 })],
    ['family 4', v2({ famProto: 0x41 })],
    ['family 15', v2({ famProto: 0xf1 })],
    ['protocol 3', v2({ famProto: 0x13 })],
    ['an IPv4 block cut short', v2({ famProto: 0x11, block: Buffer.alloc(11) })],
    ['an IPv6 block the size of IPv4', v2({ famProto: 0x21, block: Buffer.alloc(12) })],
    ['a UNIX block cut short', v2({ famProto: 0x31, block: Buffer.alloc(215) })],
    ['a TLV cut off before its length', v2({ tlvs: [], block: Buffer.concat([v2().subarray(16), Buffer.from([0x04, 0x00])]) })],
    ['a TLV running past the header', v2({ block: Buffer.concat([v2().subarray(16), Buffer.from([0x04, 0x00, 0x05, 1, 2])]) })],
    ['a TLV after an UNSPEC block running past the header', v2({ famProto: 0x00, block: Buffer.from([0x01, 0xff, 0xff]) })],
  ];
  for (const [what, header] of MALFORMED) {
    test(`malformed: ${what}`, () => rejected(parseProxyHeader(header), 'malformed'));
  }
});

describe('no PROXY header', () => {
  test('SMTP, HTTP, TLS or anything else is "missing", decided on the first byte that tells', () => {
    for (const start of ['EHLO client.example\r\n', 'HELO x\r\n', 'QUIT\r\n', 'GET / HTTP/1.1\r\n', '\x16\x03\x01\x02\x00', 'proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n', 'PX', '\r\nEHLO x\r\n', '\r\n\r\n\x01']) {
      rejected(parseProxyHeader(b(start)), 'missing');
    }
  });

  test('nothing yet, or the first bytes of a signature, is not decided', () => {
    for (const start of [Buffer.alloc(0), b('P'), b('PROX'), V2_SIGNATURE.subarray(0, 1), V2_SIGNATURE.subarray(0, 11), V2_SIGNATURE]) {
      assert.equal(parseProxyHeader(start).status, 'incomplete', JSON.stringify(start.toString('latin1')));
    }
  });
});

describe('any input (property)', () => {
  const seed = Number(process.env.FUZZ_SEED ?? (process.env.CI ? 15015 : Date.now() % 2 ** 31));

  test('never throws; "incomplete" only below the size limits; a header never claims more bytes than it was given', () => {
    fc.assert(
      fc.property(proxyOpening, (input) => {
        const r = parseProxyHeader(input);
        if (r.status === 'incomplete') assert.ok(input.length < 16 + PROXY_V2_MAX_BLOCK_BYTES && (input[0] !== 0x50 || input.length < PROXY_V1_MAX_BYTES));
        if (r.status === 'complete') {
          assert.ok(r.header.length <= input.length);
          assert.ok(r.header.length <= (r.header.version === 1 ? PROXY_V1_MAX_BYTES : 16 + PROXY_V2_MAX_BLOCK_BYTES));
          assert.equal((r.header.source === null), (r.header.destination === null));
        }
      }),
      { numRuns: 5000, seed },
    );
  });

  test('split anywhere, the verdict on the first part stands once it is not "incomplete" (so reading in pieces is safe)', () => {
    fc.assert(
      fc.property(proxyOpening, fc.nat(), (input, cut) => {
        const part = parseProxyHeader(input.subarray(0, cut % (input.length + 1)));
        if (part.status !== 'incomplete') assert.deepEqual(parseProxyHeader(input), part);
      }),
      { numRuns: 5000, seed },
    );
  });

  test('every generated valid header is complete, with canonical addresses that round-trip', () => {
    fc.assert(
      fc.property(fc.oneof(validV1, validV2), fc.uint8Array({ maxLength: 50 }), (header, tail) => {
        const r = parseProxyHeader(Buffer.concat([header, Buffer.from(tail)]));
        const h = complete(r);
        assert.equal(h.length, header.length);
        for (const end of [h.source, h.destination]) {
          if (end) assert.ok(end.port >= 0 && end.port <= 65535 && !end.address.startsWith('::ffff:') && end.address === end.address.toLowerCase());
        }
      }),
      { numRuns: 3000, seed },
    );
  });
});
