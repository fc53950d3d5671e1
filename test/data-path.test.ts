/**
 * The DATA path over the real daemon, by the shape of the message. Whatever its lines look like (every line
 * dot-stuffed, 1-byte lines, bare-LF or CR-only line ends, one 10 MB line, NUL bytes, a terminator cut anywhere),
 * a message is stored byte-exact after our Received header, un-stuffed, in time and memory linear in its bytes,
 * over STARTTLS too.
 * Each shape runs with each writer: inline (the default), the writer thread, and SPOOL_FSYNC=true (the in-process writer).
 *
 * Timings are only ever compared with another measurement of the same run (the best of two tries each), never
 * with seconds. The acceptor's RSS is sampled from /proc every 20 ms; a try is cut short as soon as the acceptor
 * grows past the limit or takes far longer than the plain message did, so a regression fails fast instead of
 * taking the host's memory.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { findQueueDirs, parseControl } from '../src/dirqueue';
import { currentAcceptorPids, type Daemon, startDaemon } from './helpers/daemon';
import { RawSmtp, type Reply } from './helpers/smtp-client';
import { splitReceived } from './helpers/stored-message';
import { sleep } from './helpers/waiting';

const MB = 1024 * 1024;
/** What one acceptor may grow by while it takes the messages of a measurement. */
const RSS_GROWTH_LIMIT = 64 * MB;
/**
 * The time bound: a shape against the plain message of the same size. Tries alternate between the two, and the
 * best of each counts: the disk's flushes (SPOOL_FSYNC=true) and other work on the host vary a try's time several
 * times over, the acceptor's CPU time hardly.
 */
const TIME_RATIO = 3;
const TRIES = 3;

const b = (s: string) => Buffer.from(s, 'latin1');

function repeat(s: string, n: number): Buffer {
  return b(s.repeat(n));
}

/**
 * Message bytes as sent: `data` already dot-stuffed, then the terminator, whose CRLF ends an open last line (an
 * empty message is the terminator's last three bytes alone).
 */
function wire(data: Buffer): Buffer {
  const ends = data.length === 0 || (data.length >= 2 && data[data.length - 2] === 0x0d && data[data.length - 1] === 0x0a);
  return Buffer.concat([data, b(ends ? '.\r\n' : '\r\n.\r\n')]);
}

/** What the trap must store after its Received header: the un-stuffed bytes, plus the CRLF of an open last line. */
function stored(unstuffed: Buffer): Buffer {
  const ends = unstuffed.length >= 2 && unstuffed[unstuffed.length - 2] === 0x0d && unstuffed[unstuffed.length - 1] === 0x0a;
  return ends || unstuffed.length === 0 ? unstuffed : Buffer.concat([unstuffed, b('\r\n')]);
}

function vmRss(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) * 1024 : 0;
}

