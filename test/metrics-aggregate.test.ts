import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  MetricsAggregator,
  MetricsMessage,
  SnapshotMessage,
  startWorkerMetrics,
  WorkerMetricsHandle,
  SERIES,
} from '../src/metrics';
import { parseExposition, Sample, sampleValue } from './helpers/prometheus';

/** A worker registry in this process whose messages are captured instead of sent, with a pid the test chooses. */
function fakeWorker(slot: number | string, pid: number, defaultMetrics = false) {
  const sent: MetricsMessage[] = [];
  const handle: WorkerMetricsHandle = startWorkerMetrics({
    slot,
    intervalMs: 1000,
    defaultMetrics,
    send: (msg) => {
      sent.push({ ...msg, pid });
    },
  });
  handle.stop();
  return {
    handle,
    m: handle.metrics,
    pid,
    /** Pushes and hands every captured message to the aggregator. */
    async pushTo(agg: MetricsAggregator): Promise<void> {
      await handle.pushNow();
      for (const msg of sent.splice(0)) assert.equal(agg.handleMessage(msg), true);
    },
    /** Pushes but keeps the snapshot, to deliver it later (a final push that arrives after the exit event). */
    async pushHeld(): Promise<SnapshotMessage> {
      await handle.pushNow();
      const snaps = sent.splice(0).filter((x): x is SnapshotMessage => x.type === 'metrics:snapshot');
      return snaps[snaps.length - 1]!;
    },
  };
}

async function scrape(agg: MetricsAggregator): Promise<Sample[]> {
  return parseExposition((await agg.metrics()).body);
}

const ACCEPTED = SERIES.messagesAccepted;

describe('MetricsAggregator merging', () => {
  it('sums the trap counters over workers without a worker label', async () => {
    const agg = new MetricsAggregator({ primaryProcessMetrics: false });
    const a = fakeWorker(0, 100);
    const b = fakeWorker(1, 200);
    a.m.messagesAccepted.inc({ queue: 'incoming' }, 3);
    b.m.messagesAccepted.inc({ queue: 'incoming' }, 4);
    b.m.messagesAccepted.inc({ queue: 'forward-mx-25' }, 2);
    a.m.messageBytes.inc({ queue: 'incoming' }, 1000);
    b.m.messageBytes.inc({ queue: 'incoming' }, 500);
    a.m.recipients.inc({ code: '250' }, 5);
    b.m.recipients.inc({ code: '550' });
    a.m.connectionsActive.set(2);
    b.m.connectionsActive.set(3);
    a.m.connectionsTotal.inc(10);
    await a.pushTo(agg);
    await b.pushTo(agg);
    const s = await scrape(agg);
    assert.equal(sampleValue(s, ACCEPTED, { queue: 'incoming' }), 7);
    assert.equal(sampleValue(s, ACCEPTED, { queue: 'forward-mx-25' }), 2);
    assert.equal(sampleValue(s, SERIES.messageBytes, { queue: 'incoming' }), 1500);
    assert.equal(sampleValue(s, SERIES.recipients, { code: '250' }), 5);
    assert.equal(sampleValue(s, SERIES.recipients, { code: '550' }), 1);
    assert.equal(sampleValue(s, SERIES.recipients, { code: '421' }), 0);
    assert.equal(sampleValue(s, SERIES.rejections, { reason: 'size' }), 0);
    assert.equal(sampleValue(s, SERIES.connectionsActive), 5);
    assert.equal(sampleValue(s, SERIES.connectionsTotal), 10);
    for (const x of s.filter((x) => x.name.startsWith('spamtrapd_') && x.name !== SERIES.snapshotAgeSeconds)) {
      assert.equal(x.labels.worker, undefined, `${x.name} must be summed over workers`);
    }
  });

  it('keeps per-worker process metrics apart by worker label, including those prom-client would average or omit', async () => {
    const agg = new MetricsAggregator({ primaryProcessMetrics: false });
    const a = fakeWorker(0, 100, true);
    const b = fakeWorker(1, 200, true);
    const r = fakeWorker('relay', 300, true);
    await a.pushTo(agg);
    await b.pushTo(agg);
    await r.pushTo(agg);
    const s = await scrape(agg);
    for (const name of [
      'spamtrapd_process_resident_memory_bytes',
      'spamtrapd_process_cpu_seconds_total',
      'spamtrapd_nodejs_heap_size_used_bytes',
      'spamtrapd_process_open_fds',
      'spamtrapd_process_start_time_seconds', // prom-client: aggregator 'omit'
      'spamtrapd_nodejs_eventloop_lag_p99_seconds', // prom-client: aggregator 'average'
    ]) {
      const workers = s.filter((x) => x.name === name).map((x) => x.labels.worker);
      assert.deepEqual(workers.sort(), ['0', '1', 'relay'], name);
    }
    // The value is the worker's own, not a sum: each process reports its own resident memory, far below 3 processes'.
    const rss = s.filter((x) => x.name === 'spamtrapd_process_resident_memory_bytes').map((x) => x.value);
    const mine = process.memoryUsage().rss;
    for (const v of rss) assert.ok(v > 0 && v < 2 * mine, `rss ${v} vs this process ${mine}`);
  });

  it('merges histograms bucket by bucket', async () => {
    const agg = new MetricsAggregator({ primaryProcessMetrics: false });
    const a = fakeWorker(0, 100);
    const b = fakeWorker(1, 200);
    a.m.spoolWriteSeconds.observe(0.0007);
    a.m.spoolWriteSeconds.observe(0.003);
    b.m.spoolWriteSeconds.observe(0.003);
    b.m.spoolWriteSeconds.observe(10);
    await a.pushTo(agg);
    await b.pushTo(agg);
    const s = await scrape(agg);
    const bucket = (le: string): number | undefined => sampleValue(s, `${SERIES.spoolWriteSeconds}_bucket`, { le });
    assert.equal(bucket('0.0005'), 0);
    assert.equal(bucket('0.001'), 1);
    assert.equal(bucket('0.0025'), 1);
    assert.equal(bucket('0.005'), 3);
    assert.equal(bucket('5'), 3);
    assert.equal(bucket('+Inf'), 4);
    assert.equal(sampleValue(s, `${SERIES.spoolWriteSeconds}_count`), 4);
    assert.ok(Math.abs(sampleValue(s, `${SERIES.spoolWriteSeconds}_sum`)! - 10.0067) < 1e-9);
    assert.equal(s.filter((x) => x.name === `${SERIES.spoolWriteSeconds}_bucket`).length, 14);
  });
});

