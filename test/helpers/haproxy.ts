/**
 * A real HAProxy in front of the trap, for tests: the config goes into a temporary directory, haproxy runs in the
 * foreground (-db) on loopback ports, is ready once its stats socket answers (a probe connection to the frontend
 * would itself be relayed to the trap and counted), and is killed afterwards. Every wait is bounded.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { repoRoot } from './paths';
import { freePort } from './sockets';

/** .tools/bin/haproxy (what the project's install script provides) or haproxy on PATH; null when neither runs. */
export function findHaproxy(): string | null {
  const candidates = [path.join(repoRoot(), '.tools', 'bin', 'haproxy'), ...(process.env.PATH ?? '').split(path.delimiter).filter(Boolean).map((d) => path.join(d, 'haproxy'))];
  for (const c of candidates) {
    if (!fs.existsSync(c)) continue;
    const r = spawnSync(c, ['-v'], { encoding: 'utf8', timeout: 10_000 });
    if (r.status === 0 && /HAProxy version/i.test(r.stdout)) return c;
  }
  return null;
}

/**
 * False when haproxy is there; otherwise why the HAProxy tests skip. Under CI (env CI set) a missing haproxy is a
 * failure, thrown here, because CI is meant to install it.
 */
export function haproxySkipReason(): string | false {
  if (findHaproxy()) return false;
  const why = 'haproxy not found at .tools/bin/haproxy or on PATH (Debian package haproxy)';
  if (process.env.CI) throw new Error(`CI must run the HAProxy tests: ${why}`);
  return why;
}

export interface HaproxyPorts {
  /** The frontend clients connect to. */
  frontend: number;
}

export interface Haproxy {
  readonly ports: HaproxyPorts;
  readonly dir: string;
  logs(): string;
  /** `show stat` through the stats socket: one record per proxy/server line. */
  stats(): Promise<Array<Record<string, string>>>;
  stop(): Promise<void>;
}

/** Lines every test config starts with: foreground-friendly, a stats socket in `dir`, logs to stdout. */
export function haproxyPreamble(dir: string): string {
  return `global
  log stdout format raw local0 info
  maxconn 200
  stats socket ${path.join(dir, 'admin.sock')} mode 600 level admin

defaults
  mode tcp
  log global
  option tcplog
  timeout connect 2s
  timeout client 30s
  timeout server 30s
`;
}

/** Writes the config `makeConfig` returns for free loopback ports, starts haproxy on it, waits until it is ready. */
export async function startHaproxy(makeConfig: (ports: HaproxyPorts, dir: string) => string, readyTimeoutMs = 15_000): Promise<Haproxy> {
  const bin = findHaproxy();
  if (!bin) throw new Error('haproxy not found');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'spamtrapd-haproxy-'));
  const ports = { frontend: await freePort() };
  const cfg = path.join(dir, 'haproxy.cfg');
  fs.writeFileSync(cfg, makeConfig(ports, dir));
  const check = spawnSync(bin, ['-c', '-f', cfg], { encoding: 'utf8', timeout: 10_000 });
  if (check.status !== 0) throw new Error(`haproxy -c refused the test config:\n${check.stdout}${check.stderr}`);

  const proc: ChildProcess = spawn(bin, ['-db', '-f', cfg], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  proc.stdout?.on('data', (d: Buffer) => (out += d.toString('utf8')));
  proc.stderr?.on('data', (d: Buffer) => (out += d.toString('utf8')));
  let exited = false;
  const exit = new Promise<void>((resolve) => proc.once('exit', () => ((exited = true), resolve())));
  // Never outlive the test process, whatever happens to it.
  const killOnExit = () => proc.kill('SIGKILL');
  process.once('exit', killOnExit);

  const socketPath = path.join(dir, 'admin.sock');
  const stats = () => statsOf(socketPath);
  const stop = async () => {
    process.removeListener('exit', killOnExit);
    if (!exited) {
      proc.kill('SIGTERM');
      await Promise.race([exit, new Promise((r) => setTimeout(r, 5000))]);
      if (!exited) {
        proc.kill('SIGKILL');
        await Promise.race([exit, new Promise((r) => setTimeout(r, 5000))]);
      }
    }
    fs.rmSync(dir, { recursive: true, force: true });
  };

  const deadline = Date.now() + readyTimeoutMs;
  for (;;) {
    if (exited) {
      await stop();
      throw new Error(`haproxy exited before it was ready:\n${out}`);
    }
    if (await stats().then(() => true, () => false)) break;
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`haproxy was not ready within ${readyTimeoutMs} ms:\n${out}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return { ports, dir, logs: () => out, stats, stop };
}

function statsOf(socketPath: string): Promise<Array<Record<string, string>>> {
  return new Promise((resolve, reject) => {
    const s = net.connect(socketPath);
    let text = '';
    const t = setTimeout(() => s.destroy(new Error('stats socket timed out')), 3000);
    s.on('connect', () => s.write('show stat\n'));
    s.on('data', (d) => (text += d.toString('utf8')));
    s.on('error', (e) => {
      clearTimeout(t);
      reject(e);
    });
    s.on('close', () => {
      clearTimeout(t);
      const lines = text.split('\n').filter(Boolean);
      if (!lines[0]?.startsWith('# ')) return reject(new Error(`unexpected stats answer: ${text.slice(0, 200)}`));
      const cols = lines[0].slice(2).split(',');
      resolve(lines.slice(1).map((l) => Object.fromEntries(l.split(',').map((v, i) => [cols[i], v]))));
    });
  });
}

/** Waits until server `backend/server` is UP with a passed layer-7 check (HAProxy's L7OK). */
export async function waitServerUp(h: Haproxy, backend: string, server: string, timeoutMs = 10_000): Promise<Record<string, string>> {
  const deadline = Date.now() + timeoutMs;
  let last: Record<string, string> | undefined;
  for (;;) {
    last = (await h.stats()).find((r) => r.pxname === backend && r.svname === server);
    if (last && last.status === 'UP' && last.check_status === 'L7OK') return last;
    if (Date.now() > deadline) throw new Error(`${backend}/${server} not UP with L7OK within ${timeoutMs} ms: ${JSON.stringify(last)}\n${h.logs()}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
