/**
 * When the spool lock's pid file names a dead process on this host, a new start waits for the lock to go stale
 * instead of failing; but the wait never steals a lock that is still kept fresh, and a holder on another host is
 * refused at once (its pid means nothing here). A pid alone does not make a holder alive: its start time must match.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { acquireSpoolLock, LOCK_NAME, PID_FILE_NAME, SpoolLockedError } from '../src/dirqueue';
import { processStartTicks } from '../src/pid';
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

/** A lock directory nobody refreshes, younger than the stale time, as a SIGKILLed holder leaves it. */
function abandonedLock(dir: string, holderPid: number, holderStart: string): void {
  fs.mkdirSync(path.join(dir, LOCK_NAME));
  fs.writeFileSync(path.join(dir, PID_FILE_NAME), `${holderPid}\n${os.hostname()}\n${holderStart}\n`);
}

test('a dead holder whose pid is alive again under another start time (a fresh pid namespace) is waited for, not taken for a live one', withDir('lockreuse', async (dir) => {
  // Our own pid with a start time that is not ours: what a trap restarted as a container's pid 1 finds after its
  // predecessor, also pid 1, was killed.
  const ours = processStartTicks('self')!;
  abandonedLock(dir, process.pid, String(BigInt(ours) + 1n));
  const waited: string[] = [];
  const release = await acquireSpoolLock(dir, { staleMs: 2000, onCompromised: () => undefined, onWaiting: (h) => waited.push(h) });
  try {
    assert.deepEqual(waited, [`pid ${process.pid} on ${os.hostname()}`], 'it waited for the lock to go stale');
    const [pid, host, start] = fs.readFileSync(path.join(dir, PID_FILE_NAME), 'utf8').split('\n');
    assert.deepEqual([pid, host, start], [String(process.pid), os.hostname(), ours], 'the pid file names the new holder with its start time');
  } finally {
    await release();
  }
}));

test('a holder with its pid and its start time alive is refused at once', withDir('lockalive', async (dir) => {
  abandonedLock(dir, process.pid, processStartTicks('self')!);
  const t0 = Date.now();
  await assert.rejects(acquireSpoolLock(dir, { staleMs: 2000, onCompromised: () => undefined }), new RegExp(`pid ${process.pid} on `));
  assert.ok(Date.now() - t0 < 1000);
}));
