import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { DirQueueReader, DirQueueWriter, Job } from '../src/dirqueue';
import { deadPid } from './helpers/job-fixtures';
import { listFiles, withDir } from './helpers/temp-dirs';

/** A queue written by hand exactly as IPC::DirQueue 1.1 would, independent of our writer. */
function handJob(dir: string, name: string, data: string, extra = ''): string {
  const dpath = path.join(dir, 'data', name.slice(-2, -1), name.slice(-1), name.slice(0, -2));
  fs.mkdirSync(path.dirname(dpath), { recursive: true });
  fs.mkdirSync(path.join(dir, 'queue'), { recursive: true });
  fs.writeFileSync(dpath, data);
  fs.writeFileSync(path.join(dir, 'queue', name), `QDFN: ${dpath}\nQDSB: ${data.length}\nQSTT: 1704110400\nQSTM: 123456\nQSHN: trap1\n${extra}`);
  return dpath;
}

function setAge(p: string, seconds: number): void {
  const t = new Date(Date.now() - seconds * 1000);
  fs.utimesSync(p, t, t);
}

test(
  'reads a hand-written worked example: fields, metadata, data',
  withDir('read', async (dir) => {
    const dpath = handJob(dir, '50.20240101120000123456.DNjkw', 'hello\n', 'rcpt: trap@example.org\nsubject: a: b\tc\n');
    const r = new DirQueueReader(dir, { hostname: 'trap1' });
    assert.deepEqual(await r.list(), ['50.20240101120000123456.DNjkw']);
    const job = (await r.pickup()) as Job;
    assert.equal(job.jobId, '50.20240101120000123456.DNjkw');
    assert.equal(job.dataPath, dpath);
    assert.equal(job.size, 6);
    assert.equal(job.submittedSecs, 1704110400);
    assert.equal(job.submittedUsecs, 123456);
    assert.equal(job.hostname, 'trap1');
    assert.deepEqual({ ...job.metadata }, { rcpt: 'trap@example.org', subject: 'a: b\tc' });
    assert.equal((await job.readData()).toString(), 'hello\n');
    let streamed = '';
    for await (const c of job.openStream()) streamed += c.toString();
    assert.equal(streamed, 'hello\n');
    assert.equal(fs.readFileSync(path.join(dir, 'active', job.jobId), 'utf8'), `trap1\n${process.pid}\n`);
    assert.deepEqual(fs.readdirSync(path.join(dir, 'tmp')), [], 'tmp lock removed');
    assert.equal(await r.pickup(), null, 'our own fresh lock hides the job');
    await job.finish();
    assert.deepEqual(listFiles(dir), []);
  }),
);

test(
  'list skips names not starting with a digit; stats and visitAll see every job without locking',
  withDir('stats', async (dir) => {
    const w = new DirQueueWriter(dir, { now: () => ({ sec: Math.floor(Date.now() / 1000) - 100, usec: 0 }) });
    await w.enqueueStream([Buffer.from('12345')], { n: '1' });
    await w.enqueueStream([Buffer.from('123')], { n: '2' }, { priority: 10 });
    fs.writeFileSync(path.join(dir, 'queue', 'README'), 'not a job');
    const r = new DirQueueReader(dir);
    assert.equal((await r.list()).length, 2);
    const s = await r.stats();
    assert.equal(s.jobs, 2);
    assert.equal(s.bytes, 8);
    assert.ok(s.oldestSeconds !== null && s.oldestSeconds >= 99 && s.oldestSeconds < 110, String(s.oldestSeconds));
    assert.deepEqual(await new DirQueueReader(path.join(dir, 'none')).stats(), { jobs: 0, bytes: 0, oldestSeconds: null });
    const picked = (await r.pickup()) as Job;
    const seen: [string, string | null][] = [];
    await r.visitAll((j) => {
      seen.push([j.metadata['n'] as string, j.activePid]);
    });
    assert.deepEqual(seen, [['2', String(process.pid)], ['1', null]]);
    // visitAll jobs are read-only
    await r.visitAll(async (j) => {
      await j.finish();
      await j.returnToQueue();
    });
    assert.equal((await r.list()).length, 2);
    await picked.returnToQueue();
    const again = (await r.pickup()) as Job;
    assert.equal(again.jobId, picked.jobId, 'returned job is first again');
  }),
);

