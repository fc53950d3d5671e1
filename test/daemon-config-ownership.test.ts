/**
 * The primary is the one source of configuration: it reads .env and config/ at start and on SIGHUP and hands the
 * result to every process it forks, replacements included. A file edited without SIGHUP changes nothing anywhere;
 * a bad file at SIGHUP changes nothing and says why (file:line); a setting that cannot move under a running trap
 * waits for the next start, and the log says so.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { acceptorPids, type Daemon, startDaemon } from './helpers/daemon';
import { RawSmtp, sendMail } from './helpers/smtp-client';
import { inspectSpool } from './helpers/queues';
import { waitFor } from './helpers/waiting';

async function rcptReply(port: number, rcpt: string): Promise<string> {
  const c = await RawSmtp.connect(port);
  try {
    await c.read();
    await c.cmd('EHLO bot.example');
    await c.cmd('MAIL FROM:<s@spam.example>');
    return (await c.cmd(`RCPT TO:<${rcpt}>`)).raw.trim();
  } finally {
    c.close();
  }
}

/** SIGKILLs the current acceptor of slot 0 and waits for its replacement to listen. */
async function replaceAcceptor(d: Daemon): Promise<void> {
  const pids = acceptorPids(d.logs()).get(0)!;
  process.kill(pids[pids.length - 1], 'SIGKILL');
  await d.waitForLog(/ info listening proc=acceptor0 /, 20_000, pids.length + 1);
}

describe('the primary owns the configuration', () => {
  const daemons: Daemon[] = [];
  after(async () => {
    for (const d of daemons) await d.destroy();
    for (const d of daemons) d.cleanup();
  });

  test('files edited without SIGHUP: a replaced acceptor keeps the running rules; SIGHUP then refuses the bad file, naming file:line', async () => {
    const d = await startDaemon({ workers: 1, rcptRegexp: '/^deny\\@trap\\.test$/  DENY No thanks\n' });
    daemons.push(d);
    assert.equal(await rcptReply(d.port, 'deny@trap.test'), '550 No thanks');
    // An operator mid-edit: the rule removed, and a routes file with a bad line.
    fs.writeFileSync(path.join(d.configDir, 'rcpt_regexp'), '');
    fs.writeFileSync(path.join(d.configDir, 'routes'), 'note=ham queue hamincoming\nthis is not a route\n* queue incoming\n');
    await replaceAcceptor(d);
    assert.doesNotMatch(d.logs(), /config_error|ConfigError/, 'the replacement read no file');
    assert.equal(await rcptReply(d.port, 'deny@trap.test'), '550 No thanks', 'the running rules, not the files on disk');
    assert.equal((d.logs().match(/ worker_died /g) ?? []).length, 1, 'no crash loop');

    d.proc.kill('SIGHUP');
    await d.waitForLog(/ reload_refused /);
    assert.match(d.logs(), new RegExp(`config_error .*${path.join(d.configDir, 'routes').replace(/[.]/g, '\\.')}:2`));
    assert.equal(await rcptReply(d.port, 'deny@trap.test'), '550 No thanks');

    fs.rmSync(path.join(d.configDir, 'routes'));
    d.proc.kill('SIGHUP');
    await d.waitForLog(/ info reloaded proc=acceptor0 /);
    assert.match(await rcptReply(d.port, 'deny@trap.test'), /^250 /, 'a good SIGHUP applies the edited rules');
  });

  test('SPOOL_DIR changed in .env without a restart: a replacement still files into the spool the primary locks and sweeps', async () => {
    const d = await startDaemon({ workers: 1, omitEnv: ['SPOOL_DIR'], dotenv: 'SPOOL_DIR=./spool\nSMTP_PROT=25\n' });
    daemons.push(d);
    assert.match(d.logs(), /env_warning .*unknown variable SMTP_PROT/, '.env warnings reach the log');
    const elsewhere = path.join(d.workDir, 'elsewhere');
    fs.writeFileSync(path.join(d.workDir, '.env'), `SPOOL_DIR=${elsewhere}\n`);
    await replaceAcceptor(d);
    const { dataReply } = await sendMail(d.port, { from: '<s@spam.example>', to: ['<a@trap.test>'], data: 'Subject: x\r\n\r\ny\r\n' });
    assert.equal(dataReply?.code, 250);
    assert.equal((await inspectSpool(d.spoolDir)).length, 1, 'filed into the running spool');
    assert.equal(fs.existsSync(elsewhere), false, 'nothing under the edited SPOOL_DIR');

    d.proc.kill('SIGHUP');
    await d.waitForLog(/ reload_deferred .*setting=SPOOL_DIR /);
    await waitFor('the acceptor got the reload', () => / info reloaded proc=acceptor0 /.test(d.logs()), 10_000);
    await sendMail(d.port, { from: '<s@spam.example>', to: ['<a@trap.test>'], data: 'Subject: x\r\n\r\ny\r\n' });
    assert.equal((await inspectSpool(d.spoolDir)).length, 2);
    assert.equal(fs.existsSync(elsewhere), false);
  });
});
