/**
 * The real rbldnsd serving the trap's listing files, queried with dig: start it on a free loopback UDP port over a
 * directory, ask it for A and TXT records of an address, stop it. Every wait is bounded.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import dgram from 'node:dgram';
import fs from 'node:fs';
import path from 'node:path';
import ipaddr from 'ipaddr.js';
import { repoRoot } from './paths';

/** rbldnsd and dig from .tools/bin or the usual places; Debian puts rbldnsd in /usr/sbin. */
export function findTool(name: string): string | undefined {
  const dirs = [path.join(repoRoot(), '.tools', 'bin'), ...(process.env.PATH ?? '').split(':'), '/usr/sbin', '/sbin'];
  for (const d of dirs) {
    const p = path.join(d, name);
    try {
      fs.accessSync(p, fs.constants.X_OK);
      return p;
    } catch {
      // not here
    }
  }
  return undefined;
}

export const RBLDNSD_MISSING = 'rbldnsd or dig not found: apt-get install rbldnsd bind9-dnsutils (CI installs them)';

async function freeUdpPort(): Promise<number> {
  const s = dgram.createSocket('udp4');
  await new Promise<void>((resolve) => s.bind(0, '127.0.0.1', resolve));
  const port = s.address().port;
  await new Promise<void>((resolve) => s.close(() => resolve()));
  return port;
}

/** The DNSBL query name of `ip` under `zone`: reversed octets, or reversed nibbles for IPv6. */
export function reverseName(ip: string, zone: string): string {
  const a = ipaddr.parse(ip);
  if (a.kind() === 'ipv4') return `${(a as ipaddr.IPv4).octets.slice().reverse().join('.')}.${zone}`;
  const hex = (a as ipaddr.IPv6).parts.map((p) => p.toString(16).padStart(4, '0')).join('');
  return `${hex.split('').reverse().join('.')}.${zone}`;
}

export interface DnsAnswer {
  status: string | undefined;
  answers: string[];
}

export class Rbldnsd {
  private constructor(
    private readonly child: ChildProcess,
    readonly port: number,
    private readonly dig: string,
    readonly output: () => string,
  ) {}

  /**
   * Starts rbldnsd in the foreground with `datasets` (e.g. `bl.test:ip4set:listing.ip4set`) read from `dir`, as the
   * documentation's command line does; as root it drops to nobody, which must be able to read the files.
   * Returns null when rbldnsd or dig is not installed.
   */
  static async start(dir: string, datasets: string[], extraArgs: string[] = []): Promise<Rbldnsd | null> {
    const rbldnsd = findTool('rbldnsd');
    const dig = findTool('dig');
    if (!rbldnsd || !dig) return null;
    const port = await freeUdpPort();
    const args = ['-n', '-b', `127.0.0.1/${port}`, '-w', dir, ...extraArgs];
    if (process.getuid?.() === 0) args.push('-u', 'nobody');
    args.push(...datasets);
    const child = spawn(rbldnsd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout!.on('data', (b: Buffer) => (output += b.toString()));
    child.stderr!.on('data', (b: Buffer) => (output += b.toString()));
    const deadline = Date.now() + 10_000;
    while (!/started/.test(output)) {
      if (child.exitCode !== null || Date.now() > deadline) {
        child.kill('SIGKILL');
        throw new Error(`rbldnsd did not start:\n${output}`);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    return new Rbldnsd(child, port, dig, () => output);
  }

  query(name: string, type: 'A' | 'TXT'): DnsAnswer {
    const r = spawnSync(this.dig, ['@127.0.0.1', '-p', String(this.port), '+tries=1', '+time=3', name, type], {
      encoding: 'utf8',
      timeout: 15_000,
    });
    if (r.status !== 0) throw new Error(`dig failed: ${r.stdout}${r.stderr}`);
    const status = /status: (\w+)/.exec(r.stdout)?.[1];
    const answers = r.stdout
      .split('\n')
      .filter((l) => l.startsWith(name + '.'))
      .map((l) => l.split(/\s+/).slice(4).join(' '));
    return { status, answers };
  }

  async stop(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const exited = new Promise((r) => this.child.once('exit', r));
    this.child.kill('SIGTERM');
    await Promise.race([exited, new Promise((r) => setTimeout(r, 5000))]);
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL');
  }
}
