/**
 * What queue depth costs. Part 1: one scan of a queue/ of --names names (default 1,000,000) by three listings, each
 * in a fresh process: `readdir` (the metrics scan before streaming: the whole listing in one array), `for-await`
 * (streaming, `for await` over fs.opendir) and `scanQueueDir` (streaming, batched Dir.readSync, what the trap runs):
 * CPU and wall time, the event loop's longest stall, heap and RSS growth. Part 2 (--daemon): the real daemon started
 * on a spool with that many jobs waiting in incoming/queue, then on an empty spool, one after the other: the
 * primary's RSS (/proc/PID/status VmRSS) and CPU once its first scan has counted the queue, and /metrics latency.
 *
 *   node dist/bench/queue-scan.js [--names N] [--rounds R] [--base DIR] [--daemon] [--daemon-seconds S] [--json]
 *
 * The queue is made of hard links to one tiny control file (the scan counts names; no job is ever picked up), under
 * --base (default /dev/shm, so the disk is not measured), and removed at the end. Run it alone on a quiet machine.
 */
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as http from 'node:http';
import * as os from 'node:os';
import * as path from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import * as v8 from 'node:v8';
import { scanQueueDir, type QueueScanResult } from '../src/metrics/queue-gauges';
import { NODE_FLAGS } from '../src/primary/node-flags';

const VARIANTS = ['readdir', 'for-await', 'scanQueueDir'] as const;
type Variant = (typeof VARIANTS)[number];

const JOB_NAME = /^\d\d\.(\d{20})\./;

/** The scan as it was before streaming: the same per-name work over one readdir array. */
async function readdirScan(dir: string): Promise<QueueScanResult> {
  let jobs = 0;
  let min: string | undefined;
  for (const name of await fsp.readdir(path.join(dir, 'queue'))) {
    const m = JOB_NAME.exec(name);
    if (!m) continue;
    jobs++;
    if (min === undefined || m[1]! < min) min = m[1]!;
  }
  return { jobs, oldestSeconds: min === undefined ? null : 0 };
}

/** Streaming with a promise per entry, the obvious way to use fs.opendir. */
async function forAwaitScan(dir: string): Promise<QueueScanResult> {
  let jobs = 0;
  let min: string | undefined;
  for await (const e of await fsp.opendir(path.join(dir, 'queue'), { bufferSize: 256 })) {
    const m = JOB_NAME.exec(e.name);
    if (!m) continue;
    jobs++;
    if (min === undefined || m[1]! < min) min = m[1]!;
  }
  return { jobs, oldestSeconds: min === undefined ? null : 0 };
}

interface ScanRound {
  jobs: number;
  cpuMs: number;
  wallMs: number;
  maxStallMs: number;
  /** Peak heapUsed seen by a 1 ms sampler: it cannot run inside a synchronous loop, so readdir's array escapes it. */
  heapGrowthMB: number;
  /** Heap committed (v8 total_heap_size) after the scan minus before: V8 returns it late, so a peak shows here. */
  heapCommittedGrowthMB: number;
  rssGrowthMB: number;
}

const mb = (bytes: number) => Math.round(bytes / 1e5) / 10;

