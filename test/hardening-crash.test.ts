/**
 * Crashes against the real daemon: an acceptor SIGKILLed mid-flood (replaced fast, nothing acknowledged lost,
 * nothing partial visible, its tmp/ leftovers swept at the next start), the primary SIGKILLed (no orphan keeps the
 * port, the next start takes the stale spool lock over), and SIGTERM sent to the whole process group (systemd).
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { acceptorPids, type Daemon, startDaemon } from './helpers/daemon';
import { RawSmtp, sendMail } from './helpers/smtp-client';
import { parseTmpName } from '../src/dirqueue';
import { processExists } from '../src/pid';
import { idMessage, idOfMessage } from './helpers/id-messages';
import { dataOrphans, inspectSpool, tmpLeftovers } from './helpers/queues';
import { tryConnect } from './helpers/sockets';
import { splitReceived } from './helpers/stored-message';
import { sleep, waitFor } from './helpers/waiting';

/** A message whose every byte depends on its id, so a stored copy can be compared with what was sent. */
function messageFor(id: string): Buffer {
  return idMessage(id, 'crash');
}

function idOf(data: Buffer): string {
  const id = idOfMessage(data, 'crash');
  assert.ok(id, 'stored message has its Message-Id');
  return id;
}

/** Flood loops that record what was acknowledged with 250; stop() ends them. */
function flood(port: () => number, loops: number) {
  const acked = new Map<string, Buffer>();
  let stopped = false;
  let attempts = 0;
  const one = async (n: number) => {
    for (let i = 0; !stopped && i < 100_000; i++) {
      const id = `${n}-${i}-${process.hrtime.bigint()}`;
      const data = messageFor(id);
      attempts++;
      try {
        const { dataReply } = await sendMail(port(), { from: '<s@spam.example>', to: ['<trap@bait.example>'], data });
        if (dataReply?.code === 250) acked.set(id, data);
      } catch {
        // refused, reset or closed by the crash: never acknowledged, so nothing to check
        await sleep(5);
      }
    }
  };
  const running = Array.from({ length: loops }, (_, n) => one(n));
  return {
    acked,
    attempts: () => attempts,
    stop: async () => {
      stopped = true;
      await Promise.all(running);
    },
  };
}

/** Every acknowledged message is stored once per ack, byte for byte behind our Received header. */
async function assertAckedStored(spoolDir: string, acked: Map<string, Buffer>): Promise<void> {
  const jobs = await inspectSpool(spoolDir);
  const stored = new Map<string, Buffer>();
  for (const j of jobs) {
    const { rest } = splitReceived(j.data);
    const id = idOf(rest);
    assert.ok(!stored.has(id), `message ${id} stored twice`);
    stored.set(id, rest);
  }
  const lost = [...acked.keys()].filter((id) => !stored.has(id));
  assert.deepEqual(lost, [], `acknowledged with 250 but not in the queue (of ${acked.size})`);
  for (const [id, sent] of acked) assert.ok(stored.get(id)!.equals(sent), `message ${id} stored byte for byte`);
}

