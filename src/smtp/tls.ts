import fs from 'node:fs/promises';
import path from 'node:path';
import { ConfigError } from '../errors';
import { TLS_DIR } from '../spool-layout';

export interface TlsMaterial {
  key: Buffer;
  cert: Buffer;
  /** Where the material came from, for the start-up log. */
  source: string;
}

/**
 * The STARTTLS certificate: the operator's files when configured, else one generated at first start and kept
 * in the spool (so a restart presents the same certificate). Never smtp-server's bundled one, which is expired
 * and whose private key is public.
 */
export async function loadTlsMaterial(opts: {
  keyFile: string | null;
  certFile: string | null;
  spoolDir: string;
  hostname: string;
  /** Told when an incomplete SPOOL_DIR/.tls was set aside (its new name) before a fresh pair was made. */
  onIncomplete?: (setAside: string) => void;
}): Promise<TlsMaterial> {
  if (opts.keyFile && opts.certFile) {
    const [key, cert] = await Promise.all([
      readOrExplain(opts.keyFile, 'TLS_KEY_FILE'),
      readOrExplain(opts.certFile, 'TLS_CERT_FILE'),
    ]);
    return { key, cert, source: opts.certFile };
  }
  const dir = path.join(opts.spoolDir, TLS_DIR);
  const keyPath = path.join(dir, 'key.pem');
  const certPath = path.join(dir, 'cert.pem');
  const existing = await readPair(keyPath, certPath);
  if (existing === 'complete') {
    const [key, cert] = await Promise.all([fs.readFile(keyPath), fs.readFile(certPath)]);
    return { key, cert, source: certPath };
  }
  if (existing === 'incomplete') {
    // Left by an older version that died between its two files: set aside for the operator, never used.
    const aside = `${dir}.incomplete-${Date.now()}`;
    await fs.rename(dir, aside);
    opts.onIncomplete?.(aside);
  }
  // Loaded only to make a pair (the first start): its X.509 stack costs every process ~10 MB of RSS otherwise.
  const { default: selfsigned } = await import('selfsigned');
  const pems = await selfsigned.generate([{ name: 'commonName', value: opts.hostname }], {
    keySize: 2048,
    notAfterDate: new Date(Date.now() + 10 * 365 * 86400_000),
    algorithm: 'sha256',
    extensions: [{ name: 'subjectAltName', altNames: [{ type: 2, value: opts.hostname }] }],
  });
  // Both files are written into a directory of their own that becomes SPOOL_DIR/.tls by one rename: a crash at
  // any point leaves either no .tls or a complete one, never a key without its certificate.
  const staging = await fs.mkdtemp(`${dir}.new-`);
  try {
    await fs.chmod(staging, 0o700);
    await fs.writeFile(path.join(staging, 'key.pem'), pems.private, { mode: 0o600 });
    await fs.writeFile(path.join(staging, 'cert.pem'), pems.cert, { mode: 0o644 });
    try {
      await fs.rename(staging, dir);
    } catch (err) {
      // Another process made it first: its pair is as good as ours.
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== 'ENOTEMPTY' && code !== 'EEXIST') throw err;
    }
  } finally {
    await fs.rm(staging, { recursive: true, force: true });
  }
  const [key, cert] = await Promise.all([fs.readFile(keyPath), fs.readFile(certPath)]);
  return { key, cert, source: `${certPath} (generated)` };
}

/** Whether the generated pair is there: both files, neither (no .tls yet), or only one of them. */
async function readPair(keyPath: string, certPath: string): Promise<'complete' | 'absent' | 'incomplete'> {
  const exists = async (p: string) =>
    fs.access(p).then(
      () => true,
      (err: NodeJS.ErrnoException) => {
        if (err.code === 'ENOENT') return false;
        throw err;
      },
    );
  const [k, c] = await Promise.all([exists(keyPath), exists(certPath)]);
  if (k && c) return 'complete';
  if (!k && !c) return (await exists(path.dirname(keyPath))) ? 'incomplete' : 'absent';
  return 'incomplete';
}

async function readOrExplain(file: string, variable: string): Promise<Buffer> {
  try {
    return await fs.readFile(file);
  } catch (err) {
    throw new ConfigError(variable, `cannot read ${file}: ${(err as Error).message}`);
  }
}
