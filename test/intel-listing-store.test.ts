import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { writeFileAtomic } from '../src/intel/atomic-file';
import { Listing } from '../src/intel/listing';
import type { ListingPolicy } from '../src/intel/listing-policy';
import { loadListing, saveListing } from '../src/intel/listing-store';

const T0 = Date.UTC(2026, 10, 25, 12, 0, 0);
const DAY = 86_400_000;
const policy: ListingPolicy = { minHits: 1, ttlMs: 7 * DAY, exclude: [] };

function sample(): Listing {
  const l = new Listing(1000, policy);
  for (let i = 0; i < 300; i++) {
    const ip = i % 10 === 0 ? `2001:db8::${i.toString(16)}` : `198.51.${i >> 8}.${i & 255}`;
    const rcpts = Array.from({ length: 1 + (i % 12) }, (_, j) => `u${j}@trap${i % 3}.example`);
    l.message(ip, T0 + i * 1000, { recipients: rcpts, helo: i % 4 === 0 ? null : `h"${i}\u00e9\n`, fingerprint: i % 5 ? 'v1-abcdefghijkl' : null });
    if (i % 2) l.connection(ip, T0 + i * 1000 + 500, i % 3 ? 'quit' : 'drop');
  }
  return l;
}

describe('listing store', () => {
  let dir: string;
  before(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'listing-store-'));
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('round-trips every field of every entry, in recency order, estimates included', async () => {
    const src = sample();
    const file = path.join(dir, 'rt', 'listing.jsonl');
    const now = T0 + 400_000;
    const saved = await saveListing(file, src, now);
    assert.equal(saved.entries, 300);
    assert.equal(saved.bytes, fs.statSync(file).size);
    assert.equal(fs.statSync(file).mode & 0o777, 0o600, 'the listing holds what bots sent: owner only');
    const dst = new Listing(1000, policy);
    assert.deepEqual(await loadListing(file, dst, now), { status: 'loaded', entries: 300, skipped: 0 });
    assert.deepEqual([...dst.entries(now)], [...src.entries(now)]);
    assert.ok([...dst.entries(now)].some((e) => e.recipientsEstimated), 'sample covers estimated recipient counts');
    // The sketch goes on where it stopped: the same new recipient changes both the same way.
    src.message('198.51.0.1', now, { recipients: ['new@trap.example'], helo: null, fingerprint: null });
    dst.message('198.51.0.1', now, { recipients: ['new@trap.example'], helo: null, fingerprint: null });
    assert.deepEqual(dst.get('198.51.0.1', now), src.get('198.51.0.1', now));
  });

  it('reports a missing file as missing, so a first start is not an error', async () => {
    assert.deepEqual(await loadListing(path.join(dir, 'nope.jsonl'), new Listing(10, policy), T0), { status: 'missing' });
  });

  it('refuses a file cut short, wherever it was cut, with the reason', async () => {
    const file = path.join(dir, 'torn.jsonl');
    await saveListing(file, sample(), T0 + 400_000);
    const whole = fs.readFileSync(file);
    for (const cut of [1, 100, Math.floor(whole.length / 2), whole.length - 3]) {
      fs.writeFileSync(file, whole.subarray(0, cut));
      const r = await loadListing(file, new Listing(1000, policy), T0 + 400_000);
      assert.equal(r.status, 'refused', `cut at ${cut}`);
      assert.match((r as { reason: string }).reason, /cut short|not JSON|row|end marker|not a spamtrapd listing/, `cut at ${cut}`);
    }
  });

  it('refuses a foreign file, another version, a bad row, and data after the end', async () => {
    const file = path.join(dir, 'foreign.jsonl');
    await saveListing(file, sample(), T0 + 400_000);
    const lines = fs.readFileSync(file, 'utf8').trimEnd().split('\n');
    const cases: Array<[string, string[], RegExp]> = [
      ['foreign', ['hello world'], /not a spamtrapd listing/],
      ['empty', [], /empty file/],
      ['version', [lines[0].replace('"version":1', '"version":2'), ...lines.slice(1)], /version 2, this trap reads 1/],
      ['bad row', [lines[0], '["192.0.2.1",-1,0,0,0,null,null,null,0,""]', ...lines.slice(2)], /line 2: bad count/],
      ['sketch', [lines[0], '["192.0.2.1",1,0,0,0,null,null,null,2,"00000001"]', ...lines.slice(2)], /line 2: rcpt_hashes/],
      ['count', [...lines.slice(0, 5), ...lines.slice(6)], /end marker says 300 entries, the file has 299/],
      ['after end', [...lines, lines[1]], /data after the end marker/],
    ];
    for (const [name, content, reason] of cases) {
      fs.writeFileSync(file, content.length ? content.join('\n') + '\n' : '');
      const r = await loadListing(file, new Listing(1000, policy), T0 + 400_000);
      assert.equal(r.status, 'refused', name);
      assert.match((r as { reason: string }).reason, reason, name);
    }
  });

  it('skips entries the current policy no longer keeps', async () => {
    const file = path.join(dir, 'skip.jsonl');
    await saveListing(file, sample(), T0 + 400_000);
    const now = T0 + 300_000;
    const alive = [...sample().entries(now)].filter((e) => now - e.lastSeen < 100_000).length;
    assert.ok(alive > 50 && alive < 250);
    const short = new Listing(1000, { ...policy, ttlMs: 100_000 });
    const r = await loadListing(file, short, now);
    assert.deepEqual(r, { status: 'loaded', entries: 300, skipped: 300 - alive });
    assert.equal(short.size, alive);
  });
});

describe('atomic file replacement', () => {
  let dir: string;
  before(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'atomic-'));
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('leaves the old file whole and no temporary behind when writing the new one fails', async () => {
    const file = path.join(dir, 'data.txt');
    await writeFileAtomic(file, ['old\n']);
    async function* failing() {
      yield 'x'.repeat(1024 * 1024);
      throw new Error('generator broke');
    }
    await assert.rejects(writeFileAtomic(file, failing()), /generator broke/);
    assert.equal(fs.readFileSync(file, 'utf8'), 'old\n');
    assert.deepEqual(fs.readdirSync(dir), ['data.txt']);
  });

  it('removes a temporary left by a writer killed mid-file', async () => {
    const file = path.join(dir, 'z.ip4set');
    fs.writeFileSync(path.join(dir, '.z.ip4set.4242.1700000000000.tmp'), 'partial');
    fs.writeFileSync(path.join(dir, '.other.tmp'), 'not ours');
    await writeFileAtomic(file, ['a\n', 'b\n']);
    assert.deepEqual(fs.readdirSync(dir).sort(), ['.other.tmp', 'data.txt', 'z.ip4set']);
    assert.equal(fs.readFileSync(file, 'utf8'), 'a\nb\n');
  });
});
