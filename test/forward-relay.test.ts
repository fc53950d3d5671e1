/**
 * The forward relay against real SMTP receivers on loopback: smtp-server scripted per test, a TCP listener that
 * drops every connection (an MTA that is down), Postfix's smtp-sink when installed, and relay processes that are
 * SIGKILLed at the two moments the delivery guarantee is about; local failures (a full disk, a queue file that will
 * not go) injected into an in-process relay.
 */
import { after, afterEach, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { ChildProcess, fork, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { SMTPServer, type SMTPServerOptions } from 'smtp-server';
import { parseForwardUrl } from '../src/config/routes';
import { forwardQueueName } from '../src/spool-layout';
import { readRunningConfig } from '../src/config/read-running-config';
import { DirQueueReader, DirQueueWriter, Job, type DirQueueFs } from '../src/dirqueue';
import { backoffMs, destinationOfQueue, ForwardRelay, reinjectDeadLetters, RelayStateStore, type ForwardRelayOptions, type JobState } from '../src/forward';
import { createLogger } from '../src/log';
import { expectFdsAtMost, openFdCount } from './helpers/open-fds';
import { repoRoot } from './helpers/paths';
import { sleep, waitFor } from './helpers/waiting';

const tmpDirs: string[] = [];
function makeSpool(): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'spamtrapd-fwd-'));
  tmpDirs.push(d);
  return d;
}

/** A message as the acceptors store it: the trap's Received header first, CRLF line ends. */
function storedMessage(tag: string): Buffer {
  return Buffer.from(
    `Received: from bot.example (bot.example [192.0.2.7])\r\n\tby trap.test (spamtrapd) with ESMTP; Mon, 1 Jan 2024 00:00:00 +0000\r\n` +
      `From: "Spammer" <spam@bad.example>\r\nTo: root@victim.example\r\nSubject: ${tag}\r\nMessage-ID: <${tag}@bad.example>\r\n\r\n` +
      `body of ${tag}\r\n.leading dot survives\r\n\r\nlast line\r\n`,
    'utf8',
  );
}

async function enqueue(spool: string, queue: string, message: Buffer, meta: Record<string, string>): Promise<string> {
  const w = new DirQueueWriter(path.join(spool, queue));
  const c = await w.enqueueStream([message], {
    remote_ip: '192.0.2.7',
    helo: 'bot.example',
    note: '',
    tls: 'no',
    proto: 'ESMTP',
    ...meta,
  });
  return c.jobId;
}

/** Files in queue/, data/ and active/ of a queue: a drained queue has none. */
function queueFiles(spool: string, queue: string): string[] {
  const out: string[] = [];
  const walk = (d: string): void => {
    for (const e of fs.existsSync(d) ? fs.readdirSync(d, { withFileTypes: true }) : []) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else out.push(path.relative(path.join(spool, queue), p));
    }
  };
  for (const sub of ['queue', 'data', 'active']) walk(path.join(spool, queue, sub));
  return out;
}

function stateFiles(spool: string): string[] {
  const root = path.join(spool, '.relay-state');
  if (!fs.existsSync(root)) return [];
  return fs.readdirSync(root).flatMap((q) => fs.readdirSync(path.join(root, q)).map((f) => `${q}/${f}`));
}

async function jobsOf(spool: string, queue: string): Promise<Job[]> {
  const jobs: Job[] = [];
  await new DirQueueReader(path.join(spool, queue)).visitAll((j) => {
    jobs.push(j);
  });
  return jobs;
}

interface Received {
  from: string;
  to: string[];
  data: Buffer;
}

type Verdict = null | { code: number; text: string };

/** smtp-server scripted per test; `messages` holds what it answered 250 to. */
class Receiver {
  server!: SMTPServer;
  port = 0;
  readonly messages: Received[] = [];
  transactions = 0;
  /** Reply per recipient (null = accept). */
  rcpt: (address: string, nth: number) => Verdict = () => null;
  /** Reply after the message (null = 250). 'hang' never answers. */
  data: (msg: Received, nth: number) => Verdict | 'hang' | Promise<Verdict> = () => null;
  /** Called once a message was read completely, before the reply. */
  onMessageRead: (msg: Received) => void = () => undefined;
  private rcptSeen = new Map<string, number>();

  async listen(port = 0): Promise<void> {
    const opts: SMTPServerOptions = {
      authOptional: true,
      disabledCommands: ['AUTH'],
      logger: false,
      onRcptTo: (address, _session, cb) => {
        const n = (this.rcptSeen.get(address.address) ?? 0) + 1;
        this.rcptSeen.set(address.address, n);
        const v = this.rcpt(address.address, n);
        if (!v) return cb();
        cb(Object.assign(new Error(v.text), { responseCode: v.code }));
      },
      onData: (stream, session, cb) => {
        const chunks: Buffer[] = [];
        stream.on('data', (c: Buffer) => chunks.push(c));
        stream.on('end', () => {
          const msg: Received = {
            from: session.envelope.mailFrom ? session.envelope.mailFrom.address : '<none>',
            to: session.envelope.rcptTo.map((r) => r.address),
            data: Buffer.concat(chunks),
          };
          const nth = ++this.transactions;
          this.onMessageRead(msg);
          void Promise.resolve(this.data(msg, nth)).then((v) => {
            if (v === 'hang') return;
            if (!v) {
              this.messages.push(msg);
              return cb(null, 'Ok: queued');
            }
            cb(Object.assign(new Error(v.text), { responseCode: v.code }));
          });
        });
      },
    };
    this.server = new SMTPServer(opts);
    this.server.on('error', () => undefined);
    await new Promise<void>((resolve, reject) => {
      this.server.server.once('error', reject);
      this.server.listen(port, '127.0.0.1', () => resolve());
    });
    this.port = (this.server.server.address() as net.AddressInfo).port;
  }

