/** Where things are, from a compiled test (dist/test/ in CI, or another out dir during development). */
import fs from 'node:fs';
import path from 'node:path';

/** The checkout: the first ancestor holding spamtrapd's package.json. */
export function repoRoot(): string {
  for (let dir = __dirname; ; dir = path.dirname(dir)) {
    const pkg = path.join(dir, 'package.json');
    if (fs.existsSync(pkg) && (JSON.parse(fs.readFileSync(pkg, 'utf8')) as { name?: string }).name === 'spamtrapd') return dir;
    if (path.dirname(dir) === dir) throw new Error(`no spamtrapd package.json above ${__dirname}`);
  }
}

/** The compiled tree the tests run from: where workers/cli.js is. */
export function builtRoot(): string {
  for (let dir = __dirname; ; dir = path.dirname(dir)) {
    if (fs.existsSync(path.join(dir, 'workers', 'cli.js'))) return dir;
    if (path.dirname(dir) === dir) throw new Error(`no compiled workers/cli.js above ${__dirname}`);
  }
}

/** CI clones the repository beside a copy of shared/. */
export function sharedDir(): string {
  return path.join(repoRoot(), '..', 'shared');
}

/** A test tool as the install scripts leave it: .tools/bin/NAME of the checkout. */
export function toolPath(name: string): string {
  return path.join(repoRoot(), '.tools', 'bin', name);
}
