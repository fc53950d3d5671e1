/**
 * Hostile input as a property: 2000 generated sessions (raw bytes: overlong lines, NUL and 8-bit bytes, bare CR and
 * LF, dot-smuggling, pipelined garbage, control characters in HELO/MAIL/RCPT, thousands of recipients, oversize
 * messages), 20 at a time against one daemon. Invariants: every reply line is a well-formed printable line ending in
 * CRLF; a message acknowledged with 250 is stored once, exactly as sent behind one unfoldable Received field; nothing
 * smuggled becomes a job; no job is corrupt; the trap still works afterwards; rejections are counted.
 * And the same for what a PROXY_FROM peer sends before SMTP: the daemon does exactly what the header parser says
 * about those bytes (greets, or closes without a word), within the deadline, with every outcome counted.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import fc from 'fast-check';
import { parseProxyHeader } from '../src/smtp/proxy-header';
import { currentAcceptorPids, type Daemon, startDaemon } from './helpers/daemon';
import { proxyOpening } from './helpers/proxy-arbitraries';
import { baselineCounters, connectRaw, proxiedMail, waitCounters } from './helpers/proxy-client';
import { v2 } from './helpers/proxy-headers';
import { RawSmtp, sendMail, type Reply } from './helpers/smtp-client';
import { rejections } from './helpers/prometheus';
import { inspectSpool, tmpLeftovers } from './helpers/queues';
import { RECEIVED_SHAPE, splitReceived } from './helpers/stored-message';
import { sleep } from './helpers/waiting';

const MAX_SIZE = 8192;
const MAX_RCPTS = 5;
const SMUGGLER = 'smuggled@evil.example';

const b = (s: string) => Buffer.from(s, 'latin1');

/** Bytes bots send: mostly printable, with the ones parsers trip over made frequent. */
const hostileByte = fc.oneof(
  { weight: 6, arbitrary: fc.integer({ min: 0x20, max: 0x7e }) },
  { weight: 2, arbitrary: fc.integer({ min: 0x80, max: 0xff }) },
  { weight: 1, arbitrary: fc.integer({ min: 0x00, max: 0x1f }) },
  { weight: 3, arbitrary: fc.constantFrom(0x00, 0x0d, 0x0a, 0x09, 0x20, 0x2e, 0x3a, 0x3c, 0x3e, 0x40, 0x2c, 0x3b, 0x7f) },
);
const bytes = (maxLength: number) => fc.array(hostileByte, { maxLength }).map((a) => Buffer.from(a));
/** A line that may be far longer than any limit (998 for headers, 512 for commands, 16 KiB in smtp-server). */
const longLine = fc.tuple(fc.integer({ min: 900, max: 20_000 }), fc.constantFrom('A', 'x', '\u00e9', ' ')).map(([n, c]) => b(c.repeat(n)));
const noLf = (max: number) => bytes(max).map((x) => Buffer.from(x.filter((c) => c !== 0x0a)));

/**
 * Message content whose stored form is known: no `\r\n.\r\n` (which would end DATA early: the client's right, not
 * smuggling), no `\n..` (smtp-server unstuffs a dot after any LF), no leading dot, and no leading white space
 * (a separate test covers that). Bare CR/LF, NUL, 8-bit and the lone-dot lines of smuggling attempts stay.
 */
function knownContent(x: Buffer): Buffer {
  let s = x.toString('latin1');
  for (;;) {
    const t = s.replace(/\r\n\.\r\n/g, '\r\n:\r\n').replace(/\n\.\./g, '\n.:').replace(/\n\.$/, '\n:');
    if (t === s) break;
    s = t;
  }
  s = s.replace(/^[.\t ]/, ':');
  return b(s);
}

const content = fc
  .array(fc.oneof({ weight: 8, arbitrary: bytes(120) }, { weight: 1, arbitrary: longLine }), { maxLength: 20 })
  .map((lines) => knownContent(Buffer.concat(lines.flatMap((l) => [l, b('\r\n')]))));

/** Small enough that a smuggling attempt is never refused for its size. */
const shortContent = fc.array(bytes(120), { maxLength: 12 }).map((lines) => knownContent(Buffer.concat(lines.flatMap((l) => [l, b('\r\n')]))));

