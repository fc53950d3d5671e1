import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseCidrList, toCidrs } from '../src/ip-address';
import { INTEL_LIMITS } from '../src/intel/limits';
import { Listing, type MessageFacts } from '../src/intel/listing';
import { listed, type ListingPolicy } from '../src/intel/listing-policy';
import { addRecipientHash, distinctRecipients, recipientHash } from '../src/intel/recipient-sketch';

const T0 = Date.UTC(2026, 10, 25, 12, 0, 0);
const DAY = 86_400_000;
const FP = 'v1-abcdefghijkl';
const ranges = (list: string) => toCidrs(parseCidrList('LISTING_EXCLUDE', list));
const policy = (p: Partial<ListingPolicy> = {}): ListingPolicy => ({ minHits: 1, ttlMs: 7 * DAY, exclude: [], ...p });
const msg = (recipients: string[] = ['a@trap.example'], helo: string | null = 'bot.example', fingerprint: string | null = FP): MessageFacts => ({
  recipients,
  helo,
  fingerprint,
});

describe('listing: what it counts per address', () => {
  it('counts messages, connections, distinct recipients, first and last seen, last HELO, fingerprint and end', () => {
    const l = new Listing(100, policy());
    l.message('192.0.2.7', T0 + 400, msg(['a@trap.example', 'b@trap.example']));
    l.message('192.0.2.7', T0 + 5_000, msg(['A@TRAP.example', 'c@trap.example'], 'second.example', 'v1-zzzzzzzzzzzz'));
    l.connection('192.0.2.7', T0 + 6_000, 'quit');
    l.message('198.51.100.1', T0 + 1000, msg());
    assert.deepEqual(l.get('192.0.2.7', T0 + 7000), {
      ip: '192.0.2.7',
      messages: 2,
      connections: 1,
      recipients: 3,
      recipientsEstimated: false,
      firstSeen: T0,
      lastSeen: T0 + 6_000,
      helo: 'second.example',
      fingerprint: 'v1-zzzzzzzzzzzz',
      lastEnd: 'quit',
    });
    assert.equal(l.get('198.51.100.1', T0)?.messages, 1);
    assert.equal(l.size, 2);
  });

  it('rounds first seen down and last seen up to whole seconds, so a TTL never ends early', () => {
    const l = new Listing(10, policy());
    l.message('192.0.2.7', T0 + 1500, msg());
    const e = l.get('192.0.2.7', T0 + 1500)!;
    assert.equal(e.firstSeen, T0 + 1000);
    assert.equal(e.lastSeen, T0 + 2000);
  });

  it('counts a connection only for an address it already holds', () => {
    const l = new Listing(10, policy());
    assert.equal(l.connection('192.0.2.7', T0, 'drop'), false);
    assert.equal(l.size, 0);
    l.message('192.0.2.7', T0, msg());
    assert.equal(l.connection('192.0.2.7', T0 + 1000, 'drop'), true);
    assert.equal(l.get('192.0.2.7', T0)!.connections, 1);
    assert.equal(l.get('192.0.2.7', T0)!.lastEnd, 'drop');
  });

  it('keys every spelling of an address to one entry: IPv4-mapped is IPv4, IPv6 any case', () => {
    const l = new Listing(10, policy());
    l.message('192.0.2.7', T0, msg());
    l.message('::ffff:192.0.2.7', T0, msg());
    l.message('2001:DB8::1', T0, msg());
    l.message('2001:db8:0:0:0:0:0:1', T0, msg());
    assert.equal(l.size, 2);
    assert.equal(l.get('::ffff:192.0.2.7', T0)!.messages, 2);
    assert.equal(l.get('2001:db8::1', T0)!.messages, 2);
    assert.equal(l.message('not an address', T0, msg()), false);
  });

  it('keeps at most heloMaxChars of a HELO and ignores a malformed fingerprint', () => {
    const l = new Listing(10, policy());
    l.message('192.0.2.7', T0, msg(['a@b'], 'x'.repeat(1000), 'not-a-fingerprint'));
    const e = l.get('192.0.2.7', T0)!;
    assert.equal(e.helo, 'x'.repeat(INTEL_LIMITS.listing.heloMaxChars));
    assert.equal(e.fingerprint, null);
  });
});

describe('listing: threshold', () => {
  it('lists an address once it has minHits messages', () => {
    const l = new Listing(10, policy({ minHits: 3 }));
    for (let i = 1; i <= 3; i++) {
      l.message('192.0.2.7', T0 + i, msg());
      assert.deepEqual(
        [...l.listed(T0 + 10)].map((e) => e.ip),
        i < 3 ? [] : ['192.0.2.7'],
        `after ${i} messages`,
      );
    }
    assert.equal(l.countListed(T0 + 10), 1);
  });
});

