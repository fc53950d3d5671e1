/**
 * Fingerprints recorded from real sessions on the real daemon (docs/fingerprints.md): each feature, changed alone
 * from a baseline session, changes the `fingerprint_features` filed with the message, and its id; the same dialect
 * from another address gives the same id; how the session ends is kept in the listing, not in the id.
 *
 * A greeting delay makes early talk observable; reverse DNS is on, so `rdns` is what the trap's resolver says.
 */
import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { DirQueueReader } from '../src/dirqueue';
import { FINGERPRINT_ID, fingerprintId, rdnsRelation } from '../src/intel/fingerprint';
import { createReverseLookup } from '../src/smtp/rdns';
import { startDaemon, type Daemon } from './helpers/daemon';
import { waitForEntry } from './helpers/listing-http';
import { RawSmtp } from './helpers/smtp-client';

const RDNS_TIMEOUT_MS = 2000;
const lookup = createReverseLookup(RDNS_TIMEOUT_MS);

interface Dialect {
  /** The source address; each call gets a fresh one unless given. */
  from?: string;
  /** Send the greeting command before the 220. */
  early?: boolean;
  helo?: string;
  /** STARTTLS after the greeting command, then the greeting command again. */
  tls?: boolean;
  /** Commands answered one by one between the greeting and MAIL (RSET, NOOP, VRFY ...). */
  before?: string[];
  mail?: string;
  /** MAIL, RCPT and DATA in one write. */
  pipeline?: boolean;
  /** RCPT, DATA and QUIT in lower case (the greeting and MAIL are given as they are). */
  lower?: boolean;
  body?: string;
  quit?: boolean;
}

const BASE = { helo: 'EHLO bot.example.com', mail: 'MAIL FROM:<s@spam.example>', body: 'Subject: fp\r\n\r\nhello\r\n' };

