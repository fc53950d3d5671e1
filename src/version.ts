import fs from 'node:fs';
import path from 'node:path';

/** The package version, for the Received header and logs; read once from package.json beside dist/. */
function readVersion(): string {
  for (const rel of ['../../package.json', '../package.json']) {
    try {
      const pkg = JSON.parse(fs.readFileSync(path.join(__dirname, rel), 'utf8')) as { name?: string; version?: string };
      if (pkg.name === 'spamtrapd' && pkg.version) return pkg.version;
    } catch {
      // try the next candidate
    }
  }
  throw new Error(`cannot find spamtrapd's package.json above ${__dirname}`);
}

export const VERSION = readVersion();