describe('crashes', () => {
  const daemons: Daemon[] = [];
  after(async () => {
    for (const d of daemons) await d.destroy();
    for (const d of daemons) d.cleanup();
  });

  test('SIGKILL of an acceptor mid-flood: replaced at once, no acknowledged message lost, its tmp files swept at once, tmp/ empty after the stop', async () => {
    // The default age guard (60 s) stays: the victim's files must go because the primary saw it die, not by age.
    const d = await startDaemon({ workers: 2, env: { SHUTDOWN_GRACE_MS: '3000' } });
    daemons.push(d);
    const f = flood(() => d.port, 8);
    try {
      await waitFor('100 acknowledged messages', () => f.acked.size >= 100, 30_000);
      // A session left inside DATA gives the victim a tmp file when it dies. With SCHED_NONE the kernel picks the
      // acceptor of each session, so the victim is whichever acceptor holds that session's file (its pid is in the
      // tmp name): the kill never depends on where the kernel put a session or between which messages it lands.
      const tmpDir = path.join(d.spoolDir, 'incoming', 'tmp');
      const heldBy = (pid: number) => fs.existsSync(tmpDir) && fs.readdirSync(tmpDir).some((n) => parseTmpName(n)?.pid === pid);
      const halfSent = () =>
        (fs.existsSync(tmpDir) ? fs.readdirSync(tmpDir) : [])
          .filter((n) => n.endsWith('.data'))
          .filter((n) => {
            try {
              return fs.readFileSync(path.join(tmpDir, n), 'latin1').includes('Subject: never finished');
            } catch {
              return false; // a flood message's file, committed and gone between the listing and the read
            }
          })
          .map((n) => parseTmpName(n)!.pid);
      const hanging = await RawSmtp.connect(d.port);
      await hanging.read();
      await hanging.cmd('EHLO half.example');
      await hanging.cmd('MAIL FROM:<half@spam.example>');
      await hanging.cmd('RCPT TO:<trap@bait.example>');
      assert.equal((await hanging.cmd('DATA')).code, 354);
      // More than any write-coalescing buffer, so part of it is on disk while the rest never comes.
      hanging.write(`Subject: never finished\r\n\r\n${`${'x'.repeat(998)}\r\n`.repeat(200)}`);
      let found: number[] = [];
      await waitFor('the half-sent message has a tmp file', () => (found = halfSent()).length > 0, 10_000);
      const victim = found[0];
      const slot = [...acceptorPids(d.logs())].find(([, pids]) => pids.includes(victim))![0];
      const listeningBefore = acceptorPids(d.logs()).get(slot)!.length;

      process.kill(victim, 'SIGKILL');
      await d.waitForLog(new RegExp(` info listening proc=acceptor${slot} `), 10_000, listeningBefore + 1);
      // Measured by the daemon's own clock, from the primary logging the death to the replacement listening: the
      // restart is immediate (no back-off for a slot that lived), and a new Node process needs ~0.3-0.5 s to start
      // on an idle 2-core machine and several times that beside this flood and another test file.
      const lastAt = (re: RegExp) => Date.parse([...d.logs().matchAll(re)].pop()![1]);
      const diedAt = lastAt(new RegExp(`^(\\S+) error worker_died proc=primary pid=${victim} `, 'gm'));
      const listeningAt = lastAt(new RegExp(`^(\\S+) info listening proc=acceptor${slot} `, 'gm'));
      assert.ok(listeningAt - diedAt < 3000, `acceptor${slot} replaced ${listeningAt - diedAt} ms after its death`);
      assert.ok(!processExists(victim));
      await waitFor("the dead acceptor's tmp files are swept while the trap runs", () => !heldBy(victim), 5000);
      const ackedBefore = f.acked.size;
      await waitFor('the flood goes on after the crash', () => f.acked.size >= ackedBefore + 50, 20_000);
      hanging.close();
      await f.stop();

      await assertAckedStored(d.spoolDir, f.acked);
      await d.stop('SIGTERM');
      assert.equal(d.exitCode, 0, d.logs());
      assert.deepEqual(await tmpLeftovers(d.spoolDir), [], 'tmp/ is empty after the stop');
      assert.deepEqual(await dataOrphans(d.spoolDir), [], 'no data file without a control file');
      await assertAckedStored(d.spoolDir, f.acked);
    } finally {
      await f.stop();
    }
  });

  test('a writer thread that dies takes its acceptor down: 451, fds closed with the process, tmp files swept at once, slot replaced', async () => {
    const marker = 'KILL-THE-WRITER-THREAD';
    const d = await startDaemon({ workers: 1, env: { SPOOL_WRITER: 'thread', SPAMTRAPD_FAILPOINTS: `writer-thread-exit-on=${marker}` } });
    daemons.push(d);
    const [pid] = acceptorPids(d.logs()).get(0)!;
    const tmpDir = path.join(d.spoolDir, 'incoming', 'tmp');
    // Enough before the marker that the job's tmp file exists (and is open) when the thread dies.
    const body = `Subject: doomed\r\n\r\n${`${'y'.repeat(98)}\r\n`.repeat(3000)}${marker}\r\n`;
    const { dataReply } = await sendMail(d.port, { from: '<s@spam.example>', to: ['<trap@bait.example>'], data: body });
    assert.equal(dataReply?.code, 451, dataReply?.raw);
    await d.waitForLog(new RegExp(` writer_thread_died proc=acceptor0 pid=${pid} `), 10_000);
    await d.waitForLog(new RegExp(` worker_died proc=primary pid=${pid} slot=0 code=1 `), 15_000);
    await d.waitForLog(/ info listening proc=acceptor0 /, 15_000, 2);
    assert.ok(!processExists(pid), 'the process is gone, and its fds with it');
    await waitFor('its tmp files are swept at once', () => !fs.existsSync(tmpDir) || !fs.readdirSync(tmpDir).some((n) => parseTmpName(n)?.pid === pid), 5000);
    const next = await sendMail(d.port, { from: '<s@spam.example>', to: ['<trap@bait.example>'], data: 'Subject: fine\r\n\r\nx\r\n' });
    assert.equal(next.dataReply?.code, 250);
    assert.equal((await inspectSpool(d.spoolDir)).length, 1, 'only the accepted message is in the queue');
    await d.stop('SIGTERM');
    assert.deepEqual(await tmpLeftovers(d.spoolDir), []);
  });

  test('SIGKILL of the primary: no orphan acceptor keeps the port, the next start takes the stale spool lock over', async () => {
    const d = await startDaemon({ workers: 2 });
    daemons.push(d);
    const pids = [...acceptorPids(d.logs()).values()].map((l) => l[l.length - 1]);
    assert.equal(pids.length, 2);
    assert.equal(await tryConnect(d.port), 'connected');
    const killedAt = Date.now();
    process.kill(d.proc.pid!, 'SIGKILL');
    await d.waitExit(5000);
    await waitFor('every acceptor exits with its primary', () => pids.every((p) => !processExists(p)), 5000);
    await waitFor('the port refuses connections', async () => (await tryConnect(d.port)) === 'ECONNREFUSED', 5000);

    // The dead primary's lock is still fresh, but its pid file names a dead process on this host: a start right
    // away waits for the lock to go stale (10 s) and takes it over, instead of failing under a service manager.
    const d2 = await startDaemon({ workers: 1, spoolDir: d.spoolDir });
    daemons.push(d2);
    assert.match(d2.logs(), new RegExp(`spool_lock_stale_wait .*dead_holder="pid ${d.proc.pid} on `));
    assert.ok(Date.now() - killedAt < 20_000, 'the stale lock (10 s) was taken over within 20 s of the kill');
    const r = await sendMail(d2.port, { from: '<a@spam.example>', to: ['<trap@bait.example>'], data: 'Subject: after\r\n\r\nhi\r\n' });
    assert.equal(r.dataReply?.code, 250);
    await d2.stop('SIGTERM');
    assert.equal(d2.exitCode, 0, d2.logs());
  });

  test('SIGTERM to the whole process group (systemd) during a flood: exit 0, no acknowledged message lost', async () => {
    const d = await startDaemon({ workers: 2, env: { SHUTDOWN_GRACE_MS: '5000' } });
    daemons.push(d);
    const f = flood(() => d.port, 12);
    try {
      await waitFor('150 acknowledged messages', () => f.acked.size >= 150, 30_000);
      process.kill(-d.proc.pid!, 'SIGTERM');
      await d.waitExit(30_000);
    } finally {
      await f.stop();
    }
    assert.equal(d.exitCode, 0, d.logs());
    assert.doesNotMatch(d.logs(), /worker_died/, 'no acceptor died or was restarted during the drain');
    await assertAckedStored(d.spoolDir, f.acked);
    assert.deepEqual(await tmpLeftovers(d.spoolDir), []);
  });
});
