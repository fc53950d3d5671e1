import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { canonicalAddress, parseCidrList, toCidrs } from '../src/ip-address';
import { excluded, expired, listed, type ListingPolicy } from '../src/intel/listing-policy';

const DAY = 86_400_000;
const policy = (p: Partial<ListingPolicy> = {}): ListingPolicy => ({ minHits: 1, ttlMs: 7 * DAY, exclude: [], ...p });

describe('listing addresses: one spelling per address', () => {
  it('folds IPv4-mapped IPv6 into IPv4 and writes IPv6 compressed, lower case, without zone', () => {
    assert.equal(canonicalAddress('192.0.2.7'), '192.0.2.7');
    assert.equal(canonicalAddress('::ffff:192.0.2.7'), '192.0.2.7');
    assert.equal(canonicalAddress('::FFFF:c000:0207'), '192.0.2.7');
    assert.equal(canonicalAddress('2001:DB8:0:0:0:0:0:1'), '2001:db8::1');
    assert.equal(canonicalAddress('2001:db8:0:0:1:0:0:1'), '2001:db8::1:0:0:1');
    assert.equal(canonicalAddress('fe80::1%eth0'), 'fe80::1');
  });

  it('refuses what is not a plain address', () => {
    for (const s of ['', 'localhost', '127.1', '0x7f.0.0.1', '192.0.2.256', '192.0.2.7/32', '2001:db8::g']) {
      assert.equal(canonicalAddress(s), null, s);
    }
  });

  it('reads LISTING_EXCLUDE with the same strict rules as PROXY_FROM, naming the variable', () => {
    assert.deepEqual(parseCidrList('LISTING_EXCLUDE', ' 192.0.2.7 ,2001:DB8::/32'), ['192.0.2.7/32', '2001:db8::/32']);
    assert.deepEqual(parseCidrList('LISTING_EXCLUDE', ' '), []);
    assert.throws(() => parseCidrList('LISTING_EXCLUDE', '192.0.2.7/24'), /^ConfigError: LISTING_EXCLUDE: invalid entry "192\.0\.2\.7\/24": host bits are set/);
    assert.throws(() => parseCidrList('LISTING_EXCLUDE', '::ffff:192.0.2.0/120'), /write it as IPv4/);
    assert.throws(() => parseCidrList('LISTING_EXCLUDE', '192.0.2.0/24, nope'), /invalid entry "nope"/);
  });
});

describe('listing policy', () => {
  const now = Date.UTC(2026, 10, 25, 12);

  it('lists from minHits messages on', () => {
    const p = policy({ minHits: 3 });
    assert.equal(listed({ ip: '192.0.2.7', messages: 2, lastSeen: now }, now, p), false);
    assert.equal(listed({ ip: '192.0.2.7', messages: 3, lastSeen: now }, now, p), true);
  });

  it('lists until ttl after the address was last seen, not one millisecond longer', () => {
    const p = policy({ ttlMs: 60_000 });
    assert.equal(listed({ ip: '192.0.2.7', messages: 1, lastSeen: now }, now + 59_999, p), true);
    assert.equal(listed({ ip: '192.0.2.7', messages: 1, lastSeen: now }, now + 60_000, p), false);
    assert.equal(expired(now, now + 60_000, p), true);
    assert.equal(expired(now, now + 59_999, p), false);
  });

  it('never lists an excluded address: IPv4, IPv6, and IPv4-mapped peers of an IPv4 range', () => {
    const p = policy({ exclude: toCidrs(parseCidrList('LISTING_EXCLUDE', '192.0.2.0/24,2001:db8::/32,198.51.100.0/24')) });
    for (const ip of ['192.0.2.7', '::ffff:192.0.2.7', '2001:db8::1', '198.51.100.200', '::ffff:198.51.100.1']) {
      assert.equal(excluded(p, ip), true, ip);
      assert.equal(listed({ ip, messages: 99, lastSeen: now }, now, p), false, ip);
    }
    for (const ip of ['192.0.3.7', '2001:db9::1', '198.51.101.1']) assert.equal(excluded(p, ip), false, ip);
  });
});
