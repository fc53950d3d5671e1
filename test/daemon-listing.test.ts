/**
 * The listing on the real daemon, driven from several source addresses (all of 127.0.0.0/8 is on lo): exact counts
 * of messages, connections and distinct recipients; the LISTING_MIN_HITS threshold; LISTING_EXCLUDE; ham notes,
 * forward destinations and listing=no queues never listing anyone; the top trap recipients; the zone served by the
 * real rbldnsd and queried with dig; GET /tail and the `listing` and `tail` commands.
 *
 * One acceptor, so events reach the primary in the order the sessions ended: an address that must not appear is
 * checked once a later sender's entry is there.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { DirQueueReader, type Job } from '../src/dirqueue';
import { startDaemon, type Daemon } from './helpers/daemon';
import { listingEntries, listingEntry, waitForEntry } from './helpers/listing-http';
import { Rbldnsd, RBLDNSD_MISSING, reverseName } from './helpers/rbldnsd';
import { RawSmtp, sendMail } from './helpers/smtp-client';
import { TailReader } from './helpers/tail-reader';
import { httpRequest } from './helpers/http';
import { builtRoot } from './helpers/paths';
import { parseExposition, sampleValue } from './helpers/prometheus';
import { freePort } from './helpers/sockets';

const RULES = `/^ham\\@trap\\.test$/  OK Sure [note=ham]\n`;
const ZONE = 'bl.spamtrapd.test';

/** A session of `messages` (each: its recipients), from `local`, ending with QUIT or a dropped connection. */
async function session(port: number, local: string, messages: string[][], end: 'quit' | 'drop' = 'quit'): Promise<void> {
  const c = await RawSmtp.connect(port, '127.0.0.1', 5000, local);
  try {
    assert.equal((await c.read()).code, 220);
    assert.equal((await c.cmd('EHLO bot.example')).code, 250);
    for (const rcpts of messages) {
      assert.equal((await c.cmd('MAIL FROM:<s@spam.example>')).code, 250);
      for (const r of rcpts) assert.equal((await c.cmd(`RCPT TO:<${r}>`)).code, 250);
      assert.equal((await c.cmd('DATA')).code, 354);
      c.write('Subject: listing\r\n\r\nhello\r\n.\r\n');
      assert.equal((await c.read(15_000)).code, 250);
    }
    if (end === 'quit') assert.equal((await c.cmd('QUIT')).code, 221);
  } finally {
    c.close();
  }
}

const cli = (args: string[], metricsPort: number) =>
  spawnSync(process.execPath, [path.join(builtRoot(), 'workers', 'cli.js'), ...args], {
    encoding: 'utf8',
    timeout: 20_000,
    env: { PATH: process.env.PATH, METRICS_HOST: '127.0.0.1', METRICS_PORT: String(metricsPort) },
  });