  close(): Promise<void> {
    return new Promise((r) => this.server.close(() => r()));
  }
}

/** An MTA that is down but still reachable: every connection is dropped before the greeting. */
async function droppingListener(port = 0): Promise<{ server: net.Server; port: number; connections: () => number }> {
  let n = 0;
  const server = net.createServer((s) => {
    n++;
    s.destroy();
  });
  await new Promise<void>((r) => server.listen(port, '127.0.0.1', () => r()));
  return { server, port: (server.address() as net.AddressInfo).port, connections: () => n };
}

function counter(): { n: number; inc(v?: number): void } {
  return {
    n: 0,
    inc(v = 1) {
      this.n += v;
    },
  };
}

interface TestRelay {
  relay: ForwardRelay;
  lines: string[];
  delivered: ReturnType<typeof counter>;
  deferred: ReturnType<typeof counter>;
  failed: ReturnType<typeof counter>;
  enqueued: string[];
}

const relays: ForwardRelay[] = [];
function makeRelay(spool: string, extra: Partial<ForwardRelayOptions> = {}): TestRelay {
  const lines: string[] = [];
  const enqueued: string[] = [];
  const t = { delivered: counter(), deferred: counter(), failed: counter() };
  const relay = new ForwardRelay({
    spoolDir: spool,
    retryBaseMs: 50,
    retryMaxMs: 200,
    destinationBackoffMaxMs: 100,
    pollIntervalMs: 15,
    rescanIntervalMs: 50,
    heloName: 'relay.test',
    log: createLogger('debug', {}, (l) => lines.push(l)),
    metrics: t,
    onEnqueue: (q) => enqueued.push(q),
    ...extra,
  });
  relays.push(relay);
  return { relay, lines, enqueued, ...t };
}

const receivers: Receiver[] = [];
async function receiver(port = 0): Promise<Receiver> {
  const r = new Receiver();
  await r.listen(port);
  receivers.push(r);
  return r;
}

const children: ChildProcess[] = [];
afterEach(async () => {
  await Promise.all(relays.splice(0).map((r) => r.stop(1000)));
  await Promise.all(receivers.splice(0).map((r) => r.close()));
});
after(() => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  for (const d of tmpDirs) fs.rmSync(d, { recursive: true, force: true });
});

describe('queue names', () => {
  test('every forward queue name the routes produce maps back to its destination', () => {
    for (const url of [
      'smtp://127.0.0.1:10025',
      'smtp://MX-1.Example.com.',
      'smtp://[::1]:2525',
      'smtp://[2001:DB8:0::25]:587',
      'smtp://[::ffff:192.0.2.1]:25',
    ]) {
      const route = parseForwardUrl(url);
      assert.ok(typeof route !== 'string' && route.kind === 'forward', url);
      const d = destinationOfQueue(route.queue);
      assert.ok(d, route.queue);
      assert.deepEqual(d, { queue: route.queue, host: route.host, port: route.port, url: route.url });
    }
    for (const bad of ['forward-', 'forward-host', 'forward-host-', 'forward-host-99999', 'forward-a_b.example-25', 'incoming', 'forward-..-25']) {
      assert.equal(destinationOfQueue(bad), null, bad);
    }
  });

  test('back-off doubles from the base and stops at the cap', () => {
    assert.deepEqual(
      [1, 2, 3, 4, 5, 6, 100, 5000].map((n) => backoffMs(n, 30_000, 3_600_000)),
      [30_000, 60_000, 120_000, 240_000, 480_000, 960_000, 3_600_000, 3_600_000],
    );
  });
});

