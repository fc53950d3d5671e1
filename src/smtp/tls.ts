import fs from 'node:fs/promises';
import path from 'node:path';
import selfsigned from 'selfsigned';
import { ConfigError } from '../errors';

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
}): Promise<TlsMaterial> {
  if (opts.keyFile && opts.certFile) {
    const [key, cert] = await Promise.all([
      readOrExplain(opts.keyFile, 'TLS_KEY_FILE'),
      readOrExplain(opts.certFile, 'TLS_CERT_FILE'),
    ]);
    return { key, cert, source: opts.certFile };
  }
  const dir = path.join(opts.spoolDir, '.tls');
  const keyPath = path.join(dir, 'key.pem');
  const certPath = path.join(dir, 'cert.pem');
  try {
    const [key, cert] = await Promise.all([fs.readFile(keyPath), fs.readFile(certPath)]);
    return { key, cert, source: certPath };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  const pems = await selfsigned.generate([{ name: 'commonName', value: opts.hostname }], {
    keySize: 2048,
    notAfterDate: new Date(Date.now() + 10 * 365 * 86400_000),
    algorithm: 'sha256',
    extensions: [{ name: 'subjectAltName', altNames: [{ type: 2, value: opts.hostname }] }],
  });
  await fs.mkdir(dir, { recursive: true, mode: 0o700 });
  // Write then link, so two processes generating at once never leave a key that does not match its cert.
  const tmpKey = `${keyPath}.${process.pid}`;
  const tmpCert = `${certPath}.${process.pid}`;
  await fs.writeFile(tmpKey, pems.private, { mode: 0o600 });
  await fs.writeFile(tmpCert, pems.cert, { mode: 0o644 });
  try {
    await fs.link(tmpKey, keyPath);
    await fs.link(tmpCert, certPath);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  } finally {
    await Promise.all([fs.rm(tmpKey, { force: true }), fs.rm(tmpCert, { force: true })]);
  }
  const [key, cert] = await Promise.all([fs.readFile(keyPath), fs.readFile(certPath)]);
  return { key, cert, source: `${certPath} (generated)` };
}

async function readOrExplain(file: string, variable: string): Promise<Buffer> {
  try {
    return await fs.readFile(file);
  } catch (err) {
    throw new ConfigError(variable, `cannot read ${file}: ${(err as Error).message}`);
  }
}