describe('listing: TTL', () => {
  it('drops an address ttl after it was last seen, lazily on read and by the sweep, and counts it', () => {
    const ttl = 10_000;
    const l = new Listing(10, policy({ ttlMs: ttl }));
    l.message('192.0.2.7', T0, msg());
    l.message('192.0.2.8', T0 + 5000, msg());
    assert.ok(l.get('192.0.2.7', T0 + ttl - 1));
    assert.equal(l.get('192.0.2.7', T0 + ttl), undefined, 'expired on read');
    assert.deepEqual([...l.listed(T0 + ttl)].map((e) => e.ip), ['192.0.2.8']);
    assert.equal(l.size, 2, 'reading does not drop');
    assert.equal(l.sweep(T0 + ttl), 1);
    assert.equal(l.size, 1);
    assert.equal(l.stats().expirations, 1);
    assert.equal(l.sweep(T0 + 5000 + ttl), 1);
    assert.equal(l.size, 0);
  });

  it('keeps an address alive while it keeps coming, connections included', () => {
    const l = new Listing(10, policy({ ttlMs: 10_000 }));
    l.message('192.0.2.7', T0, msg());
    l.connection('192.0.2.7', T0 + 8000, 'quit');
    assert.ok(l.get('192.0.2.7', T0 + 17_000));
    assert.equal(l.sweep(T0 + 17_000), 0);
  });

  it('starts an address over when it comes back after its TTL ran out', () => {
    const l = new Listing(10, policy({ ttlMs: 10_000 }));
    l.message('192.0.2.7', T0, msg());
    l.message('192.0.2.7', T0 + 1000, msg());
    l.message('192.0.2.7', T0 + 20_000, msg());
    const e = l.get('192.0.2.7', T0 + 20_000)!;
    assert.equal(e.messages, 1);
    assert.equal(e.firstSeen, T0 + 20_000);
    assert.equal(l.stats().expirations, 1);
    assert.equal(l.connection('192.0.2.7', T0 + 40_000, 'drop'), false, 'a connection does not revive it');
  });
});

describe('listing: exclusion', () => {
  it('never stores an excluded address: IPv4, IPv6 and IPv4-mapped', () => {
    const l = new Listing(10, policy({ exclude: ranges('192.0.2.0/24,2001:db8::/32') }));
    assert.equal(l.message('192.0.2.7', T0, msg()), false);
    assert.equal(l.message('::ffff:192.0.2.8', T0, msg()), false);
    assert.equal(l.message('2001:db8::25', T0, msg()), false);
    assert.equal(l.message('198.51.100.1', T0, msg()), true);
    assert.equal(l.size, 1);
    assert.deepEqual([...l.listed(T0)].map((e) => e.ip), ['198.51.100.1']);
  });

  it('drops entries a new policy excludes', () => {
    const l = new Listing(10, policy());
    l.message('192.0.2.7', T0, msg());
    l.message('2001:db8::25', T0, msg());
    l.message('198.51.100.1', T0, msg());
    assert.equal(l.setPolicy(policy({ exclude: ranges('192.0.2.0/24,2001:db8::/32') })), 2);
    assert.deepEqual([...l.entries(T0)].map((e) => e.ip), ['198.51.100.1']);
  });
});

describe('listing: bounded memory', () => {
  it('evicts the least recently seen address first, in O(1), and counts evictions', () => {
    const l = new Listing(3, policy());
    l.message('192.0.2.1', T0, msg());
    l.message('192.0.2.2', T0 + 1, msg());
    l.message('192.0.2.3', T0 + 2, msg());
    l.connection('192.0.2.1', T0 + 3, 'quit'); // .1 is now the most recently seen
    l.message('192.0.2.4', T0 + 4, msg());
    assert.deepEqual([...l.entries(T0 + 5)].map((e) => e.ip), ['192.0.2.3', '192.0.2.1', '192.0.2.4']);
    assert.equal(l.stats().evictions, 1);
    l.message('192.0.2.5', T0 + 6, msg());
    l.message('192.0.2.6', T0 + 7, msg());
    assert.deepEqual([...l.entries(T0 + 8)].map((e) => e.ip), ['192.0.2.4', '192.0.2.5', '192.0.2.6']);
    assert.deepEqual(l.stats(), { entries: 3, evictions: 3, expirations: 0 });
  });

  it('reuses the slot of an evicted entry with nothing of the old one left in it', () => {
    const l = new Listing(1, policy());
    l.message('192.0.2.1', T0, msg(['a@x', 'b@x'], 'old.example'));
    l.connection('192.0.2.1', T0, 'quit');
    l.message('192.0.2.2', T0, msg([], null, null));
    assert.deepEqual(l.get('192.0.2.2', T0), {
      ip: '192.0.2.2',
      messages: 1,
      connections: 0,
      recipients: 0,
      recipientsEstimated: false,
      firstSeen: T0,
      lastSeen: T0,
      helo: null,
      fingerprint: null,
      lastEnd: null,
    });
  });

  it('walks a snapshot of keys: entries touched during the walk are neither repeated nor lost', () => {
    const l = new Listing(100, policy());
    for (let i = 0; i < 50; i++) l.message(`192.0.2.${i}`, T0, msg());
    const seen: string[] = [];
    for (const e of l.entries(T0)) {
      seen.push(e.ip);
      l.message(e.ip, T0 + 1, msg()); // moves it to the recent end, where a live Map walk would meet it again
    }
    assert.equal(seen.length, 50);
    assert.equal(new Set(seen).size, 50);
  });
});

