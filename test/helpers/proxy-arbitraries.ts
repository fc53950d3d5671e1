/**
 * fast-check generators of what a balancer, a broken balancer or an attacker on a trusted address could send first:
 * valid v1 and v2 headers (TLVs, every family), the same truncated, bit-flipped or lying about their length,
 * oversized ones, and plain garbage, each possibly followed by SMTP or junk.
 */
import fc from 'fast-check';
import { V2_SIGNATURE } from './proxy-headers';

const b = (s: string) => Buffer.from(s, 'latin1');
const bytes = (maxLength: number, minLength = 0) => fc.uint8Array({ minLength, maxLength }).map((a) => Buffer.from(a));
const port = fc.integer({ min: 0, max: 65535 });

export const validV1: fc.Arbitrary<Buffer> = fc.oneof(
  fc.tuple(fc.ipV4(), fc.ipV4(), port, port).map(([s, d, sp, dp]) => b(`PROXY TCP4 ${s} ${d} ${sp} ${dp}\r\n`)),
  fc.tuple(fc.ipV6(), fc.ipV6(), port, port).map(([s, d, sp, dp]) => b(`PROXY TCP6 ${s} ${d} ${sp} ${dp}\r\n`)),
  fc.string({ maxLength: 60 }).map((rest) => b(`PROXY UNKNOWN${rest === '' ? '' : ' ' + rest.replace(/[^\x21-\x7e ]/g, 'x')}\r\n`)),
);

const tlvs = fc.array(fc.tuple(fc.integer({ min: 0, max: 255 }), bytes(60)), { maxLength: 5 }).map((list) =>
  Buffer.concat(
    list.map(([type, value]) => {
      const head = Buffer.alloc(3);
      head[0] = type;
      head.writeUInt16BE(value.length, 1);
      return Buffer.concat([head, value]);
    }),
  ),
);

/** Address sizes by family nibble (UNSPEC, INET, INET6, UNIX). */
const ADDRESS_BYTES = [0, 12, 36, 216];

export const validV2: fc.Arbitrary<Buffer> = fc
  .record({
    command: fc.constantFrom(0, 1),
    family: fc.constantFrom(0, 1, 2, 3),
    proto: fc.constantFrom(0, 1, 2),
    seed: bytes(216, 216),
    tlvs,
  })
  .map(({ command, family, proto, seed, tlvs: t }) => {
    const block = Buffer.concat([seed.subarray(0, ADDRESS_BYTES[family]), t]);
    const fixed = Buffer.from([0x20 | command, (family << 4) | proto, block.length >> 8, block.length & 0xff]);
    return Buffer.concat([V2_SIGNATURE, fixed, block]);
  });

const validHeader = fc.oneof(validV1, validV2);

/** A valid header broken one way or another. */
const brokenHeader = fc.oneof(
  // cut short
  fc.tuple(validHeader, fc.nat()).map(([h, n]) => h.subarray(0, n % h.length)),
  // a few bytes overwritten
  fc.tuple(validHeader, fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 3 })).map(([h, flips]) => {
    const out = Buffer.from(h);
    for (const [at, v] of flips) out[at % out.length] = v;
    return out;
  }),
  // a v2 length field that lies, in either direction
  fc.tuple(validV2, fc.integer({ min: 0, max: 65535 })).map(([h, len]) => {
    const out = Buffer.from(h);
    out.writeUInt16BE(len, 14);
    return out;
  }),
);

const oversizedHeader = fc.oneof(
  fc.integer({ min: 100, max: 5000 }).map((n) => b(`PROXY TCP4 ${'9'.repeat(n)}`)),
  fc.tuple(fc.integer({ min: 2049, max: 65535 }), bytes(3000)).map(([len, block]) =>
    Buffer.concat([V2_SIGNATURE, Buffer.from([0x21, 0x11, len >> 8, len & 0xff]), block]),
  ),
);

const garbage = fc.oneof(
  bytes(300),
  bytes(200).map((x) => Buffer.concat([b('PROXY '), x])),
  bytes(200).map((x) => Buffer.concat([V2_SIGNATURE, x])),
  fc.constantFrom(b('EHLO bot.example\r\n'), b('GET / HTTP/1.1\r\nHost: x\r\n\r\n'), b('\x16\x03\x01\x00\xa5\x01\x00'), b('proxy tcp4 1.2.3.4 5.6.7.8 1 2\r\n')),
);

const trailer = fc.oneof(
  { weight: 3, arbitrary: fc.constant(Buffer.alloc(0)) },
  { weight: 2, arbitrary: fc.constantFrom(b('EHLO pipelined.example\r\n'), b('HELO x\r\nMAIL FROM:<a@b>\r\n'), b('QUIT\r\n')) },
  { weight: 1, arbitrary: bytes(200) },
);

/** What a PROXY_FROM peer may send first: its header (or not) and whatever follows in the same stream. */
export const proxyOpening: fc.Arbitrary<Buffer> = fc
  .tuple(
    fc.oneof({ weight: 3, arbitrary: validHeader }, { weight: 4, arbitrary: brokenHeader }, { weight: 1, arbitrary: oversizedHeader }, { weight: 2, arbitrary: garbage }),
    trailer,
  )
  .map(([head, tail]) => Buffer.concat([head, tail]));