const SMUGGLE_ENDS = ['\n.\n', '\r\n.\n', '\n.\r\n', '\r.\r\n', '\r\n.\r', '\n.\r\r\n'];

type Session =
  | { kind: 'garbage'; lines: Buffer[] }
  | { kind: 'envelope'; verb: string; helo: Buffer; from: Buffer; rcpts: Buffer[]; body: Buffer }
  | { kind: 'smuggle'; end: string; end2: string; before: Buffer; after: Buffer }
  | { kind: 'oversize'; extra: number }
  | { kind: 'rcpts'; n: number };

// No STARTTLS: the server then waits for a TLS handshake until the idle timeout, which only makes sessions slow.
const verb = fc.constantFrom('HELO ', 'EHLO ', 'MAIL FROM:', 'RCPT TO:', 'DATA', 'RSET', 'NOOP', 'VRFY ', 'BDAT ', 'XYZZY ', '', 'GET / HTTP/1.1', 'HELP ');
const sessionArb: fc.Arbitrary<Session> = fc.oneof(
  {
    weight: 3,
    arbitrary: fc
      .array(fc.oneof({ weight: 6, arbitrary: fc.tuple(verb, bytes(100)).map(([v, x]) => Buffer.concat([b(v), x])) }, { weight: 1, arbitrary: longLine }), { minLength: 1, maxLength: 12 })
      .map((lines): Session => ({ kind: 'garbage', lines })),
  },
  {
    weight: 4,
    arbitrary: fc
      .record({ verb: fc.constantFrom('HELO', 'EHLO', 'helo', 'EhLo'), helo: fc.oneof(noLf(80), longLine), from: noLf(60), rcpts: fc.array(noLf(60), { maxLength: 7 }), body: content })
      .map((r): Session => ({ kind: 'envelope', ...r })),
  },
  {
    weight: 2,
    arbitrary: fc
      .record({ end: fc.constantFrom(...SMUGGLE_ENDS), end2: fc.constantFrom(...SMUGGLE_ENDS), before: shortContent, after: shortContent })
      .map((r): Session => ({ kind: 'smuggle', ...r })),
  },
  { weight: 1, arbitrary: fc.integer({ min: 1, max: 20_000 }).map((extra): Session => ({ kind: 'oversize', extra })) },
  { weight: 1, arbitrary: fc.integer({ min: 1, max: 3000 }).map((n): Session => ({ kind: 'rcpts', n })) },
);

interface Expected {
  /** token -> the bytes that must follow our Received header. */
  stored: Map<string, Buffer>;
  /** Replies seen, for the lower bounds on the rejection counters. */
  codes: Map<string, number>;
}

let tokenSeq = 0;

/** Every byte the server sent must be whole reply lines: `DDD SP|- printable*` CRLF. */
function assertWellFormed(raw: string, what: string): void {
  if (raw === '') return;
  assert.ok(raw.endsWith('\r\n'), `${what}: output ends with CRLF: ${JSON.stringify(raw.slice(-200))}`);
  for (const line of raw.slice(0, -2).split('\r\n')) {
    assert.match(line, /^\d{3}[ -][\x20-\x7e]*$/, `${what}: reply line ${JSON.stringify(line.slice(0, 300))}`);
  }
}

function count(exp: Expected, r: Reply): void {
  const key = r.code === 452 && /recipients/i.test(r.text) ? '452rcpt' : String(r.code);
  exp.codes.set(key, (exp.codes.get(key) ?? 0) + 1);
}

async function envelope(c: RawSmtp, exp: Expected, lines: Buffer[]): Promise<boolean> {
  let accepted = false;
  for (const [i, line] of lines.entries()) {
    if (c.closed) return false;
    c.write(Buffer.concat([line, b('\r\n')]));
    const r = await c.read(5000);
    count(exp, r);
    if (r.code === 421) return false; // the server hangs up after 421 (e.g. a line over 16 KiB)
    if (i >= 2 && r.code === 250) accepted = true;
  }
  return accepted;
}

