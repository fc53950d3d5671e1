/**
 * Enqueues per second of 4 KB messages into one IPC::DirQueue queue, fsync off and on, one process.
 * `concurrency` jobs are in flight at once, as parallel SMTP sessions would have them. Each round uses a fresh
 * queue under os.tmpdir() (set TMPDIR to measure another file system); run: `node dist/bench/dirqueue-enqueue.js`.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { DirQueueWriter } from '../src/dirqueue';

interface Scenario {
  name: string;
  fsync: boolean;
  concurrency: number;
  jobsPerRound: number;
}

const ROUNDS = 5;
const SIZE = 4096;
const scenarios: Scenario[] = [
  { name: 'fsync off, 1 at a time', fsync: false, concurrency: 1, jobsPerRound: 2000 },
  { name: 'fsync off, 16 in flight', fsync: false, concurrency: 16, jobsPerRound: 4000 },
  { name: 'fsync on, 1 at a time', fsync: true, concurrency: 1, jobsPerRound: 200 },
  { name: 'fsync on, 16 in flight', fsync: true, concurrency: 16, jobsPerRound: 800 },
];

async function round(s: Scenario, body: Buffer): Promise<number> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'spamtrapd-bench-'));
  try {
    const w = new DirQueueWriter(path.join(dir, 'incoming'), { fsync: s.fsync });
    const meta = { rcpt: 'trap@example.org', helo: 'bench', ip: '192.0.2.1' };
    let next = 0;
    const t0 = process.hrtime.bigint();
    const lane = async () => {
      while (next++ < s.jobsPerRound) {
        // Two writes, like a Received header followed by the DATA stream.
        const job = await w.begin({ metadata: meta });
        await job.write(body.subarray(0, 100));
        await job.write(body.subarray(100));
        await job.commit();
      }
    };
    await Promise.all(Array.from({ length: s.concurrency }, lane));
    const secs = Number(process.hrtime.bigint() - t0) / 1e9;
    return s.jobsPerRound / secs;
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const body = Buffer.alloc(SIZE, 'x');
  console.log(`dirqueue enqueue benchmark: ${SIZE}-byte messages, ${ROUNDS} rounds, tmpdir ${os.tmpdir()}, node ${process.version}, ${os.cpus().length} CPUs`);
  for (const s of scenarios) {
    const rates: number[] = [];
    for (let i = 0; i < ROUNDS; i++) rates.push(await round(s, body));
    rates.sort((a, b) => a - b);
    const fmt = (n: number) => n.toFixed(0).padStart(6);
    console.log(
      `${s.name.padEnd(26)} ${String(s.jobsPerRound).padStart(5)} jobs/round  median ${fmt(rates[Math.floor(ROUNDS / 2)] as number)}/s  min ${fmt(rates[0] as number)}/s  max ${fmt(rates[ROUNDS - 1] as number)}/s`,
    );
  }
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
