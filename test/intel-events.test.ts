import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { filedEvent, IntelEventBatcher, isIntelBatch, type IntelBatchMessage } from '../src/intel/events';
import { INTEL_LIMITS } from '../src/intel/limits';

const T0 = Date.UTC(2026, 10, 25, 14, 14, 0);
const FEATURES = 'talk=0;greet=ehlo';

const event = (i: number, fingerprint = 'v1-abcdefghijkl') =>
  filedEvent({
    at: T0 + i,
    ip: '192.0.2.7',
    helo: 'bot',
    mailFrom: 's@spam.example',
    size: 100,
    fingerprint,
    copies: [{ queue: 'incoming', recipients: [`t${i}@trap.example`], trap: true }],
  });

const tick = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('acceptor -> primary events', () => {
  it('bounds every field a bot controls, and the recipients of one message', () => {
    const long = 'x'.repeat(10_000);
    const e = filedEvent({
      at: T0,
      ip: '192.0.2.7',
      helo: long,
      mailFrom: long,
      size: 1,
      fingerprint: 'v1-abcdefghijkl',
      copies: [
        { queue: 'incoming', recipients: Array.from({ length: 80 }, (_, i) => `a${i}@t`), trap: true },
        { queue: 'hamincoming', recipients: Array.from({ length: 80 }, (_, i) => `${long}${i}`), trap: false },
      ],
    });
    const max = INTEL_LIMITS.events.fieldMaxChars;
    assert.equal(e.helo!.length, max);
    assert.equal(e.mailFrom.length, max);
    assert.equal(e.copies[0].recipients.length, 80);
    assert.equal(e.copies[1].recipients.length, INTEL_LIMITS.events.recipientsPerMessage - 80);
    assert.ok(e.copies[1].recipients.every((r) => r.length === max));
    assert.equal(e.recipientsOmitted, 160 - INTEL_LIMITS.events.recipientsPerMessage);
  });

  it('recognises its batches and nothing else', () => {
    assert.equal(isIntelBatch({ type: 'intel:batch', slot: '0', pid: 1, seq: 1, dropped: 0, events: [] }), true);
    assert.equal(isIntelBatch({ type: 'metrics:snapshot', slot: '0', pid: 1, seq: 1, metrics: [] }), false);
    assert.equal(isIntelBatch({ type: 'intel:batch', slot: 0, pid: 1, seq: 1, dropped: 0, events: [] }), false);
    assert.equal(isIntelBatch(null), false);
  });
});

describe('event batcher', () => {
  it('sends a full batch at once and a partial one after the delay, in order', async () => {
    const sent: IntelBatchMessage[] = [];
    const b = new IntelEventBatcher({ slot: '0', send: (m) => void sent.push(m), maxEvents: 3, maxDelayMs: 30 });
    for (let i = 0; i < 4; i++) b.filed(event(i), FEATURES);
    b.ended({ at: T0 + 9, ip: '192.0.2.7', end: 'quit' });
    await tick(0);
    assert.equal(sent.length, 1, 'the full batch went at once');
    assert.equal(sent[0].events.length, 3);
    await tick(80);
    assert.equal(sent.length, 2, 'the rest after the delay');
    const all = sent.flatMap((m) => m.events);
    assert.deepEqual(all.map((e) => e.at), [T0, T0 + 1, T0 + 2, T0 + 3, T0 + 9]);
    assert.equal(all[4].kind, 'ended');
    assert.deepEqual(sent.map((m) => m.seq), [1, 2]);
    assert.equal(sent[0].slot, '0');
    b.stop();
  });

  it('sends the feature string with the first event of each id only', async () => {
    const sent: IntelBatchMessage[] = [];
    const b = new IntelEventBatcher({ slot: '1', send: (m) => void sent.push(m), maxEvents: 100, maxDelayMs: 10 });
    b.filed(event(0, 'v1-aaaaaaaaaaaa'), 'A');
    b.filed(event(1, 'v1-aaaaaaaaaaaa'), 'A');
    b.filed(event(2, 'v1-bbbbbbbbbbbb'), 'B');
    await b.flush();
    const evs = sent.flatMap((m) => m.events) as Array<{ features?: string }>;
    assert.deepEqual(evs.map((e) => e.features), ['A', undefined, 'B']);
  });

  it('never waits for a stuck primary: holds up to pendingMax, drops and counts the rest, reports the drops', async () => {
    const sent: IntelBatchMessage[] = [];
    let release!: () => void;
    const stuck = new Promise<void>((r) => (release = r));
    let calls = 0;
    const b = new IntelEventBatcher({
      slot: '0',
      send: (m) => {
        sent.push(m);
        return calls++ === 0 ? stuck : undefined;
      },
      maxEvents: 2,
      maxDelayMs: 5,
      pendingMax: 10,
    });
    const started = performance.now();
    for (let i = 0; i < 1000; i++) b.filed(event(i), FEATURES);
    assert.ok(performance.now() - started < 500, 'adding never blocks');
    assert.equal(sent.length, 1, 'one batch in flight, the rest waits');
    // 2 in flight, 10 held, 988 dropped.
    assert.equal(b.dropped, 988);
    release();
    await b.flush();
    const delivered = sent.flatMap((m) => m.events).length;
    assert.equal(delivered, 12);
    assert.equal(sent.reduce((n, m) => n + m.dropped, 0), 988, 'the primary learns of every drop');
  });

  it('flushes everything pending, batch after batch, for a graceful exit', async () => {
    const sent: IntelBatchMessage[] = [];
    const b = new IntelEventBatcher({ slot: '0', send: async (m) => void sent.push(m), maxEvents: 4, maxDelayMs: 10_000 });
    for (let i = 0; i < 3; i++) b.filed(event(i), FEATURES);
    await b.flush();
    assert.equal(sent.flatMap((m) => m.events).length, 3);
    await b.flush();
    assert.equal(sent.length, 1, 'nothing more to send');
  });
});