/** DATA + content + terminator; records the expected stored bytes when the trap says 250. */
async function data(c: RawSmtp, exp: Expected, body: Buffer, oversize = false): Promise<Reply | null> {
  const go = await c.cmd('DATA', 5000);
  count(exp, go);
  if (go.code !== 354) return null;
  const token = `t${++tokenSeq}-${process.pid}`;
  const full = oversize ? body : Buffer.concat([body, b(`\r\nX-Fuzz-Token: ${token}\r\n`)]);
  c.write(full);
  c.write(full.subarray(-2).toString() === '\r\n' ? '.\r\n' : '\r\n.\r\n');
  const r = await c.read(10_000);
  count(exp, r);
  if (r.code === 250) {
    assert.ok(!oversize, 'an oversize message was accepted');
    exp.stored.set(token, full);
  }
  return r;
}

async function runSession(port: number, s: Session, exp: Expected): Promise<void> {
  const c = await RawSmtp.connect(port);
  let raw = '';
  c.socket.on('data', (d: string | Buffer) => (raw += typeof d === 'string' ? d : d.toString('latin1')));
  try {
    const greeting = await c.read();
    assert.equal(greeting.code, 220);
    switch (s.kind) {
      case 'garbage': {
        // Pipelined in one write; the server may answer, refuse, or hang up, but in whole lines.
        c.write(Buffer.concat([...s.lines.flatMap((l) => [l, b('\r\n')]), b('QUIT\r\n')]));
        const deadline = Date.now() + 8000;
        while (!c.closed && Date.now() < deadline) await sleep(20);
        assert.ok(c.closed, `garbage session not closed after QUIT: ${JSON.stringify(raw.slice(-300))}`);
        break;
      }
      case 'envelope': {
        const lines = [Buffer.concat([b(s.verb + ' '), s.helo]), Buffer.concat([b('MAIL FROM:'), s.from]), ...s.rcpts.map((r) => Buffer.concat([b('RCPT TO:'), r])), b('RCPT TO:<last@trap.test>')];
        if ((await envelope(c, exp, lines)) && !c.closed) await data(c, exp, s.body);
        break;
      }
      case 'smuggle': {
        await envelope(c, exp, [b('EHLO smuggler.example'), b('MAIL FROM:<honest@spam.example>'), b('RCPT TO:<victim@trap.test>')]);
        const hidden = `MAIL FROM:<${SMUGGLER}>\r\nRCPT TO:<hidden@trap.test>\r\nDATA\r\nSubject: smuggled\r\n\r\nhidden`;
        const body = Buffer.concat([b('Subject: smuggle\r\n\r\n'), s.before, b(s.end + hidden + s.end2), s.after]);
        const r = await data(c, exp, knownContent(body));
        assert.equal(r?.code, 250, `the outer message is accepted: ${r?.raw}`);
        // Had the hidden transaction run, its replies would answer these two commands.
        assert.equal((await c.cmd('NOOP')).code, 250);
        assert.equal((await c.cmd('QUIT')).code, 221);
        break;
      }
      case 'oversize': {
        await envelope(c, exp, [b('EHLO big.example'), b('MAIL FROM:<big@spam.example>'), b('RCPT TO:<big@trap.test>')]);
        const r = await data(c, exp, b(`Subject: big\r\n\r\n${'y'.repeat(MAX_SIZE + s.extra)}\r\n`), true);
        assert.equal(r?.code, 552, r?.raw);
        assert.equal((await c.cmd('RSET')).code, 250, 'the session goes on after 552');
        break;
      }
      case 'rcpts': {
        await envelope(c, exp, [b('EHLO many.example'), b('MAIL FROM:<many@spam.example>')]);
        c.write(Array.from({ length: s.n }, (_, i) => `RCPT TO:<r${i}@trap.test>\r\n`).join(''));
        let ok = 0;
        for (let i = 0; i < s.n; i++) {
          const r = await c.read(10_000);
          count(exp, r);
          if (r.code === 250) ok++;
          else assert.ok(i >= MAX_RCPTS && r.code === 452, `RCPT ${i}: ${r.raw}`);
        }
        assert.equal(ok, Math.min(s.n, MAX_RCPTS));
        const r = await data(c, exp, b('Subject: many\r\n\r\nmany\r\n'));
        assert.equal(r?.code, 250, r?.raw);
        break;
      }
    }
  } catch (err) {
    throw new Error(`${s.kind} session: ${(err as Error).message}; server said: ${JSON.stringify(raw.slice(-600))}`);
  } finally {
    if (!c.closed) {
      c.write('QUIT\r\n');
      const deadline = Date.now() + 3000;
      while (!c.closed && Date.now() < deadline) await sleep(10);
    }
    c.close();
    assertWellFormed(raw, `${s.kind} session`);
  }
}

