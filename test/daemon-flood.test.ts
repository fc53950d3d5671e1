/**
 * Floods against the real daemon: Postfix's smtp-source (a real SMTP flood client) must land exactly as many
 * jobs as it sent, content intact; and a SIGTERM in the middle of a flood must lose no message that got 250.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { startDaemon, type Daemon } from './helpers/daemon';
import { sendMail } from './helpers/smtp-client';
import { repoRoot } from './helpers/paths';
import { consume } from './helpers/queues';

const run = promisify(execFile);

function smtpSource(): string | null {
  const p = path.join(repoRoot(), '.tools', 'bin', 'smtp-source');
  return fs.existsSync(p) ? p : null;
}

describe('floods', () => {
  const daemons: Daemon[] = [];
  after(async () => {
    for (const d of daemons) {
      await d.destroy();
      d.cleanup();
    }
  });

  test('smtp-source: 2000 messages, 50 sessions, one per connection -> exactly 2000 jobs, content intact', async (t) => {
    const bin = smtpSource();
    if (!bin) {
      if (process.env.CI) assert.fail('smtp-source missing: .ci/run must run scripts/install-test-deps.sh');
      t.skip('smtp-source not installed: run scripts/install-test-deps.sh');
      return;
    }
    const d = await startDaemon();
    daemons.push(d);
    const { stderr } = await run(
      bin,
      ['-s', '50', '-l', '4096', '-m', '2000', '-f', 'flood@spam.example', '-t', 'trap@bait.example', `127.0.0.1:${d.port}`],
      { timeout: 120_000 },
    );
    assert.equal(stderr.trim(), '', 'smtp-source reported no errors');
    const messages = await consume(path.join(d.spoolDir, 'incoming'));
    assert.equal(messages.length, 2000);
    // smtp-source sends the same 4096-byte body (78-character lines of X, CRLF-ended) in every message, after its
    // own From/To/Date/Message-Id headers; every stored copy must carry exactly that, behind our Received header.
    const bodies = new Set<string>();
    for (const m of messages) {
      const text = m.toString('latin1');
      assert.match(text, /^Received: from /);
      assert.match(text, /RCPT_TO=<trap@bait\.example>/);
      assert.match(text, /\r\nFrom: <flood@spam\.example>\r\nTo: <trap@bait\.example>\r\nDate: [^\r\n]+\r\nMessage-Id: <[^\r\n]+>\r\n\r\n/);
      bodies.add(text.slice(text.indexOf('\r\n\r\n') + 4));
    }
    assert.equal(bodies.size, 1, 'every message has the same body');
    const [body] = bodies;
    assert.equal(body.length, 4096 + 2);
    assert.match(body, /^([0-9X]{1,78}\r\n)+$/);
    assert.deepEqual(fs.readdirSync(path.join(d.spoolDir, 'incoming', 'tmp')), []);
  });

  test('SIGTERM during a flood: every message that got 250 is in the queue, and the daemon exits 0', async () => {
    const d = await startDaemon({ env: { SHUTDOWN_GRACE_MS: '5000' } });
    daemons.push(d);
    const acked = new Set<string>();
    let stop = false;
    let sent = 0;
    const loop = async (n: number) => {
      for (let i = 0; !stop && i < 10_000; i++) {
        const id = `${n}-${i}`;
        sent++;
        try {
          const { dataReply } = await sendMail(d.port, {
            from: '<s@spam.example>',
            to: ['<trap@bait.example>'],
            data: `Message-Id: <${id}@flood>\r\nSubject: ${id}\r\n\r\n${'z'.repeat(2000)}\r\n`,
          });
          if (dataReply?.code === 250) acked.add(id);
        } catch {
          // connection refused or closed by the shutdown: not acknowledged, nothing to check
        }
      }
    };
    const loops = Array.from({ length: 20 }, (_, n) => loop(n));
    while (acked.size < 300) await new Promise((r) => setTimeout(r, 10));
    d.proc.kill('SIGTERM');
    await d.waitExit(30_000);
    stop = true;
    await Promise.all(loops);
    assert.equal(d.exitCode, 0, d.logs());
    const stored = new Set(
      (await consume(path.join(d.spoolDir, 'incoming'))).map((m) => /Message-Id: <([^@]+)@flood>/.exec(m.toString('latin1'))![1]),
    );
    const lost = [...acked].filter((id) => !stored.has(id));
    assert.deepEqual(lost, [], `acknowledged but not stored (of ${acked.size} acked, ${sent} attempted)`);
    assert.deepEqual(fs.readdirSync(path.join(d.spoolDir, 'incoming', 'tmp')), []);
  });
});