describe('forward relay', () => {
  test('delivers once with the original envelope and the stored bytes; null sender; queue found at run time', async () => {
    const rx = await receiver();
    const spool = makeSpool();
    const t = makeRelay(spool);
    await t.relay.start();
    // The queue does not exist when the relay starts: the periodic spool listing must find it.
    const q = forwardQueueName('127.0.0.1', rx.port);
    const m1 = storedMessage('one');
    const m2 = storedMessage('two');
    const id1 = await enqueue(spool, q, m1, { mail_from: 'spam@bad.example', rcpt_to: 'root@victim.example,postmaster@victim.example' });
    await enqueue(spool, q, m2, { mail_from: '', rcpt_to: 'root@victim.example' });
    await waitFor('two deliveries', () => rx.messages.length === 2 && queueFiles(spool, q).length === 0);
    // Further poll rounds must not send anything again.
    await sleep(200);
    assert.equal(rx.messages.length, 2);
    assert.equal(rx.transactions, 2);
    const byTag = (tag: string) => rx.messages.find((m) => m.data.includes(Buffer.from(`Subject: ${tag}`)))!;
    assert.deepEqual({ from: byTag('one').from, to: byTag('one').to }, { from: 'spam@bad.example', to: ['root@victim.example', 'postmaster@victim.example'] });
    assert.deepEqual(byTag('one').data, m1);
    assert.deepEqual({ from: byTag('two').from, to: byTag('two').to }, { from: '', to: ['root@victim.example'] });
    assert.deepEqual(byTag('two').data, m2);
    assert.equal(t.delivered.n, 2);
    assert.equal(t.deferred.n + t.failed.n, 0);
    assert.deepEqual(queueFiles(spool, q), []);
    assert.deepEqual(stateFiles(spool), []);
    const line = t.lines.find((l) => l.includes(' forward_attempt ') && l.includes(`id=${id1}`));
    assert.ok(line, t.lines.join(''));
    for (const part of [`queue=${q}`, `dest=smtp://127.0.0.1:${rx.port}`, 'rcpts=root@victim.example,postmaster@victim.example', 'result=delivered', 'reply=']) {
      assert.ok(line.includes(part), `${part} missing in ${line}`);
    }
  });

  test('MTA down, then up: deferred with back-off per destination, then everything delivered once', async () => {
    const down = await droppingListener();
    const port = down.port;
    const spool = makeSpool();
    const q = forwardQueueName('127.0.0.1', port);
    const msgs = ['a', 'b', 'c'].map(storedMessage);
    for (const [i, m] of msgs.entries()) await enqueue(spool, q, m, { mail_from: `s${i}@bad.example`, rcpt_to: 'root@victim.example' });
    // The job back-off alone would retry every 50 ms; the destination back-off (up to 800 ms) must win.
    const t = makeRelay(spool, { retryBaseMs: 50, retryMaxMs: 50, destinationBackoffMaxMs: 800 });
    await t.relay.start();
    await sleep(1500);
    const attemptsWhileDown = down.connections();
    // 3 first attempts + probes at ~50, 100, 200, 400, 800 ms; without the destination back-off it would be ~90.
    assert.ok(attemptsWhileDown >= 3 && attemptsWhileDown <= 12, `connections while down: ${attemptsWhileDown}`);
    assert.ok(t.deferred.n >= 3, `deferred ${t.deferred.n}`);
    assert.equal(t.delivered.n, 0);
    assert.equal((await jobsOf(spool, q)).length, 3);

    await new Promise<void>((r) => down.server.close(() => r()));
    const rx = await receiver(port);
    await waitFor('all three delivered', () => rx.messages.length === 3 && queueFiles(spool, q).length === 0, 5000);
    await sleep(150);
    assert.equal(rx.messages.length, 3);
    assert.deepEqual(rx.messages.map((m) => m.data.toString()).sort(), msgs.map((m) => m.toString()).sort());
    assert.equal(t.delivered.n, 3);
    assert.equal(t.failed.n, 0);
    assert.deepEqual(stateFiles(spool), []);
    assert.ok(t.lines.some((l) => l.includes('result=deferred') && l.includes('ECONNECTION')), 'a deferral names the connection error');
  });

  test('5xx: dead letter with the reply recorded, nothing left in the forward queue, never retried; re-injection', async () => {
    const rx = await receiver();
    rx.data = () => ({ code: 554, text: 'Transaction failed\nspam not wanted here' });
    const spool = makeSpool();
    const q = forwardQueueName('127.0.0.1', rx.port);
    const m = storedMessage('rejected');
    const id = await enqueue(spool, q, m, { mail_from: 'spam@bad.example', rcpt_to: 'root@victim.example' });
    const t = makeRelay(spool);
    await t.relay.start();
    await waitFor('dead letter', async () => (await jobsOf(spool, 'deadletter')).length === 1 && queueFiles(spool, q).length === 0);
    await sleep(200);
    assert.equal(rx.transactions, 1, 'a refused message is not sent again');
    const [dl] = await jobsOf(spool, 'deadletter');
    assert.deepEqual(await dl!.readData(), m);
    const md = dl!.metadata;
    assert.equal(md['deadletter_reason'], 'rejected');
    assert.match(md['deadletter_reply']!, /^554[ -].*Transaction failed.*spam not wanted here/);
    assert.doesNotMatch(md['deadletter_reply']!, /[\r\n]/);
    assert.equal(md['deadletter_destination'], `smtp://127.0.0.1:${rx.port}`);
    assert.equal(md['deadletter_attempts'], '1');
    assert.equal(md['deadletter_queue'], q);
    assert.equal(md['deadletter_job'], id);
    assert.equal(md['mail_from'], 'spam@bad.example');
    assert.equal(md['rcpt_to'], 'root@victim.example');
    assert.equal(md['remote_ip'], '192.0.2.7');
    assert.equal(md['helo'], 'bot.example');
    assert.deepEqual([t.delivered.n, t.deferred.n, t.failed.n], [0, 0, 1]);
    assert.deepEqual(t.enqueued, ['deadletter']);
    assert.deepEqual(stateFiles(spool), []);

    // Once the MTA would take it, the documented re-injection sends it with the original envelope.
    rx.data = () => null;
    const ids = await reinjectDeadLetters(spool, { queue: q });
    assert.equal(ids.length, 1);
    await waitFor('re-injected delivery', () => rx.messages.length === 1 && queueFiles(spool, q).length === 0);
    assert.deepEqual(rx.messages[0]!.data, m);
    assert.deepEqual([rx.messages[0]!.from, rx.messages[0]!.to], ['spam@bad.example', ['root@victim.example']]);
    assert.equal((await jobsOf(spool, 'deadletter')).length, 0);
    assert.equal(t.delivered.n, 1);
  });

  test('a sender SMTP cannot carry is dead-lettered without a transaction, not retried', async () => {
    const rx = await receiver();
    const spool = makeSpool();
    const q = forwardQueueName('127.0.0.1', rx.port);
    await enqueue(spool, q, storedMessage('badaddr'), { mail_from: 'a<b>@bad.example', rcpt_to: 'root@victim.example' });
    const t = makeRelay(spool);
    await t.relay.start();
    await waitFor('dead letter', async () => (await jobsOf(spool, 'deadletter')).length === 1 && queueFiles(spool, q).length === 0);
    const [dl] = await jobsOf(spool, 'deadletter');
    assert.equal(dl!.metadata['deadletter_reason'], 'rejected');
    assert.match(dl!.metadata['deadletter_reply']!, /EENVELOPE.*Invalid sender/);
    assert.equal(rx.transactions, 0);
    assert.deepEqual([t.delivered.n, t.deferred.n, t.failed.n], [0, 0, 1]);
  });

  test('recipients answered differently: accepted ones delivered, refused ones dead-lettered, deferred ones retried alone', async () => {
    const rx = await receiver();
    rx.rcpt = (addr, nth) => {
      if (addr === 'bad@victim.example') return { code: 550, text: 'no such user' };
      if (addr === 'busy@victim.example' && nth === 1) return { code: 450, text: 'mailbox busy' };
      return null;
    };
    const spool = makeSpool();
    const q = forwardQueueName('127.0.0.1', rx.port);
    const m = storedMessage('split');
    await enqueue(spool, q, m, { mail_from: 'spam@bad.example', rcpt_to: 'root@victim.example,bad@victim.example,busy@victim.example' });
    const t = makeRelay(spool);
    await t.relay.start();
    await waitFor('both deliveries', () => rx.messages.length === 2 && queueFiles(spool, q).length === 0);
    await sleep(200);
    assert.deepEqual(rx.messages.map((x) => x.to), [['root@victim.example'], ['busy@victim.example']]);
    for (const x of rx.messages) assert.deepEqual(x.data, m);
    const dls = await jobsOf(spool, 'deadletter');
    assert.equal(dls.length, 1);
    assert.equal(dls[0]!.metadata['rcpt_to'], 'bad@victim.example');
    assert.match(dls[0]!.metadata['deadletter_reply']!, /550.*no such user/);
    assert.deepEqual(await dls[0]!.readData(), m);
    assert.deepEqual([t.delivered.n, t.deferred.n, t.failed.n], [2, 1, 1]);
  });

  test('temporary failures until FORWARD_MAX_ATTEMPTS: dead letter as attempts_exhausted', async () => {
    const rx = await receiver();
    rx.data = () => ({ code: 451, text: 'try later' });
    const spool = makeSpool();
    const q = forwardQueueName('127.0.0.1', rx.port);
    await enqueue(spool, q, storedMessage('tempfail'), { mail_from: 'spam@bad.example', rcpt_to: 'root@victim.example' });
    const t = makeRelay(spool, { maxAttempts: 3, retryBaseMs: 20, retryMaxMs: 40 });
    await t.relay.start();
    await waitFor('dead letter', async () => (await jobsOf(spool, 'deadletter')).length === 1 && queueFiles(spool, q).length === 0);
    await sleep(150);
    assert.equal(rx.transactions, 3);
    const [dl] = await jobsOf(spool, 'deadletter');
    assert.equal(dl!.metadata['deadletter_reason'], 'attempts_exhausted');
    assert.equal(dl!.metadata['deadletter_attempts'], '3');
    assert.match(dl!.metadata['deadletter_reply']!, /451.*try later/);
    assert.deepEqual([t.delivered.n, t.deferred.n, t.failed.n], [0, 2, 1]);
  });

  test('attempt count and next-attempt time survive a restart of the relay', async () => {
    const rx = await receiver();
    rx.data = () => ({ code: 451, text: 'try later' });
    const spool = makeSpool();
    const q = forwardQueueName('127.0.0.1', rx.port);
    const id = await enqueue(spool, q, storedMessage('persist'), { mail_from: 'x@bad.example', rcpt_to: 'root@victim.example' });
    const t1 = makeRelay(spool, { retryBaseMs: 60_000, retryMaxMs: 60_000 });
    await t1.relay.start();
    await waitFor('first deferral', () => t1.deferred.n === 1);
    await t1.relay.stop(1000);
    const st = await new RelayStateStore(spool).read(q, id);
    assert.equal(st?.phase, 'deferred');
    assert.equal(st?.attempts, 1);
    assert.ok(st!.nextAttemptAt > Date.now() + 50_000);
    // A new relay honours the recorded minute of back-off instead of trying again at once.
    const t2 = makeRelay(spool, { retryBaseMs: 60_000, retryMaxMs: 60_000 });
    await t2.relay.start();
    await sleep(300);
    assert.equal(rx.transactions, 1);
    assert.equal((await jobsOf(spool, q)).length, 1);
    assert.equal(fs.readdirSync(path.join(spool, q, 'active')).length, 0, 'a job waiting for its time is not held locked');
  });

  test('stop() lets the delivery in flight finish and leaves jobs not started untouched', async () => {
    const rx = await receiver();
    rx.data = async () => {
      await sleep(400);
      return null;
    };
    const spool = makeSpool();
    const q = forwardQueueName('127.0.0.1', rx.port);
    await enqueue(spool, q, storedMessage('first'), { mail_from: 'x@bad.example', rcpt_to: 'root@victim.example' });
    await enqueue(spool, q, storedMessage('second'), { mail_from: 'x@bad.example', rcpt_to: 'root@victim.example' });
    const t = makeRelay(spool, { concurrency: 1 });
    let read = false;
    rx.onMessageRead = () => (read = true);
    await t.relay.start();
    await waitFor('first message on the wire', () => read);
    const started = Date.now();
    await t.relay.stop(5000);
    assert.ok(Date.now() - started >= 250, 'stop() waited for the reply');
    assert.equal(rx.messages.length, 1);
    assert.match(rx.messages[0]!.data.toString(), /Subject: first/);
    const left = await jobsOf(spool, q);
    assert.equal(left.length, 1);
    assert.match((await left[0]!.readData()).toString(), /Subject: second/);
    assert.deepEqual(fs.readdirSync(path.join(spool, q, 'active')), []);
    assert.deepEqual(stateFiles(spool), []);
    assert.equal(t.delivered.n, 1);
  });
});

