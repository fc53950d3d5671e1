/**
 * When an address is listed: it has at least `minHits` trap messages, was last seen less than `ttlMs` ago, and is
 * in no excluded range. Pure, so the listing, its exports and the tests judge by one rule.
 *
 * An excluded address is not even stored (listing.ts asks `excluded` before creating an entry): the operator said it
 * must never be listed, so its counts have no use, and storing them would let a busy excluded host (a monitoring
 * probe, the hamtrap's own relay) evict real entries and leave its traces in the persisted file.
 */
import { inAnyCidr, parseAddress, type Cidr, type ParsedAddress } from '../ip-address';

export interface ListingPolicy {
  readonly minHits: number;
  readonly ttlMs: number;
  readonly exclude: readonly Cidr[];
}

export function excluded(policy: ListingPolicy, address: ParsedAddress | string): boolean {
  if (policy.exclude.length === 0) return false;
  const a = typeof address === 'string' ? parseAddress(address) : address;
  return a !== null && inAnyCidr(a, policy.exclude);
}

/** Past its TTL: dropped from the listing (and from memory) however many messages it sent. */
export function expired(lastSeenMs: number, nowMs: number, policy: ListingPolicy): boolean {
  return nowMs - lastSeenMs >= policy.ttlMs;
}

/** Threshold and TTL: all it takes for an entry the listing holds, since it never holds an excluded address. */
export function qualifies(entry: { readonly messages: number; readonly lastSeen: number }, nowMs: number, policy: ListingPolicy): boolean {
  return entry.messages >= policy.minHits && !expired(entry.lastSeen, nowMs, policy);
}

export function listed(
  entry: { readonly ip: string; readonly messages: number; readonly lastSeen: number },
  nowMs: number,
  policy: ListingPolicy,
): boolean {
  return qualifies(entry, nowMs, policy) && !excluded(policy, entry.ip);
}
