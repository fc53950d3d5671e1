/**
 * Client addresses as the listing keys them, and the CIDR ranges LISTING_EXCLUDE names. One spelling per address:
 * IPv4 dotted quad; IPv4-mapped IPv6 (`::ffff:192.0.2.7`, what a dual-stack socket reports) folds into IPv4;
 * IPv6 compressed and lower-case, without a zone id.
 */
import net from 'node:net';
import ipaddr from 'ipaddr.js';

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

export function isIPv6Key(canonical: string): boolean {
  return canonical.includes(':');
}

/**
 * `192.0.2.0/24`, `2001:db8::/32`, or a bare address (a single host). A mapped IPv6 range such as
 * `::ffff:192.0.2.0/120` becomes the IPv4 range it covers, so it matches the folded addresses. Host bits set
 * below the prefix are refused: `192.0.2.7/24` is most likely a typo.
 */
export function parseCidr(text: string): Cidr | string {
  const t = text.trim();
  const slash = t.indexOf('/');
  const addrText = slash < 0 ? t : t.slice(0, slash);
  if (net.isIP(addrText) === 0) return `not an IP address: ${JSON.stringify(addrText)}`;
  let address: ParsedAddress = ipaddr.parse(addrText);
  const max = address.kind() === 'ipv4' ? 32 : 128;
  let prefix = max;
  if (slash >= 0) {
    const p = t.slice(slash + 1);
    if (!/^\d{1,3}$/.test(p) || Number(p) > max) return `prefix must be 0..${max}: ${JSON.stringify(t)}`;
    prefix = Number(p);
  }
  if (address.kind() === 'ipv6' && (address as ipaddr.IPv6).isIPv4MappedAddress() && prefix >= 96) {
    address = (address as ipaddr.IPv6).toIPv4Address();
    prefix -= 96;
  }
  const network = ipaddr.parse(
    address.kind() === 'ipv4'
      ? ipaddr.IPv4.networkAddressFromCIDR(`${address.toString()}/${prefix}`).toString()
      : ipaddr.IPv6.networkAddressFromCIDR(`${address.toString()}/${prefix}`).toString(),
  );
  if (network.toString() !== address.toString()) {
    return `host bits set in ${JSON.stringify(t)}: the range starts at ${network.toString()}/${prefix}`;
  }
  return Object.freeze({ address: network, prefix, text: `${network.toString()}/${prefix}` });
}

/** Comma-separated CIDRs (LISTING_EXCLUDE); empty text is an empty list. Throws a message naming the bad item. */
export function parseCidrList(text: string): Cidr[] {
  const out: Cidr[] = [];
  for (const item of text.split(',')) {
    if (item.trim() === '') continue;
    const c = parseCidr(item);
    if (typeof c === 'string') throw new Error(c);
    out.push(c);
  }
  return out;
}

export function inAnyCidr(address: ParsedAddress, ranges: readonly Cidr[]): boolean {
  for (const r of ranges) {
    if (r.address.kind() === address.kind() && address.match(r.address as never, r.prefix)) return true;
  }
  return false;
}
