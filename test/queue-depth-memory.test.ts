/**
 * Queue depth costs no memory: the metrics scan, pickup and a limited walk over a queue of 200,000 names each grow
 * the heap by a small fraction of what the names cost held in an array, and still count and order exactly. Each
 * listing runs in a child process of its own (test/helpers/queue-depth-child.ts) so that its heap is measured alone.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { DirQueueReader } from '../src/dirqueue';
import { parseStampSeconds } from '../src/metrics';

const DEPTH = 200_000;
// tmpfs when there is one: 200k links on a disk would make the test slow, not more telling.
const BASE = fs.existsSync('/dev/shm') ? '/dev/shm' : os.tmpdir();

interface ChildReport {
  result: unknown;
  heapGrowth: number;
  totalGrowth: number;
  namesCost: number;
  names: number;
}

async function measure(op: string, dir: string): Promise<ChildReport> {
  const child = path.join(__dirname, 'helpers', 'queue-depth-child.js');
  const { stdout } = await promisify(execFile)(process.execPath, ['--expose-gc', '--max-semi-space-size=1', child, op, dir], {
    timeout: 120_000,
  });
  return JSON.parse(stdout) as ChildReport;
}

function assertBounded(r: ChildReport): void {
  const mb = (n: number) => `${(n / 1e6).toFixed(1)} MB`;
  const detail = `heap +${mb(r.heapGrowth)}, committed +${mb(r.totalGrowth)}, the ${r.names} names alone ${mb(r.namesCost)}`;
  assert.ok(r.namesCost > 5e6, `the reference is meaningful: ${detail}`);
  assert.ok(r.heapGrowth < r.namesCost / 4, detail);
  assert.ok(r.totalGrowth < r.namesCost / 4, detail);
}

/** One control file and one data file, hard-linked under every name: a real queue of DEPTH jobs in seconds. */
function deepQueue(dir: string, names: string[]): void {
  fs.mkdirSync(path.join(dir, 'queue'), { recursive: true });
  const data = path.join(dir, 'data', 'the-message');
  fs.mkdirSync(path.dirname(data), { recursive: true });
  fs.writeFileSync(data, 'hello\n');
  const ctrl = path.join(dir, 'ctrl');
  fs.writeFileSync(ctrl, `QDFN: ${data}\nQDSB: 6\nQSTT: 1704110400\nQSTM: 0\nQSHN: trap1\n`);
  for (const n of names) fs.linkSync(ctrl, path.join(dir, 'queue', n));
  fs.unlinkSync(ctrl);
}

function fillerName(i: number): string {
  // Priorities 10..99, stamps in creation order: neither the directory order nor the first priority is the answer.
  return `${10 + (i % 90)}.2024010112${String(i).padStart(10, '0')}.F${i % 7}`;
}

describe('queue depth costs no memory', () => {
  let dir: string;
  const locked = '00.20240102000000000001.REAL';
  const free = '00.20240102000000000002.REAL';
  const oldest = '99.20200101000000000000.OLD'; // oldest STAMP, last in pickup order

  before(() => {
    dir = fs.mkdtempSync(path.join(BASE, 'spamtrapd-depth-'));
    const names = [oldest, free, locked];
    for (let i = names.length; i < DEPTH; i++) names.push(fillerName(i));
    deepQueue(dir, names);
    fs.writeFileSync(path.join(dir, 'queue', 'README'), 'not a job');
    // A fresh lock of another host: pickup must pass over the first job in order and take the second.
    fs.mkdirSync(path.join(dir, 'active'));
    fs.writeFileSync(path.join(dir, 'active', locked), 'elsewhere.example\n1\n');
  });

  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('the metrics scan counts 200,000 jobs exactly and finds the oldest STAMP with bounded heap', async () => {
    const r = await measure('scan', dir);
    assert.deepEqual(r.result, { jobs: DEPTH, oldestSeconds: parseStampSeconds('20200101000000000000') });
    assertBounded(r);
  });

  it('pickup on a 200,000-job queue takes the first unlocked job in order with bounded heap', async () => {
    const r = await measure('pickup', dir);
    assert.equal(r.result, free);
    assertBounded(r);
  });

  it('visitAll with a limit hands out the first jobs in order with bounded heap', async () => {
    const r = await measure('visit3', dir);
    assert.deepEqual(r.result, [locked, free, '10.20240101120000000090.F6']);
    assertBounded(r);
  });
});

describe('visitAll order', () => {
  // Passes of more than one page are sortedNames' own test (test/dirqueue-dir-stream.test.ts, pages of 1 to 1024).
  it('walks jobs of several priorities, created out of order, in byte order, each once', async () => {
    const dir = fs.mkdtempSync(path.join(BASE, 'spamtrapd-visit-'));
    try {
      const names = Array.from({ length: 2000 }, (_, i) => `${['50', '00', '99', '07'][i % 4]}.2024010112${String((i * 7919) % 2000).padStart(10, '0')}.V`);
      deepQueue(dir, names);
      const seen: string[] = [];
      await new DirQueueReader(dir, { warn: () => undefined }).visitAll((j) => void seen.push(j.jobId));
      assert.deepEqual(seen, [...names].sort());
      const unordered: string[] = [];
      await new DirQueueReader(dir, { warn: () => undefined }).visitAll((j) => void unordered.push(j.jobId), { ordered: false });
      assert.deepEqual(unordered.sort(), seen);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
