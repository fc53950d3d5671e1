import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ConfigError } from '../src/errors';
import { canonicalAddress, parseCidrList, toCidrs } from '../src/ip-address';
import { excluded, expired, listed, type ListingPolicy } from '../src/intel/listing-policy';
import { INTEL_SETTINGS, parseDuration, readIntelSettings } from '../src/intel/settings';

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

describe('listing settings', () => {
  it('has the issue\'s defaults', () => {
    const s = readIntelSettings({}, '/var/spool/spamtrapd');
    assert.equal(s.listingMinHits, 1);
    assert.equal(s.listingTtlMs, 7 * DAY);
    assert.deepEqual(s.listingExclude, []);
    assert.equal(s.listingMaxEntries, 1_000_000);
    assert.equal(s.listingWriteIntervalMs, 60_000);
    assert.equal(s.listingZoneFile, '/var/spool/spamtrapd/.listing/listing.ip4set');
    assert.equal(s.listingStateFile, '/var/spool/spamtrapd/.listing/listing.jsonl');
    assert.equal(s.fingerprintMetricTop, INTEL_SETTINGS.FINGERPRINT_METRIC_TOP.default);
  });

  it('reads durations with units, digits alone as seconds', () => {
    assert.equal(parseDuration('7d'), 7 * DAY);
    assert.equal(parseDuration('12h'), 12 * 3_600_000);
    assert.equal(parseDuration('90m'), 90 * 60_000);
    assert.equal(parseDuration('2w'), 14 * DAY);
    assert.equal(parseDuration('30'), 30_000);
    assert.equal(parseDuration('3 S'), 3000);
    assert.equal(parseDuration('1.5h'), null);
    assert.equal(readIntelSettings({ LISTING_TTL: '2s' }, '/s').listingTtlMs, 2000);
  });

  it('names the variable and the allowed range of a bad value', () => {
    const cases: Array<[string, string, RegExp]> = [
      ['LISTING_MIN_HITS', '0', /from 1 to 1000000/],
      ['LISTING_TTL', '0s', /duration from 1s to 365d/],
      ['LISTING_TTL', 'soon', /duration/],
      ['LISTING_EXCLUDE', '10.0.0.1/8', /host bits are set/],
      ['LISTING_MAX_ENTRIES', '-1', /whole number/],
      ['LISTING_WRITE_INTERVAL_MS', '10', /from 1000 to 3600000/],
    ];
    for (const [name, value, reason] of cases) {
      assert.throws(
        () => readIntelSettings({ [name]: value }, '/s'),
        (e: unknown) => e instanceof ConfigError && e.where === name && reason.test(e.reason),
        `${name}=${value}`,
      );
    }
  });

  it('resolves LISTING_ZONE_FILE and reads LISTING_EXCLUDE', () => {
    const s = readIntelSettings({ LISTING_ZONE_FILE: '/srv/rbldnsd/trap.ip4set', LISTING_EXCLUDE: '192.0.2.0/24, ::1' }, '/s');
    assert.equal(s.listingZoneFile, '/srv/rbldnsd/trap.ip4set');
    assert.deepEqual(s.listingExclude.map((c) => c.text), ['192.0.2.0/24', '::1/128']);
  });
});
