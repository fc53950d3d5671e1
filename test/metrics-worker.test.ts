import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Registry } from 'prom-client';
import {
  createWorkerMetrics,
  isMetricsMessage,
  MetricsMessage,
  RECIPIENT_CODES,
  SERIES,
  SnapshotMessage,
  startWorkerMetrics,
} from '../src/metrics';

describe('worker-side metrics', () => {
  it('refuses a push interval above 1 s (a SIGKILL may lose one interval)', () => {
    assert.throws(() => startWorkerMetrics({ slot: 0, intervalMs: 1001, send: () => undefined }), RangeError);
    assert.throws(() => startWorkerMetrics({ slot: 0, intervalMs: 0, send: () => undefined }), RangeError);
  });

  it('pushes on its own every interval with increasing seq and the slot as worker label', async () => {
    const got: MetricsMessage[] = [];
    const w = startWorkerMetrics({ slot: 3, intervalMs: 20, send: (m) => void got.push(m) });
    try {
      const deadline = Date.now() + 3000;
      while (got.length < 3 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    } finally {
      w.stop();
    }
    const snaps = got.filter((m): m is SnapshotMessage => m.type === 'metrics:snapshot');
    assert.ok(snaps.length >= 3, `${snaps.length} snapshots`);
    for (let i = 1; i < snaps.length; i++) assert.ok(snaps[i]!.seq > snaps[i - 1]!.seq);
    const s = snaps[0]!;
    assert.equal(s.slot, '3');
    assert.equal(s.pid, process.pid);
    assert.ok(isMetricsMessage(JSON.parse(JSON.stringify(s))), 'survives the JSON of cluster IPC');
    const rss = s.metrics.find((m) => m.name === 'spamtrapd_process_resident_memory_bytes');
    assert.deepEqual(rss?.values.map((v) => v.labels), [{ worker: '3' }]);
    const accepted = s.metrics.find((m) => m.name === SERIES.messagesAccepted);
    assert.equal(accepted?.type, 'counter');
    assert.ok(s.metrics.every((m) => m.values.every((v) => Number.isFinite(v.value))));
  });

  it('sends enqueue events batched, before the snapshot, exactly once', async () => {
    const got: MetricsMessage[] = [];
    const w = startWorkerMetrics({ slot: 0, defaultMetrics: false, send: (m) => void got.push(m) });
    w.stop();
    w.reportEnqueue('incoming', 100.5);
    w.reportEnqueue('incoming', 101);
    w.reportEnqueue('deadletter', 99);
    await w.pushNow();
    await w.pushNow();
    assert.deepEqual(
      got.map((m) => m.type),
      ['metrics:enqueued', 'metrics:snapshot', 'metrics:snapshot'],
    );
    assert.deepEqual((got[0] as Extract<MetricsMessage, { type: 'metrics:enqueued' }>).queues, {
      incoming: [100.5, 101],
      deadletter: [99],
    });
  });

  it('recognises only its own messages', () => {
    assert.equal(isMetricsMessage({ type: 'acceptor:listening', slot: 0 }), false);
    assert.equal(isMetricsMessage(null), false);
    assert.equal(isMetricsMessage({ type: 'metrics:snapshot', slot: '0', pid: 1, seq: 1 }), false);
    assert.equal(isMetricsMessage({ type: 'metrics:enqueued', slot: '0', pid: 1, queues: {} }), true);
  });

  it('defines histograms (never summaries) and zero-initialises recipient codes', async () => {
    const reg = new Registry();
    const m = createWorkerMetrics(reg);
    const json = await reg.getMetricsAsJSON();
    assert.ok(json.every((x) => String(x.type) !== 'summary'));
    assert.equal(String(json.find((x) => x.name === SERIES.spoolWriteSeconds)?.type), 'histogram');
    assert.equal(String(json.find((x) => x.name === SERIES.sessionSeconds)?.type), 'histogram');
    const codes = (await m.recipients.get()).values.map((v) => String(v.labels.code));
    assert.deepEqual(codes, [...RECIPIENT_CODES]);
  });
});
