import fs from 'node:fs';
import path from 'node:path';

/**
 * The package version, for the Received header and logs; read once from the package.json found above the compiled
 * file (dist/ in production, other out dirs during development).
 */
function readVersion(): string {
  for (let dir = __dirname; ; dir = path.dirname(dir)) {
    try {
      const pkg = JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8')) as { name?: string; version?: string };
      if (pkg.name === 'spamtrapd' && pkg.version) return pkg.version;
    } catch {
      // no readable package.json here: keep walking up
    }
    if (path.dirname(dir) === dir) throw new Error(`cannot find spamtrapd's package.json above ${__dirname}`);
  }
}

export const VERSION = readVersion();
