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
  scanQueueDir,
  SERIES,
} from '../src/metrics';
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
});