describe('fingerprints recorded from real sessions', () => {
  let d: Daemon;
  let n = 0;
  const filed = new Map<string, Record<string, string>>();

  before(async () => {
    d = await startDaemon({ workers: 1, env: { GREETING_DELAY_MS: '200', RDNS_TIMEOUT_MS: String(RDNS_TIMEOUT_MS) } });
  });
  after(async () => {
    await d?.destroy();
    d?.cleanup();
  });

  /** Runs one session with one message and returns the metadata filed with it. */
  async function run(x: Dialect = {}): Promise<{ id: string; features: Record<string, string>; from: string }> {
    const from = x.from ?? `127.0.8.${++n}`;
    const rcpt = `fp${++n}@trap.test`;
    const helo = x.helo ?? BASE.helo;
    const c = await RawSmtp.connect(d.port, '127.0.0.1', 5000, from);
    try {
      if (x.early) c.write(`${helo}\r\n`);
      assert.equal((await c.read()).code, 220);
      assert.equal((x.early ? await c.read() : await c.cmd(helo)).code, 250);
      if (x.tls) {
        assert.equal((await c.startTls()).code, 220);
        assert.equal((await c.cmd(helo)).code, 250);
      }
      for (const line of x.before ?? []) assert.ok((await c.cmd(line)).code < 400, line);
      const mail = x.mail ?? BASE.mail;
      const [rcptTo, data, quit] = x.lower ? ['rcpt to:', 'data', 'quit'] : ['RCPT TO:', 'DATA', 'QUIT'];
      if (x.pipeline) {
        c.write(`${mail}\r\n${rcptTo}<${rcpt}>\r\n${data}\r\n`);
        for (const code of [250, 250, 354]) assert.equal((await c.read()).code, code);
      } else {
        assert.equal((await c.cmd(mail)).code, 250);
        assert.equal((await c.cmd(`${rcptTo}<${rcpt}>`)).code, 250);
        assert.equal((await c.cmd(data)).code, 354);
      }
      c.write(`${x.body ?? BASE.body}.\r\n`);
      assert.equal((await c.read(15_000)).code, 250);
      if (x.quit !== false) assert.equal((await c.cmd(quit)).code, 221);
    } finally {
      c.close();
    }
    const meta = await jobFor(rcpt);
    assert.match(meta.fingerprint, FINGERPRINT_ID);
    assert.equal(meta.fingerprint, fingerprintId(meta.fingerprint_features), 'the id is the hash of the features filed with it');
    const features = Object.fromEntries(meta.fingerprint_features.split(';').map((kv) => kv.split('=') as [string, string]));
    return { id: meta.fingerprint, features, from };
  }

  /** The metadata of the job filed for `rcpt` (committed before the 250, so it is there). */
  async function jobFor(rcpt: string): Promise<Record<string, string>> {
    const reader = new DirQueueReader(path.join(d.spoolDir, 'incoming'));
    for (let job = await reader.pickup(); job; job = await reader.pickup()) {
      filed.set(job.metadata.rcpt_to, { ...job.metadata } as Record<string, string>);
      await job.finish();
    }
    const meta = filed.get(rcpt);
    assert.ok(meta, `no job for ${rcpt}`);
    return meta;
  }

  let baseline: { id: string; features: Record<string, string>; from: string };

  /** A session that differs from the baseline in `x` must differ in exactly `changes`, and have another id. */
  async function differsIn(x: Dialect, changes: Record<string, string>): Promise<string> {
    const got = await run(x);
    assert.deepEqual(got.features, { ...baseline.features, ...changes });
    assert.notEqual(got.id, baseline.id);
    return got.id;
  }

  test('a plain session: every feature as documented', async () => {
    baseline = await run();
    const rdns = rdnsRelation('bot.example.com', await lookup(baseline.from));
    assert.deepEqual(baseline.features, {
      talk: '0',
      greet: 'ehlo',
      helo: 'fqdn',
      rdns,
      case: 'upper',
      pipe: '0',
      from: 'angle',
      from_sp: '0',
      from_par: '0',
      rset: '0',
      noop: '0',
      vrfy: '0',
      lf: '0',
      tls: '0',
    });
  });

  test('the same dialect from other addresses has the same id', async () => {
    for (const from of ['127.0.9.1', '127.0.9.2']) {
      const got = await run({ from });
      // rdns takes part: an address whose PTR answer relates otherwise to the HELO differs in that feature only.
      const rdns = rdnsRelation('bot.example.com', await lookup(from));
      assert.deepEqual(got.features, { ...baseline.features, rdns }, from);
      if (rdns === baseline.features.rdns) assert.equal(got.id, baseline.id, from);
    }
  });

  const ids: string[] = [];

  test('talk: a command before the greeting', async () => {
    ids.push(await differsIn({ early: true }, { talk: '1' }));
  });

  test('greet: HELO instead of EHLO', async () => {
    ids.push(await differsIn({ helo: 'HELO bot.example.com' }, { greet: 'helo' }));
  });

  test('helo: the form of the argument (empty, literal, ip, word, other)', async () => {
    ids.push(await differsIn({ helo: 'EHLO' }, { helo: 'empty', rdns: 'na' }));
    const forms: Array<[string, string]> = [
      ['EHLO [192.0.2.7]', 'literal'],
      ['EHLO 192.0.2.7', 'ip'],
      ['EHLO WIN-7QK2L0P', 'word'],
      ['EHLO two words', 'other'],
    ];
    for (const [line, form] of forms) {
      const got = await run({ helo: line });
      assert.equal(got.features.helo, form, line);
      assert.notEqual(got.id, baseline.id, line);
      ids.push(got.id);
    }
  });

  test('rdns: the HELO name against the reverse DNS name the trap looked up', async (t) => {
    const name = await lookup('127.0.0.1');
    const why = 'this host has no PTR for 127.0.0.1 (e.g. localhost), so a HELO cannot match one';
    if (name === null) return process.env.CI ? assert.fail(why) : t.skip(why);
    const match = await run({ from: '127.0.0.1', helo: `EHLO ${name.toUpperCase()}.` });
    assert.equal(match.features.rdns, 'match', 'case and a trailing dot are ignored');
    const differ = await run({ from: '127.0.0.1', helo: BASE.helo });
    assert.deepEqual(differ.features, { ...baseline.features, rdns: 'differ' });
    // Where the baseline's address has no PTR it is `unknown`, and the two ids differ.
    if (baseline.features.rdns === 'unknown') assert.notEqual(differ.id, baseline.id);
    ids.push(match.id);
  });

  test('case: lower, varied and mixed command keywords', async () => {
    ids.push(await differsIn({ helo: 'ehlo bot.example.com', mail: 'mail from:<s@spam.example>', lower: true }, { case: 'lower' }));
    ids.push(await differsIn({ mail: 'mail from:<s@spam.example>' }, { case: 'varied' }));
    ids.push(await differsIn({ mail: 'Mail From:<s@spam.example>' }, { case: 'mixed' }));
  });

  test('pipe: MAIL, RCPT and DATA sent before their replies', async () => {
    ids.push(await differsIn({ pipeline: true }, { pipe: '1' }));
  });

  test('from, from_sp, from_par: the form of MAIL FROM', async () => {
    ids.push(await differsIn({ mail: 'MAIL FROM:s@spam.example' }, { from: 'bare' }));
    ids.push(await differsIn({ mail: 'MAIL FROM: <s@spam.example>' }, { from_sp: '1' }));
    ids.push(await differsIn({ mail: 'MAIL FROM:<s@spam.example> BODY=8BITMIME' }, { from_par: '1' }));
  });

  test('rset, noop, vrfy: commands used in the session so far', async () => {
    ids.push(await differsIn({ before: ['RSET'] }, { rset: '1' }));
    ids.push(await differsIn({ before: ['NOOP'] }, { noop: '1' }));
    ids.push(await differsIn({ before: ['VRFY someone'] }, { vrfy: '1' }));
  });

  test('lf: a bare LF in the message content', async () => {
    ids.push(await differsIn({ body: 'Subject: fp\n\nhello\r\n' }, { lf: '1' }));
  });

  test('tls: the session runs over STARTTLS', async () => {
    ids.push(await differsIn({ tls: true }, { tls: '1' }));
  });

  test('every dialect above has an id of its own', () => {
    assert.ok(ids.length >= 19, String(ids.length));
    assert.equal(new Set([...ids, baseline.id]).size, ids.length + 1);
  });

  test('how the session ends is not in the id, but the listing keeps it as last_end', async () => {
    const quit = await run({ from: '127.0.11.1' });
    const first = await waitForEntry(d.metricsPort, '127.0.11.1', (e) => e?.connections === 1);
    assert.deepEqual([first!.fingerprint, first!.last_end], [quit.id, 'quit']);
    const drop = await run({ from: '127.0.11.1', quit: false });
    assert.equal(drop.id, quit.id, 'QUIT or drop: the same id');
    const second = await waitForEntry(d.metricsPort, '127.0.11.1', (e) => e?.connections === 2);
    assert.deepEqual([second!.fingerprint, second!.last_end, second!.fingerprint_features], [quit.id, 'drop', first!.fingerprint_features]);
  });
});
