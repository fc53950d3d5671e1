/** Temporary directories for tests, removed afterwards, and what is left in one. */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

export function makeTmpDir(tag: string): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), `spamtrapd-dq-${tag}-`));
}

export function rmTmpDir(dir: string): void {
  fs.rmSync(dir, { recursive: true, force: true });
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
