import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { parseCidrList, toCidrs } from '../src/ip-address';
import { Listing } from '../src/intel/listing';
import type { ListingPolicy } from '../src/intel/listing-policy';
import { ipv6ZonePath, txtText, writeZoneFiles } from '../src/intel/zone';
import { Rbldnsd, RBLDNSD_MISSING, reverseName } from './helpers/rbldnsd';

const T0 = Date.UTC(2026, 10, 25, 12, 0, 0);
const DAY = 86_400_000;
const ZONE = 'bl.spamtrapd.test';

function trapListing(): Listing {
  const policy: ListingPolicy = { minHits: 2, ttlMs: 7 * DAY, exclude: toCidrs(parseCidrList('LISTING_EXCLUDE', '203.0.113.0/24')) };
  const l = new Listing(100, policy);
  const hit = (ip: string, n: number, at: number) => {
    for (let i = 0; i < n; i++) l.message(ip, at, { recipients: ['t@trap.example'], helo: 'bot', fingerprint: null });
  };
  hit('192.0.2.7', 3, T0);
  hit('::ffff:198.51.100.9', 2, T0 + 60_000);
  hit('2001:db8::7', 5, T0 + 120_000);
  hit('192.0.2.8', 1, T0); // below the threshold: stored, not listed
  hit('203.0.113.5', 9, T0); // excluded: not even stored
  hit('192.0.2.9', 4, T0 - 8 * DAY); // past its TTL
  return l;
}

describe('rbldnsd zone files: content', () => {
  let dir: string;
  before(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'zone-'));
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('puts the IPv6 dataset beside the IPv4 one', () => {
    assert.equal(ipv6ZonePath('/srv/bl/trap.ip4set'), '/srv/bl/trap.ip6trie');
    assert.equal(ipv6ZonePath('/srv/bl/trap'), '/srv/bl/trap.ip6trie');
  });

  it('says why in the TXT text, with the address in place of $', () => {
    assert.equal(txtText({ messages: 3, lastSeen: T0 }), '$ sent 3 messages to spamtraps, last seen 2026-11-25T12:00:00Z');
    assert.equal(txtText({ messages: 1, lastSeen: T0 + 1500 }), '$ sent 1 message to spamtraps, last seen 2026-11-25T12:00:01Z');
  });

  it('writes only listed addresses, IPv4 and IPv6 apart, readable by rbldnsd\'s user', async () => {
    const file = path.join(dir, 'listing.ip4set');
    const r = await writeZoneFiles(file, trapListing(), T0 + DAY);
    assert.deepEqual({ v4: r.ipv4, v6: r.ipv6 }, { v4: 2, v6: 1 });
    const v4 = fs.readFileSync(file, 'utf8').split('\n');
    const v6 = fs.readFileSync(ipv6ZonePath(file), 'utf8').split('\n');
    assert.match(v4[0], /^# spamtrapd listing, ip4set dataset/);
    assert.equal(v4[1], ':127.0.0.2:');
    assert.deepEqual(v4.slice(2, 4), [
      '192.0.2.7 $ sent 3 messages to spamtraps, last seen 2026-11-25T12:00:00Z',
      '198.51.100.9 $ sent 2 messages to spamtraps, last seen 2026-11-25T12:01:00Z',
    ]);
    assert.equal(v6[1], ':127.0.0.2:');
    assert.equal(v6[2], '2001:db8::7/128 $ sent 5 messages to spamtraps, last seen 2026-11-25T12:02:00Z');
    assert.equal(fs.statSync(file).mode & 0o777, 0o644);
  });
});

describe('rbldnsd zone files: served by the real rbldnsd, queried with dig', () => {
  let dir: string;
  let dns: Rbldnsd | null = null;

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rbldnsd-'));
    fs.chmodSync(dir, 0o755); // started as root, rbldnsd reads its files as an unprivileged user
    await writeZoneFiles(path.join(dir, 'listing.ip4set'), trapListing(), T0 + DAY);
    dns = await Rbldnsd.start(dir, [`${ZONE}:ip4set:listing.ip4set`, `${ZONE}:ip6trie:listing.ip6trie`]);
  });

  after(async () => {
    await dns?.stop();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  const name = (ip: string) => reverseName(ip, ZONE);

  it('answers 127.0.0.2 and the TXT for a listed IPv4 address', (t) => {
    if (!dns) return process.env.CI ? assert.fail(RBLDNSD_MISSING) : t.skip(RBLDNSD_MISSING);
    assert.deepEqual(dns.query(name('192.0.2.7'), 'A'), { status: 'NOERROR', answers: ['127.0.0.2'] });
    assert.deepEqual(dns.query(name('192.0.2.7'), 'TXT'), {
      status: 'NOERROR',
      answers: ['"192.0.2.7 sent 3 messages to spamtraps, last seen 2026-11-25T12:00:00Z"'],
    });
    assert.deepEqual(dns.query(name('198.51.100.9'), 'A'), { status: 'NOERROR', answers: ['127.0.0.2'] });
  });

  it('answers 127.0.0.2 and the TXT for a listed IPv6 address', (t) => {
    if (!dns) return process.env.CI ? assert.fail(RBLDNSD_MISSING) : t.skip(RBLDNSD_MISSING);
    assert.deepEqual(dns.query(name('2001:db8::7'), 'A'), { status: 'NOERROR', answers: ['127.0.0.2'] });
    assert.deepEqual(dns.query(name('2001:db8::7'), 'TXT'), {
      status: 'NOERROR',
      answers: ['"2001:db8::7 sent 5 messages to spamtraps, last seen 2026-11-25T12:02:00Z"'],
    });
  });

  it('answers NXDOMAIN for every address that is not listed', (t) => {
    if (!dns) return process.env.CI ? assert.fail(RBLDNSD_MISSING) : t.skip(RBLDNSD_MISSING);
    // Below the threshold, excluded, past its TTL, never seen (v4 and v6), a neighbour of a listed one.
    for (const ip of ['192.0.2.8', '203.0.113.5', '192.0.2.9', '192.0.2.77', '2001:db8::8', '192.0.2.6']) {
      assert.equal(dns.query(name(ip), 'A').status, 'NXDOMAIN', ip);
    }
  });
});
