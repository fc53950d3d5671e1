/**
 * /healthz and spamtrapd_workers tell the truth: an acceptor is up once it listens and answers. A readiness probe
 * does not pass while a slot has no listening acceptor or keeps dying, nor while an acceptor is frozen.
 */
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { evaluateHealth } from '../src/primary/health';
import { currentAcceptorPids, type Daemon, startDaemon } from './helpers/daemon';
import { httpGet, httpRequest } from './helpers/http';
import { waitFor } from './helpers/waiting';

describe('the health rule', () => {
  const now = 100_000;
  const up = (slot: string) => ({ slot, listening: true, lastHeardAt: now - 500, failuresInARow: 0, lastExit: null });
  test('every slot listening and heard from recently: ok', () => {
    assert.deepEqual(evaluateHealth([up('0'), up('1')], 2, now, 5000), { ok: true, workersUp: 2, workersExpected: 2, reasons: [] });
  });
  test('a slot not listening, a silent one and a crash-looping one each say why', () => {
    const h = evaluateHealth(
      [
        { ...up('0'), listening: false },
        { ...up('1'), lastHeardAt: now - 9000 },
        { ...up('2'), failuresInARow: 4, lastExit: 'exit code 1' },
      ],
      3,
      now,
      5000,
    );
    assert.equal(h.ok, false);
    assert.equal(h.workersUp, 1);
    assert.deepEqual(h.reasons, ['acceptor 0: not listening', 'acceptor 1: silent for 9 s', 'acceptor 2: crash-looping (4 deaths in a row, last exit code 1)']);
  });
  test('fewer slots than WORKERS is not ok', () => {
    assert.equal(evaluateHealth([up('0')], 2, now, 5000).ok, false);
  });
});

describe('health of the real daemon', () => {
  const daemons: Daemon[] = [];
  after(async () => {
    for (const d of daemons) await d.destroy();
    for (const d of daemons) d.cleanup();
  });

  const workersGauge = async (d: Daemon) => Number(/^spamtrapd_workers (\S+)$/m.exec(await httpGet(d.metricsPort))?.[1]);

  test('a slot whose acceptor dies at every start: 503 naming it, spamtrapd_workers counts only the one that listens', async () => {
    const d = await startDaemon({ workers: 2, waitListening: 1, env: { SPAMTRAPD_FAILPOINTS: 'acceptor-exit-at-start=1' } });
    daemons.push(d);
    let body = '';
    await waitFor('/healthz names the crash-looping slot', async () => {
      const r = await httpRequest(d.metricsPort, '/healthz');
      body = r.body;
      return r.status === 503 && /acceptor 1: crash-looping/.test(r.body);
    }, 20_000, 100);
    assert.match(body, /^unavailable\nworkers_up 1\nworkers_expected 2\n/);
    assert.equal(await workersGauge(d), 1);
  });

  test('an acceptor frozen for longer than 5 s is not up; once it runs again, the trap is healthy', async () => {
    const d = await startDaemon({ workers: 2, env: { METRICS_PUSH_INTERVAL_MS: '200' } });
    daemons.push(d);
    await waitFor('healthy once both listen', async () => (await httpRequest(d.metricsPort, '/healthz')).status === 200, 10_000, 100);
    const [pid] = currentAcceptorPids(d.logs());
    process.kill(pid, 'SIGSTOP');
    try {
      await waitFor('503 while frozen', async () => {
        const r = await httpRequest(d.metricsPort, '/healthz');
        return r.status === 503 && /silent for/.test(r.body);
      }, 20_000, 200);
      assert.equal(await workersGauge(d), 1);
    } finally {
      process.kill(pid, 'SIGCONT');
    }
    await waitFor('200 again once it answers', async () => (await httpRequest(d.metricsPort, '/healthz')).status === 200, 10_000, 100);
    assert.equal(await workersGauge(d), 2);
  });
});