/** One round in this process (the --child side): memory is sampled every millisecond while the scan runs. */
async function scanRound(variant: Variant, dir: string): Promise<ScanRound> {
  const scan = variant === 'readdir' ? readdirScan : variant === 'for-await' ? forAwaitScan : scanQueueDir;
  (globalThis as { gc?: () => void }).gc?.();
  const heap0 = process.memoryUsage().heapUsed;
  const committed0 = v8.getHeapStatistics().total_heap_size;
  const rss0 = process.memoryUsage().rss;
  let peakHeap = heap0;
  const sampler = setInterval(() => (peakHeap = Math.max(peakHeap, process.memoryUsage().heapUsed)), 1);
  const stall = monitorEventLoopDelay({ resolution: 1 });
  stall.enable();
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const r = await scan(dir);
  const wallMs = performance.now() - t0;
  const cpu = process.cpuUsage(cpu0);
  stall.disable();
  clearInterval(sampler);
  peakHeap = Math.max(peakHeap, process.memoryUsage().heapUsed);
  return {
    jobs: r.jobs,
    cpuMs: Math.round((cpu.user + cpu.system) / 1000),
    wallMs: Math.round(wallMs),
    maxStallMs: Math.round(stall.max / 1e5) / 10,
    heapGrowthMB: mb(peakHeap - heap0),
    heapCommittedGrowthMB: mb(v8.getHeapStatistics().total_heap_size - committed0),
    rssGrowthMB: mb(process.memoryUsage().rss - rss0),
  };
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

/** Every round of one variant in a fresh process, so that no variant inherits another's heap. */
function scanVariant(variant: Variant, dir: string, rounds: number): { variant: Variant; rounds: ScanRound[]; summary: Omit<ScanRound, 'jobs'> } {
  const r = spawnSync(process.execPath, ['--expose-gc', __filename, '--child', variant, dir, String(rounds)], { encoding: 'utf8', maxBuffer: 1 << 20 });
  if (r.status !== 0) throw new Error(`${variant} child failed: ${r.stderr}`);
  const all = JSON.parse(r.stdout) as ScanRound[];
  const m = (k: keyof ScanRound) => median(all.map((x) => x[k]));
  // Memory: the worst round, which is the first; later rounds reuse what the first one made the process commit.
  const worst = (k: keyof ScanRound) => Math.max(...all.map((x) => x[k]));
  const summary = {
    cpuMs: m('cpuMs'),
    wallMs: m('wallMs'),
    maxStallMs: m('maxStallMs'),
    heapGrowthMB: worst('heapGrowthMB'),
    heapCommittedGrowthMB: worst('heapCommittedGrowthMB'),
    rssGrowthMB: worst('rssGrowthMB'),
  };
  return { variant, rounds: all, summary };
}

/** N hard links of one tiny control file in DIR/queue, with names the metrics scan counts. */
function makeQueue(dir: string, n: number): number {
  const q = path.join(dir, 'queue');
  fs.mkdirSync(q, { recursive: true });
  const seed = path.join(dir, 'seed');
  fs.writeFileSync(seed, 'QDFN: /nonexistent\n');
  const t0 = performance.now();
  for (let i = 0; i < n; i++) {
    fs.linkSync(seed, path.join(q, `${String(i % 100).padStart(2, '0')}.2024010112${String(i).padStart(10, '0')}.DNjkw`));
  }
  fs.unlinkSync(seed);
  return Math.round(performance.now() - t0);
}

function vmRssKB(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) : NaN;
}

/** utime + stime of one process, in ms. */
function cpuMsOf(pid: number): number {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return ((Number(f[11]) + Number(f[12])) * 1000) / 100; // fields 14 and 15, in clock ticks (USER_HZ = 100)
}

