/**
 * The generated STARTTLS pair: made once and kept, and never left half-made. An old crash between the key and the
 * certificate used to leave a key alone, and every later start failed until someone deleted it by hand.
 */
import assert from 'node:assert/strict';
import { createPrivateKey, X509Certificate } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { loadTlsMaterial } from '../src/smtp/tls';

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'spamtrapd-tls-'));
after(() => fs.rmSync(root, { recursive: true, force: true }));
let n = 0;

function spool(): string {
  const dir = path.join(root, String(n++));
  fs.mkdirSync(dir);
  return dir;
}

function assertMatchingPair(key: Buffer, cert: Buffer): void {
  assert.ok(new X509Certificate(cert).checkPrivateKey(createPrivateKey(key)), 'the certificate belongs to the key');
}

const load = (spoolDir: string, onIncomplete?: (aside: string) => void) =>
  loadTlsMaterial({ keyFile: null, certFile: null, spoolDir, hostname: 'trap.test', onIncomplete });

describe('the generated STARTTLS pair', () => {
  test('is generated once into SPOOL_DIR/.tls and the same pair is used at the next start', async () => {
    const s = spool();
    const first = await load(s);
    assertMatchingPair(first.key, first.cert);
    assert.match(first.source, /\(generated\)$/);
    assert.equal(fs.statSync(path.join(s, '.tls', 'key.pem')).mode & 0o777, 0o600);
    const again = await load(s);
    assert.ok(again.key.equals(first.key) && again.cert.equals(first.cert));
    assert.deepEqual(fs.readdirSync(s), ['.tls'], 'no staging directory left behind');
  });

  for (const [what, files] of [
    ['a key without its certificate', ['key.pem']],
    ['a certificate without its key', ['cert.pem']],
    ['an empty .tls directory', []],
  ] as const) {
    test(`${what} is set aside and a new pair made, so the trap starts`, async () => {
      const s = spool();
      fs.mkdirSync(path.join(s, '.tls'));
      for (const f of files) fs.writeFileSync(path.join(s, '.tls', f), 'half of a pair\n');
      let aside = '';
      const m = await load(s, (p) => (aside = p));
      assertMatchingPair(m.key, m.cert);
      assert.ok(aside.startsWith(path.join(s, '.tls.incomplete-')), aside);
      assert.deepEqual(fs.readdirSync(aside).sort(), [...files].sort(), 'the half pair is kept for the operator');
    });
  }

  test("a staging directory left by a crash during generation is ignored", async () => {
    const s = spool();
    fs.mkdirSync(path.join(s, '.tls.new-crashed'));
    fs.writeFileSync(path.join(s, '.tls.new-crashed', 'key.pem'), 'half\n');
    const m = await load(s);
    assertMatchingPair(m.key, m.cert);
  });
});
