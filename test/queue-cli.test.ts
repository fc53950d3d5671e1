/**
 * `spamtrapd queue stats|list|show|pickup`: human and JSON output against queues written by the DirQueue writer
 * and by the real daemon, exit codes (0 ok, 1 not found, 2 usage), pickup's remove/--keep, the TTY-only progress
 * indicator, and one run of the real CLI binary.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { DirQueueWriter } from '../src/dirqueue';
import { runQueueCommand, type QueueCliIo } from '../src/cli/queue';
import { startDaemon, type Daemon } from './helpers/daemon';
import { sendMail } from './helpers/smtp-client';
import { builtRoot } from './helpers/paths';

interface Run {
  code: number;
  out: string;
  err: string;
}

async function run(spool: string, argv: string[], opts: { tty?: boolean; progressEvery?: number } = {}): Promise<Run> {
  const r = { out: '', err: '' };
  const io: QueueCliIo = {
    stdout: { write: (s: string) => (r.out += s) },
    stderr: { write: (s: string) => (r.err += s), isTTY: opts.tty ?? false },
    progressEvery: opts.progressEvery,
  };
  const code = await runQueueCommand(argv, { spoolDir: spool }, io);
  return { code, ...r };
}

const HAM = 'Subject: ham\r\n\r\nham\r\n';

function json(r: Run): any {
  assert.equal(r.code, 0, r.err);
  return JSON.parse(r.out);
}

describe('spamtrapd queue (writer-made queues)', () => {
  let spool: string;
  const ids: string[] = [];
  const messages = ['Subject: one\r\n\r\nfirst\r\n', 'Subject: two\r\n\r\nsecond\r\n', 'Subject: three\r\n\r\nthird\r\n'];

  before(async () => {
    spool = fs.mkdtempSync(path.join(os.tmpdir(), 'spamtrapd-qcli-'));
    const w = new DirQueueWriter(path.join(spool, 'incoming'), { hostname: 'trap1' });
    for (const [i, m] of messages.entries()) {
      const job = await w.enqueueStream([Buffer.from(m)], { mail_from: `s${i}@bot.example`, rcpt_to: `t${i}@trap.example` });
      ids.push(job.jobId);
    }
    const ham = new DirQueueWriter(path.join(spool, 'hamincoming'), { hostname: 'trap1' });
    await ham.enqueueStream([Buffer.from(HAM)], { mail_from: 'friend@example.org', rcpt_to: 'address@traps.example' });
  });

  after(() => fs.rmSync(spool, { recursive: true, force: true }));

  it('stats: a table of every queue, and the same as JSON', async () => {
    const r = await run(spool, ['stats']);
    assert.equal(r.code, 0, r.err);
    const lines = r.out.trimEnd().split('\n');
    assert.match(lines[0], /^queue\s+jobs\s+bytes\s+oldest$/);
    const bytes = messages.reduce((n, m) => n + Buffer.byteLength(m), 0);
    const hamBytes = Buffer.byteLength(HAM);
    assert.match(lines[1], new RegExp(`^hamincoming\\s+1\\s+${hamBytes}\\s+\\d+s$`));
    assert.match(lines[2], new RegExp(`^incoming\\s+3\\s+${bytes}\\s+\\d+s$`));
    assert.equal(lines.length, 3);
    assert.equal(r.err, '');

    const doc = json(await run(spool, ['stats', '--json']));
    assert.equal(doc.spool, spool);
    assert.deepEqual(
      doc.queues.map((q: any) => [q.queue, q.jobs, q.bytes]),
      [
        ['hamincoming', 1, hamBytes],
        ['incoming', 3, bytes],
      ],
    );
    assert.ok(doc.queues.every((q: any) => Number.isInteger(q.oldest_seconds) && q.oldest_seconds >= 0));
    const one = json(await run(spool, ['stats', 'incoming', '--json']));
    assert.deepEqual(one.queues.map((q: any) => q.queue), ['incoming']);
  });

  it('list: one line per job oldest first, --limit, and JSON with metadata', async () => {
    const r = await run(spool, ['list', 'incoming']);
    assert.equal(r.code, 0, r.err);
    const lines = r.out.trimEnd().split('\n');
    assert.equal(lines.length, 3);
    lines.forEach((l, i) => {
      assert.ok(l.startsWith(`${ids[i]}  ${Buffer.byteLength(messages[i])}  `), l);
      assert.match(l, new RegExp(`from=s${i}@bot\\.example  to=t${i}@trap\\.example$`));
    });
    const limited = await run(spool, ['list', 'incoming', '--limit', '2']);
    assert.equal(limited.out.trimEnd().split('\n').length, 2);

    const doc = json(await run(spool, ['list', 'incoming', '--json']));
    assert.equal(doc.queue, 'incoming');
    assert.deepEqual(doc.jobs.map((j: any) => j.id), ids);
    assert.deepEqual(doc.jobs[1].metadata, { mail_from: 's1@bot.example', rcpt_to: 't1@trap.example' });
    assert.equal(doc.jobs[0].hostname, 'trap1');
    assert.equal(doc.jobs[0].active, null);
    assert.ok(path.isAbsolute(doc.jobs[0].data_path));
    assert.ok(!Number.isNaN(Date.parse(doc.jobs[0].submitted)));
  });

  it('list --limit N prints the N first in pickup order (priority, then age); show looks up only plain job names', async () => {
    const w = new DirQueueWriter(path.join(spool, 'prio'), { hostname: 'trap1' });
    const made: string[] = [];
    for (const priority of [99, 50, 0, 50, 10]) made.push((await w.enqueueStream([Buffer.from('x')], {}, { priority })).jobId);
    const inOrder = [...made].sort();
    assert.deepEqual(json(await run(spool, ['list', 'prio', '--json'])).jobs.map((j: any) => j.id), inOrder);
    for (const n of [0, 1, 3, 5, 9]) {
      assert.deepEqual(json(await run(spool, ['list', 'prio', '--limit', String(n), '--json'])).jobs.map((j: any) => j.id), inOrder.slice(0, n));
    }
    assert.equal((await run(spool, ['stats', 'prio', '--json'])).code, 0);
    assert.equal(json(await run(spool, ['stats', 'prio', '--json'])).queues[0].jobs, 5);
    // An id that walks out of queue/ must not be read, even though it names an existing control file.
    assert.equal((await run(spool, ['show', 'prio', `0/../../../incoming/queue/${ids[0]}`])).code, 1);
    fs.rmSync(path.join(spool, 'prio'), { recursive: true });
  });

  it('show: finds a job in any queue or the one named; --data adds the message; JSON too', async () => {
    const r = await run(spool, ['show', ids[1]]);
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, new RegExp(`^queue: incoming\\nid: ${ids[1].replace(/\./g, '\\.')}\\nsize: ${Buffer.byteLength(messages[1])}\\n`));
    assert.match(r.out, /^host: trap1$/m);
    assert.match(r.out, /^mail_from: s1@bot\.example$/m);
    assert.match(r.out, /^rcpt_to: t1@trap\.example$/m);
    assert.ok(!r.out.includes('second'), 'no message without --data');

    const withData = await run(spool, ['show', 'incoming', ids[1], '--data']);
    assert.equal(withData.code, 0, withData.err);
    assert.ok(withData.out.endsWith(`\n\n${messages[1]}`), withData.out);

    const doc = json(await run(spool, ['show', ids[2], '--json', '--data']));
    assert.equal(doc.queue, 'incoming');
    assert.equal(doc.id, ids[2]);
    assert.equal(doc.message, messages[2]);
    assert.equal(doc.metadata.rcpt_to, 't2@trap.example');
    assert.equal(json(await run(spool, ['show', ids[0], '--json'])).message, undefined);
  });

  it('exit codes: 2 for usage errors, 1 for unknown jobs and queues, 0 for --help', async () => {
    const usage: string[][] = [
      [],
      ['frobnicate'],
      ['stats', '--bogus'],
      ['list'],
      ['list', 'incoming', 'extra'],
      ['list', 'incoming', '--limit', 'abc'],
      ['list', 'incoming', '--limit', '-1'],
      ['show'],
      ['show', 'a', 'b', 'c'],
      ['pickup'],
      ['stats', '../etc'],
      ['list', '.hidden'],
    ];
    for (const argv of usage) {
      const r = await run(spool, argv);
      assert.equal(r.code, 2, `${JSON.stringify(argv)}: ${r.out}${r.err}`);
      assert.match(r.err, /usage: spamtrapd queue/, JSON.stringify(argv));
      assert.equal(r.out, '', `${JSON.stringify(argv)} printed to stdout`);
    }
    const help = await run(spool, ['--help']);
    assert.equal(help.code, 0);
    assert.match(help.out, /usage: spamtrapd queue/);

    const noJob = await run(spool, ['show', '50.20240101120000123456.NOPE']);
    assert.equal(noJob.code, 1);
    assert.match(noJob.err, /no job 50\.20240101120000123456\.NOPE in hamincoming, incoming under /);
    assert.equal((await run(spool, ['show', 'hamincoming', ids[0]])).code, 1, 'the job is in another queue');

    for (const argv of [['list', 'nosuch'], ['stats', 'nosuch'], ['pickup', 'nosuch'], ['show', 'nosuch', ids[0]]]) {
      const r = await run(spool, argv);
      assert.equal(r.code, 1, JSON.stringify(argv));
      assert.match(r.err, /no such queue or spool: .*nosuch/);
    }
    assert.ok(!fs.existsSync(path.join(spool, 'nosuch')), 'pickup of a mistyped queue created it');
    const noSpool = await run(path.join(spool, 'absent'), ['stats']);
    assert.equal(noSpool.code, 1);
  });

  it('pickup --keep returns the job; pickup removes it; an empty queue says so', async () => {
    const kept = json(await run(spool, ['pickup', 'incoming', '--keep', '--json']));
    assert.equal(kept.job.id, ids[0]);
    assert.equal(kept.message, messages[0]);
    assert.equal(kept.removed, false);
    assert.deepEqual(fs.readdirSync(path.join(spool, 'incoming', 'active')), [], 'lock released');
    assert.equal(json(await run(spool, ['stats', 'incoming', '--json'])).queues[0].jobs, 3);

    const human = await run(spool, ['pickup', 'incoming']);
    assert.equal(human.code, 0, human.err);
    assert.equal(human.out, `${ids[0]}\n${messages[0]}`);
    assert.equal(fs.existsSync(kept.job.data_path), false, 'data file removed');
    const left = json(await run(spool, ['list', 'incoming', '--json']));
    assert.deepEqual(left.jobs.map((j: any) => j.id), ids.slice(1));

    const taken = json(await run(spool, ['pickup', 'hamincoming', '--json']));
    assert.equal(taken.removed, true);
    assert.equal(taken.job.metadata.mail_from, 'friend@example.org');
    const empty = await run(spool, ['pickup', 'hamincoming']);
    assert.equal(empty.code, 0);
    assert.equal(empty.out, 'queue is empty\n');
    assert.deepEqual(json(await run(spool, ['pickup', 'hamincoming', '--json'])), { queue: 'hamincoming', job: null });
  });
});

describe('spamtrapd queue stats progress', () => {
  let spool: string;
  before(async () => {
    spool = fs.mkdtempSync(path.join(os.tmpdir(), 'spamtrapd-qcli-big-'));
    const w = new DirQueueWriter(path.join(spool, 'incoming'), { hostname: 'trap1' });
    for (let i = 0; i < 25; i++) await w.enqueueStream([Buffer.from(`m${i}\r\n`)], {});
  });
  after(() => fs.rmSync(spool, { recursive: true, force: true }));

  it('shows a progress counter on a TTY only, and clears it before the table', async () => {
    const tty = await run(spool, ['stats'], { tty: true, progressEvery: 10 });
    assert.equal(tty.code, 0);
    assert.equal(tty.err, '\rincoming: 10 jobs read...\rincoming: 20 jobs read...\r\x1b[K');
    assert.match(tty.out, /^incoming\s+25\s+/m);

    const pipe = await run(spool, ['stats'], { tty: false, progressEvery: 10 });
    assert.equal(pipe.err, '');
    const table = (t: string) => t.replace(/\d+s$/gm, 'Ns');
    assert.equal(table(pipe.out), table(tty.out), 'same table either way');

    const small = await run(spool, ['stats'], { tty: true });
    assert.equal(small.err, '', 'the default threshold (10000) is not reached by 25 jobs');
  });
});

describe('spamtrapd queue on a queue the daemon wrote, and the CLI binary', () => {
  let daemon: Daemon | null = null;

  after(async () => {
    if (daemon) {
      await daemon.destroy();
      daemon.cleanup();
    }
  });

  it('lists, shows and picks up a message the trap received', async () => {
    daemon = await startDaemon({ workers: 1 });
    const sent = await sendMail(daemon.port, {
      helo: 'bot.example',
      from: '<spammer@bot.example>',
      to: ['<victim@trap.test>'],
      data: 'Subject: via the daemon\r\n\r\nhello trap\r\n',
    });
    assert.equal(sent.dataReply?.code, 250, JSON.stringify(sent));
    const queuedAs = /queued as (\S+)/.exec(sent.dataReply!.text)?.[1];

    const list = json(await run(daemon.spoolDir, ['list', 'incoming', '--json']));
    assert.equal(list.jobs.length, 1);
    const job = list.jobs[0];
    if (queuedAs) assert.equal(job.id, queuedAs);
    assert.equal(job.metadata.mail_from, 'spammer@bot.example');
    assert.equal(job.metadata.rcpt_to, 'victim@trap.test');
    assert.equal(job.metadata.helo, 'bot.example');

    const show = await run(daemon.spoolDir, ['show', job.id, '--data']);
    assert.equal(show.code, 0, show.err);
    assert.match(show.out, /^Received: from /m);
    assert.ok(show.out.includes('Subject: via the daemon\r\n\r\nhello trap\r\n'));

    // The real binary, as an operator runs it: exit 0 and one JSON document on stdout.
    const workDir = fs.mkdtempSync(path.join(os.tmpdir(), 'spamtrapd-qcli-bin-'));
    try {
      const r = spawnSync(
        process.execPath,
        [path.join(builtRoot(), 'workers', 'cli.js'), 'queue', 'stats', '--json', '--spool', daemon.spoolDir],
        // cwd without a .env, and none of this test's environment beyond PATH: the command needs no settings.
        { cwd: workDir, env: { PATH: process.env.PATH }, encoding: 'utf8', timeout: 30_000 },
      );
      assert.equal(r.status, 0, r.stderr);
      const doc = JSON.parse(r.stdout);
      assert.equal(doc.spool, daemon.spoolDir);
      assert.deepEqual(
        doc.queues.filter((q: any) => q.queue === 'incoming').map((q: any) => q.jobs),
        [1],
      );
      const bad = spawnSync(process.execPath, [path.join(builtRoot(), 'workers', 'cli.js'), 'queue', 'list'], {
        cwd: workDir,
        env: { PATH: process.env.PATH },
        encoding: 'utf8',
        timeout: 30_000,
      });
      assert.equal(bad.status, 2, bad.stderr);
    } finally {
      fs.rmSync(workDir, { recursive: true, force: true });
    }

    const picked = json(await run(daemon.spoolDir, ['pickup', 'incoming', '--json']));
    assert.equal(picked.job.id, job.id);
    assert.equal(json(await run(daemon.spoolDir, ['stats', 'incoming', '--json'])).queues[0].jobs, 0);
  });
});

describe('spamtrapd queue reinject', () => {
  const spool = fs.mkdtempSync(path.join(os.tmpdir(), 'qcli-reinject-'));
  after(() => fs.rmSync(spool, { recursive: true, force: true }));

  it('moves dead letters back into their forward queue, all or one queue', async () => {
    const dl = new DirQueueWriter(path.join(spool, 'deadletter'));
    const letter = (q: string, n: number) =>
      dl.enqueueStream([Buffer.from(`Subject: dl${n}\r\n\r\nbody\r\n`)], {
        mail_from: 's@spam.example',
        rcpt_to: 'root@trap.example',
        deadletter_queue: q,
        deadletter_reason: 'rejected',
        deadletter_reply: '550 no such user',
      });
    await letter('forward-127.0.0.1-10025', 1);
    await letter('forward-127.0.0.1-10026', 2);
    await letter('forward-127.0.0.1-10025', 3);

    assert.equal((await run(spool, ['reinject', 'incoming'])).code, 2, 'only forward queues');
    const one = await run(spool, ['reinject', 'forward-127.0.0.1-10026', '--json']);
    assert.equal(one.code, 0, one.err);
    assert.equal(json(one).reinjected.length, 1);
    const rest = await run(spool, ['reinject']);
    assert.equal(rest.code, 0, rest.err);
    assert.match(rest.out, /^re-injected 2 dead letter\(s\)\n/);
    const count = (q: string) => fs.readdirSync(path.join(spool, q, 'queue')).length;
    assert.deepEqual([count('deadletter'), count('forward-127.0.0.1-10025'), count('forward-127.0.0.1-10026')], [0, 2, 1]);
    const shown = json(await run(spool, ['list', 'forward-127.0.0.1-10025', '--json']));
    for (const j of shown.jobs) {
      assert.equal(j.metadata.rcpt_to, 'root@trap.example', 'original metadata kept');
      assert.equal(j.metadata.deadletter_reason, undefined, 'dead-letter keys dropped');
    }
  });

  it('says so when there is no deadletter queue', async () => {
    const empty = fs.mkdtempSync(path.join(os.tmpdir(), 'qcli-nodl-'));
    try {
      const r = await run(empty, ['reinject']);
      assert.equal(r.code, 1);
      assert.match(r.err, /no such queue or spool: .*deadletter/);
    } finally {
      fs.rmSync(empty, { recursive: true, force: true });
    }
  });
});
