/**
 * The PROXY protocol header a balancer puts in front of a relayed connection, version 1 (one text line) and version 2
 * (binary), told apart by their signatures. Pure functions over the bytes received so far: they say "need more",
 * "here is the header and where SMTP begins", or "reject, and why". Every limit is checked on the bytes at hand, so a
 * caller never has to hold more than one header's worth of input to learn that it is too long.
 *
 * Written here rather than taken from npm: the parsers there read a complete buffer without checking the v2 length
 * against the bytes present, take every byte after the addresses as TLVs, and accept any v1 address text.
 */
import ipaddr from 'ipaddr.js';
import type { ProxyRejectionReason } from '../metrics/definitions';

/** The longest v1 line, CRLF included (an UNKNOWN line with two full IPv6 addresses and ports). */
export const PROXY_V1_MAX_BYTES = 107;
/** The largest v2 address block (addresses and TLVs) accepted: HAProxy's own TLVs fit well within it. */
export const PROXY_V2_MAX_BLOCK_BYTES = 2048;
/** Fixed part of a v2 header: signature, version and command, family and protocol, block length. */
export const PROXY_V2_FIXED_BYTES = 16;

export const PROXY_V1_SIGNATURE = Buffer.from('PROXY', 'latin1');
export const PROXY_V2_SIGNATURE = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);

export interface ProxyEndpoint {
  /** Canonical text: dotted decimal, compressed lower-case IPv6; an IPv4-mapped IPv6 address as its IPv4 form. */
  readonly address: string;
  readonly port: number;
}

export interface ProxyHeader {
  readonly version: 1 | 2;
  /**
   * The relayed client and the address it reached. Null when the header names no client: a v2 LOCAL command (the
   * balancer's own connection, e.g. a health check), a v2 family or protocol other than TCP over IPv4/IPv6, or v1
   * UNKNOWN. The connection's own endpoints then stand.
   */
  readonly source: ProxyEndpoint | null;
  readonly destination: ProxyEndpoint | null;
  /** Bytes the header takes, TLVs included: the SMTP stream begins right after. */
  readonly length: number;
}

export type ProxyParse =
  | { readonly status: 'incomplete' }
  | { readonly status: 'complete'; readonly header: ProxyHeader }
  | { readonly status: 'rejected'; readonly reason: Extract<ProxyRejectionReason, 'missing' | 'malformed' | 'oversized'>; readonly detail: string };

const INCOMPLETE: ProxyParse = Object.freeze({ status: 'incomplete' });

function malformed(detail: string): ProxyParse {
  return { status: 'rejected', reason: 'malformed', detail };
}

function oversized(detail: string): ProxyParse {
  return { status: 'rejected', reason: 'oversized', detail };
}

/** 'yes' when input starts with all of `signature`, 'maybe' when input is a proper prefix of it, else 'no'. */
function startsWithSignature(input: Buffer, signature: Buffer): 'yes' | 'maybe' | 'no' {
  const n = Math.min(input.length, signature.length);
  if (!input.subarray(0, n).equals(signature.subarray(0, n))) return 'no';
  return n === signature.length ? 'yes' : 'maybe';
}

/**
 * Reads a PROXY header at the start of `input` (all bytes received so far). 'incomplete' only while every byte seen
 * could still begin a valid header within the size limits.
 */
export function parseProxyHeader(input: Buffer): ProxyParse {
  if (input.length === 0) return INCOMPLETE;
  const v2 = startsWithSignature(input, PROXY_V2_SIGNATURE);
  if (v2 === 'yes') return parseV2(input);
  const v1 = startsWithSignature(input, PROXY_V1_SIGNATURE);
  if (v1 === 'yes') return parseV1(input);
  if (v1 === 'maybe' || v2 === 'maybe') return INCOMPLETE;
  return { status: 'rejected', reason: 'missing', detail: 'no PROXY signature' };
}

const CR = 0x0d;
const LF = 0x0a;

function parseV1(input: Buffer): ProxyParse {
  const scan = Math.min(input.length, PROXY_V1_MAX_BYTES);
  for (let i = PROXY_V1_SIGNATURE.length; i < scan; i++) {
    const c = input[i];
    if (c === LF) {
      if (input[i - 1] !== CR) return malformed('v1 line ends with a bare LF');
      const line = input.toString('latin1', 0, i - 1);
      return parseV1Line(line, i + 1);
    }
    if (c === CR) {
      if (i + 1 < input.length && input[i + 1] !== LF) return malformed('v1 line has a CR not followed by LF');
    } else if (c < 0x20 || c > 0x7e) {
      return malformed('v1 line has a control or non-ASCII byte');
    }
  }
  if (input.length >= PROXY_V1_MAX_BYTES) return oversized(`v1 line has no CRLF within ${PROXY_V1_MAX_BYTES} bytes`);
  return INCOMPLETE;
}

/** `line` is printable ASCII without its CRLF; `length` is the header's length with it. */
function parseV1Line(line: string, length: number): ProxyParse {
  if (!line.startsWith('PROXY ')) return malformed('v1 signature is not followed by a space');
  const fields = line.slice('PROXY '.length).split(' ');
  const proto = fields[0];
  if (proto === 'UNKNOWN') {
    // The sender could not say who the client is; whatever follows on the line is to be ignored.
    return { status: 'complete', header: { version: 1, source: null, destination: null, length } };
  }
  if (fields.some((f) => f === '')) return malformed('v1 fields are not separated by single spaces');
  if (proto !== 'TCP4' && proto !== 'TCP6') return malformed('v1 protocol is not TCP4, TCP6 or UNKNOWN');
  if (fields.length !== 5) return malformed(`v1 ${proto} line has ${fields.length + 1} fields instead of 6`);
  const [, src, dst, srcPort, dstPort] = fields;
  const family = proto === 'TCP4' ? v1IPv4 : v1IPv6;
  const source = family(src);
  const destination = family(dst);
  if (source === null || destination === null) return malformed(`v1 ${proto} address is not a canonical ${proto === 'TCP4' ? 'IPv4' : 'IPv6'} address`);
  const sport = v1Port(srcPort);
  const dport = v1Port(dstPort);
  if (sport === null || dport === null) return malformed('v1 port is not a decimal number from 0 to 65535');
  return {
    status: 'complete',
    header: { version: 1, source: { address: source, port: sport }, destination: { address: destination, port: dport }, length },
  };
}