/** Queue writers on a full disk while `full()` says so: creating a tmp data file fails with ENOSPC. */
function fullDiskFs(full: () => boolean): DirQueueFs {
  const open = (async (p: string, ...rest: unknown[]) => {
    if (full() && p.includes(`${path.sep}tmp${path.sep}`) && p.endsWith('.data')) {
      throw Object.assign(new Error(`ENOSPC: no space left on device, open '${p}'`), { code: 'ENOSPC' });
    }
    return (fsp.open as (...a: unknown[]) => Promise<fsp.FileHandle>)(p, ...rest);
  }) as typeof fsp.open;
  return { ...fsp, open };
}

/** State writes of the phases in `phases` fail with ENOSPC while `full()` says so; returns how many failed. */
function failStateWrites(relay: ForwardRelay, phases: JobState['phase'][], full: () => boolean): { failed: number } {
  const n = { failed: 0 };
  const real = relay.store.write.bind(relay.store);
  relay.store.write = async (queue, jobId, st) => {
    if (full() && phases.includes(st.phase)) {
      n.failed++;
      throw Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });
    }
    return real(queue, jobId, st);
  };
  return n;
}

/**
 * Job.finish() as when queue/ refuses the unlink (EACCES, EROFS) while `stuck()` says so: Job.finish only warns, the
 * control and data files stay, the lock goes. Returns the restore function.
 */
