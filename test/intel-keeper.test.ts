/**
 * The primary's side of the trap intelligence without a daemon: TrapIntel applies acceptor batches to the listing,
 * the top recipients, the fingerprint metric and the tail; ListingKeeper loads, writes only what changed, one write
 * at a time, and sets a refused file aside.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { Registry } from 'prom-client';
import { filedEvent, type FiledCopy, type IntelBatchMessage, type IntelEvent } from '../src/intel/events';
import { fingerprintId } from '../src/intel/fingerprint';
import { TrapIntel, type IntelSettings } from '../src/intel/trap-intel';
import { createLogger } from '../src/log';
import { SERIES } from '../src/metrics/definitions';
import { parseExposition, sampleValue } from './helpers/prometheus';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'spamtrapd-keeper-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));
let n = 0;

const FP = fingerprintId('a');
const FP2 = fingerprintId('b');

function settings(over: Partial<IntelSettings> = {}): IntelSettings {
  const dir = path.join(tmp, String(n++));
  return {
    listingMinHits: 1,
    listingTtlMs: 7 * 86_400_000,
    listingExclude: [],
    listingMaxEntries: 1000,
    // Long: the tests call write() themselves.
    listingWriteIntervalMs: 3_600_000,
    listingZoneFile: path.join(dir, 'listing.ip4set'),
    listingStateFile: path.join(dir, 'state', 'listing.jsonl'),
    fingerprintMetricTop: 50,
    tailBuffer: 100,
    ...over,
  };
}

function logs() {
  const lines: string[] = [];
  return { lines, log: createLogger('debug', {}, (l) => void lines.push(l)) };
}

const copy = (recipients: string[], trap = true, queue = trap ? 'incoming' : 'hamincoming'): FiledCopy => ({ queue, recipients, trap });

function filed(ip: string, copies: FiledCopy[], at = Date.now(), fingerprint = FP): IntelEvent {
  return filedEvent({ at, ip, helo: 'bot.example', mailFrom: 's@spam.example', size: 100, fingerprint, copies });
}

function batch(events: unknown[], dropped = 0): IntelBatchMessage {
  return { type: 'intel:batch', slot: '0', pid: 1, seq: 1, dropped, events: events as IntelEvent[] };
}

async function scrape(registry: Registry) {
  return parseExposition(await registry.metrics());
}

describe('TrapIntel: applying acceptor batches', () => {
  it('counts messages, connections and distinct recipients per address from counting copies only', async () => {
    const { log } = logs();
    const intel = await TrapIntel.start(settings(), new Registry(), log);
    intel.apply(
      batch([
        filed('192.0.2.7', [copy(['a@trap', 'b@trap']), copy(['ham@trap'], false)]),
        filed('192.0.2.7', [copy(['A@TRAP', 'c@trap'])]),
        { kind: 'ended', at: Date.now(), ip: '192.0.2.7', end: 'quit' },
        // Only non-counting recipients: never an entry, and its session end is not one either.
        filed('192.0.2.8', [copy(['ham@trap'], false), copy(['postmaster@trap'], false, 'forward-mta-25')]),
        { kind: 'ended', at: Date.now(), ip: '192.0.2.8', end: 'drop' },
      ]),
    );
    const e = intel.keeper.listing.get('192.0.2.7', Date.now())!;
    assert.deepEqual([e.messages, e.connections, e.recipients, e.lastEnd, e.fingerprint], [2, 1, 3, 'quit', FP]);
    assert.equal(intel.keeper.listing.get('192.0.2.8', Date.now()), undefined);
    assert.deepEqual(
      intel.topRecipients.top(10).map((t) => [t.key, t.count]),
      [
        ['a@trap', 2],
        ['b@trap', 1],
        ['c@trap', 1],
      ],
    );
    await intel.close();
  });

  it("an excluded sender is not stored, and its recipients stay out of the top recipients", async () => {
    const intel = await TrapIntel.start(settings({ listingExclude: ['192.0.2.0/24'] }), new Registry(), logs().log);
    intel.apply(batch([filed('192.0.2.7', [copy(['a@trap'])]), filed('198.51.100.1', [copy(['b@trap'])])]));
    assert.equal(intel.keeper.listing.size, 1);
    assert.deepEqual(intel.topRecipients.top(10).map((t) => t.key), ['b@trap']);
    await intel.close();
  });

  it('counts every filed message by fingerprint, FINGERPRINT_METRIC_TOP ids at most, the rest as other', async () => {
    const registry = new Registry();
    const intel = await TrapIntel.start(settings({ fingerprintMetricTop: 1 }), registry, logs().log);
    const events: IntelEvent[] = [];
    for (let i = 0; i < 7; i++) events.push(filed('192.0.2.7', [copy(['a@trap'])], Date.now(), FP));
    for (let i = 0; i < 6; i++) events.push(filed('192.0.2.8', [copy(['h@trap'], false)], Date.now(), FP2));
    intel.apply(batch(events));
    const s = await scrape(registry);
    // FP got the one series once seen 5 times (its first 4 stay in other); FP2 finds no series left.
    assert.equal(sampleValue(s, SERIES.fingerprintMessages, { fingerprint: FP }), 3);
    assert.equal(sampleValue(s, SERIES.fingerprintMessages, { fingerprint: 'other' }), 10);
    assert.equal(sampleValue(s, SERIES.fingerprintMessages, { fingerprint: FP2 }), undefined);
    await intel.close();
  });

  it('remembers what each fingerprint stands for from the first event that carries it', async () => {
    const intel = await TrapIntel.start(settings(), new Registry(), logs().log);
    intel.apply(batch([{ ...filed('192.0.2.7', [copy(['a@trap'])]), features: 'talk=0;greet=ehlo' }]));
    assert.equal(intel.fingerprints.featuresOf(FP), 'talk=0;greet=ehlo');
    assert.equal(intel.fingerprints.featuresOf(FP2), null);
    await intel.close();
  });

  it('publishes every filed message to the tail, counting or not', async () => {
    const intel = await TrapIntel.start(settings(), new Registry(), logs().log);
    const sub = intel.tail.subscribe(() => undefined)!;
    intel.apply(batch([filed('192.0.2.7', [copy(['a@trap'])]), filed('192.0.2.8', [copy(['h@trap'], false)])]));
    assert.deepEqual(sub.take().events.map((e) => [e.ip, e.queues.join()]), [
      ['192.0.2.7', 'incoming'],
      ['192.0.2.8', 'hamincoming'],
    ]);
    sub.close();
    await intel.close();
  });

  it('skips malformed events, logs them, applies the rest; counts what acceptors dropped', async () => {
    const { lines, log } = logs();
    const registry = new Registry();
    const intel = await TrapIntel.start(settings(), registry, log);
    intel.apply(
      batch(
        [
          null,
          { kind: 'filed', at: 'now', ip: '192.0.2.9' },
          { kind: 'filed', at: Date.now(), ip: '192.0.2.9', copies: [{ queue: 'q', trap: true, recipients: [1] }] },
          { kind: 'ended', at: Date.now(), ip: '192.0.2.9', end: 'maybe' },
          { kind: 'other' },
          filed('192.0.2.7', [copy(['a@trap'])]),
        ],
        42,
      ),
    );
    assert.equal(intel.keeper.listing.size, 1);
    assert.equal(lines.filter((l) => / warn intel_event_malformed /.test(l)).length, 1, 'logged once, not per event');
    assert.equal(sampleValue(await scrape(registry), SERIES.intelEventsDropped), 42);
    await intel.close();
  });

  it('SIGHUP policy: newly excluded entries go at once, the new threshold applies; an unchanged one does nothing', async () => {
    const { lines, log } = logs();
    const s = settings();
    const intel = await TrapIntel.start(s, new Registry(), log);
    intel.apply(batch([filed('192.0.2.7', [copy(['a@trap'])]), filed('198.51.100.1', [copy(['b@trap'])])]));
    intel.reload(s);
    assert.ok(!lines.some((l) => / listing_policy /.test(l)), 'nothing changed');
    intel.reload({ listingMinHits: 2, listingTtlMs: 7 * 86_400_000, listingExclude: ['198.51.100.0/24'] });
    assert.match(lines.at(-1)!, / info listing_policy min_hits=2 ttl_s=604800 exclude=198\.51\.100\.0\/24 dropped_excluded=1/);
    assert.equal(intel.keeper.listing.size, 1);
    assert.deepEqual([...intel.keeper.listing.listed(Date.now())], [], 'one message is below the new threshold');
    await intel.close();
  });
});

describe('ListingKeeper: disk', () => {
  it('writes the state file and both rbldnsd files at start, then only when something changed', async () => {
    const { lines, log } = logs();
    const s = settings();
    const intel = await TrapIntel.start(s, new Registry(), log);
    const written = () => lines.filter((l) => / info listing_written /.test(l)).length;
    assert.equal(written(), 1, 'the files exist from the start');
    assert.ok(fs.existsSync(s.listingStateFile) && fs.existsSync(s.listingZoneFile));
    assert.ok(fs.existsSync(s.listingZoneFile.replace(/\.ip4set$/, '.ip6trie')));
    await intel.keeper.write();
    assert.equal(written(), 1, 'nothing changed, nothing written');
    intel.apply(batch([filed('192.0.2.7', [copy(['a@trap'])]), filed('2001:db8::7', [copy(['a@trap'])])]));
    // Two writes asked for at once: they run one after the other, the second finds nothing new.
    await Promise.all([intel.keeper.write(), intel.keeper.write()]);
    assert.equal(written(), 2);
    assert.match(lines.at(-1)!, /entries=2 listed=2 ipv4=1 ipv6=1 expired=0/);
    assert.match(fs.readFileSync(s.listingZoneFile, 'utf8'), /^192\.0\.2\.7 \$ sent 1 message to spamtraps/m);
    await intel.close();
  });

  it('loads what it saved: a restart keeps every count', async () => {
    const s = settings();
    const first = await TrapIntel.start(s, new Registry(), logs().log);
    first.apply(batch([filed('192.0.2.7', [copy(['a@trap', 'b@trap'])]), { kind: 'ended', at: Date.now(), ip: '192.0.2.7', end: 'drop' }]));
    const before = first.keeper.listing.get('192.0.2.7', Date.now());
    await first.close();
    const { lines, log } = logs();
    const second = await TrapIntel.start(s, new Registry(), log);
    assert.deepEqual(second.keeper.listing.get('192.0.2.7', Date.now()), before);
    assert.ok(lines.some((l) => / info listing_loaded .*entries=1 /.test(l)));
    await second.close();
  });

  it('a refused state file is logged and set aside, and the trap starts with an empty listing', async () => {
    const s = settings();
    fs.mkdirSync(path.dirname(s.listingStateFile), { recursive: true });
    fs.writeFileSync(s.listingStateFile, '{"format":"spamtrapd-listing","version":1,"columns":[]}\n["cut short"\n');
    const { lines, log } = logs();
    const intel = await TrapIntel.start(s, new Registry(), log);
    assert.equal(intel.keeper.listing.size, 0);
    assert.ok(lines.some((l) => / error listing_refused .*reason=.*moved_to=.*listing\.jsonl\.refused/.test(l)), lines.join(''));
    assert.ok(fs.existsSync(`${s.listingStateFile}.refused`));
    await intel.close();
  });

  it('a failed write is logged, counted, and tried again at the next write', async () => {
    const s = settings();
    const registry = new Registry();
    const { lines, log } = logs();
    const intel = await TrapIntel.start(s, registry, log);
    intel.apply(batch([filed('192.0.2.7', [copy(['a@trap'])])]));
    // The zone file's directory becomes a file: the next write cannot replace it.
    const zoneDir = path.dirname(s.listingZoneFile);
    fs.rmSync(zoneDir, { recursive: true });
    fs.writeFileSync(zoneDir, 'in the way');
    await intel.keeper.write();
    assert.ok(lines.some((l) => / error listing_write_failed /.test(l)));
    assert.equal(sampleValue(await scrape(registry), SERIES.listingWriteFailures), 1);
    fs.rmSync(zoneDir);
    await intel.keeper.write();
    assert.match(lines.at(-1)!, / info listing_written .*entries=1 listed=1/);
    await intel.close();
  });
});