/** Four decimal numbers 0-255 without leading zeros, as the protocol demands (no octal or shortened forms). */
function v1IPv4(text: string): string | null {
  return ipaddr.IPv4.isValidFourPartDecimal(text) ? ipaddr.IPv4.parse(text).toString() : null;
}

/** Hex groups and colons, optionally ending in a dotted IPv4 part; no zone index, no brackets. */
function v1IPv6(text: string): string | null {
  if (!/^[0-9A-Fa-f:.]+$/.test(text) || !ipaddr.IPv6.isValid(text)) return null;
  if (text.includes('.') && !ipaddr.IPv4.isValidFourPartDecimal(text.slice(text.lastIndexOf(':') + 1))) return null;
  return canonical(ipaddr.IPv6.parse(text));
}

function v1Port(text: string): number | null {
  if (!/^(?:0|[1-9][0-9]{0,4})$/.test(text)) return null;
  const n = Number(text);
  return n <= 65535 ? n : null;
}

function canonical(address: ipaddr.IPv4 | ipaddr.IPv6): string {
  // A dual-stack listener reports IPv4 clients as ::ffff:a.b.c.d; the trap records them as IPv4 everywhere.
  if (address.kind() === 'ipv6' && (address as ipaddr.IPv6).isIPv4MappedAddress()) return (address as ipaddr.IPv6).toIPv4Address().toString();
  return address.toString();
}

const CMD_LOCAL = 0x0;
const CMD_PROXY = 0x1;
const FAMILY_UNSPEC = 0x0;
const FAMILY_INET = 0x1;
const FAMILY_INET6 = 0x2;
const FAMILY_UNIX = 0x3;
const PROTO_STREAM = 0x1;
const PROTO_DGRAM = 0x2;
/** Bytes of the address part for each family: two addresses, then two ports for INET and INET6. */
const ADDRESS_BYTES: Record<number, number> = { [FAMILY_UNSPEC]: 0, [FAMILY_INET]: 12, [FAMILY_INET6]: 36, [FAMILY_UNIX]: 216 };

function parseV2(input: Buffer): ProxyParse {
  if (input.length < PROXY_V2_FIXED_BYTES) return INCOMPLETE;
  const version = input[12] >> 4;
  const command = input[12] & 0x0f;
  const family = input[13] >> 4;
  const proto = input[13] & 0x0f;
  if (version !== 2) return malformed(`v2 header has version ${version}`);
  if (command !== CMD_LOCAL && command !== CMD_PROXY) return malformed(`v2 header has unassigned command ${command}`);
  if (family > FAMILY_UNIX) return malformed(`v2 header has unassigned address family ${family}`);
  if (proto > PROTO_DGRAM) return malformed(`v2 header has unassigned transport protocol ${proto}`);
  const blockBytes = input.readUInt16BE(14);
  if (blockBytes > PROXY_V2_MAX_BLOCK_BYTES) return oversized(`v2 address block of ${blockBytes} bytes exceeds ${PROXY_V2_MAX_BLOCK_BYTES}`);
  const length = PROXY_V2_FIXED_BYTES + blockBytes;
  if (input.length < length) return INCOMPLETE;
  const local: ProxyParse = { status: 'complete', header: { version: 2, source: null, destination: null, length } };
  // LOCAL: the balancer speaks for itself, and the block (family included) is to be skipped unread.
  if (command === CMD_LOCAL) return local;

  const block = input.subarray(PROXY_V2_FIXED_BYTES, length);
  const addressBytes = ADDRESS_BYTES[family];
  if (block.length < addressBytes) return malformed(`v2 address block of ${block.length} bytes is too short for its family`);
  const tlvProblem = checkTlvs(block.subarray(addressBytes));
  if (tlvProblem) return malformed(tlvProblem);
  // Only TCP over IPv4/IPv6 names a client this SMTP listener can use; the rest falls back to the real endpoints.
  if (proto !== PROTO_STREAM || (family !== FAMILY_INET && family !== FAMILY_INET6)) return local;
  const size = family === FAMILY_INET ? 4 : 16;
  const src = canonical(ipaddr.fromByteArray([...block.subarray(0, size)]));
  const dst = canonical(ipaddr.fromByteArray([...block.subarray(size, 2 * size)]));
  return {
    status: 'complete',
    header: {
      version: 2,
      source: { address: src, port: block.readUInt16BE(2 * size) },
      destination: { address: dst, port: block.readUInt16BE(2 * size + 2) },
      length,
    },
  };
}

/** TLVs (type, 16-bit length, value) are skipped, but must tile the rest of the block exactly. */
function checkTlvs(tlvs: Buffer): string | null {
  let at = 0;
  while (at < tlvs.length) {
    if (tlvs.length - at < 3) return 'v2 TLV is cut off before its length';
    at += 3 + tlvs.readUInt16BE(at + 1);
    if (at > tlvs.length) return 'v2 TLV runs past the end of the header';
  }
  return null;
}
