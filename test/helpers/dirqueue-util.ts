/** Shared by the dirqueue tests: temp dirs, repo paths that work from dist/ and build/dq/, child workers. */
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { createHash } from 'node:crypto';

/** The repo root: the first ancestor of the compiled file that has package.json (dist/ or build/dq/ alike). */
export function repoRoot(): string {
  for (let d = __dirname; ; d = path.dirname(d)) {
    if (fs.existsSync(path.join(d, 'package.json'))) return d;
    if (path.dirname(d) === d) throw new Error(`no package.json above ${__dirname}`);
  }
}

/** CI clones the repo beside a copy of shared/. */
export function sharedDir(): string {
  return path.join(repoRoot(), '..', 'shared');
}

export function perlModuleLib(): string {
  return process.env['IPC_DIRQUEUE_LIB'] || '/tmp/anchors/ipc-dirqueue/lib';
}

export function perlModuleFound(): boolean {
  return fs.existsSync(path.join(perlModuleLib(), 'IPC', 'DirQueue.pm'));
}

export function workerScript(): string {
  return path.join(__dirname, 'dirqueue-worker.js');
}

export function makeTmpDir(tag: string): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), `spamtrapd-dq-${tag}-`));
}

export function rmTmpDir(dir: string): void {
  fs.rmSync(dir, { recursive: true, force: true });
}

export function sha256(buf: Buffer): string {
  return createHash('sha256').update(buf).digest('hex');
}

/** Every file below dir, relative, sorted: "nothing left behind" assertions compare this with []. */
export function listFiles(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string): void => {
    let entries: fs.Dirent[];
    try {
      entries = fs.readdirSync(d, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else out.push(path.relative(dir, p));
    }
  };
  walk(dir);
  return out.sort();
}

/** Deterministic varied content: sizes from 0 to ~9 KB, bytes from a hash chain so every job differs. */
export function jobContent(seed: number, i: number): Buffer {
  const size = (i * 7919 + seed * 104729) % 9000;
  const parts: Buffer[] = [];
  let len = 0;
  for (let blk = 0; len < size; blk++) {
    const b = createHash('sha256').update(`${seed}:${i}:${blk}`).digest();
    parts.push(b);
    len += b.length;
  }
  return Buffer.concat(parts).subarray(0, size);
}

/** A pid that certainly belongs to no process: one of a child that has exited and been reaped. */
export function deadPid(): number {
  const r = spawnSync('true');
  if (r.pid === undefined || r.pid <= 0) throw new Error('could not spawn true');
  return r.pid;
}

export interface WorkerResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export function runWorker(args: string[], timeoutMs = 60_000): Promise<WorkerResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [workerScript(), ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

/** A test body run in a fresh temporary directory that is removed afterwards, pass or fail. */
export function withDir(tag: string, fn: (dir: string) => Promise<void>): () => Promise<void> {
  return async () => {
    const dir = makeTmpDir(tag);
    try {
      await fn(dir);
    } finally {
      rmTmpDir(dir);
    }
  };
}