describe('listing: distinct recipients in bounded space', () => {
  const K = INTEL_LIMITS.listing.recipientHashesPerEntry;

  it('is exact up to K distinct recipients, case-insensitive, repeats not counted', () => {
    const l = new Listing(10, policy());
    for (let i = 0; i < K; i++) l.message('192.0.2.7', T0, msg([`user${i}@trap.example`, `USER${i}@TRAP.EXAMPLE`]));
    const e = l.get('192.0.2.7', T0)!;
    assert.equal(e.recipients, K);
    assert.equal(e.recipientsEstimated, false);
  });

  it('estimates beyond K, within the error the docs give, and says it is an estimate', () => {
    for (const n of [100, 1000, 10_000]) {
      const l = new Listing(10, policy());
      for (let i = 0; i < n; i++) l.message('192.0.2.7', T0, msg([`r${i}@trap.example`]));
      const e = l.get('192.0.2.7', T0)!;
      assert.equal(e.recipientsEstimated, true);
      // Relative standard error ~ 1/sqrt(K-2) = 41%; three of them either way keeps this deterministic test honest.
      assert.ok(e.recipients > n * 0.25 && e.recipients < n * 4, `${n} distinct estimated as ${e.recipients}`);
    }
  });

  it('keeps the K smallest distinct hashes sorted, whatever the order they came in', () => {
    const hashes = new Uint32Array(K);
    let state = 0;
    const all = Array.from({ length: 40 }, (_, i) => recipientHash(`r${i}@x`));
    for (const h of [...all].reverse()) state = addRecipientHash(hashes, 0, state, K, h);
    for (const h of all) state = addRecipientHash(hashes, 0, state, K, h);
    assert.equal(state, K + 1);
    assert.deepEqual(Array.from(hashes), [...all].sort((a, b) => a - b).slice(0, K));
    assert.ok(distinctRecipients(hashes, 0, state, K) > K);
  });
});

describe('listing: restore', () => {
  it('restores records oldest first, skipping excluded and expired ones', () => {
    const src = new Listing(10, policy());
    src.message('192.0.2.1', T0, msg(['a@x', 'b@x']));
    src.message('192.0.2.2', T0 + 1000, msg());
    src.message('2001:db8::1', T0 + 2000, msg());
    src.connection('192.0.2.1', T0 + 3000, 'drop');
    const dst = new Listing(10, policy({ exclude: ranges('2001:db8::/32'), ttlMs: 10_000 }));
    const results = [...src.records(T0 + 3000)].map((r) => dst.restore(r, T0 + 11_500));
    assert.deepEqual(results, [false, false, true], '.2 expired, 2001:db8::1 excluded');
    assert.deepEqual(dst.get('192.0.2.1', T0 + 11_500), src.get('192.0.2.1', T0 + 3000));
    assert.ok(listed(dst.get('192.0.2.1', T0 + 11_500)!, T0 + 11_500, dst.currentPolicy()));
  });
});

describe('listing: walks by address family', () => {
  it('gives IPv4 or IPv6 entries alone when asked, in recency order', () => {
    const l = new Listing(10, policy());
    l.message('2001:db8::1', T0, msg());
    l.message('192.0.2.1', T0 + 1, msg());
    l.message('::ffff:192.0.2.2', T0 + 2, msg());
    l.message('2001:db8::2', T0 + 3, msg());
    assert.deepEqual([...l.listed(T0 + 4, 4)].map((e) => e.ip), ['192.0.2.1', '192.0.2.2']);
    assert.deepEqual([...l.listed(T0 + 4, 6)].map((e) => e.ip), ['2001:db8::1', '2001:db8::2']);
    assert.equal([...l.listed(T0 + 4)].length, 4);
  });
});
