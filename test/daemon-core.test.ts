/**
 * The real daemon (primary + 2 acceptors) on loopback, driven over raw sockets: rule replies for every code,
 * addresses without brackets, recipients split by route, the Received header's bytes, queue metadata, 552 on
 * oversize with nothing filed, STARTTLS recorded as ESMTPS, and SIGHUP reloading a changed rule.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { SMTPServer } from 'smtp-server';
import { fingerprintId } from '../src/intel/fingerprint';
import { NODE_FLAGS } from '../src/primary/node-flags';
import { VERSION } from '../src/version';
import { startDaemon, type Daemon } from './helpers/daemon';
import { RawSmtp, sendMail } from './helpers/smtp-client';
import { freePort } from './helpers/sockets';
import { drain } from './helpers/queues';
import { waitFor } from './helpers/waiting';

const RULES = `# every code rcpt_regexp knows
/^ok\\@trap\\.test$/         OK Sure
/^ham\\@trap\\.test$/        OK Sure [note=ham]
/^deny\\@trap\\.test$/       DENY No thanks
/^denyempty\\@trap\\.test$/  DENY
/^soft\\@trap\\.test$/       DENYSOFT Try later [note=x]
/^bye\\@trap\\.test$/        DENY_DISCONNECT Go away
/^hard\\@trap\\.test$/       DENYHARD
/^softbye\\@trap\\.test$/    DENYSOFT_DISCONNECT Later, bye
/^done\\@trap\\.test$/       DONE
/^declined\\@trap\\.test$/   DECLINED
Literal@Trap.Test            DENY Literal match
/^broken(\\@trap\\.test$/    OK this line is skipped
/^unknowncode\\@/            MAYBE whatever
/^nohost/                    DENY Checked only when the address has a user and a host
/^idn\\@xn--bcher-kva\\.example$/  DENY Punycode as sent
`;

const routes = (mtaPort: number) => `note=ham                      queue hamincoming
rcpt=/^(root|postmaster)@/    forward smtp://127.0.0.1:${mtaPort}
*                             queue incoming
`;

/** The internal MTA the forward route points at: records what the trap's relay delivers. */
interface Delivered {
  from: string;
  to: string[];
  data: Buffer;
}

function tmpEmpty(spool: string, queue: string): boolean {
  const tmp = path.join(spool, queue, 'tmp');
  return !fs.existsSync(tmp) || fs.readdirSync(tmp).length === 0;
}

