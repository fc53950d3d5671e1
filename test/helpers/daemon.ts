/**
 * Starts the real trap (`spamtrapd start`) as a child process on loopback with a temporary spool and config,
 * random ports, and waits until every acceptor listens. Tests drive it over real sockets.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { builtRoot } from './paths';
import { freePort } from './sockets';

export interface DaemonOptions {
  workers?: number;
  env?: Record<string, string>;
  rcptRegexp?: string;
  routes?: string;
  /** Reuse a spool (e.g. to restart on the same one). */
  spoolDir?: string;
  /** Reuse a config dir. */
  configDir?: string;
  /** Wait for this many acceptors to listen (default: workers; 0 = only until the metrics port is up). */
  waitListening?: number;
  /** Written to WORKDIR/.env, the daemon's working directory. */
  dotenv?: string;
  /** Variables the test environment must not set, so .env can (the environment wins over .env). */
  omitEnv?: string[];
}

export class Daemon {
  private out = '';
  exitCode: number | null = null;
  exitSignal: NodeJS.Signals | null = null;
  private exited: Promise<void>;

  constructor(
    readonly proc: ChildProcess,
    readonly port: number,
    readonly metricsPort: number,
    readonly spoolDir: string,
    readonly configDir: string,
    readonly workDir: string,
  ) {
    const collect = (d: Buffer) => {
      this.out += d.toString('utf8');
    };
    proc.stdout?.on('data', collect);
    proc.stderr?.on('data', collect);
    this.exited = new Promise((resolve) => {
      proc.once('exit', (code, signal) => {
        this.exitCode = code;
        this.exitSignal = signal;
        resolve();
      });
    });
  }

  logs(): string {
    return this.out;
  }

  /** Waits until the logs match `re` (counting from the start), up to timeoutMs. */
  async waitForLog(re: RegExp, timeoutMs = 15000, count = 1): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    const g = new RegExp(re.source, re.flags.includes('g') ? re.flags : re.flags + 'g');
    while ((this.out.match(g) ?? []).length < count) {
      if (this.exitCode !== null || this.exitSignal !== null) {
        throw new Error(`daemon exited (${this.exitCode ?? this.exitSignal}) before ${re}:\n${this.out}`);
      }
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${re} (x${count}) in:\n${this.out}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  async waitExit(timeoutMs = 30000): Promise<void> {
    let t: NodeJS.Timeout | undefined;
    await Promise.race([
      this.exited,
      new Promise((_, reject) => {
        t = setTimeout(() => reject(new Error(`daemon did not exit in ${timeoutMs} ms:\n${this.out}`)), timeoutMs);
      }),
    ]).finally(() => clearTimeout(t));
  }

  async stop(signal: NodeJS.Signals = 'SIGTERM', timeoutMs = 30000): Promise<void> {
    if (this.exitCode !== null || this.exitSignal !== null) return;
    this.proc.kill(signal);
    await this.waitExit(timeoutMs);
  }

  /** Kills the daemon and whatever it forked, whatever state it is in. For `after` hooks. */
  async destroy(): Promise<void> {
    if (this.exitCode === null && this.exitSignal === null) {
      try {
        process.kill(-this.proc.pid!, 'SIGKILL');
      } catch {
        this.proc.kill('SIGKILL');
      }
      await this.waitExit(10000).catch(() => undefined);
    }
  }

  cleanup(): void {
    fs.rmSync(this.workDir, { recursive: true, force: true });
  }
}

export async function startDaemon(opts: DaemonOptions = {}): Promise<Daemon> {
  const workDir = fs.mkdtempSync(path.join(os.tmpdir(), 'spamtrapd-test-'));
  const spoolDir = opts.spoolDir ?? path.join(workDir, 'spool');
  const configDir = opts.configDir ?? path.join(workDir, 'config');
  fs.mkdirSync(spoolDir, { recursive: true });
  fs.mkdirSync(configDir, { recursive: true });
  if (opts.rcptRegexp !== undefined) fs.writeFileSync(path.join(configDir, 'rcpt_regexp'), opts.rcptRegexp);
  if (opts.routes !== undefined) fs.writeFileSync(path.join(configDir, 'routes'), opts.routes);
  if (opts.dotenv !== undefined) fs.writeFileSync(path.join(workDir, '.env'), opts.dotenv);
  const port = await freePort();
  const metricsPort = await freePort();
  const workers = opts.workers ?? 2;
  const env: Record<string, string | undefined> = {
    PATH: process.env.PATH,
    HOME: process.env.HOME,
    SMTP_HOST: '127.0.0.1',
    SMTP_PORT: String(port),
    METRICS_HOST: '127.0.0.1',
    METRICS_PORT: String(metricsPort),
    WORKERS: String(workers),
    SPOOL_DIR: spoolDir,
    CONFIG_DIR: configDir,
    ME: 'trap.test',
    RDNS_TIMEOUT_MS: '0',
    LOG_LEVEL: 'info',
    ...opts.env,
  };
  for (const name of opts.omitEnv ?? []) delete env[name];
  const proc = spawn(process.execPath, [path.join(builtRoot(), 'workers', 'cli.js'), 'start'], {
    cwd: workDir,
    // Its own process group, so destroy() can kill the acceptors too.
    detached: true,
    stdio: ['ignore', 'pipe', 'pipe'],
    env,
  });
  const d = new Daemon(proc, port, metricsPort, spoolDir, configDir, workDir);
  try {
    await d.waitForLog(/ info metrics /, 30000);
    await d.waitForLog(/ info listening /, 30000, opts.waitListening ?? workers);
  } catch (err) {
    // A daemon that never came up must not outlive the test, nor leave its temporary directory behind.
    await d.destroy();
    if (!opts.spoolDir && !opts.configDir) d.cleanup();
    throw err;
  }
  return d;
}

/** slot -> pids in the order they announced `listening` (the last one is the current acceptor of that slot). */
export function acceptorPids(logs: string): Map<number, number[]> {
  const out = new Map<number, number[]>();
  for (const m of logs.matchAll(/ info listening proc=acceptor(\d+) pid=(\d+)/g)) {
    const slot = Number(m[1]);
    out.set(slot, [...(out.get(slot) ?? []), Number(m[2])]);
  }
  return out;
}

/** The pid each acceptor slot runs now (the last `listening` line of the slot). */
export function currentAcceptorPids(logs: string): number[] {
  return [...acceptorPids(logs).values()].map((pids) => pids[pids.length - 1]);
}
