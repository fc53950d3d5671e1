import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Registry } from 'prom-client';
import {
  dirQueueScanner,
  MetricsAggregator,
  parseStampSeconds,
  QueueGauges,
  QueueScanResult,
  scanPeriodMs,
  scanQueueDir,
  SERIES,
} from '../src/metrics';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseExposition, sampleValue } from './helpers/prometheus';

let tmp: string;
before(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'spamtrapd-qg-'));
});
after(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

function makeQueue(name: string, files: string[]): string {
  const dir = path.join(tmp, name);
  fs.mkdirSync(path.join(dir, 'queue'), { recursive: true });
  for (const f of files) fs.writeFileSync(path.join(dir, 'queue', f), '');
  return dir;
}

describe('queue directory scan', () => {
  it('parses a STAMP as UTC with microseconds', () => {
    assert.equal(parseStampSeconds('20240101120000123456'), Date.UTC(2024, 0, 1, 12, 0, 0) / 1000 + 0.123456);
    assert.equal(parseStampSeconds('19700101000001000000'), 1);
  });

  it('takes the minimum STAMP over all priorities, not the first name in sort order', async () => {
    const dir = makeQueue('prio', [
      '00.20240301000000000000.AAAA', // sorts first (priority 00) but is not the oldest
      '50.20240101120000123456.DNjkw.1234.23251', // the oldest, retry-suffixed name
      '50.20240201000000000000.DNjkw',
      '99.20240102000000000000.B+_9',
      '.hidden', // not a job name: consumers skip names not starting with a digit
      'README',
      '5.20240101000000000000.short-priority',
    ]);
    const r = await scanQueueDir(dir);
    assert.equal(r.jobs, 4);
    assert.equal(r.oldestSeconds, parseStampSeconds('20240101120000123456'));
  });

  it('reports an empty queue/ as no jobs and no oldest', async () => {
    assert.deepEqual(await scanQueueDir(makeQueue('empty', [])), { jobs: 0, oldestSeconds: null });
  });

  it('reports a queue whose directory does not exist yet as empty', async () => {
    assert.deepEqual(await dirQueueScanner(tmp)('never-written'), { jobs: 0, oldestSeconds: null });
  });

  it('fails on other errors instead of pretending the queue is empty', async () => {
    const dir = path.join(tmp, 'notadir');
    fs.mkdirSync(dir);
    fs.writeFileSync(path.join(dir, 'queue'), 'a file where a directory should be');
    await assert.rejects(scanQueueDir(dir), /ENOTDIR/);
  });
});

describe('QueueGauges', () => {
  function gauges(scan: (q: string) => Promise<QueueScanResult>, nowMs: { t: number }) {
    const registry = new Registry();
    const errors: unknown[] = [];
    const qg = new QueueGauges({
      registry,
      scan,
      queues: ['incoming'],
      scanIntervalMs: 5000,
      now: () => nowMs.t,
      onError: (_q, e) => errors.push(e),
    });
    const read = async () => parseExposition(await registry.metrics());
    return { qg, read, errors };
  }

  it('counts enqueues between scans and lets a scan replace the count (consumers pickups)', async () => {
    const clock = { t: 1_700_000_100_000 };
    let result: QueueScanResult = { jobs: 0, oldestSeconds: null };
    const { qg, read } = gauges(async () => result, clock);
    let s = await read();
    assert.equal(sampleValue(s, SERIES.queueJobs, { queue: 'incoming' }), 0);
    assert.equal(sampleValue(s, SERIES.queueOldestSeconds, { queue: 'incoming' }), 0);

    qg.recordEnqueue('incoming', 1_700_000_090);
    qg.recordEnqueue('incoming', 1_700_000_095);
    qg.recordEnqueue('forward-mx-25', 1_700_000_099);
    s = await read();
    assert.equal(sampleValue(s, SERIES.queueJobs, { queue: 'incoming' }), 2);
    assert.equal(sampleValue(s, SERIES.queueOldestSeconds, { queue: 'incoming' }), 10);
    assert.equal(sampleValue(s, SERIES.queueJobs, { queue: 'forward-mx-25' }), 1);

    // A consumer took the older job; the scan sees one left.
    result = { jobs: 1, oldestSeconds: 1_700_000_095 };
    await qg.scanNow();
    clock.t += 5000;
    s = await read();
    assert.equal(sampleValue(s, SERIES.queueJobs, { queue: 'incoming' }), 1);
    assert.equal(sampleValue(s, SERIES.queueOldestSeconds, { queue: 'incoming' }), 10);
  });

  it('does not count twice a job reported after the scan that already listed it', async () => {
    const clock = { t: 1_700_000_100_000 };
    const { qg, read } = gauges(async () => ({ jobs: 3, oldestSeconds: 1_700_000_000 }), clock);
    await qg.scanNow();
    qg.recordEnqueue('incoming', 1_700_000_099.5); // committed before the scan began, event arrived late
    qg.recordEnqueue('incoming', 1_700_000_100.5); // committed after
    const s = await read();
    assert.equal(sampleValue(s, SERIES.queueJobs, { queue: 'incoming' }), 4);
  });

  it('adds jobs committed while a scan was listing the directory', async () => {
    const clock = { t: 1_700_000_100_000 };
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const { qg, read } = gauges(async () => {
      await gate;
      return { jobs: 2, oldestSeconds: 1_700_000_050 };
    }, clock);
    const scanning = qg.scanNow();
    qg.recordEnqueue('incoming', 1_700_000_099); // before the scan started: the listing has it
    qg.recordEnqueue('incoming', 1_700_000_100.2); // during the scan: may be missed by the listing
    assert.equal(qg.scanNow(), scanning, 'a second request joins the running scan');
    release();
    await scanning;
    const s = await read();
    assert.equal(sampleValue(s, SERIES.queueJobs, { queue: 'incoming' }), 3);
    assert.equal(sampleValue(s, SERIES.queueOldestSeconds, { queue: 'incoming' }), 50);
  });

  it('keeps the counts when a scan fails and reports the error', async () => {
    const clock = { t: 1_700_000_100_000 };
    const { qg, read, errors } = gauges(async () => {
      throw new Error('EACCES');
    }, clock);
    qg.recordEnqueue('incoming', 1_700_000_099);
    await qg.scanNow();
    assert.equal(errors.length, 1);
    assert.equal(sampleValue(await read(), SERIES.queueJobs, { queue: 'incoming' }), 1);
  });

  it('scans a real spool through the aggregator and takes enqueue messages from workers', async () => {
    makeQueue('spool/incoming', ['50.20240101120000000000.AAAA', '10.20240101130000000000.BBBB']);
    const clock = { t: Date.UTC(2024, 0, 1, 12, 0, 30) };
    const agg = new MetricsAggregator({
      primaryProcessMetrics: false,
      now: () => clock.t,
      queues: { scan: dirQueueScanner(path.join(tmp, 'spool')), queues: ['incoming', 'deadletter'] },
    });
    await agg.queueGauges!.scanNow();
    clock.t += 10_000;
    assert.equal(
      agg.handleMessage({ type: 'metrics:enqueued', slot: '0', pid: 1, queues: { deadletter: [clock.t / 1000 - 5] } }),
      true,
    );
    const s = parseExposition((await agg.metrics()).body);
    assert.equal(sampleValue(s, SERIES.queueJobs, { queue: 'incoming' }), 2);
    assert.equal(sampleValue(s, SERIES.queueOldestSeconds, { queue: 'incoming' }), 40);
    assert.equal(sampleValue(s, SERIES.queueJobs, { queue: 'deadletter' }), 1);
    assert.equal(sampleValue(s, SERIES.queueOldestSeconds, { queue: 'deadletter' }), 5);
  });

  it('scans every interval while scans are quick, and stretches the period to 50 times a slow scan', async () => {
    assert.equal(scanPeriodMs(5000, 20), 5000);
    assert.equal(scanPeriodMs(5000, 700), 35_000, 'a 0.7 s scan of 1M names runs every 35 s: 2 % of the time');

    let scans = 0;
    let scanMs = 0;
    const mono = { t: 0 };
    const qg = new QueueGauges({
      registry: new Registry(),
      queues: ['incoming'],
      scanIntervalMs: 50,
      monotonicNow: () => mono.t,
      scan: async () => {
        scans++;
        mono.t += scanMs; // the scan's duration as its timer sees it; no real waiting, so a busy machine cannot skew it
        return { jobs: scans, oldestSeconds: null };
      },
    });
    qg.start();
    await sleep(600);
    assert.ok(scans >= 3, `quick scans follow the interval: ${scans} in 600 ms`);
    assert.deepEqual(qg.scanTiming(), { lastScanMs: 0, periodMs: 50 });

    scanMs = 40; // 50 x 40 ms = 2 s between scan starts
    while (qg.scanTiming().lastScanMs !== 40) await sleep(10);
    const atSlow = scans;
    assert.deepEqual(qg.scanTiming(), { lastScanMs: 40, periodMs: 2000 });
    await sleep(1000);
    assert.ok(scans - atSlow <= 1, `slow scans are spaced out: ${scans - atSlow} more in 1 s`);
    assert.equal(qg.values().get('incoming')!.jobs, scans, 'the last scan still set the count');

    qg.stop();
    const atStop = scans;
    qg.start();
    qg.stop();
    await sleep(200);
    assert.ok(scans - atStop <= 1, 'stop() ends the loop, even right after a restart');
  });
});
