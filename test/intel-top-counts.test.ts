import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { OTHER_LABEL, StableTopLabels } from '../src/intel/stable-labels';
import { TopCounts } from '../src/intel/top-counts';

/** A deterministic skewed stream: key k appears about 1/k as often (Zipf), over `distinct` keys. */
function zipf(n: number, distinct: number): string[] {
  let seed = 42;
  const rand = () => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32);
  const weights = Array.from({ length: distinct }, (_, i) => 1 / (i + 1));
  const total = weights.reduce((a, b) => a + b, 0);
  const cum: number[] = [];
  weights.reduce((acc, w) => (cum.push((acc + w) / total), acc + w), 0);
  return Array.from({ length: n }, () => {
    const x = rand();
    let lo = 0;
    let hi = cum.length - 1;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (cum[mid] < x) lo = mid + 1;
      else hi = mid;
    }
    return `k${lo}`;
  });
}

describe('top counts (Space-Saving)', () => {
  it('is exact while it holds every key, largest first, ties by key', () => {
    const t = new TopCounts(10);
    for (const k of ['b', 'a', 'c', 'a', 'b', 'a']) t.add(k);
    t.add('d', 2);
    assert.deepEqual(t.top(10), [
      { key: 'a', count: 3, error: 0 },
      { key: 'b', count: 2, error: 0 },
      { key: 'd', count: 2, error: 0 },
      { key: 'c', count: 1, error: 0 },
    ]);
    assert.deepEqual(t.top(2).map((i) => i.key), ['a', 'b']);
    assert.equal(t.observed, 8);
  });

  it('never holds more than its capacity, and bounds every count it shows', () => {
    const stream = zipf(50_000, 5000);
    const truth = new Map<string, number>();
    for (const k of stream) truth.set(k, (truth.get(k) ?? 0) + 1);
    const t = new TopCounts(200);
    for (const k of stream) t.add(k);
    assert.equal(t.size, 200);
    for (const item of t.top(200)) {
      const real = truth.get(item.key)!;
      assert.ok(item.count - item.error <= real && real <= item.count, `${item.key}: ${JSON.stringify(item)} real ${real}`);
    }
    // The guarantee: every key seen more than total/capacity times is held.
    for (const [k, n] of truth) if (n > stream.length / 200) assert.ok(t.get(k), `${k} (${n}) must be held`);
    // And the top 10 are the real top 10.
    const real10 = [...truth].sort((a, b) => b[1] - a[1]).slice(0, 10).map(([k]) => k);
    assert.deepEqual(t.top(10).map((i) => i.key).sort(), real10.sort());
  });
});

describe('stable labels for a bounded Prometheus counter', () => {
  it('gives at most maxLabels keys a series, counts the rest as other, and loses no observation', () => {
    const labels = new StableTopLabels({ maxLabels: 5, promoteAfter: 3, tracked: 50 });
    const counter = new Map<string, number>();
    const stream = zipf(20_000, 300);
    for (const k of stream) {
      const l = labels.label(k);
      counter.set(l, (counter.get(l) ?? 0) + 1);
    }
    assert.equal(labels.labels().length, 5);
    assert.deepEqual([...counter.keys()].sort(), [...labels.labels(), OTHER_LABEL].sort());
    assert.equal([...counter.values()].reduce((a, b) => a + b, 0), stream.length);
  });

  it('keeps a series once given, even when its key stops coming; a series is never taken back', () => {
    const labels = new StableTopLabels({ maxLabels: 2, promoteAfter: 2, tracked: 10 });
    assert.equal(labels.label('early'), OTHER_LABEL, 'first sight: not yet');
    assert.equal(labels.label('early'), 'early', 'seen twice for sure: promoted');
    for (let i = 0; i < 1000; i++) labels.label('busy');
    for (let i = 0; i < 1000; i++) assert.equal(labels.label(`new${i % 7}`), OTHER_LABEL, 'no series left');
    assert.deepEqual(labels.labels(), ['early', 'busy']);
    assert.equal(labels.label('early'), 'early');
  });

  it('does not spend series on one-off keys', () => {
    const labels = new StableTopLabels({ maxLabels: 3, promoteAfter: 5, tracked: 100 });
    for (let i = 0; i < 90; i++) assert.equal(labels.label(`once${i}`), OTHER_LABEL);
    for (let i = 0; i < 5; i++) labels.label('bot');
    assert.deepEqual(labels.labels(), ['bot']);
    assert.equal(labels.label(OTHER_LABEL), OTHER_LABEL, 'a key spelled like the overflow label cannot own it');
  });

  it('with maxLabels 0 counts everything as other', () => {
    const labels = new StableTopLabels({ maxLabels: 0, promoteAfter: 1, tracked: 10 });
    for (let i = 0; i < 10; i++) assert.equal(labels.label('x'), OTHER_LABEL);
    assert.deepEqual(labels.labels(), []);
  });
});
