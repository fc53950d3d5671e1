/**
 * The PROXY protocol on the real daemon (PROXY_FROM=127.0.0.1/32, one acceptor), driven by a raw client: the client
 * address from a v1 or v2 header is what the Received header, the queue metadata, the per-IP limit and the log
 * lines see; a sender outside PROXY_FROM gets plain SMTP; every bad header closes the connection without a reply,
 * is logged once and counted by reason; balancer health checks (v2 LOCAL) are answered but not counted as clients;
 * and the one acceptor serves throughout.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { currentAcceptorPids, type Daemon, startDaemon } from './helpers/daemon';
import { connectRaw, expectSilentClose, proxiedMail, settledCounters, waitCounters } from './helpers/proxy-client';
import { tlv, v1, v2, v2Local } from './helpers/proxy-headers';
import { RawSmtp } from './helpers/smtp-client';
import { inspectSpool, type StoredJob } from './helpers/queues';
import { splitReceived } from './helpers/stored-message';

const DEADLINE_MS = 600;

describe('PROXY protocol on the daemon', () => {
  let d: Daemon;
  let acceptorPid: number;
  /** Every v2 LOCAL / v1 UNKNOWN connection this file makes, for settledCounters. */
  let localMade = 0;
  const settled = () => settledCounters(d.port, d.metricsPort, ++localMade);
  before(async () => {
    d = await startDaemon({
      workers: 1,
      env: { PROXY_FROM: '127.0.0.1/32', PROXY_TIMEOUT_MS: String(DEADLINE_MS), MAX_CONNECTIONS_PER_IP: '2', METRICS_PUSH_INTERVAL_MS: '100' },
    });
    acceptorPid = currentAcceptorPids(d.logs())[0];
    assert.match(d.logs(), /listening proc=acceptor0 .* proxy_from=127\.0\.0\.1\/32/);
  });
  after(async () => {
    await d?.destroy();
    d?.cleanup();
  });

  async function job(tag: string): Promise<StoredJob> {
    const jobs = (await inspectSpool(d.spoolDir)).filter((j) => j.metadata.mail_from === `${tag}@spam.example`);
    assert.equal(jobs.length, 1, `one job for ${tag}`);
    return jobs[0];
  }

  test('v1 and v2 clients are recorded with their own address in Received, remote_ip and the log', async () => {
    const cases = [
      { tag: 'v1tcp4', header: v1('192.0.2.10', '198.51.100.25', 40000, 25), ip: '192.0.2.10' },
      { tag: 'v1tcp6', header: v1('2001:db8::10', '2001:db8::25', 40000, 25), ip: '2001:db8::10' },
      { tag: 'v2tcp4', header: v2({ src: '203.0.113.9', sport: 51000 }), ip: '203.0.113.9' },
      { tag: 'v2tcp6', header: v2({ src: '2001:db8::9' }), ip: '2001:db8::9' },
      { tag: 'v2tlvs', header: v2({ src: '203.0.113.10', tlvs: [tlv(0x05, 'unique-id'), tlv(0x04, Buffer.alloc(40))] }), ip: '203.0.113.10' },
    ];
    for (const c of cases) {
      const r = await proxiedMail(d.port, c.header, c.tag);
      assert.equal(r.code, 250, `${c.tag}: ${r.raw}`);
    }
    for (const c of cases) {
      const j = await job(c.tag);
      assert.equal(j.metadata.remote_ip, c.ip, c.tag);
      const { unfolded } = splitReceived(j.data);
      assert.ok(unfolded.includes(`(unknown [${c.ip}])`), `${c.tag}: ${unfolded}`);
      assert.ok(!unfolded.includes('127.0.0.1'), `${c.tag}: the balancer is not the client`);
      assert.match(d.logs(), new RegExp(`info transaction proc=acceptor0 pid=\\d+ cid=\\S+ ip=${c.ip.replace(/\./g, '\\.')} proxy=127\\.0\\.0\\.1 `), c.tag);
    }
  });

  test('the per-IP limit counts proxied clients, not the balancer', async () => {
    const held: RawSmtp[] = [];
    const open = async (ip: string) => {
      const c = await RawSmtp.connect(d.port);
      held.push(c);
      c.write(v2({ src: ip }));
      return c.read();
    };
    try {
      assert.equal((await open('192.0.2.50')).code, 220);
      assert.equal((await open('192.0.2.50')).code, 220);
      const third = await open('192.0.2.50');
      assert.equal(third.code, 421, third.raw);
      assert.match(third.text, /too many connections from your address/);
      assert.equal((await open('192.0.2.51')).code, 220, 'another client behind the same balancer is let in');
    } finally {
      for (const c of held) c.close();
    }
  });

  test('a sender outside PROXY_FROM is a direct client: its PROXY line is a bad command, its own address is recorded', async () => {
    const c = await RawSmtp.connect(d.port, '127.0.0.1', 5000, '127.0.0.2');
    try {
      assert.equal((await c.read()).code, 220, 'greeted at once: no header is awaited');
      const r = await c.cmd('PROXY TCP4 203.0.113.66 198.51.100.25 1234 25');
      assert.ok(r.code >= 500 && r.code < 600, r.raw);
      assert.equal((await c.cmd('EHLO direct.example')).code, 250, 'the session goes on');
    } finally {
      c.close();
    }
    assert.equal((await proxiedMail(d.port, Buffer.alloc(0), 'direct', { localAddress: '127.0.0.2' })).code, 250);
    assert.equal((await job('direct')).metadata.remote_ip, '127.0.0.2');
  });

  test('missing, garbage, malformed, oversized and slow headers: closed without a reply, logged once, counted', async () => {
    const before = await settled();
    const logged = (d.logs().match(/ proxy_rejected /g) ?? []).length;
    const drip = [...v1('192.0.2.10', '198.51.100.25', 40000, 25)].map((byte) => Buffer.from([byte]));
    const cases: Array<{ what: string; reason: string; send: Buffer | Buffer[]; gapMs?: number }> = [
      { what: 'SMTP without a header', reason: 'missing', send: Buffer.from('EHLO no-header.example\r\n') },
      { what: 'binary garbage', reason: 'missing', send: Buffer.from([0x16, 0x03, 0x01, 0x00, 0xff, 0x00, 0x0a]) },
      { what: 'a v1 line with a bad address', reason: 'malformed', send: Buffer.from('PROXY TCP4 192.0.2.300 198.51.100.25 1 25\r\n') },
      { what: 'a v2 header with a bad version', reason: 'malformed', send: v2({ version: 1 }) },
      { what: 'a v1 line with no CRLF', reason: 'oversized', send: Buffer.from(`PROXY TCP4 ${'1'.repeat(300)}`) },
      { what: 'a v2 header announcing 60000 bytes', reason: 'oversized', send: v2({ lengthField: 60000 }) },
      { what: 'a v1 line dripped one byte every 100 ms', reason: 'timeout', send: drip, gapMs: 100 },
      { what: 'a client that waits for a greeting', reason: 'timeout', send: Buffer.alloc(0) },
      { what: 'a v2 header cut off by the peer', reason: 'closed', send: Buffer.alloc(0) },
    ];
    const want: Record<string, number> = {};
    for (const c of cases) {
      want[c.reason] = (want[c.reason] ?? 0) + 1;
      if (c.reason === 'closed') {
        await closedHalfway(d.port);
        continue;
      }
      const r = await expectSilentClose(d.port, c.send, { gapMs: c.gapMs, waitMs: 5000 });
      assert.equal(r.out, '', `${c.what}: not a byte written`);
      assert.ok(r.closed, `${c.what}: closed`);
      if (c.reason === 'timeout') assert.ok(r.ms >= DEADLINE_MS - 50 && r.ms < DEADLINE_MS + 3000, `${c.what}: closed after ${r.ms.toFixed(0)} ms`);
    }
    const after = await waitCounters(d.metricsPort, 'every rejection counted', (c) =>
      Object.entries(want).every(([reason, n]) => c.rejections[reason] - before.rejections[reason] >= n),
    );
    for (const [reason, n] of Object.entries(want)) assert.equal(after.rejections[reason] - before.rejections[reason], n, reason);
    assert.equal(after.connections, before.connections, 'a rejected header never reaches the session layer');
    const lines = d.logs().split('\n').filter((l) => / proxy_rejected /.test(l)).slice(logged);
    assert.equal(lines.length, cases.length, 'one log line per rejected connection');
    for (const l of lines) assert.match(l, /^\S+ warn proxy_rejected proc=acceptor0 pid=\d+ cid=[0-9a-v]{16} peer=127\.0\.0\.1 reason=(missing|malformed|oversized|timeout|closed) detail="/);
  });

  test('v2 LOCAL health checks are answered (HELO 250, QUIT 221) and counted apart from clients', async () => {
    const before = await settled();
    for (let i = 0; i < 3; i++) {
      const c = await RawSmtp.connect(d.port);
      try {
        c.write(v2Local());
        assert.equal((await c.read()).code, 220);
        assert.equal((await c.cmd('HELO checker.example')).code, 250);
        assert.equal((await c.cmd('QUIT')).code, 221);
        await c.waitClosed(3000);
      } finally {
        c.close();
      }
    }
    // v1 UNKNOWN names no client either.
    const c = await RawSmtp.connect(d.port);
    c.write('PROXY UNKNOWN\r\n');
    assert.equal((await c.read()).code, 220);
    c.close();
    localMade += 4;
    const after = await waitCounters(d.metricsPort, 'four balancer connections', (x) => x.local - before.local >= 4);
    assert.equal(after.local - before.local, 4);
    assert.equal(after.connections, before.connections, 'not counted in spamtrapd_connections_total');
  });

  test('the one acceptor served throughout and still does', async () => {
    assert.equal((await proxiedMail(d.port, v2({ src: '198.51.100.99' }), 'still')).code, 250);
    assert.deepEqual(currentAcceptorPids(d.logs()), [acceptorPid]);
    assert.doesNotMatch(d.logs(), /worker_died|uncaught|error smtp_error/);
    assert.equal(d.exitCode, null);
  });
});

/** Sends the first 10 bytes of a v2 header and closes the sending side: the peer leaves halfway. */
async function closedHalfway(port: number): Promise<void> {
  const s = await connectRaw(port);
  s.on('error', () => undefined);
  let out = '';
  s.on('data', (b: Buffer) => (out += b.toString('latin1')));
  const closed = new Promise<void>((resolve) => s.once('close', () => resolve()));
  s.end(v2().subarray(0, 10));
  await Promise.race([closed, new Promise((r) => setTimeout(r, 5000))]);
  s.destroy();
  assert.equal(out, '', 'not a byte written');
}