describe('hostile input (property)', () => {
  let d: Daemon;
  before(async () => {
    d = await startDaemon({
      workers: 2,
      env: { MAX_MESSAGE_SIZE: String(MAX_SIZE), MAX_RECIPIENTS: String(MAX_RCPTS), IDLE_TIMEOUT_MS: '10000', DATA_TIMEOUT_MS: '10000' },
    });
  });
  after(async () => {
    await d?.destroy();
    d?.cleanup();
  });

  test('2000 hostile sessions: well-formed replies, exact storage, no smuggled job, no corrupt job, still serving', async () => {
    const exp: Expected = { stored: new Map(), codes: new Map() };
    // CI replays a fixed seed, so a red run is reproducible rather than luck (this one found the non-ASCII reply
    // bug); by hand every run explores a new seed, and FUZZ_SEED=n replays any of them.
    const seed = Number(process.env.FUZZ_SEED ?? (process.env.CI ? 332887032 : Date.now() % 2 ** 31));
    const started = Date.now();
    try {
      await fc.assert(
        fc.asyncProperty(fc.array(sessionArb, { minLength: 20, maxLength: 20 }), async (batch) => {
          await Promise.all(batch.map((s) => runSession(d.port, s, exp)));
        }),
        // No shrinking against a live daemon: the failing batch is reported as generated, with its seed.
        { numRuns: 100, seed, endOnFailure: true, interruptAfterTimeLimit: 75_000 },
      );
    } catch (err) {
      // fast-check's message holds the whole (large) counterexample first and the cause last.
      const msg = (err as Error).message;
      const cause = (err as Error & { cause?: Error }).cause?.message ?? msg.slice(msg.lastIndexOf('Got '));
      throw new Error(`FUZZ_SEED=${seed}: ${cause.slice(0, 3000)}\n${msg.slice(0, 1500)}`);
    }
    const elapsed = Date.now() - started;

    // The trap still does its job.
    const normal = await sendMail(d.port, { from: '<after@spam.example>', to: ['<after@trap.test>'], data: 'Subject: after\r\n\r\nstill here\r\n' });
    assert.equal(normal.dataReply?.code, 250);
    await sleep(200);

    const jobs = await inspectSpool(d.spoolDir);
    assert.deepEqual(await tmpLeftovers(d.spoolDir), []);
    const seen = new Set<string>();
    for (const j of jobs) {
      assert.notEqual(j.metadata.mail_from, SMUGGLER, 'a smuggled transaction became a job');
      assert.ok(j.metadata.rcpt_to.split(',').length <= MAX_RCPTS, 'never more recipients than MAX_RECIPIENTS');
      const { unfolded, rest } = splitReceived(j.data);
      assert.match(unfolded, RECEIVED_SHAPE, `${j.jobId}: one well-formed Received field`);
      assert.doesNotMatch(unfolded, /[\x00-\x08\x0a-\x1f\x7f]/, `${j.jobId}: no control character in the Received field`);
      const token = /X-Fuzz-Token: (\S+)\r\n$/.exec(rest.toString('latin1'))?.[1];
      if (token === undefined) continue; // the final sendMail, or an 'rcpts' message
      assert.ok(!seen.has(token), `${token} stored twice`);
      seen.add(token);
      const sent = exp.stored.get(token);
      assert.ok(sent, `${token} stored although never acknowledged`);
      assert.ok(rest.equals(sent), `${token}: stored bytes differ from the sent ones (first line after Received: ${JSON.stringify(rest.toString('latin1').slice(0, 120))})`);
    }
    assert.deepEqual([...exp.stored.keys()].filter((t) => !seen.has(t)), [], 'acknowledged but not stored');

    // Counters only ever count replies that were sent, so each is at least what the clients saw.
    await sleep(1500);
    const rej = await rejections(d.metricsPort);
    const saw = (k: string) => exp.codes.get(k) ?? 0;
    assert.ok(saw('552') > 0 && saw('452rcpt') > 0 && saw('501') > 0, `the generators reached every limit: ${JSON.stringify([...exp.codes])}`);
    assert.ok((rej.size ?? 0) >= saw('552'), `size ${rej.size} >= ${saw('552')}`);
    assert.ok((rej.too_many_recipients ?? 0) >= saw('452rcpt'), `too_many_recipients ${rej.too_many_recipients} >= ${saw('452rcpt')}`);
    assert.ok((rej.syntax ?? 0) >= saw('501'), `syntax ${rej.syntax} >= ${saw('501')}`);
    assert.ok(elapsed < 90_000, `took ${elapsed} ms`);
  });

  test('a message that begins with white space cannot continue our Received header', async () => {
    // `data` would make its first line a continuation of the header every reader unfolds: a forged RCPT_TO= field.
    for (const lead of [' ', '\t']) {
      const sent = `${lead}RCPT_TO=<forged@victim.example>\r\nSubject: lead\r\n\r\nbody\r\n`;
      const r = await sendMail(d.port, { from: '<lead@spam.example>', to: ['<lead@trap.test>'], data: sent });
      assert.equal(r.dataReply?.code, 250);
    }
    const jobs = (await inspectSpool(d.spoolDir)).filter((j) => j.metadata.mail_from === 'lead@spam.example');
    assert.equal(jobs.length, 2);
    for (const j of jobs) {
      const { unfolded, rest } = splitReceived(j.data);
      assert.doesNotMatch(unfolded, /forged/, `the client's line was unfolded into our header: ${JSON.stringify(unfolded)}`);
      assert.match(rest.toString('latin1'), /RCPT_TO=<forged@victim\.example>\r\nSubject: lead\r\n\r\nbody\r\n$/, 'the message itself is kept');
    }
  });
});