describe('the listing on the real daemon', () => {
  let d: Daemon;
  /** LISTING_ZONE_FILE's directory: outside the private test spool, so rbldnsd's own user can read it. */
  let zoneDir: string;

  before(async () => {
    zoneDir = fs.mkdtempSync(path.join(os.tmpdir(), 'spamtrapd-zone-'));
    fs.chmodSync(zoneDir, 0o755);
    d = await startDaemon({
      workers: 1,
      rcptRegexp: RULES,
      // Nothing listens on the forward port: the copy waits in its queue, which is all this test needs.
      routes: `note=ham queue hamincoming\nrcpt=/^postmaster@/ forward smtp://127.0.0.1:${await freePort()}\nrcpt=/^seed-/ queue seeds listing=no\n* queue incoming\n`,
      env: {
        LISTING_MIN_HITS: '2',
        LISTING_EXCLUDE: '127.0.6.0/24',
        LISTING_WRITE_INTERVAL_MS: '1000',
        LISTING_ZONE_FILE: path.join(zoneDir, 'listing.ip4set'),
      },
    });
  });

  after(async () => {
    await d?.destroy();
    d?.cleanup();
    fs.rmSync(zoneDir, { recursive: true, force: true });
  });

  test('counts messages, connections and distinct recipients per address, exactly', async () => {
    await session(d.port, '127.0.5.7', [['count-a@trap.test'], ['count-b@trap.test']]);
    await session(d.port, '127.0.5.7', [['COUNT-A@trap.test', 'count-c@trap.test']], 'drop');
    const e = await waitForEntry(d.metricsPort, '127.0.5.7', (x) => x?.connections === 2);
    assert.deepEqual(
      { messages: e!.messages, connections: e!.connections, recipients: e!.recipients, listed: e!.listed, helo: e!.helo, last_end: e!.last_end },
      { messages: 3, connections: 2, recipients: 3, listed: true, helo: 'bot.example', last_end: 'drop' },
    );
    // The fingerprint is the one filed with the message, and what it stands for comes with it.
    const jobs = await drain(d.spoolDir, 'incoming');
    const job = jobs.find((j) => j.metadata.rcpt_to === 'count-b@trap.test')!;
    assert.equal(e!.fingerprint, job.metadata.fingerprint);
    assert.equal(e!.fingerprint_features, job.metadata.fingerprint_features);
    assert.ok(Date.parse(e!.first_seen) <= Date.parse(e!.last_seen));
  });

  test('an address is listed from LISTING_MIN_HITS messages on, not before', async () => {
    await session(d.port, '127.0.5.8', [['t1@trap.test']]);
    const one = await waitForEntry(d.metricsPort, '127.0.5.8', (x) => x?.connections === 1);
    assert.equal(one!.listed, false);
    assert.doesNotMatch((await httpRequest(d.metricsPort, '/listing')).body, /^127\.0\.5\.8$/m);
    await session(d.port, '127.0.5.8', [['t2@trap.test']]);
    const two = await waitForEntry(d.metricsPort, '127.0.5.8', (x) => x?.connections === 2);
    assert.deepEqual([two!.messages, two!.listed], [2, true]);
    assert.match((await httpRequest(d.metricsPort, '/listing')).body, /^127\.0\.5\.8$/m);
  });

  test('LISTING_EXCLUDE: an excluded sender is filed as usual but never counted, stored or listed', async () => {
    await session(d.port, '127.0.6.1', [['t1@trap.test'], ['t2@trap.test'], ['t3@trap.test']]);
    await session(d.port, '127.0.5.9', [['after-excluded@trap.test']]);
    await waitForEntry(d.metricsPort, '127.0.5.9', (x) => x?.connections === 1);
    assert.equal(await listingEntry(d.metricsPort, '127.0.6.1'), undefined);
  });

  test('ham notes, forward destinations and listing=no queues never count; a mixed message counts its trap recipients', async () => {
    await session(d.port, '127.0.5.10', [['ham@trap.test'], ['postmaster@trap.test'], ['seed-1@trap.test'], ['ham@trap.test', 'seed-2@trap.test']]);
    await session(d.port, '127.0.5.11', [['ham@trap.test', 'mixed@trap.test', 'postmaster@trap.test'], ['mixed@trap.test']]);
    const mixed = await waitForEntry(d.metricsPort, '127.0.5.11', (x) => x?.connections === 1);
    assert.deepEqual([mixed!.messages, mixed!.recipients], [2, 1]);
    assert.equal(await listingEntry(d.metricsPort, '127.0.5.10'), undefined, 'nothing it sent counts');
    // Each of those messages was filed where its route says.
    const ham = await drain(d.spoolDir, 'hamincoming');
    assert.equal(ham.filter((j) => j.metadata.remote_ip === '127.0.5.10').length, 2);
    assert.equal((await drain(d.spoolDir, 'seeds')).length, 2);
  });

  test('GET /listing?by=rcpt: the most-hit trap recipients with exact counts, never a ham or forwarded one', async () => {
    await waitForEntry(d.metricsPort, '127.0.5.11', (x) => x?.connections === 1);
    const r = await httpRequest(d.metricsPort, '/listing?by=rcpt&format=json&limit=1000');
    const top = JSON.parse(r.body) as Array<{ rcpt: string; messages: number }>;
    const count = (rcpt: string) => top.find((t) => t.rcpt === rcpt)?.messages;
    assert.equal(count('count-a@trap.test'), 2, 'case folded');
    assert.equal(count('count-b@trap.test'), 1);
    assert.equal(count('mixed@trap.test'), 2);
    for (const never of ['ham@trap.test', 'postmaster@trap.test', 'seed-1@trap.test', 't3@trap.test']) assert.equal(count(never), undefined, never);
  });

  test('a bad query gets 400 with the reason', async () => {
    const r = await httpRequest(d.metricsPort, '/listing?since=last+tuesday');
    assert.equal(r.status, 400);
    assert.match(r.body, /since must be an ISO 8601 time/);
  });

  test('the metrics count the listing without a series per address', async () => {
    const entries = await listingEntries(d.metricsPort);
    const samples = parseExposition((await httpRequest(d.metricsPort, '/metrics')).body);
    assert.equal(sampleValue(samples, 'spamtrapd_listing_entries'), entries.length);
    assert.equal(sampleValue(samples, 'spamtrapd_intel_events_dropped_total'), 0);
    const fp = samples.filter((s) => s.name === 'spamtrapd_fingerprint_messages_total');
    assert.ok(fp.length >= 1 && fp.every((s) => /^(other|v1-[a-z2-7]{12})$/.test(s.labels.fingerprint)));
    assert.ok(!samples.some((s) => Object.values(s.labels).some((v) => /^127\.0\./.test(v))), 'no address in any label');
  });

  test('rbldnsd serves the written zone: A 127.0.0.2 and the TXT for listed addresses, NXDOMAIN for the rest', async (t) => {
    // Wait for a write that has the counts above: the files are replaced whole, so a read sees one write or another.
    const file = path.join(zoneDir, 'listing.ip4set');
    const deadline = Date.now() + 15_000;
    while (!/^127\.0\.5\.11 \$ sent 2 messages/m.test(fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : '')) {
      assert.ok(Date.now() < deadline, `the zone file never listed 127.0.5.11:\n${fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : '(none)'}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.equal(fs.statSync(file).mode & 0o777, 0o644);
    // The command line of docs/listing.md, with a test port and zone.
    const dns = await Rbldnsd.start(zoneDir, [`${ZONE}:ip4set:listing.ip4set`, `${ZONE}:ip6trie:listing.ip6trie`]);
    if (!dns) return process.env.CI ? assert.fail(RBLDNSD_MISSING) : t.skip(RBLDNSD_MISSING);
    try {
      const name = (ip: string) => reverseName(ip, ZONE);
      assert.deepEqual(dns.query(name('127.0.5.7'), 'A'), { status: 'NOERROR', answers: ['127.0.0.2'] });
      const txt = dns.query(name('127.0.5.7'), 'TXT');
      assert.equal(txt.status, 'NOERROR');
      assert.match(txt.answers[0], /^"127\.0\.5\.7 sent 3 messages to spamtraps, last seen \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"$/);
      assert.deepEqual(dns.query(name('127.0.5.11'), 'A').answers, ['127.0.0.2']);
      // Below the threshold (127.0.5.9: one message), excluded, only ham/forward/listing=no, never seen.
      for (const ip of ['127.0.5.9', '127.0.6.1', '127.0.5.10', '127.0.5.99']) assert.equal(dns.query(name(ip), 'A').status, 'NXDOMAIN', ip);
    } finally {
      await dns.stop();
    }
  });

  test('GET /tail: a reader sees each filed message as it is filed', async () => {
    const reader = await TailReader.open(d.metricsPort);
    try {
      assert.equal(reader.status, 200);
      await reader.waitFor('the opening comment', () => reader.raw.length > 0);
      await sendMail(d.port, { localAddress: '127.0.5.12', helo: 'tail.example', from: '<s@spam.example>', to: ['<tail@trap.test>', '<ham@trap.test>'], data: 'Subject: t\r\n\r\nx\r\n' });
      await reader.waitFor('the message', () => reader.messages().some((m) => m.ip === '127.0.5.12'));
      const m = reader.messages().find((x) => x.ip === '127.0.5.12')!;
      assert.deepEqual(
        [m.helo, m.mail_from, m.recipients, m.queues],
        ['tail.example', 's@spam.example', ['tail@trap.test', 'ham@trap.test'], ['incoming', 'hamincoming']],
      );
      assert.match(m.fingerprint as string, /^v1-[a-z2-7]{12}$/);
    } finally {
      reader.close();
    }
  });

  test('a tail reader that stops reading never slows the acceptors', async () => {
    const stuck = await TailReader.open(d.metricsPort);
    try {
      await stuck.waitFor('the opening comment', () => stuck.raw.length > 0);
      stuck.pause();
      const started = Date.now();
      for (let i = 0; i < 20; i++) await session(d.port, '127.0.5.13', [[`stuck-${i}@trap.test`]]);
      const e = await waitForEntry(d.metricsPort, '127.0.5.13', (x) => x?.connections === 20);
      assert.equal(e!.messages, 20);
      assert.ok(Date.now() - started < 60_000, 'twenty sessions went through while the reader was stuck');
      const samples = parseExposition((await httpRequest(d.metricsPort, '/metrics')).body);
      assert.equal(sampleValue(samples, 'spamtrapd_tail_subscribers'), 1);
    } finally {
      stuck.close();
    }
  });

  test('spamtrapd listing: the listed addresses, JSON with filters, the top recipients; a bad value exits 2', () => {
    const plain = cli(['listing'], d.metricsPort);
    assert.equal(plain.status, 0, plain.stderr);
    const listed = plain.stdout.trim().split('\n');
    for (const ip of ['127.0.5.7', '127.0.5.8', '127.0.5.11']) assert.ok(listed.includes(ip), ip);
    assert.ok(!listed.includes('127.0.5.9'), 'below the threshold');
    const json = cli(['listing', '--json', '--min-hits', '1', '--since', '1h'], d.metricsPort);
    assert.equal(json.status, 0, json.stderr);
    const entries = JSON.parse(json.stdout) as Array<{ ip: string; listed: boolean }>;
    assert.deepEqual(entries.find((e) => e.ip === '127.0.5.9')?.listed, false);
    const rcpt = cli(['listing', '--rcpt', '--limit', '1'], d.metricsPort);
    assert.equal(rcpt.status, 0, rcpt.stderr);
    assert.match(rcpt.stdout, /^ +\d+ \S+@trap\.test\n$/);
    const bad = cli(['listing', '--min-hits', '0'], d.metricsPort);
    assert.equal(bad.status, 2);
    assert.match(bad.stderr, /spamtrapd listing: min_hits must be a whole number of at least 1, got "0"/);
  });

  test('spamtrapd tail: a line per filed message until Ctrl-C, which exits 0', async () => {
    const tailReaders = async () => sampleValue(parseExposition((await httpRequest(d.metricsPort, '/metrics')).body), 'spamtrapd_tail_subscribers');
    // Readers of earlier tests are gone first, so the one counted below is this command.
    const gone = Date.now() + 15_000;
    while ((await tailReaders()) !== 0) {
      assert.ok(Date.now() < gone, 'earlier tail readers never went away');
      await new Promise((r) => setTimeout(r, 50));
    }
    const child = spawn(process.execPath, [path.join(builtRoot(), 'workers', 'cli.js'), 'tail'], {
      env: { PATH: process.env.PATH, METRICS_HOST: '127.0.0.1', METRICS_PORT: String(d.metricsPort) },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout.on('data', (b: Buffer) => (out += b.toString()));
    child.stderr.on('data', (b: Buffer) => (out += b.toString()));
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    try {
      // It is reading once the trap counts it as a tail reader.
      const deadline = Date.now() + 15_000;
      for (;;) {
        if ((await tailReaders()) === 1) break;
        assert.ok(Date.now() < deadline, `spamtrapd tail never connected: ${out}`);
        await new Promise((r) => setTimeout(r, 50));
      }
      await sendMail(d.port, { localAddress: '127.0.5.14', helo: 'cli.example', from: '<s@spam.example>', to: ['<cli-tail@trap.test>'], data: 'Subject: t\r\n\r\nx\r\n' });
      const seen = Date.now() + 15_000;
      while (!/127\.0\.5\.14 helo=cli\.example from=s@spam\.example to=cli-tail@trap\.test queue=incoming size=\d+ fp=v1-/.test(out)) {
        assert.ok(Date.now() < seen, `no tail line for the message in:\n${out}`);
        await new Promise((r) => setTimeout(r, 50));
      }
      assert.match(out, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z 127\.0\.5\.14 /m);
      child.kill('SIGINT');
      assert.equal(await exited, 0, out);
    } finally {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    }
  });

  test('both commands say clearly when no trap answers', () => {
    const port = d.metricsPort === 1 ? 2 : 1;
    for (const cmd of ['listing', 'tail']) {
      const r = cli([cmd], port);
      assert.equal(r.status, 1, cmd);
      assert.match(r.stderr, new RegExp(`spamtrapd ${cmd}: no trap answers on http://127\\.0\\.0\\.1:${port} .*is it running\\?`));
    }
  });
});

/** Takes every job of `queue` out (returns their metadata). */
async function drain(spool: string, queue: string): Promise<Job[]> {
  const dir = path.join(spool, queue);
  if (!fs.existsSync(dir)) return [];
  const reader = new DirQueueReader(dir);
  const out: Job[] = [];
  for (let job = await reader.pickup(); job; job = await reader.pickup()) {
    out.push(job);
    await job.finish();
  }
  return out;
}
