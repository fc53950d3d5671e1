import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { Writable } from 'node:stream';
import { describe, it } from 'node:test';
import { runTailCommand } from '../src/cli/tail';
import { filedEvent, type FiledMessageEvent } from '../src/intel/events';
import { waitFor } from './helpers/waiting';
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

describe('spamtrapd tail, the client', () => {
  it('stops reading while its stdout does not take lines, and prints every one once it does', async () => {
    const total = 100_000; // ~20 MB: more than the loopback socket buffers hold, so the fake trap sees the stall
    const line = (seq: number) => formatTailJson({ seq, at: 0, ip: '192.0.2.1', helo: 'h', mailFrom: 'a@b.example', recipients: ['t@trap.example'], queues: ['incoming'], size: 1, fingerprint: 'f' });
    let serverSawBackpressure = false;
    let seq = 0;
    const sentSoFar = () => seq;
    const server = http.createServer((_req, res) => {
      res.writeHead(200, { 'Content-Type': 'text/event-stream' });
      const more = (): void => {
        while (seq < total) {
          if (!res.write(sseEvent('message', line(++seq)))) {
            serverSawBackpressure = true;
            res.once('drain', more);
            return;
          }
        }
        res.end();
      };
      more();
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const held: Array<() => void> = [];
    let lines = 0;
    // A stdout that takes nothing until told to: its write() says false once 1 KiB waits.
    const stdout = new Writable({ highWaterMark: 1024, write: (_chunk, _enc, cb) => void held.push(cb) });
    const write = stdout.write.bind(stdout) as (s: string) => boolean;
    stdout.write = ((s: string) => {
      lines += s.split('\n').length - 1;
      return write(s);
    }) as typeof stdout.write;
    try {
      const port = (server.address() as AddressInfo).port;
      const done = runTailCommand(['--json'], { metricsHost: '127.0.0.1', metricsPort: port }, { stdout, stderr: { write: () => true }, interrupted: new Promise(() => undefined) });
      await waitFor('the fake trap has to wait for the client', () => serverSawBackpressure, 10_000);
      await new Promise((r) => setTimeout(r, 500));
      const stalled = { lines, sent: sentSoFar() };
      await new Promise((r) => setTimeout(r, 300));
      assert.ok(lines < total && sentSoFar() < total, `the client stopped taking events while stdout was full (${lines} printed, ${sentSoFar()} sent of ${total})`);
      assert.deepEqual({ lines, sent: sentSoFar() }, stalled, 'nothing more is printed or sent while stdout holds its writes');
      // Let stdout take everything: the stream resumes and every event is printed once.
      const release = setInterval(() => held.splice(0).forEach((cb) => cb()), 1);
      assert.equal(await done, 1, 'the stream ended (the fake trap closed it)');
      clearInterval(release);
      assert.equal(lines, total);
    } finally {
      held.splice(0).forEach((cb) => cb());
      server.closeAllConnections();
      server.close();
    }
  });
});
