/**
 * IP addresses and CIDR ranges, for every setting and feature that names clients by address (PROXY_FROM, the
 * listing and LISTING_EXCLUDE).
 *
 * One spelling per address: IPv4 dotted quad; an IPv4-mapped IPv6 address (`::ffff:192.0.2.7`, what a dual-stack
 * socket reports) is its IPv4 address; IPv6 compressed and lower-case, without a zone id.
 *
 * CIDR lists are parsed strictly once, at start or reload: a mistake in them decides who may claim any client address
 * (PROXY_FROM) or who is never listed (LISTING_EXCLUDE), so anything ambiguous is refused with the entry named rather
 * than guessed at. Parsed lists are canonical strings (they cross IPC in the running configuration);
 * `toCidrs` turns them into ranges to match against.
 */
import net from 'node:net';
import ipaddr from 'ipaddr.js';
import { ConfigError } from './errors';

export type ParsedAddress = ipaddr.IPv4 | ipaddr.IPv6;

export interface Cidr {
  readonly address: ParsedAddress;
  readonly prefix: number;
  /** Canonical text, e.g. `192.0.2.0/24`. */
  readonly text: string;
}

/** The address in canonical form, or null when `s` is not a plain IPv4 or IPv6 address. */
export function parseAddress(s: string): ParsedAddress | null {
  // net.isIP is strict (no `127.1`, no hex octets); ipaddr.js then does the folding and printing.
  if (net.isIP(s) === 0) return null;
  const a = ipaddr.process(s);
  if (a.kind() === 'ipv6' && (a as ipaddr.IPv6).zoneId !== undefined) return new ipaddr.IPv6((a as ipaddr.IPv6).parts);
  return a;
}

export function canonicalAddress(s: string): string | null {
  const a = parseAddress(s);
  return a === null ? null : a.toString();
}

/** For canonical addresses only: IPv6 is the one with a colon. */
export function isIPv6Key(canonical: string): boolean {
  return canonical.includes(':');
}

/**
 * Parses a comma-separated list of CIDRs (`10.0.0.0/8, 2001:db8::/32`); a bare address means that address alone.
 * Returns each entry in canonical form (`10.0.0.0/8`); null or '' gives an empty list. Throws ConfigError naming
 * `name` (the variable) and the bad entry.
 */
export function parseCidrList(name: string, value: string | null): string[] {
  if (value === null || value.trim() === '') return [];
  return value.split(',').map((raw) => {
    const entry = raw.trim();
    const fail = (why: string): never => {
      throw new ConfigError(name, `invalid entry ${JSON.stringify(entry)}: ${why}`);
    };
    if (entry === '') fail('empty entry (expected comma-separated CIDRs such as 10.0.0.0/8 or 2001:db8::/32)');
    const slash = entry.indexOf('/');
    const addressText = slash < 0 ? entry : entry.slice(0, slash);
    const prefixText = slash < 0 ? null : entry.slice(slash + 1);
    let address: ParsedAddress;
    if (ipaddr.IPv4.isValidFourPartDecimal(addressText)) address = ipaddr.IPv4.parse(addressText);
    else if (/^[0-9A-Fa-f:.]+$/.test(addressText) && ipaddr.IPv6.isValid(addressText)) address = ipaddr.IPv6.parse(addressText);
    else return fail('not an IPv4 address (four decimal numbers) or an IPv6 address');
    const bits = address.kind() === 'ipv4' ? 32 : 128;
    if (address.kind() === 'ipv6' && (address as ipaddr.IPv6).isIPv4MappedAddress()) {
      fail('an IPv4-mapped IPv6 range never matches (peers are compared in their IPv4 form): write it as IPv4');
    }
    let prefix = bits;
    if (prefixText !== null) {
      if (!/^(?:0|[1-9][0-9]{0,2})$/.test(prefixText) || Number(prefixText) > bits) fail(`prefix length must be 0 to ${bits}`);
      prefix = Number(prefixText);
    }
    const network = networkOf(address, prefix);
    if (network.toString() !== address.toString()) {
      fail(`host bits are set: did you mean ${network.toString()}/${prefix} or ${address.toString()}/${bits}?`);
    }
    return `${network.toString()}/${prefix}`;
  });
}

function networkOf(address: ParsedAddress, prefix: number): ParsedAddress {
  const bytes = address.toByteArray();
  for (let i = 0; i < bytes.length; i++) {
    const keep = Math.max(0, Math.min(8, prefix - 8 * i));
    bytes[i] &= (0xff << (8 - keep)) & 0xff;
  }
  return ipaddr.fromByteArray(bytes);
}

/** Ranges to match against, from canonical CIDRs as parseCidrList returns them. */
export function toCidrs(canonical: readonly string[]): Cidr[] {
  return canonical.map((text) => {
    const [address, prefix] = ipaddr.parseCIDR(text);
    return Object.freeze({ address, prefix, text });
  });
}

export function inAnyCidr(address: ParsedAddress, ranges: readonly Cidr[]): boolean {
  for (const r of ranges) {
    if (r.address.kind() === address.kind() && address.match(r.address as never, r.prefix)) return true;
  }
  return false;
}

/**
 * A predicate over peer addresses for canonical CIDRs from parseCidrList. An IPv4-mapped IPv6 peer (`::ffff:a.b.c.d`,
 * what a dual-stack listener reports for IPv4 clients) is matched as its IPv4 address; an unparsable one never matches.
 */
export function cidrMatcher(cidrs: readonly string[]): (address: string | undefined) => boolean {
  const ranges = toCidrs(cidrs);
  if (ranges.length === 0) return () => false;
  return (address) => {
    const peer = address ? parseAddress(address) : null;
    return peer !== null && inAnyCidr(peer, ranges);
  };
}
