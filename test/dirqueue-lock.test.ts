import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { SpoolLockedError, acquireSpoolLock } from '../src/dirqueue';
import { workerScript } from './helpers/dirqueue-workers';
import { makeTmpDir, rmTmpDir } from './helpers/temp-dirs';

const quiet = { onCompromised: () => undefined };

test('a second acquire on the same spool fails naming the spool and the holder pid', async () => {
  const spool = makeTmpDir('lock');
  try {
    const release = await acquireSpoolLock(spool, { staleMs: 10_000, ...quiet });
    await assert.rejects(acquireSpoolLock(spool, { staleMs: 10_000, ...quiet }), (e: unknown) => {
      assert.ok(e instanceof SpoolLockedError);
      assert.equal(e.code, 'ELOCKED');
      assert.ok(e.message.includes(spool), e.message);
      assert.ok(e.message.includes(`pid ${process.pid}`), e.message);
      return true;
    });
    await release();
    assert.equal(fs.existsSync(path.join(spool, '.spamtrapd.lock.pid')), false);
    const again = await acquireSpoolLock(spool, { staleMs: 10_000, ...quiet });
    await again();
  } finally {
    rmTmpDir(spool);
  }
});

test('a SIGKILLed holder loses the spool after its stale time', { timeout: 30_000 }, async () => {
  const spool = makeTmpDir('lock-kill');
  const staleMs = 2000;
  try {
    const child = spawn(process.execPath, [workerScript(), 'hold-lock', spool, String(staleMs)], { stdio: ['ignore', 'pipe', 'inherit'] });
    await new Promise<void>((resolve, reject) => {
      child.stdout.on('data', (d: Buffer) => d.toString().includes('locked') && resolve());
      child.on('exit', (code) => reject(new Error(`holder exited early (${code})`)));
    });
    // Alive and refreshing: refused, even after the stale time has passed once.
    await new Promise((r) => setTimeout(r, staleMs + 500));
    await assert.rejects(acquireSpoolLock(spool, { staleMs, ...quiet }), new RegExp(`pid ${child.pid}`));
    const exited = new Promise((r) => child.on('exit', r));
    child.kill('SIGKILL');
    await exited;
    const killedAt = Date.now();
    let release: (() => Promise<void>) | null = null;
    while (!release) {
      try {
        release = await acquireSpoolLock(spool, { staleMs, ...quiet });
      } catch (e) {
        assert.ok(e instanceof SpoolLockedError, String(e));
        assert.ok(Date.now() - killedAt < staleMs + 5000, 'takeover within the stale time');
        await new Promise((r) => setTimeout(r, 200));
      }
    }
    assert.equal(fs.readFileSync(path.join(spool, '.spamtrapd.lock.pid'), 'utf8').split('\n')[0], String(process.pid));
    await release();
  } finally {
    rmTmpDir(spool);
  }
});
