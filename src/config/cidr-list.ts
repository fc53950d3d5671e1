/**
 * Lists of networks in CIDR notation (PROXY_FROM): parsed strictly once at start, matched against peer addresses
 * for every connection. A mistake here decides who may claim any client address, so anything ambiguous is refused
 * with the entry named rather than guessed at.
 */
import ipaddr from 'ipaddr.js';
import { ConfigError } from '../errors';

/**
 * Parses a comma-separated list of CIDRs (`10.0.0.0/8, 2001:db8::/32`); a bare address means that address alone.
 * Returns each entry in canonical form (`10.0.0.0/8`); null or '' gives an empty list. Throws ConfigError naming
 * `name` and the bad entry.
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
    let address: ipaddr.IPv4 | ipaddr.IPv6;
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

function networkOf(address: ipaddr.IPv4 | ipaddr.IPv6, prefix: number): ipaddr.IPv4 | ipaddr.IPv6 {
  const bytes = address.toByteArray();
  for (let i = 0; i < bytes.length; i++) {
    const keep = Math.max(0, Math.min(8, prefix - 8 * i));
    bytes[i] &= (0xff << (8 - keep)) & 0xff;
  }
  return ipaddr.fromByteArray(bytes);
}

/**
 * A predicate over peer addresses for canonical CIDRs from parseCidrList. An IPv4-mapped IPv6 peer (`::ffff:a.b.c.d`,
 * what a dual-stack listener reports for IPv4 clients) is matched as its IPv4 address; an unparsable one never matches.
 */
export function cidrMatcher(cidrs: readonly string[]): (address: string | undefined) => boolean {
  const ranges = cidrs.map((c) => ipaddr.parseCIDR(c));
  if (ranges.length === 0) return () => false;
  return (address) => {
    if (!address || !ipaddr.isValid(address)) return false;
    const peer = ipaddr.process(address);
    return ranges.some(([net, prefix]) => net.kind() === peer.kind() && peer.match(net, prefix));
  };
}