/** CPU seconds a process (all its threads) has used: utime + stime, in clock ticks of 10 ms. */
function cpuSeconds(pid: number): number {
  const fields = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

/**
 * Samples the acceptors' RSS every 20 ms from now on. `tripped` rejects as soon as one has grown past the limit or
 * the cutoff has passed, so a measurement can race it.
 */
class Watch {
  private readonly base = new Map<number, number>();
  private timer: NodeJS.Timeout;
  private readonly started = performance.now();
  peak = 0;
  readonly tripped: Promise<never>;

  constructor(
    private readonly pids: number[],
    cutoffMs: number,
  ) {
    for (const pid of pids) this.base.set(pid, vmRss(pid));
    let trip: (e: Error) => void = () => undefined;
    this.tripped = new Promise<never>((_, reject) => (trip = reject));
    this.tripped.catch(() => undefined);
    this.timer = setInterval(() => {
      this.sample();
      const ms = performance.now() - this.started;
      if (this.peak > RSS_GROWTH_LIMIT) trip(new Error(`an acceptor grew by ${(this.peak / MB).toFixed(0)} MB within ${ms.toFixed(0)} ms`));
      else if (ms > cutoffMs) trip(new Error(`no reply within ${cutoffMs.toFixed(0)} ms`));
    }, 20);
  }

  private sample(): void {
    for (const pid of this.pids) {
      const growth = vmRss(pid) - (this.base.get(pid) ?? 0);
      if (growth > this.peak) this.peak = growth;
    }
  }

  stop(): number {
    clearInterval(this.timer);
    this.sample();
    return this.peak;
  }
}

/** A connection through to the 354 of DATA (after STARTTLS when asked). */
async function openData(port: number, rcpts = ['trap@bait.example'], tls = false): Promise<RawSmtp> {
  const c = await RawSmtp.connect(port);
  assert.equal((await c.read()).code, 220);
  assert.equal((await c.cmd('EHLO client.example')).code, 250);
  if (tls) {
    assert.equal((await c.startTls()).code, 220);
    assert.equal((await c.cmd('EHLO client.example')).code, 250);
  }
  assert.equal((await c.cmd('MAIL FROM:<bot@spam.example>')).code, 250);
  for (const r of rcpts) assert.equal((await c.cmd(`RCPT TO:<${r}>`)).code, 250);
  const go = await c.cmd('DATA');
  assert.equal(go.code, 354, go.raw);
  return c;
}

function queuedIds(r: Reply): string[] {
  const m = /queued as (\S+)/.exec(r.text);
  assert.ok(m, `a 250 with job ids: ${r.raw}`);
  return m[1].split(',');
}

/** The stored data of job `id` (searched in every queue); its files are removed, the spool stays small. */
async function takeStored(spoolDir: string, id: string): Promise<Buffer> {
  for (const dir of await findQueueDirs(spoolDir)) {
    const ctrlPath = path.join(dir, 'queue', id);
    if (!fs.existsSync(ctrlPath)) continue;
    const dataPath = parseControl(fs.readFileSync(ctrlPath)).fields['QDFN'];
    assert.ok(dataPath, `job ${id} names its data file`);
    const data = fs.readFileSync(dataPath);
    fs.rmSync(ctrlPath);
    fs.rmSync(dataPath);
    return data;
  }
  throw new Error(`job ${id} is not in the spool`);
}

async function assertStored(d: Daemon, id: string, want: Buffer, what: string): Promise<void> {
  const { rest } = splitReceived(await takeStored(d.spoolDir, id));
  if (rest.equals(want)) return;
  let i = 0;
  while (i < Math.min(rest.length, want.length) && rest[i] === want[i]) i++;
  assert.fail(
    `${what}: stored ${rest.length} bytes, expected ${want.length}; first difference at ${i}: ` +
      `${JSON.stringify(rest.subarray(i, i + 16).toString('latin1'))} vs ${JSON.stringify(want.subarray(i, i + 16).toString('latin1'))}`,
  );
}

interface Measurement {
  ms: number;
  rss: number;
  /** The acceptors' CPU seconds. */
  cpu: number;
}

/**
 * `sessions` clients at once, each through to DATA, then each writes `bytes` in one socket write; timed from the
 * first write to the last 250. Every stored copy is checked against `want`.
 */
async function measure(d: Daemon, bytes: Buffer, want: Buffer, sessions: number, cutoffMs: number, what: string): Promise<Measurement> {
  const clients = await Promise.all(Array.from({ length: sessions }, () => openData(d.port)));
  const pids = currentAcceptorPids(d.logs());
  const cpu0 = pids.map(cpuSeconds);
  const watch = new Watch(pids, cutoffMs);
  try {
    const t0 = performance.now();
    for (const c of clients) c.write(bytes);
    const replies = await Promise.race([Promise.all(clients.map((c) => c.read(cutoffMs + 60_000))), watch.tripped]);
    const ms = performance.now() - t0;
    const rss = watch.stop();
    const cpu = pids.reduce((sum, pid, i) => sum + cpuSeconds(pid) - cpu0[i], 0);
    for (const r of replies) {
      assert.equal(r.code, 250, `${what}: ${r.raw}`);
      for (const id of queuedIds(r)) await assertStored(d, id, want, what);
    }
    return { ms, rss, cpu };
  } finally {
    watch.stop();
    for (const c of clients) c.close();
  }
}

/** The best time and CPU of several tries; the RSS growth is the largest of them (every try must stay in bounds). */
function best(ms: Measurement[]): Measurement {
  return {
    ms: Math.min(...ms.map((m) => m.ms)),
    cpu: Math.min(...ms.map((m) => m.cpu)),
    rss: Math.max(...ms.map((m) => m.rss)),
  };
}

const fmt = (m: Measurement) => `${m.ms.toFixed(0)} ms (acceptor CPU ${m.cpu.toFixed(2)} s), RSS +${(m.rss / MB).toFixed(1)} MB`;

/** 2,000,000 lines: `aa` (plain) and `.a` (sent as `..a`), 8 MB each once un-stuffed. */
const LINES = 2_000_000;
const PLAIN = repeat('aa\r\n', LINES);
const DOTS = { wire: wire(repeat('..a\r\n', LINES)), want: repeat('.a\r\n', LINES) };

/** One shape against the plain message: byte-exact, within TIME_RATIO of its time, RSS within the limit. */
async function compareWithPlain(d: Daemon, sessions: number, shape: { wire: Buffer; want: Buffer }, what: string): Promise<string> {
  const plains: Measurement[] = [];
  const shapes: Measurement[] = [];
  for (let i = 0; i < TRIES; i++) {
    plains.push(await measure(d, wire(PLAIN), PLAIN, sessions, 120_000, `plain x${sessions}`));
    // Far past any bound, a try is cut short: it has failed already (on smtp-server's own DATA path it takes 40 s).
    const cutoff = Math.max(20_000, 10 * TIME_RATIO * best(plains).ms);
    shapes.push(await measure(d, shape.wire, shape.want, sessions, cutoff, `${what} x${sessions}`));
  }
  const plain = best(plains);
  const m = best(shapes);
  const report = `plain x${sessions}: ${fmt(plain)}; ${what} x${sessions}: ${fmt(m)}`;
  assert.ok(m.ms <= TIME_RATIO * plain.ms, `${what} takes more than ${TIME_RATIO}x the plain message's time: ${report}`);
  assert.ok(plain.rss < RSS_GROWTH_LIMIT && m.rss < RSS_GROWTH_LIMIT, `an acceptor grew by 64 MB or more: ${report}`);
  return report;
}

/** One message on a connection of its own, written in the given pieces (each its own socket write). */
async function sendPieces(
  d: Daemon,
  pieces: Buffer[],
  want: Buffer,
  what: string,
  opts: { rcpts?: string[]; jobs?: number; tls?: boolean } = {},
): Promise<void> {
  const c = await openData(d.port, opts.rcpts, opts.tls);
  const watch = new Watch(currentAcceptorPids(d.logs()), 120_000);
  try {
    c.socket.setNoDelay(true);
    for (const [i, p] of pieces.entries()) {
      if (i > 0) await sleep(30);
      c.write(p);
    }
    const r = await Promise.race([c.read(120_000), watch.tripped]);
    assert.equal(r.code, 250, `${what}: ${r.raw}`);
    const ids = queuedIds(r);
    assert.equal(ids.length, opts.jobs ?? 1, `${what}: one job per destination`);
    for (const id of ids) await assertStored(d, id, want, what);
    assert.ok(watch.stop() < RSS_GROWTH_LIMIT, `${what}: an acceptor grew by ${(watch.peak / MB).toFixed(0)} MB`);
  } finally {
    watch.stop();
    c.close();
  }
}

const WRITERS: Array<{ name: string; env: Record<string, string> }> = [
  { name: 'inline writer', env: { SPOOL_FSYNC: 'false', SPOOL_WRITER: 'inline' } },
  { name: 'writer thread', env: { SPOOL_FSYNC: 'false', SPOOL_WRITER: 'thread' } },
  { name: 'SPOOL_FSYNC=true (in-process writer)', env: { SPOOL_FSYNC: 'true' } },
];

for (const writer of WRITERS) {
  describe(`DATA path, ${writer.name}`, () => {
    let d: Daemon;

    before(async () => {
      d = await startDaemon({
        // One acceptor takes every session, so four at once share its memory and its writer.
        workers: 1,
        routes: 'rcpt=/^copy@/ queue copies\n* queue incoming\n',
        env: { MAX_MESSAGE_SIZE: '32m', ...writer.env },
        waitListening: 1,
      });
      // Outside every measurement: the writer thread starts with the first message, and the first large one grows
      // the heaps (V8 frees dead buffers only after tens of MB of them), whichever shape it has.
      await sendPieces(d, [wire(PLAIN)], PLAIN, 'warm-up');
    });

    after(async () => {
      await d?.destroy();
      d?.cleanup();
    });

    test('an 8 MB message of 2,000,000 dot-stuffed lines: stored un-stuffed, within 3x the time of a plain one, in bounded memory', { timeout: 300_000 }, async (t) => {
      t.diagnostic(await compareWithPlain(d, 1, DOTS, 'dot lines'));
    });

    test('four such sessions at once, likewise', { timeout: 300_000 }, async (t) => {
      t.diagnostic(await compareWithPlain(d, 4, DOTS, 'dot lines'));
    });

    test('pathological shapes are stored byte-exact and answered 250, each in bounded memory', { timeout: 300_000 }, async () => {
      const shapes: Array<{ what: string; data: Buffer; want: Buffer }> = [
        { what: '1-byte lines', data: repeat('x\r\n', 1_000_000), want: repeat('x\r\n', 1_000_000) },
        { what: 'only ".." lines', data: repeat('..\r\n', 1_000_000), want: repeat('.\r\n', 1_000_000) },
        // A dot after a bare LF is un-stuffed too (smtp-server's rule), and only CRLF.CRLF ends the message.
        { what: 'bare-LF line ends', data: repeat('..a\n', 1_000_000), want: repeat('.a\n', 1_000_000) },
        // Without LF no dot starts a line: only the leading escape dot of DATA goes.
        { what: 'CR-only line ends', data: repeat('..a\r', 1_000_000), want: Buffer.concat([b('.a\r'), repeat('..a\r', 999_999)]) },
        { what: 'NUL bytes throughout', data: repeat('\0\0\0\0\r\n..\0\0\r\n\0.\0\r\n', 200_000), want: repeat('\0\0\0\0\r\n.\0\0\r\n\0.\0\r\n', 200_000) },
        { what: 'one 10 MB line', data: Buffer.alloc(10 * MB, 'x'), want: Buffer.alloc(10 * MB, 'x') },
        { what: 'an empty message', data: Buffer.alloc(0), want: Buffer.alloc(0) },
      ];
      for (const s of shapes) await sendPieces(d, [wire(s.data)], stored(s.want), s.what);
      // Two destinations: each copy has its own header and the whole message.
      const two = { data: repeat('..a\r\n', 400_000), want: repeat('.a\r\n', 400_000) };
      await sendPieces(d, [wire(two.data)], two.want, 'two destinations', { rcpts: ['trap@bait.example', 'copy@bait.example'], jobs: 2 });
      // STARTTLS gives the session a parser of its own (TrapConnection._createParser): the same un-stuffing.
      await sendPieces(d, [wire(two.data)], two.want, 'after STARTTLS', { tls: true });
    });

    test('a terminator cut at every byte boundary across two TCP writes ends the message where it should', { timeout: 120_000 }, async () => {
      // [bytes after DATA, including the terminator; what is stored]
      const cases: Array<[string, string]> = [
        ['hello\r\n.\r\n', 'hello\r\n'],
        ['.\r\n', ''],
        ['..\r\n.\r\n', '.\r\n'],
        ['\r\n.\r\n', '\r\n'],
        ['a\r\n..\r\n.\r\n', 'a\r\n.\r\n'],
        ['a\n.\r\n.\r\n', 'a\n.\r\n'],
      ];
      for (const [data, want] of cases) {
        for (let k = 1; k < data.length; k++) {
          await sendPieces(d, [b(data.slice(0, k)), b(data.slice(k))], b(want), `${JSON.stringify(data)} cut at ${k}`);
        }
      }
    });

    test('commands pipelined after the final dot, in the same write, run: a second message follows', { timeout: 120_000 }, async () => {
      const c = await openData(d.port);
      try {
        const first = repeat('..a\r\n', 100_000);
        const second = repeat('..b\r\n', 100_000);
        c.write(Buffer.concat([first, b('.\r\nMAIL FROM:<bot@spam.example>\r\nRCPT TO:<trap@bait.example>\r\nDATA\r\n'), second, b('.\r\nQUIT\r\n')]));
        const replies: Reply[] = [];
        for (let i = 0; i < 6; i++) replies.push(await c.read(60_000));
        assert.deepEqual(
          replies.map((r) => r.code),
          [250, 250, 250, 354, 250, 221],
          replies.map((r) => r.raw).join(''),
        );
        await assertStored(d, queuedIds(replies[0])[0], repeat('.a\r\n', 100_000), 'first message');
        await assertStored(d, queuedIds(replies[4])[0], repeat('.b\r\n', 100_000), 'second message');
      } finally {
        c.close();
      }
    });
  });
}
