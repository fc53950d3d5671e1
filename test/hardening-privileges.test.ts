/**
 * RUN_AS: resolving names and ids, the irreversible drop (in a child process), the spool writability check, and
 * the daemon itself started as root with RUN_AS=nobody:nogroup under umask 027: acceptors unprivileged, the primary
 * root, queue files created 0666 & ~umask by the unprivileged user.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { parseControl } from '../src/dirqueue';
import { ConfigError } from '../src/errors';
import { checkSpoolWritable, resolveRunAs, runAsEnv, runAsFromEnv } from '../src/privileges';
import { acceptorPids, Daemon } from './helpers/daemon';
import { sendMail } from './helpers/smtp-client';
import { builtRoot } from './helpers/paths';
import { inspectSpool } from './helpers/queues';
import { freePort } from './helpers/sockets';

const isRoot = process.getuid?.() === 0;
const NOBODY = { uid: 65534, gid: 65534, user: 'nobody', group: 'nogroup' };

function fixtures(): { passwdFile: string; groupFile: string; dir: string } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'spamtrapd-priv-'));
  const passwdFile = path.join(dir, 'passwd');
  const groupFile = path.join(dir, 'group');
  fs.writeFileSync(passwdFile, 'root:x:0:0:root:/root:/bin/sh\n# comment\ntrap:x:1500:1600::/nonexistent:/usr/sbin/nologin\nnogid:x:1501:\n');
  fs.writeFileSync(groupFile, 'root:x:0:\ntrapgrp:x:1600:\nother:x:1700:a,b\n');
  return { passwdFile, groupFile, dir };
}

function idsOf(pid: number): { uid: number; gid: number } {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  return { uid: Number(/^Uid:\s+(\d+)/m.exec(status)![1]), gid: Number(/^Gid:\s+(\d+)/m.exec(status)![1]) };
}

describe('resolveRunAs', () => {
  const f = fixtures();
  after(() => fs.rmSync(f.dir, { recursive: true, force: true }));

  test('names, ids and the primary-group default', () => {
    assert.deepEqual(resolveRunAs({ user: 'trap', group: null }, f), { uid: 1500, gid: 1600, user: 'trap', group: 'trapgrp' });
    assert.deepEqual(resolveRunAs({ user: 'trap', group: 'other' }, f), { uid: 1500, gid: 1700, user: 'trap', group: 'other' });
    assert.deepEqual(resolveRunAs({ user: '1500', group: '1700' }, f), { uid: 1500, gid: 1700, user: 'trap', group: 'other' });
    assert.deepEqual(resolveRunAs({ user: '4242', group: '4343' }, f), { uid: 4242, gid: 4343, user: '4242', group: '4343' });
  });

  test('unknown user or group, root, and a user without a group are ConfigErrors naming RUN_AS', () => {
    const cases: Array<[{ user: string; group: string | null }, RegExp]> = [
      [{ user: 'ghost', group: null }, /unknown user "ghost"/],
      [{ user: 'trap', group: 'ghosts' }, /unknown group "ghosts"/],
      [{ user: 'root', group: null }, /is root/],
      [{ user: '0', group: '0' }, /is root/],
      [{ user: 'nogid', group: null }, /no entry with a primary group/],
      [{ user: '4242', group: null }, /no entry with a primary group/],
    ];
    for (const [spec, re] of cases) {
      assert.throws(
        () => resolveRunAs(spec, f),
        (e: unknown) => e instanceof ConfigError && e.where === 'RUN_AS' && re.test(e.message),
        JSON.stringify(spec),
      );
    }
  });

  test('the target survives the trip through the workers\' environment', () => {
    const t = { uid: 1500, gid: 1600, user: 'trap', group: 'trapgrp' };
    assert.deepEqual(runAsFromEnv(runAsEnv(t)), t);
    assert.equal(runAsFromEnv({}), null);
  });
});

describe('dropPrivileges (child process)', { skip: isRoot ? false : 'needs root to drop privileges' }, () => {
  test('drops groups, gid and uid, cannot regain root, and can no longer bind a low port itself', () => {
    const child = path.join(__dirname, 'helpers', 'hardening-priv-child.js');
    const r = spawnSync(process.execPath, [child, JSON.stringify(NOBODY), '587'], { encoding: 'utf8', timeout: 10_000 });
    assert.equal(r.status, 0, r.stderr);
    const report = JSON.parse(r.stdout);
    assert.equal(report.dropped, true, report.dropError);
    assert.deepEqual(report.ids, { uid: 65534, euid: 65534, gid: 65534, groups: [65534] });
    assert.equal(report.regained, false);
    assert.equal(report.listen, 'EACCES', 'outside cluster a dropped process cannot bind port 587');
  });

  test('a target it cannot reach makes it throw instead of serving as root', () => {
    const child = path.join(__dirname, 'helpers', 'hardening-priv-child.js');
    // 2^32-1 is (uid_t)-1, "no change" for setuid(2): the drop must notice the uid did not take.
    const r = spawnSync(process.execPath, [child, JSON.stringify({ ...NOBODY, uid: 4294967295 }), '0'], { encoding: 'utf8', timeout: 10_000 });
    const report = JSON.parse(r.stdout || '{}');
    assert.ok(report.dropError, `the drop failed loudly: ${r.stdout} ${r.stderr}`);
  });
});

describe('checkSpoolWritable', { skip: isRoot ? false : 'needs root to test as another user' }, () => {
  const base = fs.mkdtempSync(path.join(os.tmpdir(), 'spamtrapd-privspool-'));
  after(() => fs.rmSync(base, { recursive: true, force: true }));

  test('passes for a spool owned by the user, names the first directory it cannot write otherwise', () => {
    fs.chmodSync(base, 0o755);
    const spool = path.join(base, 'spool');
    fs.mkdirSync(path.join(spool, 'incoming', 'tmp'), { recursive: true });
    for (const p of [spool, path.join(spool, 'incoming'), path.join(spool, 'incoming', 'tmp')]) fs.chownSync(p, 65534, 65534);
    checkSpoolWritable(spool, NOBODY);
    // A queue dir left behind by a run as root.
    fs.mkdirSync(path.join(spool, 'incoming', 'queue'), { mode: 0o755 });
    assert.throws(
      () => checkSpoolWritable(spool, NOBODY),
      (e: unknown) => e instanceof ConfigError && e.where === 'RUN_AS' && /EACCES on .*incoming\/queue/.test(e.message) && /chown -R nobody:nogroup/.test(e.message),
    );
  });
});

describe('the daemon with RUN_AS=nobody:nogroup and umask 027', { skip: isRoot ? false : 'needs root' }, () => {
  let d: Daemon | null = null;
  let workDir = '';
  after(async () => {
    await d?.destroy();
    if (workDir) fs.rmSync(workDir, { recursive: true, force: true });
  });

  test('acceptors run as nobody, the primary as root, queue files are nobody\'s with mode 0640', async () => {
    workDir = fs.mkdtempSync(path.join(os.tmpdir(), 'spamtrapd-runas-'));
    fs.chmodSync(workDir, 0o755);
    const spoolDir = path.join(workDir, 'spool');
    const configDir = path.join(workDir, 'config');
    fs.mkdirSync(spoolDir);
    fs.mkdirSync(configDir);
    fs.chownSync(spoolDir, 65534, 65534);
    const port = await freePort();
    const metricsPort = await freePort();
    const cli = path.join(builtRoot(), 'workers', 'cli.js');
    // umask is per process and inherited: set it in the shell that becomes the daemon.
    const proc = spawn('/bin/sh', ['-c', `umask 027; exec "$0" "$1" start`, process.execPath, cli], {
      cwd: workDir,
      detached: true,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: {
        PATH: process.env.PATH,
        SMTP_HOST: '127.0.0.1',
        SMTP_PORT: String(port),
        METRICS_HOST: '127.0.0.1',
        METRICS_PORT: String(metricsPort),
        WORKERS: '2',
        SPOOL_DIR: spoolDir,
        CONFIG_DIR: configDir,
        ME: 'trap.test',
        RDNS_TIMEOUT_MS: '0',
        RUN_AS: 'nobody:nogroup',
      },
    });
    d = new Daemon(proc, port, metricsPort, spoolDir, configDir, workDir);
    await d.waitForLog(/ info listening /, 30_000, 2);

    assert.deepEqual(idsOf(proc.pid!), { uid: 0, gid: 0 }, 'the primary keeps root');
    const pids = [...acceptorPids(d.logs()).values()].map((l) => l[l.length - 1]);
    assert.equal(pids.length, 2);
    for (const pid of pids) assert.deepEqual(idsOf(pid), { uid: 65534, gid: 65534 }, `acceptor ${pid}`);

    const r = await sendMail(port, { from: '<u@spam.example>', to: ['<trap@bait.example>'], data: 'Subject: umask\r\n\r\nbody\r\n' });
    assert.equal(r.dataReply?.code, 250, d.logs());
    const [job] = await inspectSpool(spoolDir);
    const ctrl = fs.statSync(path.join(spoolDir, 'incoming', 'queue', job.jobId));
    const qdfn = parseControl(fs.readFileSync(path.join(spoolDir, 'incoming', 'queue', job.jobId))).fields['QDFN'];
    assert.ok(qdfn);
    for (const st of [ctrl, fs.statSync(qdfn)]) {
      assert.equal(st.uid, 65534);
      assert.equal(st.mode & 0o777, 0o640, 'files: 0666 & ~027');
    }
    assert.equal(fs.statSync(path.join(spoolDir, 'incoming', 'queue')).mode & 0o777, 0o750, 'directories: 0777 & ~027');
    await d.stop('SIGTERM');
    assert.equal(d.exitCode, 0, d.logs());
  });

  test('a spool the RUN_AS user cannot write stops the start with a message naming RUN_AS', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'spamtrapd-runas-bad-'));
    try {
      const r = spawnSync(process.execPath, [path.join(builtRoot(), 'workers', 'cli.js'), 'start'], {
        cwd: dir,
        encoding: 'utf8',
        timeout: 20_000,
        env: { PATH: process.env.PATH, SMTP_HOST: '127.0.0.1', SMTP_PORT: '0', METRICS_PORT: '0', WORKERS: '1', SPOOL_DIR: path.join(dir, 'spool'), CONFIG_DIR: dir, ME: 'trap.test', RUN_AS: 'nobody:nogroup' },
      });
      assert.equal(r.status, 2, `exit status (stderr: ${r.stderr})`);
      assert.match(r.stderr, /configuration error: RUN_AS: user nobody \(uid 65534\) cannot write SPOOL_DIR/);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