function get(port: number, p: string): Promise<{ ms: number; body: string }> {
  const t0 = performance.now();
  return new Promise((resolve, reject) => {
    http
      .get({ host: '127.0.0.1', port, path: p, timeout: 30_000 }, (res) => {
        let body = '';
        res.on('data', (d: Buffer) => (body += d.toString()));
        res.on('end', () => resolve({ ms: performance.now() - t0, body }));
      })
      .on('error', reject);
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface DaemonRun {
  spoolJobs: number;
  /** From spawn until /metrics showed the first scan's count. */
  firstScanSeconds: number;
  rssAtFirstScanMB: number;
  rssMaxMB: number;
  rssEndMB: number;
  /** The primary's CPU over the sampling window, in % of one core. */
  primaryCpuPercent: number;
  scrapeMaxMs: number;
  scrapeP99Ms: number;
}

/** Starts `spamtrapd start` on `spool`, waits for its first queue scan, then samples for `seconds`. */
async function runDaemon(spool: string, jobs: number, seconds: number): Promise<DaemonRun> {
  const config = fs.mkdtempSync(path.join(os.tmpdir(), 'spamtrapd-qscan-config-'));
  const cli = path.join(__dirname, '..', 'workers', 'cli.js');
  const env = {
    PATH: process.env['PATH'],
    HOME: process.env['HOME'],
    SPOOL_DIR: spool,
    CONFIG_DIR: config,
    SMTP_HOST: '127.0.0.1',
    SMTP_PORT: '0',
    METRICS_HOST: '127.0.0.1',
    METRICS_PORT: '0',
    WORKERS: '2',
    RDNS_TIMEOUT_MS: '0',
    ME: 'bench.test',
  };
  const t0 = performance.now();
  // Its own process group, so the acceptors go too if the bench is interrupted.
  const proc = spawn(process.execPath, [...NODE_FLAGS, cli, 'start'], { env, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  let logs = '';
  proc.stdout.on('data', (d: Buffer) => (logs += d.toString()));
  proc.stderr.on('data', (d: Buffer) => (logs += d.toString()));
  const exited = new Promise<void>((r) => proc.once('exit', () => r()));
  try {
    let port = 0;
    while (!port) {
      if (proc.exitCode !== null) throw new Error(`daemon exited:\n${logs}`);
      port = Number(/ info metrics [^\n]*port=(\d+)\n/.exec(logs)?.[1] ?? 0); // a whole line: output arrives in chunks
      await sleep(50);
    }
    const counted = new RegExp(`^spamtrapd_queue_jobs\\{queue="incoming"\\} ${jobs}$`, 'm');
    while (!counted.test((await get(port, '/metrics')).body)) await sleep(100);
    const firstScanSeconds = (performance.now() - t0) / 1000;
    const pid = proc.pid!;
    const rssAtFirstScan = vmRssKB(pid);
    let rssMax = rssAtFirstScan;
    const scrapes: number[] = [];
    const cpu0 = cpuMsOf(pid);
    const w0 = performance.now();
    let nextRss = w0;
    while (performance.now() - w0 < seconds * 1000) {
      scrapes.push((await get(port, '/metrics')).ms);
      if (performance.now() >= nextRss) {
        rssMax = Math.max(rssMax, vmRssKB(pid));
        nextRss += 1000;
      }
      await sleep(200);
    }
    const cpuPercent = ((cpuMsOf(pid) - cpu0) / (performance.now() - w0)) * 100;
    const rssEnd = vmRssKB(pid);
    scrapes.sort((a, b) => a - b);
    return {
      spoolJobs: jobs,
      firstScanSeconds: Math.round(firstScanSeconds * 10) / 10,
      rssAtFirstScanMB: Math.round(rssAtFirstScan / 102.4) / 10,
      rssMaxMB: Math.round(Math.max(rssMax, rssEnd) / 102.4) / 10,
      rssEndMB: Math.round(rssEnd / 102.4) / 10,
      primaryCpuPercent: Math.round(cpuPercent * 10) / 10,
      scrapeMaxMs: Math.round(scrapes[scrapes.length - 1]!),
      scrapeP99Ms: Math.round(scrapes[Math.floor(scrapes.length * 0.99)]!),
    };
  } finally {
    proc.kill('SIGTERM'); // the primary stops its acceptors itself
    await Promise.race([exited, sleep(20_000)]);
    try {
      process.kill(-proc.pid!, 'SIGKILL');
    } catch {
      // gone
    }
    fs.rmSync(config, { recursive: true, force: true });
  }
}

async function child(variant: Variant, dir: string, rounds: number): Promise<void> {
  const out: ScanRound[] = [];
  for (let i = 0; i < rounds; i++) out.push(await scanRound(variant, dir));
  process.stdout.write(JSON.stringify(out));
}

async function main(): Promise<void> {
  if (process.argv[2] === '--child') return child(process.argv[3] as Variant, process.argv[4]!, Number(process.argv[5]));
  const { values } = parseArgs({
    options: {
      names: { type: 'string', default: '1000000' },
      rounds: { type: 'string', default: '3' },
      base: { type: 'string', default: fs.existsSync('/dev/shm') ? '/dev/shm' : os.tmpdir() },
      daemon: { type: 'boolean', default: false },
      'daemon-seconds': { type: 'string', default: '90' },
      json: { type: 'boolean', default: false },
    },
  });
  const n = Number(values.names);
  const work = fs.mkdtempSync(path.join(values.base!, 'spamtrapd-qscan-'));
  const cleanup = () => fs.rmSync(work, { recursive: true, force: true });
  process.once('SIGINT', () => {
    cleanup();
    process.exit(130);
  });
  const log = (s: string) => process.stderr.write(s + '\n');
  try {
    const queueDir = path.join(work, 'spool', 'incoming');
    log(`making ${n} names in ${queueDir}/queue ...`);
    const makeMs = makeQueue(queueDir, n);
    log(`  ${makeMs} ms`);
    const scans = [];
    for (const v of VARIANTS) {
      const r = scanVariant(v, queueDir, Number(values.rounds));
      if (r.rounds.some((x) => x.jobs !== n)) throw new Error(`${v} counted ${r.rounds.map((x) => x.jobs)} of ${n}`);
      log(`scan ${v.padEnd(12)} ${r.rounds.length} rounds (time: median, memory: worst): ${JSON.stringify(r.summary)}`);
      scans.push(r);
    }
    const daemon: DaemonRun[] = [];
    if (values.daemon) {
      const seconds = Number(values['daemon-seconds']);
      log(`daemon on the ${n}-job spool, sampled for ${seconds} s after its first scan ...`);
      daemon.push(await runDaemon(path.join(work, 'spool'), n, seconds));
      log(`  ${JSON.stringify(daemon[0])}`);
      const empty = path.join(work, 'empty-spool');
      fs.mkdirSync(empty);
      log(`daemon on an empty spool, sampled for ${seconds} s ...`);
      daemon.push(await runDaemon(empty, 0, seconds));
      log(`  ${JSON.stringify(daemon[1])}`);
      log(`primary RSS, ${n} jobs minus empty: max ${Math.round((daemon[0]!.rssMaxMB - daemon[1]!.rssMaxMB) * 10) / 10} MB, end ${Math.round((daemon[0]!.rssEndMB - daemon[1]!.rssEndMB) * 10) / 10} MB`);
    }
    if (values.json) process.stdout.write(JSON.stringify({ names: n, base: values.base, makeMs, scans, daemon }, null, 2) + '\n');
  } finally {
    cleanup();
  }
}

main().catch((err) => {
  process.stderr.write(String(err?.stack ?? err) + '\n');
  process.exit(2);
});