describe('MetricsAggregator retirement', () => {
  it('keeps a dead incarnation counters and histograms, drops its gauges, and adds the new incarnation from zero', async () => {
    const agg = new MetricsAggregator({ primaryProcessMetrics: false });
    const old = fakeWorker(0, 100, true);
    const other = fakeWorker(1, 200);
    agg.workerStarted(0, 100);
    agg.workerStarted(1, 200);
    old.m.messagesAccepted.inc({ queue: 'incoming' }, 5);
    old.m.sessionSeconds.observe(0.2);
    old.m.connectionsActive.set(4);
    other.m.messagesAccepted.inc({ queue: 'incoming' }, 1);
    await old.pushTo(agg);
    await other.pushTo(agg);
    let s = await scrape(agg);
    assert.equal(sampleValue(s, ACCEPTED, { queue: 'incoming' }), 6);
    assert.equal(sampleValue(s, SERIES.connectionsActive), 4);
    const cpuBefore = sampleValue(s, 'spamtrapd_process_cpu_seconds_total', { worker: '0' })!;

    agg.workerExited(0, 100);
    s = await scrape(agg);
    assert.equal(sampleValue(s, ACCEPTED, { queue: 'incoming' }), 6, 'counter kept after exit');
    assert.equal(sampleValue(s, `${SERIES.sessionSeconds}_count`), 1, 'histogram kept after exit');
    assert.equal(sampleValue(s, SERIES.connectionsActive), 0, 'gauge of the dead process dropped');
    assert.equal(sampleValue(s, 'spamtrapd_process_resident_memory_bytes', { worker: '0' }), undefined);
    assert.equal(sampleValue(s, 'spamtrapd_process_cpu_seconds_total', { worker: '0' }), cpuBefore);
    assert.equal(sampleValue(s, SERIES.workers), 1);

    const fresh = fakeWorker(0, 101, true);
    agg.workerStarted(0, 101);
    await fresh.pushTo(agg); // starts from zero
    s = await scrape(agg);
    assert.equal(sampleValue(s, ACCEPTED, { queue: 'incoming' }), 6, 'new incarnation at zero does not reset the total');
    assert.ok(sampleValue(s, 'spamtrapd_process_cpu_seconds_total', { worker: '0' })! >= cpuBefore);
    fresh.m.messagesAccepted.inc({ queue: 'incoming' }, 2);
    fresh.m.sessionSeconds.observe(100);
    await fresh.pushTo(agg);
    s = await scrape(agg);
    assert.equal(sampleValue(s, ACCEPTED, { queue: 'incoming' }), 8);
    assert.equal(sampleValue(s, `${SERIES.sessionSeconds}_count`), 2);
    assert.equal(sampleValue(s, `${SERIES.sessionSeconds}_bucket`, { le: '0.25' }), 1);
    assert.equal(sampleValue(s, `${SERIES.sessionSeconds}_bucket`, { le: '120' }), 2);
    assert.equal(sampleValue(s, SERIES.workerRestarts), 1);
    assert.equal(sampleValue(s, SERIES.workers), 2);
    assert.equal(s.filter((x) => x.name === 'spamtrapd_process_resident_memory_bytes').length, 1);
  });

  it('takes a final push that arrives after the exit event, and ignores an out-of-order older one', async () => {
    const agg = new MetricsAggregator({ primaryProcessMetrics: false });
    const w = fakeWorker(0, 100);
    agg.workerStarted(0, 100);
    w.m.messagesAccepted.inc({ queue: 'incoming' }, 5);
    const older = await w.pushHeld();
    await w.pushTo(agg);
    w.m.messagesAccepted.inc({ queue: 'incoming' }, 3);
    const final = await w.pushHeld();
    agg.workerExited(0, 100);
    assert.equal(sampleValue(await scrape(agg), ACCEPTED, { queue: 'incoming' }), 5);
    agg.handleMessage(final);
    assert.equal(sampleValue(await scrape(agg), ACCEPTED, { queue: 'incoming' }), 8);
    agg.handleMessage(older);
    assert.equal(sampleValue(await scrape(agg), ACCEPTED, { queue: 'incoming' }), 8);
    // Two replacements later the slot still adds up, and the late message of a long-folded pid changes nothing.
    const w2 = fakeWorker(0, 101);
    w2.m.messagesAccepted.inc({ queue: 'incoming' }, 1);
    await w2.pushTo(agg);
    const w3 = fakeWorker(0, 102);
    w3.m.messagesAccepted.inc({ queue: 'incoming' }, 1);
    await w3.pushTo(agg);
    agg.handleMessage(final);
    assert.equal(sampleValue(await scrape(agg), ACCEPTED, { queue: 'incoming' }), 10);
  });

  it('counts the final push of a process that exited before its first snapshot arrived, as retired', async () => {
    const agg = new MetricsAggregator({ primaryProcessMetrics: false });
    agg.workerStarted(0, 100);
    const w = fakeWorker(0, 100, true);
    w.m.messagesAccepted.inc({ queue: 'incoming' }, 2);
    w.m.connectionsActive.set(1);
    const final = await w.pushHeld();
    agg.workerExited(0, 100);
    agg.handleMessage(final);
    const s = await scrape(agg);
    assert.equal(sampleValue(s, ACCEPTED, { queue: 'incoming' }), 2);
    assert.equal(sampleValue(s, SERIES.connectionsActive), 0);
    assert.equal(sampleValue(s, 'spamtrapd_process_resident_memory_bytes', { worker: '0' }), undefined);
    assert.equal(sampleValue(s, SERIES.snapshotAgeSeconds, { worker: '0' }), undefined, 'not shown as a live worker');
  });

  it('treats a snapshot from a new pid as a replacement even before the exit is reported', async () => {
    const agg = new MetricsAggregator({ primaryProcessMetrics: false });
    const a = fakeWorker(0, 100);
    a.m.messagesAccepted.inc({ queue: 'incoming' }, 7);
    await a.pushTo(agg);
    const b = fakeWorker(0, 101);
    await b.pushTo(agg);
    assert.equal(sampleValue(await scrape(agg), ACCEPTED, { queue: 'incoming' }), 7);
    agg.workerExited(0, 100); // late, must not retire the new one
    assert.notEqual(sampleValue(await scrape(agg), SERIES.snapshotAgeSeconds, { worker: '0' }), undefined, 'still live');
    b.m.messagesAccepted.inc({ queue: 'incoming' }, 1);
    await b.pushTo(agg);
    assert.equal(sampleValue(await scrape(agg), ACCEPTED, { queue: 'incoming' }), 8);
  });

  it('retires whatever the slot has on record when the exit comes without a pid', async () => {
    const agg = new MetricsAggregator({ primaryProcessMetrics: false, now: () => 1000 });
    agg.workerStarted(0, 100);
    const a = fakeWorker(0, 100);
    a.m.messagesAccepted.inc({ queue: 'incoming' }, 4);
    a.m.connectionsActive.set(2);
    await a.pushTo(agg);
    agg.workerExited(0);
    const s = await scrape(agg);
    assert.equal(sampleValue(s, ACCEPTED, { queue: 'incoming' }), 4);
    assert.equal(sampleValue(s, SERIES.connectionsActive), 0);
    assert.equal(sampleValue(s, SERIES.workers), 0);
  });

  it('never lets a total go backwards over a random history of pushes, deaths and late final pushes', async () => {
    let seed = 12345;
    const rnd = (n: number): number => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed % n;
    };
    const agg = new MetricsAggregator({ primaryProcessMetrics: false });
    let nextPid = 1000;
    const slots = [0, 1, 2].map((slot) => ({ slot, w: fakeWorker(slot, nextPid++), counted: 0 }));
    for (const s of slots) agg.workerStarted(s.slot, s.w.pid);
    let pushedTotal = 0; // what every process counted up to its last delivered snapshot
    const delivered = new Map<number, number>(); // pid -> value in its last delivered snapshot
    let last = 0;
    for (let step = 0; step < 300; step++) {
      const s = slots[rnd(3)]!;
      const op = rnd(10);
      if (op < 5) {
        const n = 1 + rnd(5);
        s.w.m.messagesAccepted.inc({ queue: 'incoming' }, n);
        s.counted += n;
      } else if (op < 8) {
        await s.w.pushTo(agg);
        pushedTotal += s.counted - (delivered.get(s.w.pid) ?? 0);
        delivered.set(s.w.pid, s.counted);
      } else {
        // The process dies; half the time its final push arrives, sometimes after the exit event.
        const final = rnd(2) === 0 ? await s.w.pushHeld() : undefined;
        const afterExit = rnd(2) === 0;
        if (final && !afterExit) agg.handleMessage(final);
        agg.workerExited(s.slot, s.w.pid);
        if (final && afterExit) agg.handleMessage(final);
        if (final) {
          pushedTotal += s.counted - (delivered.get(s.w.pid) ?? 0);
          delivered.set(s.w.pid, s.counted);
        }
        s.w = fakeWorker(s.slot, nextPid++);
        s.counted = 0;
        agg.workerStarted(s.slot, s.w.pid);
      }
      const v = sampleValue(await scrape(agg), ACCEPTED, { queue: 'incoming' }) ?? 0;
      assert.ok(v >= last, `step ${step}: ${v} < ${last}`);
      assert.equal(v, pushedTotal, `step ${step}`);
      last = v;
    }
    assert.ok(last > 100, 'the history did count something');
    assert.equal(sampleValue(await scrape(agg), SERIES.workerRestarts)! > 5, true);
  });
});

