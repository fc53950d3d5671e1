/**
 * The live consumers of the two-host harness, each in a mount namespace of its own where the shared queue is
 * bound at the traps' path (scripts/multihost/queue-view.sh): the real Perl IPC::DirQueue where its module is
 * present, spamtrapd's reader in one process, and a loop of `spamtrapd queue pickup`. All take jobs from the one
 * queue at once, with the consumers' lock protocol; each keeps a copy of every message it finished.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { cliJs, findUnshare, scriptsDir, type Layout } from './layout';
import { perlModuleFound, perlModuleLib } from '../perl-dirqueue';

export type ConsumerKind = 'perl' | 'node' | 'cli';

export interface Consumer {
  kind: ConsumerKind;
  output(): string;
  exited(): boolean;
  waitExit(timeoutMs: number): Promise<void>;
  destroy(): void;
}

export interface Consumed {
  consumer: ConsumerKind;
  jobId: string;
  message: Buffer;
}

/** Which consumers can run here, and why any cannot. */
export function availableConsumers(): { kinds: ConsumerKind[]; missing: string[] } {
  if (perlModuleFound()) return { kinds: ['perl', 'node', 'cli'], missing: [] };
  const why = `perl: IPC::DirQueue not found at ${perlModuleLib()} (set IPC_DIRQUEUE_LIB; ../shared/tools/dirqueue/README.md)`;
  return { kinds: ['node', 'cli'], missing: [why] };
}

function commandFor(kind: ConsumerKind, l: Layout): string[] {
  const queue = path.join(l.spoolDir, 'incoming');
  const out = l.consumedDir(kind);
  switch (kind) {
    case 'perl':
      return ['perl', '-I', perlModuleLib(), path.join(scriptsDir(), 'perl-consumer.pl'), queue, out, l.stopFile];
    case 'node':
      return [process.execPath, path.join(__dirname, 'node-consumer.js'), queue, out, l.stopFile];
    case 'cli':
      return ['sh', path.join(scriptsDir(), 'cli-consumer.sh'), cliJs(), l.spoolDir, out, l.stopFile];
  }
}

/** Runs `command` where the shared queue is at the traps' path; its own process group. */
export function spawnInQueueView(l: Layout, command: string[]): ChildProcess {
  const unshare = findUnshare();
  if (!unshare) throw new Error('unshare not found');
  return spawn(unshare, ['--mount', '--propagation', 'private', path.join(scriptsDir(), 'queue-view.sh'), ...command], {
    cwd: l.root,
    detached: true,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { PATH: process.env.PATH, HOME: process.env.HOME, SHARED_QUEUE: l.sharedQueue, SPOOL_DIR: l.spoolDir },
  });
}

export function startConsumer(kind: ConsumerKind, l: Layout): Consumer {
  fs.mkdirSync(l.consumedDir(kind), { recursive: true });
  const proc = spawnInQueueView(l, commandFor(kind, l));
  let out = '';
  proc.stdout?.on('data', (d: Buffer) => (out += d.toString('utf8')));
  proc.stderr?.on('data', (d: Buffer) => (out += d.toString('utf8')));
  let done = false;
  const exit = new Promise<void>((resolve) => proc.once('exit', () => ((done = true), resolve())));
  return {
    kind,
    output: () => out,
    exited: () => done,
    async waitExit(timeoutMs) {
      let t: NodeJS.Timeout | undefined;
      const late = new Promise((_, reject) => {
        t = setTimeout(() => reject(new Error(`consumer ${kind} did not exit within ${timeoutMs} ms:\n${out}`)), timeoutMs);
      });
      await Promise.race([exit, late]).finally(() => clearTimeout(t));
      if (proc.exitCode !== 0) throw new Error(`consumer ${kind} exited with ${proc.exitCode ?? proc.signalCode}:\n${out}`);
    },
    destroy() {
      if (done) return;
      try {
        process.kill(-proc.pid!, 'SIGKILL');
      } catch {
        proc.kill('SIGKILL');
      }
    },
  };
}

/** Every message the consumers finished so far (files still being written are not counted). */
export function readConsumed(l: Layout, kinds: readonly ConsumerKind[]): Consumed[] {
  const out: Consumed[] = [];
  for (const consumer of kinds) {
    const dir = l.consumedDir(consumer);
    for (const name of fs.existsSync(dir) ? fs.readdirSync(dir) : []) {
      if (name.startsWith('.') || name.endsWith('.part')) continue;
      const file = path.join(dir, name);
      if (consumer === 'cli') {
        const doc = JSON.parse(fs.readFileSync(file, 'utf8')) as { job: { id: string }; message: string };
        out.push({ consumer, jobId: doc.job.id, message: Buffer.from(doc.message, 'latin1') });
      } else {
        out.push({ consumer, jobId: name.replace(/\.copy\d+$/, ''), message: fs.readFileSync(file) });
      }
    }
  }
  return out;
}