/** One PROXY_FROM connection: its first bytes, sent in pieces; `hold` keeps it open after them instead of ending it. */
interface ProxySession {
  bytes: Buffer;
  pieces: number[];
  gapMs: number;
  hold: boolean;
}

const proxySessionArb: fc.Arbitrary<ProxySession> = fc.record({
  bytes: proxyOpening,
  pieces: fc.array(fc.integer({ min: 1, max: 64 }), { maxLength: 6 }),
  gapMs: fc.integer({ min: 0, max: 10 }),
  hold: fc.boolean(),
});

/** What the daemon must make of a session: the parser's verdict on the whole byte string decides. */
function expectedOutcome(s: ProxySession): 'client' | 'local' | 'missing' | 'malformed' | 'oversized' | 'timeout' | 'closed' {
  const r = parseProxyHeader(s.bytes);
  if (r.status === 'complete') return r.header.source ? 'client' : 'local';
  if (r.status === 'rejected') return r.reason;
  return s.hold ? 'timeout' : 'closed';
}

async function runProxySession(port: number, s: ProxySession, deadlineMs: number): Promise<string> {
  const expected = expectedOutcome(s);
  const sock = await connectRaw(port);
  let out = '';
  let closed = false;
  sock.on('data', (d: Buffer) => (out += d.toString('latin1')));
  sock.on('error', () => undefined);
  sock.once('close', () => (closed = true));
  const t0 = performance.now();
  try {
    let at = 0;
    for (const n of s.pieces) {
      if (at >= s.bytes.length || closed) break;
      sock.write(s.bytes.subarray(at, at + n));
      at += n;
      await sleep(s.gapMs);
    }
    if (at < s.bytes.length && !closed) sock.write(s.bytes.subarray(at));
    if (expected === 'client' || expected === 'local') {
      // The greeting comes first, whatever the client pipelined behind its header.
      const until = Date.now() + 5000;
      while (!/\r\n/.test(out) && !closed && Date.now() < until) await sleep(5);
      assert.match(out, /^220 [\x20-\x7e]*\r\n/, `greeted after a ${expected} header: ${JSON.stringify(out.slice(0, 200))}`);
      for (const line of out.slice(0, out.lastIndexOf('\r\n')).split('\r\n')) assert.match(line, /^\d{3}[ -][\x20-\x7e]*$/);
      return expected;
    }
    if (!s.hold) sock.end();
    const until = Date.now() + deadlineMs + 5000;
    while (!closed && Date.now() < until) await sleep(5);
    assert.ok(closed, `${expected}: the daemon closed the connection`);
    assert.equal(out, '', `${expected}: closed without a byte written`);
    if (expected === 'timeout') assert.ok(performance.now() - t0 >= deadlineMs - 50, 'not before the deadline');
    return expected;
  } catch (err) {
    throw new Error(`${(err as Error).message}; sent ${JSON.stringify(s.bytes.toString('latin1').slice(0, 300))} in pieces ${JSON.stringify(s.pieces)} hold=${s.hold}`);
  } finally {
    sock.destroy();
  }
}