describe('MetricsAggregator scrape', () => {
  it('answers in under 100 ms from stored snapshots while a worker never answers', async () => {
    const agg = new MetricsAggregator();
    const ws = [0, 1, 2, 3].map((slot) => fakeWorker(slot, 100 + slot, true));
    for (const w of ws) {
      agg.workerStarted(Number(w.handle.slot), w.pid);
      w.m.messagesAccepted.inc({ queue: 'incoming' }, 1);
      await w.pushTo(agg);
    }
    // Slot 4 is running (started) but has never pushed and never will, like a worker stuck before its first push.
    agg.workerStarted(4, 999);
    await agg.metrics(); // warm-up: first-call JIT costs are not what the requirement is about
    const t0 = process.hrtime.bigint();
    const { body, contentType } = await agg.metrics();
    const ms = Number(process.hrtime.bigint() - t0) / 1e6;
    assert.ok(ms < 100, `scrape took ${ms} ms`);
    assert.match(contentType, /^text\/plain; version=0\.0\.4/);
    const s = parseExposition(body);
    assert.equal(sampleValue(s, ACCEPTED, { queue: 'incoming' }), 4);
    assert.equal(sampleValue(s, SERIES.workers), 5);
    assert.ok(sampleValue(s, 'spamtrapd_process_resident_memory_bytes', { worker: 'primary' })! > 0);
  });
});