describe('spamtrapd daemon', () => {
  let d: Daemon;
  let mta: SMTPServer;
  let forwardQueue: string;
  const delivered: Delivered[] = [];

  before(async () => {
    const mtaPort = await freePort();
    forwardQueue = `forward-127.0.0.1-${mtaPort}`;
    mta = new SMTPServer({
      authOptional: true,
      disabledCommands: ['AUTH', 'STARTTLS'],
      logger: false,
      onData(stream, session, cb) {
        const parts: Buffer[] = [];
        stream.on('data', (c: Buffer) => parts.push(c));
        stream.on('end', () => {
          delivered.push({
            from: session.envelope.mailFrom ? session.envelope.mailFrom.address : '',
            to: session.envelope.rcptTo.map((r) => r.address),
            data: Buffer.concat(parts),
          });
          cb();
        });
      },
    });
    await new Promise<void>((resolve) => mta.listen(mtaPort, '127.0.0.1', () => resolve()));
    d = await startDaemon({ rcptRegexp: RULES, routes: routes(mtaPort), env: { MAX_MESSAGE_SIZE: '20000' } });
  });

  after(async () => {
    await d?.destroy();
    d?.cleanup();
    await new Promise<void>((resolve) => mta?.close(() => resolve()));
  });

  test('the acceptors and the relay run with NODE_FLAGS, each flag once', async () => {
    // The primary's own heap is sized by its launcher (test/deploy-files.test.ts); its forks get the list from it.
    await waitFor('the relay started (a route forwards)', () => / relay_started proc=relay pid=\d+/.test(d.logs()));
    const pids = [...d.logs().matchAll(/ info (?:listening proc=acceptor\d+|relay_started proc=relay) pid=(\d+)/g)].map((m) => Number(m[1]));
    assert.equal(pids.length, 3, d.logs());
    for (const pid of pids) {
      const argv = fs.readFileSync(`/proc/${pid}/cmdline`, 'latin1').split('\0');
      for (const flag of NODE_FLAGS) assert.equal(argv.filter((a) => a === flag).length, 1, `${flag} once in ${argv.join(' ')}`);
    }
  });

  test('bad rcpt_regexp lines are reported with file:line and skipped, the rest load', async () => {
    const file = path.join(d.configDir, 'rcpt_regexp');
    await d.waitForLog(new RegExp(`rcpt_regexp_line_skipped .*file=${file.replace(/[.]/g, '\\.')} line=13 reason="invalid regex`));
    await d.waitForLog(/rcpt_regexp_line_skipped .*line=14 reason="unknown CODE/);
  });

  test('each rule code gives the qpsmtpd reply', async () => {
    const cases: Array<[string, string, boolean]> = [
      ['ok@trap.test', '250 <ok@trap.test>, recipient ok', false],
      ['OK@Trap.Test', '250 <OK@Trap.Test>, recipient ok', false],
      ['ham@trap.test', '250 <ham@trap.test>, recipient ok', false],
      ['deny@trap.test', '550 No thanks', false],
      ['denyempty@trap.test', '550 relaying denied', false],
      ['soft@trap.test', '450 Try later', false],
      ['done@trap.test', '250 <done@trap.test>, recipient ok', false],
      ['declined@trap.test', '250 <declined@trap.test>, recipient ok', false],
      ['nomatch@elsewhere.example', '250 <nomatch@elsewhere.example>, recipient ok', false],
      ['literal@trap.test', '550 Literal match', false],
      ['broken@trap.test', '250 <broken@trap.test>, recipient ok', false],
      // No host part: not checked against the rules (qpsmtpd's rcpt_regexp declines it), so the default decides.
      ['nohost', '250 <nohost>, recipient ok', false],
      ['nohost@trap.test', '550 Checked only when the address has a user and a host', false],
      ['bye@trap.test', '550 Go away', true],
      ['hard@trap.test', '550 delivery denied', true],
      ['softbye@trap.test', '421 Later, bye', true],
    ];
    for (const [rcpt, reply, closes] of cases) {
      const c = await RawSmtp.connect(d.port);
      try {
        await c.read();
        await c.cmd('EHLO bot.example');
        await c.cmd('MAIL FROM:<s@spam.example>');
        const r = await c.cmd(`RCPT TO:<${rcpt}>`);
        assert.equal(r.raw, reply + '\r\n', rcpt);
        if (closes) await c.waitClosed(3000);
        else assert.equal((await c.cmd('NOOP')).code, 250, `${rcpt}: connection stays open`);
      } finally {
        c.close();
      }
    }
  });

  test('an xn-- domain reaches the rules, the Received header and the metadata as sent, as qpsmtpd saw it', async () => {
    const c = await RawSmtp.connect(d.port);
    try {
      await c.read();
      await c.cmd('EHLO bot.example');
      await c.cmd('MAIL FROM:<s@xn--bcher-kva.example>');
      assert.equal((await c.cmd('RCPT TO:<idn@xn--bcher-kva.example>')).raw, '550 Punycode as sent\r\n');
    } finally {
      c.close();
    }
    const { dataReply } = await sendMail(d.port, { from: '<s@xn--bcher-kva.example>', to: ['<other@xn--bcher-kva.example>'], data: 'Subject: idn\r\n\r\nx\r\n' });
    assert.equal(dataReply?.code, 250, dataReply?.raw);
    const [job] = await drain(path.join(d.spoolDir, 'incoming'));
    assert.equal(job.job.metadata.rcpt_to, 'other@xn--bcher-kva.example');
    assert.equal(job.job.metadata.mail_from, 's@xn--bcher-kva.example');
    assert.match(job.data.toString('latin1'), /MAIL_FROM=<s@xn--bcher-kva\.example>\s+RCPT_TO=<other@xn--bcher-kva\.example>/);
  });

  test('addresses without angle brackets work end to end', async () => {
    const { rcptReplies, dataReply } = await sendMail(d.port, {
      from: 'nobrackets@spam.example',
      to: ['ok@trap.test'],
      data: 'Subject: no brackets\r\n\r\nbody\r\n',
    });
    assert.equal(rcptReplies[0].code, 250);
    assert.equal(dataReply?.code, 250, dataReply?.raw);
    const jobs = await drain(path.join(d.spoolDir, 'incoming'));
    assert.equal(jobs.length, 1);
    assert.equal(jobs[0].job.metadata.mail_from, 'nobrackets@spam.example');
    assert.match(jobs[0].data.toString('latin1'), /MAIL_FROM=<nobrackets@spam\.example>/);
  });

  test('mixed recipients are filed once per destination, each copy with only its own recipients', async () => {
    const body = 'Subject: mixed\r\nX-Test: 1\r\n\r\nline one\r\n..dot-stuffed line\r\n';
    const { dataReply } = await sendMail(d.port, {
      helo: 'Bot.Example',
      from: '<s@spam.example>',
      to: ['<ok@trap.test>', '<ham@trap.test>', '<root@trap.test>', '<other@trap.test>', '<deny@trap.test>', '<a,b@trap.test>'],
      data: body,
    });
    assert.equal(dataReply?.code, 250, dataReply?.raw);
    const incoming = await drain(path.join(d.spoolDir, 'incoming'));
    const ham = await drain(path.join(d.spoolDir, 'hamincoming'));
    assert.deepEqual([incoming.length, ham.length], [1, 1], 'one copy in each trap queue');
    assert.equal(incoming[0].job.metadata.rcpt_to, 'ok@trap.test,other@trap.test,a?b@trap.test', 'a comma never splits an address');
    assert.equal(ham[0].job.metadata.rcpt_to, 'ham@trap.test');
    assert.equal(ham[0].job.metadata.note, 'ham');
    // The forward copy goes through its durable queue to the MTA, delivered by the primary's relay process.
    const deadline = Date.now() + 15_000;
    while (delivered.length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    assert.equal(delivered.length, 1, `relay delivered nothing:\n${d.logs()}`);
    assert.equal(delivered[0].from, 's@spam.example', 'original envelope sender');
    assert.deepEqual(delivered[0].to, ['root@trap.test'], 'only the forwarded recipient');
    const copies = [...incoming.map((j) => j.data), ...ham.map((j) => j.data), delivered[0].data];
    for (const data of copies) {
      const text = data.toString('latin1');
      const headerEnd = text.indexOf('\r\nSubject: mixed');
      assert.ok(headerEnd > 0, 'Received header is prepended to the message as received');
      assert.equal(text.slice(headerEnd + 2), body.replace('..dot', '.dot'), 'message intact, dot-unstuffed');
    }
    const unfolded = (b: Buffer) => b.toString('latin1').split('\r\nSubject:')[0].replace(/\r\n\t/g, ' ');
    assert.match(unfolded(incoming[0].data), /RCPT_TO=<ok@trap\.test>,<other@trap\.test>,<a\?b@trap\.test>\s*;/);
    assert.match(unfolded(ham[0].data), /RCPT_TO=<ham@trap\.test>\s*;/);
    assert.match(unfolded(delivered[0].data), /RCPT_TO=<root@trap\.test>\s*;/);
    for (const q of ['incoming', 'hamincoming', forwardQueue]) assert.ok(tmpEmpty(d.spoolDir, q), `${q}/tmp empty`);
    while (fs.readdirSync(path.join(d.spoolDir, forwardQueue, 'queue')).length > 0 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.deepEqual(fs.readdirSync(path.join(d.spoolDir, forwardQueue, 'queue')), [], 'delivered job finished');
  });

  test('Received header bytes and queue metadata', async () => {
    const FEATURES = 'talk=0;greet=ehlo;helo=fqdn;rdns=unknown;case=upper;pipe=0;from=angle;from_sp=0;from_par=0;rset=0;noop=0;vrfy=0;lf=0;tls=0';
    const { dataReply } = await sendMail(d.port, {
      helo: 'bot.example',
      from: '<s@spam.example>',
      to: ['<ok@trap.test>'],
      data: 'Subject: hdr\r\n\r\nx\r\n',
    });
    assert.equal(dataReply?.code, 250);
    const [{ job, data }] = await drain(path.join(d.spoolDir, 'incoming'));
    const header = data.toString('latin1').split('Subject: hdr')[0];
    const date = '[A-Z][a-z]{2}, \\d{1,2} [A-Z][a-z]{2} \\d{4} \\d\\d:\\d\\d:\\d\\d \\+0000';
    const v = VERSION.replace(/\./g, '\\.');
    assert.match(
      header,
      new RegExp(
        `^Received: from bot\\.example \\(unknown \\[127\\.0\\.0\\.1\\]\\)\\r\\n` +
          `\\tby trap\\.test \\(spamtrapd/${v}\\) with ESMTP ident=unknown\\r\\n` +
          `\\tMAIL_FROM=<s@spam\\.example> RCPT_TO=<ok@trap\\.test>\\r\\n` +
          `\\t; ${date}\\r\\n$`,
      ),
    );
    assert.deepEqual(
      { ...job.metadata },
      {
        mail_from: 's@spam.example',
        rcpt_to: 'ok@trap.test',
        remote_ip: '127.0.0.1',
        remote_host: 'unknown',
        helo: 'bot.example',
        note: '',
        tls: 'no',
        proto: 'ESMTP',
        // What this session's dialect looked like (docs/fingerprints.md): RDNS_TIMEOUT_MS=0 makes rdns unknown.
        fingerprint: fingerprintId(FEATURES),
        fingerprint_features: FEATURES,
      },
    );
    assert.equal(job.size, data.length, 'QDSB is the stored size');
    assert.ok(path.isAbsolute(job.dataPath), 'QDFN is absolute');
  });

  test('a message over MAX_MESSAGE_SIZE gets 552 after its final dot, nothing is filed, the session goes on', async () => {
    const c = await RawSmtp.connect(d.port);
    try {
      await c.read();
      await c.cmd('EHLO big.example');
      await c.cmd('MAIL FROM:<s@spam.example>');
      await c.cmd('RCPT TO:<ok@trap.test>');
      assert.equal((await c.cmd('DATA')).code, 354);
      c.write('Subject: big\r\n\r\n' + ('x'.repeat(998) + '\r\n').repeat(30));
      // Half-way through nothing may have been answered: the reply belongs after the final dot.
      await assert.rejects(c.read(300), /no reply/);
      c.write('.\r\n');
      const r = await c.read();
      assert.equal(r.code, 552, r.raw);
      assert.equal((await c.cmd('MAIL FROM:<s2@spam.example>')).code, 250, 'in step after the 552');
      await c.cmd('RCPT TO:<ok@trap.test>');
      assert.equal((await c.cmd('DATA')).code, 354);
      c.write('Subject: small\r\n\r\nok\r\n.\r\n');
      assert.equal((await c.read()).code, 250);
    } finally {
      c.close();
    }
    const jobs = await drain(path.join(d.spoolDir, 'incoming'));
    assert.equal(jobs.length, 1, 'only the small message');
    assert.match(jobs[0].data.toString('latin1'), /Subject: small/);
    assert.ok(tmpEmpty(d.spoolDir, 'incoming'));
  });

  test('a STARTTLS session is recorded as ESMTPS', async () => {
    const c = await RawSmtp.connect(d.port);
    try {
      await c.read();
      const ehlo = await c.cmd('EHLO tls.example');
      assert.ok(ehlo.lines.some((l) => /STARTTLS/.test(l)), 'STARTTLS offered');
      assert.equal((await c.startTls()).code, 220);
      assert.equal((await c.cmd('EHLO tls.example')).code, 250);
      await c.cmd('MAIL FROM:<s@spam.example>');
      await c.cmd('RCPT TO:<ok@trap.test>');
      assert.equal((await c.cmd('DATA')).code, 354);
      c.write('Subject: tls\r\n\r\nsecret\r\n.\r\n');
      assert.equal((await c.read()).code, 250);
    } finally {
      c.close();
    }
    const [{ job, data }] = await drain(path.join(d.spoolDir, 'incoming'));
    assert.match(data.toString('latin1').replace(/\r\n\t/g, ' '), /with ESMTPS ident=unknown/);
    assert.equal(job.metadata.proto, 'ESMTPS');
    assert.notEqual(job.metadata.tls, 'no');
  });

  test('the STARTTLS certificate is not smtp-server bundled one and is valid now', async () => {
    const cert = fs.readFileSync(path.join(d.spoolDir, '.tls', 'cert.pem'));
    const x509 = new (await import('node:crypto')).X509Certificate(cert);
    assert.ok(new Date(x509.validTo) > new Date(), `expires ${x509.validTo}`);
    assert.match(x509.subject, /CN=trap\.test/);
  });

  test('SIGHUP reloads a changed rule without refusing connections', async () => {
    const file = path.join(d.configDir, 'rcpt_regexp');
    fs.writeFileSync(file, RULES.replace('/^deny\\@trap\\.test$/       DENY No thanks', '/^deny\\@trap\\.test$/ OK Now welcome'));
    const reloadsBefore = (d.logs().match(/ info reloaded /g) ?? []).length;
    d.proc.kill('SIGHUP');
    await d.waitForLog(/ info reloaded /, 10000, reloadsBefore + 2);
    const { rcptReplies } = await sendMail(d.port, { from: '<s@x.example>', to: ['<deny@trap.test>'], data: 'x\r\n' });
    assert.equal(rcptReplies[0].raw, '250 <deny@trap.test>, recipient ok\r\n');
    await drain(path.join(d.spoolDir, 'incoming'));
  });

  test('SIGHUP with a broken routes file keeps the running rules and says why', async () => {
    const routesFile = path.join(d.configDir, 'routes');
    const good = fs.readFileSync(routesFile, 'utf8');
    const refusedBefore = (d.logs().match(/ reload_refused /g) ?? []).length;
    fs.writeFileSync(routesFile, 'note=ham queue hamincoming\nthis is not a route\n* queue incoming\n');
    try {
      d.proc.kill('SIGHUP');
      await d.waitForLog(/ reload_refused /, 10000, refusedBefore + 1);
      assert.match(d.logs(), new RegExp(`config_error .*${routesFile.replace(/[.]/g, '\\.')}:2`));
      // Still serving with the old routes: ham goes to hamincoming.
      const { dataReply } = await sendMail(d.port, { from: '<s@x.example>', to: ['<ham@trap.test>'], data: 'Subject: h\r\n\r\nx\r\n' });
      assert.equal(dataReply?.code, 250);
      assert.equal((await drain(path.join(d.spoolDir, 'hamincoming'))).length, 1);
    } finally {
      fs.writeFileSync(routesFile, good);
    }
  });

});
