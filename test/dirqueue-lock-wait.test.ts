/**
 * When the spool lock's pid file names a dead process on this host, a new start waits for the lock to go stale
 * instead of failing; but the wait never steals a lock that is still kept fresh, and a holder on another host is
 * refused at once (its pid means nothing here).
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { acquireSpoolLock, PID_FILE_NAME, SpoolLockedError } from '../src/dirqueue';
import { deadPid } from './helpers/job-fixtures';
import { withDir } from './helpers/temp-dirs';

test('a pid file naming a dead local process cannot make a start steal a lock that is still refreshed', withDir('lockwait', async (dir) => {
  const release = await acquireSpoolLock(dir, { staleMs: 2000, onCompromised: () => undefined });
  try {
    fs.writeFileSync(path.join(dir, PID_FILE_NAME), `${deadPid()}\n${(await import('node:os')).hostname()}\n`);
    const waited: string[] = [];
    const t0 = Date.now();
    await assert.rejects(
      acquireSpoolLock(dir, { staleMs: 2000, onCompromised: () => undefined, onWaiting: (h) => waited.push(h) }),
      (e) => e instanceof SpoolLockedError,
    );
    assert.equal(waited.length, 1, 'it did wait for staleness');
    assert.ok(Date.now() - t0 >= 2000, 'for at least the stale time');
  } finally {
    await release();
  }
}));

test('a holder on another host is refused at once', withDir('lockhost', async (dir) => {
  const release = await acquireSpoolLock(dir, { staleMs: 2000, onCompromised: () => undefined });
  try {
    fs.writeFileSync(path.join(dir, PID_FILE_NAME), `1\nsome-other-host.example\n`);
    const t0 = Date.now();
    await assert.rejects(acquireSpoolLock(dir, { staleMs: 2000, onCompromised: () => undefined }), /pid 1 on some-other-host\.example/);
    assert.ok(Date.now() - t0 < 1000);
  } finally {
    await release();
  }
}));