describe('hostile PROXY headers from a trusted address (property)', () => {
  const DEADLINE_MS = 1500;
  let d: Daemon;
  before(async () => {
    d = await startDaemon({
      workers: 1,
      env: { PROXY_FROM: '127.0.0.1/32', PROXY_TIMEOUT_MS: String(DEADLINE_MS), METRICS_PUSH_INTERVAL_MS: '100' },
    });
  });
  after(async () => {
    await d?.destroy();
    d?.cleanup();
  });

  test('random, truncated, bit-flipped and oversized headers: the parser verdict, never a crash or a wedge, all counted', async () => {
    const pid = currentAcceptorPids(d.logs())[0];
    const start = await baselineCounters(d.metricsPort);
    const seen = new Map<string, number>();
    const seed = Number(process.env.FUZZ_SEED ?? (process.env.CI ? 415015 : Date.now() % 2 ** 31));
    try {
      await fc.assert(
        fc.asyncProperty(fc.array(proxySessionArb, { minLength: 20, maxLength: 20 }), async (batch) => {
          const outcomes = await Promise.all(batch.map((s) => runProxySession(d.port, s, DEADLINE_MS)));
          for (const o of outcomes) seen.set(o, (seen.get(o) ?? 0) + 1);
        }),
        { numRuns: 40, seed, endOnFailure: true, interruptAfterTimeLimit: 60_000 },
      );
    } catch (err) {
      const msg = (err as Error).message;
      const cause = (err as Error & { cause?: Error }).cause?.message ?? msg.slice(msg.lastIndexOf('Got '));
      throw new Error(`FUZZ_SEED=${seed}: ${cause.slice(0, 3000)}`);
    }
    const n = (k: string) => seen.get(k) ?? 0;
    assert.ok(n('client') > 0 && n('local') > 0 && n('malformed') > 0 && n('missing') > 0 && n('timeout') > 0 && n('closed') > 0, `the generators reached every outcome: ${JSON.stringify([...seen])}`);

    // Every outcome counted exactly: rejections by reason, balancer connections, clients.
    const reasons = ['missing', 'malformed', 'oversized', 'timeout', 'closed'];

    const end = await waitCounters(
      d.metricsPort,
      'every fuzzed connection counted',
      (c) => reasons.every((r) => c.rejections[r] - start.rejections[r] >= n(r)) && c.local - start.local >= n('local') && c.connections - start.connections >= n('client'),
      60_000,
    );
    for (const r of reasons) assert.equal(end.rejections[r] - start.rejections[r], n(r), r);
    assert.equal(end.local - start.local, n('local'));
    assert.equal(end.connections - start.connections, n('client'));

    // The same acceptor, still serving.
    assert.equal((await proxiedMail(d.port, v2({ src: '198.51.100.7' }), 'afterfuzz')).code, 250);
    assert.deepEqual(currentAcceptorPids(d.logs()), [pid]);
    assert.doesNotMatch(d.logs(), /worker_died|uncaught/);
  });
});
