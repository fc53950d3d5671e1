/**
 * GET /listing and GET /tail served by the real metrics server over real sockets, fed in-process: every query form
 * and its 400s, a large listing streamed whole, the tail's events, keep-alives, its subscriber limit, and a reader
 * that stops reading: it loses events, is told how many, and the publisher never waits for it.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { filedEvent } from '../src/intel/events';
import { fingerprintId } from '../src/intel/fingerprint';
import { FingerprintCatalog } from '../src/intel/fingerprint-catalog';
import { Listing } from '../src/intel/listing';
import { listingRoute } from '../src/intel/listing-http';
import { parseListingQuery } from '../src/intel/listing-query';
import { TailHub } from '../src/intel/tail';
import { tailRoute } from '../src/intel/tail-http';
import { TopCounts } from '../src/intel/top-counts';
import { MetricsAggregator, startMetricsServer, type MetricsServer } from '../src/metrics';
import { TailReader } from './helpers/tail-reader';
import { httpRequest } from './helpers/http';

const NOW = Date.UTC(2026, 10, 25, 12, 0, 0);
const HOUR = 3_600_000;
const FP = fingerprintId('features of a');

describe('GET /listing query', () => {
  const q = (s: string) => parseListingQuery(new URLSearchParams(s), NOW);

  it('reads every form', () => {
    assert.deepEqual(q(''), { kind: 'addresses', format: 'text', minHits: null, sinceMs: null });
    assert.deepEqual(q('format=json&min_hits=3&since=2h'), { kind: 'addresses', format: 'json', minHits: 3, sinceMs: NOW - 2 * HOUR });
    assert.deepEqual(q('since=2026-11-25T11:00:00Z'), { kind: 'addresses', format: 'text', minHits: null, sinceMs: NOW - HOUR });
    assert.deepEqual(q('since=2026-11-25'), { kind: 'addresses', format: 'text', minHits: null, sinceMs: Date.UTC(2026, 10, 25) });
    assert.deepEqual(q('by=rcpt'), { kind: 'recipients', format: 'text', limit: 100 });
    assert.deepEqual(q('by=rcpt&limit=5&format=json'), { kind: 'recipients', format: 'json', limit: 5 });
  });

  it('refuses what it cannot use, saying why', () => {
    const bad: Array<[string, RegExp]> = [
      ['x=1', /unknown parameter "x"/],
      ['format=xml', /format must be text or json/],
      ['min_hits=0', /min_hits must be a whole number of at least 1/],
      ['min_hits=1.5', /min_hits/],
      ['min_hits=99999999999', /min_hits/],
      ['since=yesterday', /since must be an ISO 8601 time/],
      ['since=2026-13-45T99:00:00Z', /since must be/],
      ['by=ip', /by must be rcpt/],
      ['by=rcpt&limit=0', /limit must be a whole number from 1 to 1000/],
      ['by=rcpt&limit=1001', /limit must be/],
      ['limit=5', /limit goes with by=rcpt/],
      ['by=rcpt&min_hits=2', /not by=rcpt/],
      ['format=json&format=text', /format given more than once/],
    ];
    for (const [query, why] of bad) assert.match(q(query) as string, why, query);
  });
});

describe('GET /listing and GET /tail on the metrics port', () => {
  let server: MetricsServer;
  let port: number;
  const listing = new Listing(100_000, { minHits: 2, ttlMs: 7 * 24 * HOUR, exclude: [] });
  const fingerprints = new FingerprintCatalog();
  const topRecipients = new TopCounts(100);
  const hub = new TailHub({ queueLimit: 10, maxSubscribers: 3 });

  before(async () => {
    const msg = (ip: string, at: number, rcpt = 'a@trap.example') => listing.message(ip, at, { recipients: [rcpt], helo: 'bot.example', fingerprint: FP });
    msg('192.0.2.7', NOW - 3 * HOUR);
    msg('192.0.2.7', NOW - 2 * HOUR, 'b@trap.example');
    listing.connection('192.0.2.7', NOW - 2 * HOUR, 'quit');
    msg('192.0.2.8', NOW - HOUR); // one message: below the threshold of 2
    msg('2001:db8::7', NOW - 30 * 60_000);
    msg('2001:db8::7', NOW - 10 * 60_000);
    fingerprints.remember(FP, 'talk=0;greet=ehlo');
    for (const [r, n] of [['a@trap.example', 5], ['b@trap.example', 2], ['odd "name"@trap.example', 1]] as const) topRecipients.add(r, n);
    server = await startMetricsServer({
      host: '127.0.0.1',
      port: 0,
      aggregator: new MetricsAggregator({ primaryProcessMetrics: false }),
      routes: {
        '/listing': listingRoute({ listing, fingerprints, topRecipients }, { now: () => NOW }),
        '/tail': tailRoute(hub, { keepAliveMs: 100 }),
      },
    });
    port = server.address().port;
  });
  after(() => server.close());

  it('plain: the listed addresses, one per line, least recently seen first', async () => {
    const r = await httpRequest(port, '/listing');
    assert.equal(r.status, 200);
    assert.equal(r.headers['content-type'], 'text/plain; charset=utf-8');
    assert.equal(r.body, '192.0.2.7\n2001:db8::7\n');
    assert.equal((await httpRequest(port, '/listing?min_hits=1')).body, '192.0.2.7\n192.0.2.8\n2001:db8::7\n');
  });

  it('JSON: each entry with its evidence; min_hits and since filter', async () => {
    const r = await httpRequest(port, '/listing?format=json');
    assert.equal(r.headers['content-type'], 'application/json; charset=utf-8');
    const entries = JSON.parse(r.body) as Array<Record<string, unknown>>;
    assert.deepEqual(entries[0], {
      ip: '192.0.2.7',
      listed: true,
      messages: 2,
      connections: 1,
      recipients: 2,
      recipients_estimated: false,
      first_seen: new Date(NOW - 3 * HOUR).toISOString(),
      last_seen: new Date(NOW - 2 * HOUR).toISOString(),
      helo: 'bot.example',
      fingerprint: FP,
      fingerprint_features: 'talk=0;greet=ehlo',
      last_end: 'quit',
    });
    assert.deepEqual(entries.map((e) => e.ip), ['192.0.2.7', '2001:db8::7']);
    const all = JSON.parse((await httpRequest(port, '/listing?format=json&min_hits=1')).body) as Array<{ ip: string; listed: boolean }>;
    assert.deepEqual(all.map((e) => [e.ip, e.listed]), [['192.0.2.7', true], ['192.0.2.8', false], ['2001:db8::7', true]]);
    const recent = JSON.parse((await httpRequest(port, '/listing?format=json&min_hits=1&since=90m')).body) as Array<{ ip: string }>;
    assert.deepEqual(recent.map((e) => e.ip), ['192.0.2.8', '2001:db8::7']);
    assert.equal((await httpRequest(port, '/listing?format=json&since=1m')).body, '[]\n');
  });

  it('by=rcpt: the most-hit trap recipients with their counts, as text or JSON, limited', async () => {
    const text = await httpRequest(port, '/listing?by=rcpt');
    assert.equal(text.body, '        5 a@trap.example\n        2 b@trap.example\n        1 "odd \\"name\\"@trap.example"\n');
    const json = await httpRequest(port, '/listing?by=rcpt&limit=2&format=json');
    assert.deepEqual(JSON.parse(json.body), [
      { rcpt: 'a@trap.example', messages: 5, overcount: 0 },
      { rcpt: 'b@trap.example', messages: 2, overcount: 0 },
    ]);
  });

  it('a bad query value gets 400 with the reason', async () => {
    const r = await httpRequest(port, '/listing?min_hits=zero');
    assert.equal(r.status, 400);
    assert.equal(r.body, 'min_hits must be a whole number of at least 1, got "zero"\n');
    assert.equal((await httpRequest(port, '/tail?format=json')).status, 400);
  });

  it('HEAD answers the headers only; other methods 405', async () => {
    const head = await httpRequest(port, '/listing', 'HEAD');
    assert.deepEqual([head.status, head.body], [200, '']);
    assert.equal((await httpRequest(port, '/listing', 'POST')).status, 405);
  });

  it('streams a large listing whole, as valid JSON', async () => {
    const big = new Listing(50_000, { minHits: 1, ttlMs: 7 * 24 * HOUR, exclude: [] });
    for (let i = 0; i < 20_000; i++) big.message(`10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`, NOW, { recipients: ['x@t'], helo: null, fingerprint: null });
    const s = await startMetricsServer({
      host: '127.0.0.1',
      port: 0,
      aggregator: new MetricsAggregator({ primaryProcessMetrics: false }),
      routes: { '/listing': listingRoute({ listing: big, fingerprints, topRecipients }, { now: () => NOW }) },
    });
    try {
      const json = JSON.parse((await httpRequest(s.address().port, '/listing?format=json', 'GET', 30_000)).body) as unknown[];
      assert.equal(json.length, 20_000);
      const text = (await httpRequest(s.address().port, '/listing', 'GET', 30_000)).body.split('\n');
      assert.deepEqual([text.length, text[0], text[19_999], text[20_000]], [20_001, '10.0.0.0', '10.0.78.31', '']);
    } finally {
      await s.close();
    }
  });

  const publish = (i: number) =>
    hub.publish(
      filedEvent({
        at: NOW + i,
        ip: '192.0.2.7',
        helo: 'bot.example',
        mailFrom: 's@spam.example',
        size: 100 + i,
        fingerprint: FP,
        copies: [{ queue: 'incoming', recipients: [`t${i}@trap.example`], trap: true }],
      }),
    );

  it('the tail: one event per filed message, in order, with keep-alive comments between', async () => {
    const reader = await TailReader.open(port);
    try {
      assert.equal(reader.status, 200);
      await reader.waitFor('the opening comment', () => reader.raw.startsWith(': spamtrapd tail'));
      publish(1);
      publish(2);
      await reader.waitFor('two messages', () => reader.messages().length === 2);
      assert.deepEqual(reader.messages().map((m) => [m.recipients, m.size]), [[['t1@trap.example'], 101], [['t2@trap.example'], 102]]);
      await reader.waitFor('a keep-alive comment', () => reader.raw.includes(': keep-alive\n\n'));
    } finally {
      reader.close();
    }
  });

  it('a reader that keeps up loses nothing, even from bursts far bigger than its queue', async () => {
    const reader = await TailReader.open(port);
    try {
      await reader.waitFor('the opening comment', () => reader.raw.length > 0);
      const before = hub.dropped;
      let published = 0;
      // Bursts of 200 in one go, as a primary applies an acceptor's batch; the queue holds 10.
      for (let burst = 0; burst < 10; burst++) {
        for (let i = 0; i < 200; i++) publish(1000 + ++published);
        await new Promise((r) => setImmediate(r));
      }
      await reader.waitFor('every event', () => reader.messages().length === published);
      assert.equal(reader.dropped(), 0);
      assert.equal(hub.dropped, before);
    } finally {
      reader.close();
    }
  });

  it('a reader that stops reading loses its oldest events, is told how many, and nobody waits for it', async () => {
    await waitUntil(() => hub.subscribers === 0);
    const before = hub.dropped;
    const reader = await TailReader.open(port);
    try {
      await reader.waitFor('the opening comment', () => reader.raw.length > 0);
      reader.pause();
      // Publish until the reader's socket buffers are full and its queue overflows; publish() never blocks.
      let published = 0;
      const deadline = Date.now() + 60_000;
      while (hub.dropped === before) {
        assert.ok(Date.now() < deadline, `no drop after ${published} events`);
        for (let i = 0; i < 200; i++) publish(100_000 + ++published);
        await new Promise((r) => setImmediate(r));
      }
      for (let i = 0; i < 20; i++) publish(100_000 + ++published);
      const lost = hub.dropped - before;
      assert.ok(published > 1000, `the socket took ${published} events before the first drop: the drops come from its full buffers`);
      reader.resume();
      await reader.waitFor('the last event', () => reader.messages().some((m) => m.size === 100 + 100_000 + published), 30_000);
      const seen = reader.messages();
      assert.ok(reader.dropped() > 0, 'the reader is told it lost some');
      assert.equal(reader.dropped(), lost, 'every loss is told, and counted by the hub');
      assert.equal(seen.length + reader.dropped(), published, 'each event either arrives or is counted as dropped');
      const seqs = seen.map((m) => m.seq as number);
      assert.deepEqual(seqs, [...seqs].sort((a, b) => a - b), 'what arrives is in order');
    } finally {
      reader.close();
    }
  });

  it('at most maxSubscribers readers; one more gets 503, and a closed one frees its place', async () => {
    await waitUntil(() => hub.subscribers === 0);
    const readers = [await TailReader.open(port), await TailReader.open(port), await TailReader.open(port)];
    try {
      const extra = await httpRequest(port, '/tail');
      assert.equal(extra.status, 503);
      assert.match(extra.body, /tail readers are connected already/);
      readers.pop()!.close();
      await waitUntil(() => hub.subscribers === 2);
      const again = await TailReader.open(port);
      readers.push(again);
      assert.equal(again.status, 200);
    } finally {
      for (const r of readers) r.close();
    }
  });
});

async function waitUntil(cond: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 10));
  }
}
