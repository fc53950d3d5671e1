import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { MetricsAggregator, MetricsServer, SERIES, startMetricsServer, startWorkerMetrics } from '../src/metrics';
import { httpRequest } from './helpers/http';
import { parseExposition, sampleValue } from './helpers/prometheus';

describe('metrics HTTP endpoint', () => {
  const agg = new MetricsAggregator({ primaryProcessMetrics: false });
  let server: MetricsServer;
  let port: number;
  before(async () => {
    server = await startMetricsServer({ host: '127.0.0.1', port: 0, aggregator: agg });
    port = server.address().port;
  });
  after(async () => {
    await server.close();
  });

  it('listens on the loopback address it was given', () => {
    assert.equal(server.address().address, '127.0.0.1');
    assert.ok(port > 0);
  });

  it('answers /healthz 503 while no worker is up, 200 once one is, 503 again after it exits', async () => {
    let r = await httpRequest(port, '/healthz');
    assert.equal(r.status, 503);
    assert.match(r.body, /^unavailable\nworkers_up 0\n$/);
    agg.workerStarted('relay', 4241);
    assert.equal((await httpRequest(port, '/healthz')).status, 503, 'the relay alone accepts no mail');
    agg.workerStarted(0, 4242);
    r = await httpRequest(port, '/healthz');
    assert.equal(r.status, 200);
    assert.equal(r.body, 'ok\nworkers_up 1\n');
    agg.workerExited(0, 4242);
    assert.equal((await httpRequest(port, '/healthz')).status, 503);
  });

  it('serves GET /metrics with the registry content type and the merged values', async () => {
    const sent: unknown[] = [];
    const w = startWorkerMetrics({ slot: 0, defaultMetrics: false, send: (m) => void sent.push(m) });
    w.stop();
    w.metrics.earlyTalkers.inc(3);
    await w.pushNow();
    for (const m of sent) agg.handleMessage(m);
    const r = await httpRequest(port, '/metrics?x=1');
    assert.equal(r.status, 200);
    assert.equal(r.headers['content-type'], 'text/plain; version=0.0.4; charset=utf-8');
    assert.equal(sampleValue(parseExposition(r.body), SERIES.earlyTalkers), 3);
    const head = await httpRequest(port, '/metrics', 'HEAD');
    assert.equal(head.status, 200);
    assert.equal(head.body, '');
  });

  it('answers 404 for other paths and 405 for other methods', async () => {
    assert.equal((await httpRequest(port, '/')).status, 404);
    assert.equal((await httpRequest(port, '/metrics/extra')).status, 404);
    const post = await httpRequest(port, '/metrics', 'POST');
    assert.equal(post.status, 405);
    assert.equal(post.headers.allow, 'GET, HEAD');
    assert.equal((await httpRequest(port, '/healthz', 'DELETE')).status, 405);
  });

  it('uses a supplied health function', async () => {
    const s2 = await startMetricsServer({ host: '127.0.0.1', port: 0, aggregator: agg, health: () => ({ workersUp: 7 }) });
    try {
      const r = await httpRequest(s2.address().port, '/healthz');
      assert.equal(r.status, 200);
      assert.equal(r.body, 'ok\nworkers_up 7\n');
    } finally {
      await s2.close();
    }
  });

  it('rejects when the port is taken', async () => {
    await assert.rejects(startMetricsServer({ host: '127.0.0.1', port, aggregator: agg }), /EADDRINUSE/);
  });
});
