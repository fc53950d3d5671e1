/**
 * A real HAProxy in front of the trap on loopback (PROXY_FROM=127.0.0.1/32), the client bound to another loopback
 * address so it is visibly not HAProxy: with send-proxy-v2 and smtpchk health checks that send PROXY v2 LOCAL
 * (check-send-proxy), with plain TCP checks, and with send-proxy (v1). The trap records the client, not the
 * balancer; the health checks pass (HAProxy's L7OK or L4OK) and are counted apart from clients.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { startDaemon, type Daemon } from './helpers/daemon';
import { haproxyPreamble, haproxySkipReason, startHaproxy, waitServerUp, type Haproxy } from './helpers/haproxy';
import { baselineCounters, proxiedMail, waitCounters } from './helpers/proxy-client';
import { inspectSpool } from './helpers/queues';
import { splitReceived } from './helpers/stored-message';

const skip = haproxySkipReason();
if (skip) console.log(`haproxy-proxy: skipped: ${skip}`);

describe('HAProxy in front of the trap', () => {
  let d: Daemon;
  let h: Haproxy | undefined;
  before(async () => {
    if (skip) return;
    d = await startDaemon({ workers: 1, env: { PROXY_FROM: '127.0.0.1/32', METRICS_PUSH_INTERVAL_MS: '100' } });
  });
  after(async () => {
    await h?.stop();
    await d?.destroy();
    d?.cleanup();
  });

  /** HAProxy listening on its frontend port with the trap as its only backend server, `backend` being that section's lines. */
  function haproxyInFrontOfTrap(backend: string): Promise<Haproxy> {
    return startHaproxy(
      (ports, dir) => `${haproxyPreamble(dir)}
frontend smtp
  bind 127.0.0.1:${ports.frontend}
  default_backend trap

backend trap
${backend}
`,
    );
  }

  async function recorded(tag: string): Promise<{ remoteIp: string; received: string }> {
    const jobs = (await inspectSpool(d.spoolDir)).filter((j) => j.metadata.mail_from === `${tag}@spam.example`);
    assert.equal(jobs.length, 1, `one job for ${tag}`);
    return { remoteIp: jobs[0].metadata.remote_ip, received: splitReceived(jobs[0].data).unfolded };
  }

  test('send-proxy-v2 with smtpchk health checks in PROXY v2 LOCAL: the client is recorded, checks are not clients', { skip }, async () => {
    h = await haproxyInFrontOfTrap(
      `  option smtpchk HELO haproxy.test\n  server trap 127.0.0.1:${d.port} send-proxy-v2 check check-send-proxy inter 200ms fall 2 rise 1`,
    );
    try {
      // UP with L7OK: the check's HELO got its 250 through a PROXY v2 LOCAL connection.
      await waitServerUp(h, 'trap', 'trap');
      const start = await baselineCounters(d.metricsPort);
      const r = await proxiedMail(h.ports.frontend, Buffer.alloc(0), 'viahaproxyv2', { localAddress: '127.0.5.7' });
      assert.equal(r.code, 250, r.raw);
      const job = await recorded('viahaproxyv2');
      assert.equal(job.remoteIp, '127.0.5.7');
      assert.ok(job.received.includes('(unknown [127.0.5.7])'), job.received);
      assert.ok(!job.received.includes('127.0.0.1'), 'HAProxy\'s address is not the client');
      assert.match(d.logs(), / info transaction proc=acceptor0 pid=\d+ cid=\S+ ip=127\.0\.5\.7 proxy=127\.0\.0\.1 .*from=viahaproxyv2@spam\.example/);

      // Checks keep coming every 200 ms; they count apart, and the only client was the mail above.
      const end = await waitCounters(d.metricsPort, 'at least 3 more health checks', (c) => c.local - start.local >= 3 && c.connections - start.connections >= 1);
      assert.equal(end.connections - start.connections, 1, 'health checks are not counted as clients');
      assert.deepEqual(end.rejections, start.rejections, 'no header was refused');
      assert.equal((await waitServerUp(h, 'trap', 'trap')).status, 'UP');
    } finally {
      await h.stop();
      h = undefined;
    }
  });

  test('plain layer-4 checks (no smtpchk, no check-send-proxy): never counted as clients', { skip }, async () => {
    // HAProxy resets such a check right after connecting, usually before the trap can even read the peer address
    // (counted as reset), sometimes after its PROXY v2 LOCAL header (a balancer connection) or before it (closed).
    h = await haproxyInFrontOfTrap(`  server trap 127.0.0.1:${d.port} send-proxy-v2 check inter 200ms fall 2 rise 1`);
    try {
      const start = await baselineCounters(d.metricsPort);
      const deadline = Date.now() + 10_000;
      let row: Record<string, string> | undefined;
      while (Date.now() < deadline) {
        row = (await h.stats()).find((r) => r.pxname === 'trap' && r.svname === 'trap');
        if (row?.status === 'UP' && row.check_status === 'L4OK') break;
        await new Promise((r) => setTimeout(r, 50));
      }
      assert.equal(row?.status, 'UP', JSON.stringify(row));
      const checks = (c: typeof start) => c.local + c.rejections.reset + c.rejections.closed;
      const end = await waitCounters(d.metricsPort, 'at least 3 more checks', (c) => checks(c) - checks(start) >= 3);
      assert.equal(end.connections, start.connections, 'checks are not clients');
      for (const r of ['missing', 'malformed', 'oversized', 'timeout']) assert.equal(end.rejections[r], start.rejections[r], r);
    } finally {
      await h.stop();
      h = undefined;
    }
  });

  test('send-proxy (v1): the client is recorded, not HAProxy', { skip }, async () => {
    h = await haproxyInFrontOfTrap(`  server trap 127.0.0.1:${d.port} send-proxy`);
    try {
      const start = await baselineCounters(d.metricsPort);
      const r = await proxiedMail(h.ports.frontend, Buffer.alloc(0), 'viahaproxyv1', { localAddress: '127.0.5.8' });
      assert.equal(r.code, 250, r.raw);
      const job = await recorded('viahaproxyv1');
      assert.equal(job.remoteIp, '127.0.5.8');
      assert.ok(job.received.includes('(unknown [127.0.5.8])'), job.received);
      const end = await waitCounters(d.metricsPort, 'the client counted', (c) => c.connections - start.connections >= 1);
      assert.equal(end.connections - start.connections, 1);
    } finally {
      await h.stop();
      h = undefined;
    }
  });
});
