/**
 * A consumer of the two-host harness on spamtrapd's own reader (the one `spamtrapd queue pickup` uses), in one
 * long-running process: the CLI pays a Node start per job, too slow alone to keep up with a flood. Same contract as
 * scripts/multihost/perl-consumer.pl: each message copied to OUT_DIR/JOBID, then the job finished; exits once
 * STOP_FILE exists and nothing is left to pick up.
 * Usage: node node-consumer.js QUEUE_DIR OUT_DIR STOP_FILE
 */
import fs from 'node:fs';
import path from 'node:path';
import { DirQueueReader } from '../../../src/dirqueue';

async function main(): Promise<void> {
  const [queue, out, stop] = process.argv.slice(2);
  if (!stop) throw new Error('usage: node-consumer.js QUEUE_DIR OUT_DIR STOP_FILE');
  const reader = new DirQueueReader(queue, { warn: (msg) => process.stderr.write(`${msg}\n`) });
  for (;;) {
    const job = await reader.pickup();
    if (!job) {
      if (fs.existsSync(stop)) return;
      await new Promise((r) => setTimeout(r, 50));
      continue;
    }
    const data = await job.readData();
    let name = path.join(out, job.jobId);
    for (let n = 1; fs.existsSync(name); n++) name = path.join(out, `${job.jobId}.copy${n}`);
    // Written aside and renamed, so a reader never sees half a copy.
    fs.writeFileSync(`${name}.part`, data);
    fs.renameSync(`${name}.part`, name);
    await job.finish();
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`node-consumer: ${(err as Error).stack ?? err}\n`);
  process.exit(1);
});