test(
  'stale-lock rules: fresh, live owner, other host, dead owner',
  withDir('locks', async (dir) => {
    const host = os.hostname();
    const names = ['50.20240101120000000001.AAAA', '50.20240101120000000002.AAAA', '50.20240101120000000003.AAAA', '50.20240101120000000004.AAAA'];
    for (const n of names) handJob(dir, n, n);
    fs.mkdirSync(path.join(dir, 'active'));
    const lock = (n: string, body: string, age: number) => {
      const p = path.join(dir, 'active', n);
      fs.writeFileSync(p, body);
      setAge(p, age);
    };
    const dead = deadPid();
    lock(names[0] as string, `${host}\n${dead}\n`, 10); // fresh: skipped whoever owns it
    lock(names[1] as string, `${host}\n${process.pid}\n`, 5000); // old but owner alive: skipped
    lock(names[2] as string, `elsewhere.example\n${dead}\n`, 5000); // other host: never broken
    lock(names[3] as string, `${host}\n${dead}\n`, 600 + 256); // dead owner, past lifetime + max fudge: broken
    const warnings: string[] = [];
    const r = new DirQueueReader(dir, { warn: (m) => warnings.push(m) });
    const job = (await r.pickup()) as Job;
    assert.equal(job.jobId, names[3]);
    assert.ok(warnings.some((m) => m.includes('killed stale lockfile')));
    assert.equal(await r.pickup(), null);
    await job.finish();
    assert.equal(fs.existsSync(path.join(dir, 'active', names[2] as string)), true);
  }),
);

test(
  'a dead owner inside the lifetime is still respected; touchActiveLock restarts the clock',
  withDir('touch', async (dir) => {
    const n = '50.20240101120000000001.AAAA';
    handJob(dir, n, 'x');
    const r = new DirQueueReader(dir);
    const job = (await r.pickup()) as Job;
    const active = path.join(dir, 'active', n);
    setAge(active, 300);
    await job.touchActiveLock();
    assert.ok(Date.now() - fs.statSync(active).mtimeMs < 5000);
    fs.writeFileSync(active, `${os.hostname()}\n${deadPid()}\n`);
    setAge(active, 599);
    assert.equal(await r.pickup(), null);
  }),
);

test(
  'a job whose data file is missing is skipped and stays locked, as in IPC::DirQueue',
  withDir('nodata', async (dir) => {
    const n = '50.20240101120000000001.AAAA';
    fs.unlinkSync(handJob(dir, n, 'x'));
    const warnings: string[] = [];
    const r = new DirQueueReader(dir, { warn: (m) => warnings.push(m) });
    assert.equal(await r.pickup(), null);
    assert.equal(fs.existsSync(path.join(dir, 'active', n)), true);
    await r.visitAll(() => assert.fail('must be skipped'));
    assert.ok(warnings.some((m) => m.includes('cannot read control file')));
  }),
);

test(
  'odd lock contents are judged the way Perl judges them',
  withDir('emptylock', async (dir) => {
    const n = '50.20240101120000000001.AAAA';
    handJob(dir, n, 'x');
    fs.mkdirSync(path.join(dir, 'active'));
    // Empty content: host '' is not ours, so it is "another host" and never broken, like Perl.
    fs.writeFileSync(path.join(dir, 'active', n), '');
    setAge(path.join(dir, 'active', n), 5000);
    const r = new DirQueueReader(dir, { warn: () => undefined });
    assert.equal(await r.pickup(), null);
    fs.unlinkSync(path.join(dir, 'active', n));
    fs.writeFileSync(path.join(dir, 'active', n), `${os.hostname()}\n\n`);
    setAge(path.join(dir, 'active', n), 5000);
    // An empty pid is Perl's kill(0, 0): our own process group, so the owner counts as alive.
    assert.equal(await r.pickup(), null);
  }),
);

test(
  'the eligible option: pickup passes over refused jobs without locking them, list reports only eligible ones',
  withDir('eligible', async (dir) => {
    const names = ['10.20240101120000000001.AAAA', '50.20240101120000000001.AAAA', '50.20240101120000000002.AAAA'];
    for (const n of names) handJob(dir, n, n);
    const refused = new Set([names[0], names[1]]);
    const r = new DirQueueReader(dir, { eligible: (n) => !refused.has(n) });
    assert.deepEqual(await r.list(), [names[2]]);
    const job = (await r.pickup()) as Job;
    assert.equal(job.jobId, names[2]);
    assert.deepEqual(fs.readdirSync(path.join(dir, 'active')), [names[2]], 'refused jobs were not locked');
    assert.equal(await r.pickup(), null);
    refused.delete(names[0]);
    assert.equal(((await r.pickup()) as Job).jobId, names[0], 'eligibility is asked afresh on every pickup');
    const all: string[] = [];
    await r.visitAll((j) => void all.push(j.jobId));
    assert.deepEqual(all, names, 'visitAll is not narrowed');
  }),
);

test(
  'readJob reads one job as visitAll would, and only a plain queue/ entry',
  withDir('readjob', async (dir) => {
    const n = '50.20240101120000000001.AAAA';
    handJob(dir, n, 'x', 'k: v\n');
    const r = new DirQueueReader(dir, { warn: () => undefined });
    const job = (await r.readJob(n)) as Job;
    assert.equal(job.readOnly, true);
    assert.deepEqual({ ...job.metadata }, { k: 'v' });
    for (const bad of ['50.20240101120000000009.AAAA', 'README', `5/../${n}`, '']) assert.equal(await r.readJob(bad), null, bad);
  }),
);
