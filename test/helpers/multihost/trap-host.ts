/**
 * A trap "host" of the two-host harness: scripts/multihost/trap-host.sh as pid 1 of its own UTS, mount and pid
 * namespaces, so it has its own host name and pids that start at 1 like every other host's. The network is shared:
 * each host listens on its own loopback address. Killing the namespace's pid 1 (the trap's primary) kills every
 * process in it at once, as a host that loses power.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { Daemon } from '../daemon';
import { cliJs, findUnshare, scriptsDir, type Layout } from './layout';
import { waitFor } from '../waiting';

export interface TrapHostSpec {
  name: string;
  /** Its own loopback address (127.0.0.0/8 is all on lo). */
  address: string;
  smtpPort: number;
  metricsPort: number;
  /** Settings beyond the harness's own. */
  env?: Record<string, string>;
}

export class TrapHost {
  constructor(
    readonly spec: TrapHostSpec,
    /** unshare's process; its output is every process's in the namespace. */
    readonly daemon: Daemon,
    /** The namespace's pid 1 (the trap's primary) as this namespace numbers it. */
    readonly initPid: number,
  ) {}

  get name(): string {
    return this.spec.name;
  }

  logs(): string {
    return this.daemon.logs();
  }

  /** The acceptor pid of each `listening` line, as the host's own pid namespace numbers it, oldest first. */
  acceptorPids(): number[] {
    return [...this.logs().matchAll(/ info listening proc=acceptor\d+ pid=(\d+) /g)].map((m) => Number(m[1]));
  }

  /** Every process of the host: its pid inside the namespace -> its pid here. */
  processes(): Map<number, number> {
    const ns = pidNamespace(this.initPid);
    const out = new Map<number, number>();
    for (const e of fs.readdirSync('/proc')) {
      if (!/^\d+$/.test(e)) continue;
      try {
        if (fs.readlinkSync(`/proc/${e}/ns/pid`) !== ns) continue;
        const nspid = /^NSpid:\s+(.*)$/m.exec(fs.readFileSync(`/proc/${e}/status`, 'utf8'))?.[1].trim().split(/\s+/);
        if (nspid) out.set(Number(nspid[nspid.length - 1]), Number(e));
      } catch {
        // exited while we looked
      }
    }
    return out;
  }

  /** Field 22 of /proc/PID/stat of the process that is `nsPid` in this host: what our tmp names call START. */
  startTicks(nsPid: number): string {
    const here = this.processes().get(nsPid);
    if (here === undefined) throw new Error(`${this.name} has no process ${nsPid}`);
    const stat = fs.readFileSync(`/proc/${here}/stat`, 'latin1');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
  }

  /** SIGKILL to the namespace's pid 1: the kernel then kills every other process in it. */
  async killHost(timeoutMs = 10_000): Promise<void> {
    process.kill(this.initPid, 'SIGKILL');
    await this.daemon.waitExit(timeoutMs);
  }

  /** SIGKILL to one process of the host, named by its pid inside the namespace. */
  killProcess(nsPid: number): void {
    const here = this.processes().get(nsPid);
    if (here === undefined) throw new Error(`${this.name} has no process ${nsPid}`);
    process.kill(here, 'SIGKILL');
  }

  /** SIGTERM to the primary: the trap's own stop (drain, last sweep, exit 0). */
  async stop(timeoutMs = 30_000): Promise<void> {
    if (this.daemon.exitCode !== null || this.daemon.exitSignal !== null) return;
    process.kill(this.initPid, 'SIGTERM');
    await this.daemon.waitExit(timeoutMs);
  }

  /** Synchronous, for an exit hook: SIGKILL to the namespace's pid 1 and to unshare's process group. */
  killNow(): void {
    for (const pid of [this.initPid, -this.daemon.proc.pid!]) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
  }

  /** Whatever state it is in: unshare's process group, and its namespace through --kill-child. */
  async destroy(): Promise<void> {
    this.killNow();
    await this.daemon.destroy();
  }
}

function pidNamespace(pid: number): string {
  return fs.readlinkSync(`/proc/${pid}/ns/pid`);
}

/** The pid here of `parent`'s child (unshare forks the namespace's pid 1 and waits for it). */
async function childOf(parent: number, timeoutMs: number): Promise<number> {
  let found: number | undefined;
  await waitFor(
    `the child of unshare ${parent}`,
    () => {
      for (const e of fs.readdirSync('/proc')) {
        if (!/^\d+$/.test(e)) continue;
        try {
          if (/^PPid:\s+(\d+)$/m.exec(fs.readFileSync(`/proc/${e}/status`, 'utf8'))?.[1] === String(parent)) found = Number(e);
        } catch {
          // exited while we looked
        }
      }
      return found !== undefined;
    },
    timeoutMs,
  );
  return found!;
}

/** Starts the host and waits until its acceptors listen. */
export async function startTrapHost(l: Layout, spec: TrapHostSpec, timeoutMs = 45_000): Promise<TrapHost> {
  const unshare = findUnshare();
  if (!unshare) throw new Error('unshare not found');
  const env: Record<string, string | undefined> = {
    PATH: process.env.PATH,
    HOME: process.env.HOME,
    TRAP_HOSTNAME: spec.name,
    HOST_SPOOL: l.hostSpool(spec.name),
    SHARED_QUEUE: l.sharedQueue,
    SPOOL_DIR: l.spoolDir,
    SPAMTRAPD_CLI: cliJs(),
    CONFIG_DIR: l.configDir,
    SMTP_HOST: spec.address,
    SMTP_PORT: String(spec.smtpPort),
    METRICS_HOST: spec.address,
    METRICS_PORT: String(spec.metricsPort),
    ME: `${spec.name}.multihost.test`,
    WORKERS: '1',
    RDNS_TIMEOUT_MS: '0',
    LOG_LEVEL: 'info',
    ...spec.env,
  };
  const proc = spawn(
    unshare,
    ['--uts', '--mount', '--pid', '--fork', '--mount-proc', '--propagation', 'private', '--kill-child', path.join(scriptsDir(), 'trap-host.sh')],
    // Its own process group, so destroy() reaches it and everything in the namespace.
    { cwd: l.root, detached: true, stdio: ['ignore', 'pipe', 'pipe'], env },
  );
  const daemon = new Daemon(proc, spec.smtpPort, spec.metricsPort, l.spoolDir, l.configDir, l.root);
  let initPid: number | undefined;
  try {
    initPid = await childOf(proc.pid!, 10_000);
    const host = new TrapHost(spec, daemon, initPid);
    await daemon.waitForLog(/ info listening proc=acceptor0 /, timeoutMs);
    return host;
  } catch (err) {
    if (initPid !== undefined) await new TrapHost(spec, daemon, initPid).destroy();
    else await daemon.destroy();
    throw err;
  }
}