function finishLeavesQueueFile(stuck: () => boolean): () => void {
  const real = Job.prototype.finish;
  Job.prototype.finish = async function (this: Job) {
    if (!stuck()) return real.call(this);
    await fsp.unlink(this.activePath).catch(() => undefined);
  };
  return () => {
    Job.prototype.finish = real;
  };
}

const count = (lines: string[], event: string) => lines.filter((l) => l.includes(` ${event} `)).length;

describe('local failures: a full disk, a queue file that will not go', () => {
  for (const c of [
    {
      copy: 'dead letter',
      rcpts: 'root@victim.example',
      mta: (rx: Receiver) => (rx.data = () => ({ code: 554, text: 'not wanted' })),
      done: async (rx: Receiver, spool: string) => (await jobsOf(spool, 'deadletter')).length === 1 && rx.transactions === 1,
    },
    {
      copy: 'split retry',
      rcpts: 'root@victim.example,busy@victim.example',
      mta: (rx: Receiver) => (rx.rcpt = (addr, nth) => (addr === 'busy@victim.example' && nth === 1 ? { code: 450, text: 'mailbox busy' } : null)),
      done: async (rx: Receiver) => rx.messages.length === 2,
    },
  ]) {
    test(`a ${c.copy} the disk cannot take (ENOSPC) is retried without leaking a descriptor, and made once there is room`, async () => {
      const rx = await receiver();
      c.mta(rx);
      const spool = makeSpool();
      const q = forwardQueueName('127.0.0.1', rx.port);
      await enqueue(spool, q, storedMessage('full'), { mail_from: 'x@bad.example', rcpt_to: c.rcpts });
      let full = true;
      const t = makeRelay(spool, { retryBaseMs: 20, retryMaxMs: 40, queueFs: fullDiskFs(() => full) });
      const before = openFdCount();
      await t.relay.start();
      await waitFor('30 failed copies', () => count(t.lines, 'forward_job_error') >= 30 || rx.transactions > 1, 20_000);
      assert.equal(rx.transactions, 1, 'the MTA is not contacted again while the copy fails');
      assert.match(t.lines.find((l) => l.includes(' forward_job_error '))!, /ENOSPC/);
      full = false;
      await waitFor(`the ${c.copy} made and the job finished`, async () => (await c.done(rx, spool)) && queueFiles(spool, q).length === 0, 10_000);
      await t.relay.stop(1000);
      await expectFdsAtMost(before, `after ${count(t.lines, 'forward_job_error')} failed ${c.copy} copies`);
      assert.deepEqual(stateFiles(spool), []);
    });
  }

  test('reinject on a full disk fails without leaking a descriptor and leaves the dead letter; works once there is room', async () => {
    const spool = makeSpool();
    const q = forwardQueueName('127.0.0.1', 25);
    const m = storedMessage('reinject-full');
    await enqueue(spool, 'deadletter', m, { mail_from: 'x@bad.example', rcpt_to: 'root@victim.example', deadletter_queue: q, deadletter_reason: 'rejected' });
    let full = true;
    const fsFull = fullDiskFs(() => full);
    const before = openFdCount();
    for (let i = 0; i < 100; i++) {
      await assert.rejects(reinjectDeadLetters(spool, { fs: fsFull }), (e: NodeJS.ErrnoException) => e.code === 'ENOSPC');
    }
    await expectFdsAtMost(before, 'after 100 failed reinjects');
    assert.equal((await jobsOf(spool, 'deadletter')).length, 1, 'the dead letter stays');
    assert.deepEqual(fs.readdirSync(path.join(spool, 'deadletter', 'active')), [], 'and is not left locked');
    assert.deepEqual(queueFiles(spool, q), []);
    full = false;
    const ids = await reinjectDeadLetters(spool, { fs: fsFull });
    assert.equal(ids.length, 1);
    const [copy] = await jobsOf(spool, q);
    assert.deepEqual(await copy!.readData(), m);
    assert.equal(copy!.metadata['deadletter_queue'], undefined);
    assert.equal((await jobsOf(spool, 'deadletter')).length, 0);
  });

  test("the MTA's 250 cannot be recorded (state writes fail): sent once, the job finished all the same", async () => {
    const rx = await receiver();
    const spool = makeSpool();
    const q = forwardQueueName('127.0.0.1', rx.port);
    const m = storedMessage('unrecorded');
    await enqueue(spool, q, m, { mail_from: 'x@bad.example', rcpt_to: 'root@victim.example' });
    const t = makeRelay(spool);
    const writes = failStateWrites(t.relay, ['resolved'], () => true);
    await t.relay.start();
    await waitFor('the job finished (or sent twice)', () => (queueFiles(spool, q).length === 0 && stateFiles(spool).length === 0) || rx.transactions > 1);
    // Further poll rounds must not send anything again.
    await sleep(300);
    assert.equal(rx.transactions, 1, t.lines.join(''));
    assert.deepEqual(rx.messages.map((x) => x.data), [m]);
    assert.ok(writes.failed >= 1);
    assert.equal(count(t.lines, 'forward_state_unsaved'), 1);
    assert.equal(count(t.lines, 'forward_ambiguous'), 0);
    assert.equal(t.delivered.n, 1);
    assert.deepEqual(queueFiles(spool, q), []);
  });

  test('neither recorded nor finished: the outcome stays in memory, is written once writes work, the job finished once it can', async () => {
    const rx = await receiver();
    const spool = makeSpool();
    const q = forwardQueueName('127.0.0.1', rx.port);
    const id = await enqueue(spool, q, storedMessage('stuck'), { mail_from: 'x@bad.example', rcpt_to: 'root@victim.example' });
    let diskFull = true;
    let stuck = true;
    const t = makeRelay(spool);
    failStateWrites(t.relay, ['resolved'], () => diskFull);
    const restore = finishLeavesQueueFile(() => stuck);
    try {
      await t.relay.start();
      await waitFor('three rounds of trying to finish (or a second send)', () => count(t.lines, 'forward_job_error') >= 3 || rx.transactions > 1);
      assert.equal(rx.transactions, 1, t.lines.join(''));
      assert.equal((await new RelayStateStore(spool).read(q, id))?.phase, 'delivering', 'the resolved record could not be written');
      assert.match(t.lines.find((l) => l.includes(' forward_job_error '))!, /finish\(\) left .* in place/);

      diskFull = false;
      await waitFor('the outcome written at a later pickup', async () => (await new RelayStateStore(spool).read(q, id))?.phase === 'resolved');
      const st = (await new RelayStateStore(spool).read(q, id))!;
      assert.deepEqual(st.outcome?.delivered, ['root@victim.example']);
      assert.equal((await jobsOf(spool, q)).length, 1, 'still queued');

      stuck = false;
      await waitFor('the job finished', () => queueFiles(spool, q).length === 0 && stateFiles(spool).length === 0);
      await sleep(300);
      assert.equal(rx.transactions, 1);
      assert.equal(rx.messages.length, 1);
      assert.equal(count(t.lines, 'forward_ambiguous'), 0);
      assert.equal(t.delivered.n, 1);
    } finally {
      restore();
    }
  });

  test('finish() leaves the queue file: the resolved state stays, and a restarted relay completes the job without sending it', async () => {
    const rx = await receiver();
    const spool = makeSpool();
    const q = forwardQueueName('127.0.0.1', rx.port);
    const id = await enqueue(spool, q, storedMessage('unfinished'), { mail_from: 'x@bad.example', rcpt_to: 'root@victim.example' });
    let finishes = 0;
    const restore = finishLeavesQueueFile(() => ++finishes === 1);
    try {
      // A minute of pause after the failed finish(): the restarted relay, not this one, completes the job.
      const t1 = makeRelay(spool, { retryBaseMs: 60_000, retryMaxMs: 60_000 });
      await t1.relay.start();
      await waitFor('finish() called', () => finishes >= 1);
      // stop() waits until the relay is done with the job.
      await t1.relay.stop(5000);
      assert.equal(rx.transactions, 1);
      assert.equal((await jobsOf(spool, q)).length, 1, 'the job is still queued');
      const st = await new RelayStateStore(spool).read(q, id);
      assert.equal(st?.phase, 'resolved', 'the state of a job still queued is kept');
      assert.deepEqual(st?.outcome?.delivered, ['root@victim.example']);
      assert.match(t1.lines.join(''), /forward_attempt .*result=delivered[^]*forward_job_error .*finish\(\) left/);

      const t2 = makeRelay(spool);
      await t2.relay.start();
      await waitFor('the job finished (or sent again)', () => queueFiles(spool, q).length === 0 || rx.transactions > 1);
      await sleep(300);
      assert.equal(rx.transactions, 1, 'the MTA was not contacted again');
      assert.equal(count(t2.lines, 'forward_recovered'), 1);
      assert.deepEqual(queueFiles(spool, q), []);
      assert.deepEqual(stateFiles(spool), []);
    } finally {
      restore();
    }
  });
});

