import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { filedEvent, type FiledMessageEvent } from '../src/intel/events';
import {
  formatDroppedJson,
  formatDroppedLine,
  formatTailJson,
  formatTailLine,
  SseParser,
  sseComment,
  sseEvent,
  TailHub,
  tailEventOf,
  type TailSubscription,
} from '../src/intel/tail';

const T0 = Date.UTC(2026, 10, 25, 14, 14, 0);

function filed(i: number, over: Partial<Parameters<typeof filedEvent>[0]> = {}): FiledMessageEvent {
  return filedEvent({
    at: T0 + i,
    ip: '192.0.2.7',
    helo: 'bot.example',
    mailFrom: 's@spam.example',
    size: 1000 + i,
    fingerprint: 'v1-abcdefghijkl',
    copies: [{ queue: 'incoming', recipients: [`t${i}@trap.example`], trap: true }],
    ...over,
  });
}

describe('tail hub', () => {
  it('costs nothing without readers, but numbers every event', () => {
    const hub = new TailHub({ queueLimit: 10, maxSubscribers: 2 });
    hub.publish(filed(1));
    hub.publish(filed(2));
    const s = hub.subscribe(() => undefined)!;
    hub.publish(filed(3));
    assert.deepEqual(s.take().events.map((e) => e.seq), [3]);
  });

  it('hands a reader its events in order and wakes it only when its queue stops being empty', () => {
    const hub = new TailHub({ queueLimit: 10, maxSubscribers: 2 });
    let wakes = 0;
    const s = hub.subscribe(() => wakes++)!;
    hub.publish(filed(1));
    hub.publish(filed(2));
    assert.equal(wakes, 1);
    assert.deepEqual(s.take(), { events: [tailEventOf(filed(1), 1), tailEventOf(filed(2), 2)], dropped: 0 });
    hub.publish(filed(3));
    assert.equal(wakes, 2);
    assert.deepEqual(s.take(1).events.map((e) => e.seq), [3]);
  });

  it('drops the oldest events of a slow reader, counts them, tells it once, and leaves other readers whole', () => {
    const hub = new TailHub({ queueLimit: 3, maxSubscribers: 2 });
    const slow = hub.subscribe(() => undefined)!;
    const fast = hub.subscribe(() => undefined)!;
    const fastSeen: number[] = [];
    for (let i = 1; i <= 10; i++) {
      hub.publish(filed(i));
      fastSeen.push(...fast.take().events.map((e) => e.seq));
    }
    assert.deepEqual(fastSeen, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    const batch = slow.take();
    assert.deepEqual(batch.events.map((e) => e.seq), [8, 9, 10], 'the newest, so the tail stays live');
    assert.equal(batch.dropped, 7);
    assert.equal(slow.take().dropped, 0, 'told once');
    assert.equal(hub.dropped, 7);
  });

  it('offers a full queue to its reader before dropping: a reader that takes a burst then loses nothing', () => {
    const hub = new TailHub({ queueLimit: 3, maxSubscribers: 2 });
    const seen: number[] = [];
    const keeps: TailSubscription = hub.subscribe(
      () => undefined,
      () => seen.push(...keeps.take().events.map((e) => e.seq)),
    )!;
    const ignores = hub.subscribe(() => undefined, () => undefined)!;
    for (let i = 1; i <= 10; i++) hub.publish(filed(i));
    seen.push(...keeps.take().events.map((e) => e.seq));
    assert.deepEqual(seen, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    assert.equal(keeps.dropped, 0);
    assert.equal(ignores.dropped, 7, 'one that does not take still loses the oldest');
  });

  it('never holds more than its limit for a reader that never reads', () => {
    const hub = new TailHub({ queueLimit: 100, maxSubscribers: 1 });
    const s = hub.subscribe(() => undefined)!;
    for (let i = 0; i < 100_000; i++) hub.publish(filed(i));
    assert.equal(s.queued, 100);
    assert.equal(s.dropped, 99_900);
  });

  it('refuses readers beyond maxSubscribers, frees the place on close, and keeps their drops counted', () => {
    const hub = new TailHub({ queueLimit: 1, maxSubscribers: 1 });
    const a = hub.subscribe(() => undefined)!;
    assert.equal(hub.subscribe(() => undefined), null);
    hub.publish(filed(1));
    hub.publish(filed(2));
    a.close();
    assert.equal(hub.subscribers, 0);
    assert.equal(hub.dropped, 1);
    assert.ok(hub.subscribe(() => undefined));
  });
});

describe('tail line formats', () => {
  it('writes one line for people: time, address, HELO, MAIL FROM, recipients, queue, size, fingerprint', () => {
    const e = tailEventOf(
      filed(0, {
        copies: [
          { queue: 'incoming', recipients: ['a@trap.example', 'b@trap.example'], trap: true },
          { queue: 'hamincoming', recipients: ['h@ham.example'], trap: false },
        ],
      }),
      7,
    );
    assert.equal(
      formatTailLine(e),
      '2026-11-25T14:14:00.000Z 192.0.2.7 helo=bot.example from=s@spam.example to=a@trap.example,b@trap.example,h@ham.example queue=incoming,hamincoming size=1000 fp=v1-abcdefghijkl',
    );
  });

  it('quotes what bots send when it could forge a field or a line', () => {
    const e = tailEventOf(
      filed(0, { helo: 'evil\nline fp=v1-forged', mailFrom: '', copies: [{ queue: 'incoming', recipients: ['x,y@trap.example', 'sp ace@t'], trap: true }] }),
      1,
    );
    const line = formatTailLine(e);
    assert.ok(!line.includes('\n'));
    assert.match(line, / helo="evil\\nline fp=v1-forged" from=<> to="x,y@trap.example","sp ace@t" /);
    assert.match(line, / size=1000 fp=v1-abcdefghijkl$/, 'the forged fp= stays inside the quoted HELO');
  });

  it('writes JSON lines with the documented keys, and says how many were dropped', () => {
    const j = JSON.parse(formatTailJson(tailEventOf(filed(5), 9)));
    assert.deepEqual(Object.keys(j), ['seq', 'time', 'ip', 'helo', 'mail_from', 'recipients', 'queues', 'size', 'fingerprint']);
    assert.equal(j.time, '2026-11-25T14:14:00.005Z');
    assert.equal(formatDroppedJson(3), '{"dropped":3}');
    assert.equal(formatDroppedLine(1), '# 1 message not shown: this reader fell behind');
    assert.equal(formatDroppedLine(4), '# 4 messages not shown: this reader fell behind');
  });
});

describe('server-sent events framing', () => {
  it('frames events and comments, and reads them back however the stream is cut', () => {
    const stream =
      sseComment('spamtrapd tail') +
      sseEvent('message', '{"a":1}') +
      sseEvent('dropped', '{"dropped":2}') +
      sseEvent('message', 'two\nlines') +
      sseComment('keep-alive\nwith newline');
    assert.equal(sseEvent('message', '{"a":1}'), 'event: message\ndata: {"a":1}\n\n');
    const want = [
      { event: 'message', data: '{"a":1}' },
      { event: 'dropped', data: '{"dropped":2}' },
      { event: 'message', data: 'two\nlines' },
    ];
    for (const size of [1, 2, 3, 7, stream.length]) {
      const p = new SseParser();
      const got = [];
      for (let i = 0; i < stream.length; i += size) got.push(...p.push(stream.slice(i, i + size)));
      assert.deepEqual(got, want, `chunks of ${size}`);
    }
  });

  it('reads CRLF line ends split across reads', () => {
    const p = new SseParser();
    assert.deepEqual(p.push('data: x\r'), []);
    assert.deepEqual(p.push('\n\r'), []);
    assert.deepEqual(p.push('\n'), [{ event: 'message', data: 'x' }]);
  });
});
