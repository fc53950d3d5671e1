/**
 * Process life cycle of the real daemon at its edges: a stop that lands while an acceptor is (re)starting, a zero
 * shutdown grace, and crash leftovers swept while the trap keeps running.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { currentAcceptorPids, type Daemon, startDaemon } from './helpers/daemon';
import { RawSmtp } from './helpers/smtp-client';


/**
 * A session inside DATA with part of a message sent: more than one of the blocks the DATA path gathers before it
 * writes (64 KiB), so part of it is in a tmp file while the rest never comes.
 */
async function midData(port: number): Promise<RawSmtp> {
  const c = await RawSmtp.connect(port);
  await c.read();
  await c.cmd('EHLO x.example');
  await c.cmd('MAIL FROM:<s@spam.example>');
  await c.cmd('RCPT TO:<t@bait.example>');
  assert.equal((await c.cmd('DATA')).code, 354);
  c.write(`Subject: half\r\n\r\n${`${'h'.repeat(998)}\r\n`.repeat(100)}`);
  return c;
}

describe('daemon life cycle', () => {
  const daemons: Daemon[] = [];
  after(async () => {
    for (const d of daemons) {
      await d.destroy();
      d.cleanup();
    }
  });

  test('a SIGTERM that lands while an acceptor restarts still stops everything within the grace period', async () => {
    const d = await startDaemon({ workers: 1, env: { SHUTDOWN_GRACE_MS: '2000' } });
    daemons.push(d);
    const [pid] = currentAcceptorPids(d.logs());
    process.kill(pid, 'SIGKILL');
    await d.waitForLog(/ worker_died .*slot=0/);
    await new Promise((r) => setTimeout(r, 30)); // the replacement is forked but not listening yet
    const t0 = Date.now();
    d.proc.kill('SIGTERM');
    await d.waitExit(20_000);
    const ms = Date.now() - t0;
    assert.equal(d.exitCode, 0, d.logs());
    // Without being told, the new acceptor would run until the primary's hard stop at grace + 10 s.
    assert.ok(ms < 8000, `stopped after ${ms} ms:\n${d.logs()}`);
  });

  test('SHUTDOWN_GRACE_MS=0 closes a session in DATA at once with 421, files nothing, and exits 0', async () => {
    const d = await startDaemon({ workers: 1, env: { SHUTDOWN_GRACE_MS: '0' } });
    daemons.push(d);
    const c = await midData(d.port);
    try {
      const t0 = Date.now();
      d.proc.kill('SIGTERM');
      const r = await c.read(5000);
      assert.equal(r.code, 421, r.raw);
      assert.ok(Date.now() - t0 < 3000, 'not after a default 30 s grace');
      await d.waitExit(15_000);
      assert.equal(d.exitCode, 0, d.logs());
    } finally {
      c.close();
    }
    const queue = path.join(d.spoolDir, 'incoming', 'queue');
    assert.deepEqual(fs.existsSync(queue) ? fs.readdirSync(queue) : [], []);
  });

  test('a killed acceptor leaves tmp/ files that are swept at once while the trap keeps running', async () => {
    // The default age guard (60 s) stays on: the primary saw this acceptor die, so its files need no age.
    const d = await startDaemon({ workers: 1 });
    daemons.push(d);
    const c = await midData(d.port);
    const tmp = path.join(d.spoolDir, 'incoming', 'tmp');
    const deadline = Date.now() + 5000;
    while ((!fs.existsSync(tmp) || fs.readdirSync(tmp).length === 0) && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 20));
    }
    assert.ok(fs.readdirSync(tmp).length > 0, 'the message in flight has its tmp file');
    const [pid] = currentAcceptorPids(d.logs());
    process.kill(pid, 'SIGKILL');
    c.close();
    await d.waitForLog(/ swept .*why="worker 0 died"/, 10_000);
    assert.deepEqual(fs.readdirSync(tmp), [], 'swept without a restart of the trap');
    assert.equal(d.exitCode, null, 'the trap is still running');
  });
});
