/**
 * Child process for the dirqueue tests (run with process.execPath from the compiled output):
 *   enqueue DIR N SEED         enqueue N jobs of jobContent(SEED, i); print "sha size jobId" per job
 *   pickup DIR STOPFILE        take jobs until STOPFILE exists and the queue is empty; print "jobId sha ok|BAD"
 *   hold-lock SPOOL STALEMS    hold the spool lock, print "locked", wait to be killed
 */
import * as fs from 'node:fs';
import { DirQueueReader, DirQueueWriter, acquireSpoolLock } from '../../src/dirqueue';
import { jobContent, sha256 } from './job-fixtures';

async function enqueue(dir: string, n: number, seed: number): Promise<void> {
  const w = new DirQueueWriter(dir);
  const lines: string[] = [];
  for (let i = 0; i < n; i++) {
    const data = jobContent(seed, i);
    const sha = sha256(data);
    // Two chunks, so the streaming path (several writes on one fd) is what gets stressed.
    const cut = Math.floor(data.length / 3);
    const job = await w.enqueueStream([data.subarray(0, cut), data.subarray(cut)], { sha, seed: String(seed), i: String(i) });
    lines.push(`${sha} ${job.size} ${job.jobId}`);
  }
  process.stdout.write(lines.join('\n') + (lines.length ? '\n' : ''));
}

async function pickup(dir: string, stopFile: string): Promise<void> {
  const r = new DirQueueReader(dir);
  const lines: string[] = [];
  for (;;) {
    const stopping = fs.existsSync(stopFile);
    const job = await r.pickup();
    if (!job) {
      if (stopping) break;
      await new Promise((res) => setTimeout(res, 5));
      continue;
    }
    const data = await job.readData();
    const sha = sha256(data);
    lines.push(`${job.jobId} ${sha} ${sha === job.metadata['sha'] && data.length === job.size ? 'ok' : 'BAD'}`);
    await job.finish();
  }
  process.stdout.write(lines.join('\n') + (lines.length ? '\n' : ''));
}

async function holdLock(spool: string, staleMs: number): Promise<void> {
  await acquireSpoolLock(spool, { staleMs, onCompromised: () => undefined });
  process.stdout.write('locked\n');
  setInterval(() => undefined, 1 << 30);
}

async function main(): Promise<void> {
  const [mode, a, b, c] = process.argv.slice(2);
  if (mode === 'enqueue' && a && b && c) return enqueue(a, Number(b), Number(c));
  if (mode === 'pickup' && a && b) return pickup(a, b);
  if (mode === 'hold-lock' && a && b) return holdLock(a, Number(b));
  throw new Error(`usage: dirqueue-worker enqueue DIR N SEED | pickup DIR STOPFILE | hold-lock SPOOL STALEMS`);
}

main().catch((e: unknown) => {
  process.stderr.write(`dirqueue-worker: ${e instanceof Error ? e.stack : String(e)}\n`);
  process.exit(1);
});