describe('relay processes killed at the worst moments', () => {
  let childScript: string;
  before(() => {
    childScript = path.join(__dirname, 'helpers', 'forward-relay-child.js');
    assert.ok(fs.existsSync(childScript), childScript);
  });

  function startChild(spool: string, env: Record<string, string> = {}): { child: ChildProcess; stderr: () => string; ready: Promise<void> } {
    const child = spawn(process.execPath, [childScript], {
      env: { ...process.env, FWD_SPOOL: spool, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    children.push(child);
    let err = '';
    child.stderr!.on('data', (c: Buffer) => (err += c.toString()));
    const ready = new Promise<void>((resolve, reject) => {
      child.stdout!.on('data', (c: Buffer) => c.toString().includes('ready') && resolve());
      child.once('exit', (code, sig) => reject(new Error(`child exited ${code ?? sig} before ready: ${err}`)));
    });
    ready.catch(() => undefined);
    return { child, stderr: () => err, ready };
  }

  const exited = (c: ChildProcess) =>
    c.exitCode !== null || c.signalCode !== null ? Promise.resolve() : new Promise<void>((r) => c.once('exit', () => r()));

  test('killed while the MTA holds its reply to DATA: sent again after the restart, delivered', async () => {
    const rx = await receiver();
    const spool = makeSpool();
    const q = forwardQueueName('127.0.0.1', rx.port);
    const m = storedMessage('killed');
    const id = await enqueue(spool, q, m, { mail_from: 'x@bad.example', rcpt_to: 'root@victim.example' });
    rx.data = (_msg, nth) => (nth === 1 ? 'hang' : null);
    let firstRead: (() => void) | undefined;
    const readOnce = new Promise<void>((r) => (firstRead = r));
    rx.onMessageRead = () => firstRead?.();

    const a = startChild(spool);
    await a.ready;
    await readOnce;
    a.child.kill('SIGKILL');
    await exited(a.child);
    const st = await new RelayStateStore(spool).read(q, id);
    assert.equal(st?.phase, 'delivering', 'the marker shows an attempt whose outcome is unknown');
    assert.equal(fs.readdirSync(path.join(spool, q, 'active')).length, 1, 'the dead relay left its lock');
    assert.equal(rx.messages.length, 0);

    const b = startChild(spool);
    await b.ready;
    await waitFor('delivery after restart', () => rx.messages.length === 1 && queueFiles(spool, q).length === 0);
    assert.deepEqual(rx.messages[0]!.data, m);
    assert.equal(rx.transactions, 2);
    assert.match(b.stderr(), /forward_stale_lock_removed/);
    assert.match(b.stderr(), /forward_ambiguous/);
    b.child.kill('SIGTERM');
    await exited(b.child);
    assert.equal(b.child.exitCode, 0);
    assert.deepEqual(stateFiles(spool), []);
  });

  test('killed after the MTA said 250 and before the job was finished: not sent again', async () => {
    const rx = await receiver();
    const spool = makeSpool();
    const q = forwardQueueName('127.0.0.1', rx.port);
    const m = storedMessage('once');
    const id = await enqueue(spool, q, m, { mail_from: 'x@bad.example', rcpt_to: 'root@victim.example' });

    const a = startChild(spool, { FWD_CRASH_AFTER_RESOLVED: '1' });
    await exited(a.child);
    assert.equal(a.child.signalCode, 'SIGKILL');
    assert.equal(rx.messages.length, 1);
    const st = (await new RelayStateStore(spool).read(q, id)) as JobState;
    assert.equal(st.phase, 'resolved');
    assert.deepEqual(st.outcome?.delivered, ['root@victim.example']);
    assert.equal((await jobsOf(spool, q)).length, 1, 'the job is still queued');

    const b = startChild(spool);
    await b.ready;
    await waitFor('job finished', () => queueFiles(spool, q).length === 0);
    await sleep(200);
    assert.equal(rx.transactions, 1, 'the MTA was not contacted again');
    assert.equal(rx.messages.length, 1);
    assert.match(b.stderr(), /forward_recovered/);
    assert.deepEqual(stateFiles(spool), []);
    b.child.kill('SIGTERM');
    await exited(b.child);
  });

  test('workers/relay.js: config from the primary, metrics over IPC, trap:shutdown exits 0, SIGHUP ignored', async () => {
    const rx = await receiver();
    const spool = makeSpool();
    const q = forwardQueueName('127.0.0.1', rx.port);
    await enqueue(spool, q, storedMessage('entry'), { mail_from: 'x@bad.example', rcpt_to: 'root@victim.example' });
    const cwd = makeSpool(); // no .env here, and no config/ is read by the relay itself
    // What the primary hands over when the relay says hello.
    const { config } = readRunningConfig(
      { SPOOL_DIR: spool, CONFIG_DIR: cwd, METRICS_PUSH_INTERVAL_MS: '50', FORWARD_RETRY_BASE_MS: '100', ME: 'trap.test', LOG_LEVEL: 'info' },
      { cwd },
    );
    const child = fork(path.join(repoRoot(), path.relative(repoRoot(), path.join(__dirname, '..', 'workers', 'relay.js'))), [], {
      cwd,
      env: { PATH: process.env['PATH'] ?? '', SPAMTRAPD_SLOT: 'relay' },
      stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
    });
    children.push(child);
    child.on('message', (msg: { type?: string }) => {
      if (msg.type === 'worker:hello') child.send({ type: 'trap:config', config });
    });
    let err = '';
    child.stderr!.on('data', (c: Buffer) => (err += c.toString()));
    let delivered = 0;
    let slot = '';
    child.on('message', (msg: { type?: string; slot?: string; metrics?: Array<{ name: string; values: Array<{ value: number }> }> }) => {
      if (msg.type !== 'metrics:snapshot') return;
      slot = msg.slot ?? '';
      const m = msg.metrics?.find((x) => x.name === 'spamtrapd_forward_delivered_total');
      delivered = m?.values[0]?.value ?? 0;
    });
    await waitFor('delivery counted in a pushed snapshot', () => delivered === 1, 10_000);
    assert.equal(slot, 'relay');
    assert.equal(rx.messages.length, 1);
    assert.match(err, /forward_attempt .*result=delivered/);
    child.kill('SIGHUP');
    await sleep(100);
    assert.equal(child.exitCode, null, 'SIGHUP does not stop the relay');
    child.send({ type: 'trap:shutdown' });
    await exited(child);
    assert.equal(child.exitCode, 0, err);
  });
});

describe("Postfix's smtp-sink as the MTA", () => {
  const sink = path.join(repoRoot(), '.tools', 'bin', 'smtp-sink');
  const present = fs.existsSync(sink);
  // Under CI the sink must be there (.ci/run installs it): a missing one fails instead of skipping.
  const skip = present || process.env.CI ? false : `${sink} not installed (run bash scripts/install-test-deps.sh)`;
  test('the dumped transaction has the original envelope and the stored message', { skip }, async () => {
    assert.ok(present, `${sink} missing: CI must run scripts/install-test-deps.sh before the tests`);
    const probe = await droppingListener();
    const port = probe.port;
    await new Promise<void>((r) => probe.server.close(() => r()));
    const dump = makeSpool();
    fs.chmodSync(dump, 0o777);
    const args = ['-d', path.join(dump, '%M.'), ...(process.getuid?.() === 0 ? ['-u', 'nobody'] : []), `127.0.0.1:${port}`, '10'];
    const child = spawn(sink, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    children.push(child);
    let err = '';
    child.stderr!.on('data', (c: Buffer) => (err += c.toString()));
    await waitFor('smtp-sink listening', () => new Promise<boolean>((r) => {
      const s = net.connect(port, '127.0.0.1', () => { s.destroy(); r(true); });
      s.on('error', () => r(false));
    }), 5000).catch((e: Error) => {
      throw new Error(`${e.message}: ${err}`);
    });
    const spool = makeSpool();
    const q = forwardQueueName('127.0.0.1', port);
    const m = storedMessage('sink');
    await enqueue(spool, q, m, { mail_from: '', rcpt_to: 'root@victim.example,postmaster@victim.example' });
    const t = makeRelay(spool);
    await t.relay.start();
    await waitFor('delivered to smtp-sink', () => t.delivered.n === 1 && queueFiles(spool, q).length === 0);
    await waitFor('dump file', () => fs.readdirSync(dump).length === 1);
    const text = fs.readFileSync(path.join(dump, fs.readdirSync(dump)[0]!), 'utf8');
    assert.match(text, /^X-Mail-Args: <>\s*$/m);
    assert.deepEqual(text.match(/^X-Rcpt-Args: .*$/gm), ['X-Rcpt-Args: <root@victim.example>', 'X-Rcpt-Args: <postmaster@victim.example>']);
    assert.match(text, /^X-Helo-Args: relay\.test$/m);
    // smtp-sink writes lines with LF and adds its own headers and a final empty line; the rest is ours.
    assert.ok(text.includes(m.toString().replace(/\r\n/g, '\n')), text);
    child.kill('SIGTERM');
  });
});
