/**
 * Runs one queue listing in a fresh process and reports what it cost the heap, beside what the queue's names alone
 * cost held in an array. Run with --expose-gc (and a small young generation, so garbage does not pass for growth).
 * argv: scan|pickup|visit3 QUEUE_DIR
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as v8 from 'node:v8';
import { DirQueueReader } from '../../src/dirqueue';
import { scanQueueDir } from '../../src/metrics/queue-gauges';

const gc = (globalThis as { gc?: () => void }).gc;
if (!gc) throw new Error('run with --expose-gc');

async function run(op: string, dir: string): Promise<unknown> {
  switch (op) {
    case 'scan':
      return scanQueueDir(dir);
    case 'pickup': {
      const job = await new DirQueueReader(dir, { warn: () => undefined }).pickup();
      await job?.returnToQueue();
      return job?.jobId ?? null;
    }
    case 'visit3': {
      const ids: string[] = [];
      await new DirQueueReader(dir, { warn: () => undefined }).visitAll((j) => void ids.push(j.jobId), { limit: 3 });
      return ids;
    }
    default:
      throw new Error(`unknown op ${op}`);
  }
}

async function main(): Promise<void> {
  const [op, dir] = process.argv.slice(2) as [string, string];
  gc!();
  const heap0 = process.memoryUsage().heapUsed;
  const total0 = v8.getHeapStatistics().total_heap_size;
  const result = await run(op, dir);
  // No gc before this reading: a listing held whole is still in the old generation, garbage or not.
  const heapGrowth = process.memoryUsage().heapUsed - heap0;
  const totalGrowth = v8.getHeapStatistics().total_heap_size - total0;
  gc!();
  const ref0 = process.memoryUsage().heapUsed;
  const names = fs.readdirSync(path.join(dir, 'queue'));
  const namesCost = process.memoryUsage().heapUsed - ref0;
  process.stdout.write(JSON.stringify({ result, heapGrowth, totalGrowth, namesCost, names: names.length }) + '\n');
}

main().catch((err) => {
  process.stderr.write(String(err?.stack ?? err) + '\n');
  process.exit(1);
});
