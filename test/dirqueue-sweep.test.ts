import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { DirQueueReader, DirQueueWriter, dataLocation, findQueueDirs, sweepSpool, sweepTmp, tmpName } from '../src/dirqueue';
import { processStartTicks } from '../src/pid';
import { deadPid } from './helpers/job-fixtures';
import { listFiles, withDir } from './helpers/temp-dirs';

const HOST = 'trap1';
const OLD_S = 3600;

function old(p: string): void {
  const t = new Date(Date.now() - OLD_S * 1000);
  fs.utimesSync(p, t, t);
}

/** Lays out one job of a dead writer as a crash at some step would leave it. */
class Crash {
  readonly tmp: string;
  constructor(
    readonly dir: string,
    readonly base: string,
    readonly pid: number,
    readonly host = HOST,
  ) {
    this.tmp = path.join(dir, 'tmp');
    fs.mkdirSync(this.tmp, { recursive: true });
  }
  tmpPath(kind: 'data' | 'ctrl'): string {
    return path.join(this.tmp, tmpName({ base: this.base, host: this.host, pid: this.pid, seq: 1 }, kind));
  }
  data(body = 'message'): string {
    fs.writeFileSync(this.tmpPath('data'), body);
    old(this.tmpPath('data'));
    return this.tmpPath('data');
  }
  linkData(dname?: string): string {
    const loc = dataLocation(this.base);
    const d = path.join(this.dir, 'data', loc.h1, loc.h2);
    fs.mkdirSync(d, { recursive: true });
    const p = path.join(d, dname ?? loc.dname);
    fs.linkSync(this.tmpPath('data'), p);
    old(this.tmpPath('data'));
    return p;
  }
  ctrl(dataPath: string): string {
    fs.writeFileSync(this.tmpPath('ctrl'), `QDFN: ${dataPath}\nQDSB: 7\nQSTT: 1704110400\nQSTM: 1\nQSHN: ${this.host}\n`);
    old(this.tmpPath('ctrl'));
    return this.tmpPath('ctrl');
  }
  linkCtrl(): string {
    fs.mkdirSync(path.join(this.dir, 'queue'), { recursive: true });
    const p = path.join(this.dir, 'queue', this.base);
    fs.linkSync(this.tmpPath('ctrl'), p);
    old(this.tmpPath('ctrl'));
    return p;
  }
}

const opts = { hostname: HOST, minAgeMs: 60_000 };

test(
  'crash while writing data (tmp data, 1 link): removed',
  withDir('sw-data', async (dir) => {
    const c = new Crash(dir, '50.20240101120000000001.DNjkw', deadPid());
    c.data();
    const s = await sweepTmp(dir, opts);
    assert.deepEqual(listFiles(dir), []);
    assert.equal(s.tmpRemoved, 1);
  }),
);

test(
  'crash after the data link (tmp data, 2 links, no ctrl): orphan data file removed too',
  withDir('sw-orphan', async (dir) => {
    const c = new Crash(dir, '50.20240101120000000002.DNjkw', deadPid());
    c.data();
    c.linkData();
    const s = await sweepTmp(dir, opts);
    assert.deepEqual(listFiles(dir), []);
    assert.equal(s.orphansRemoved, 1);
  }),
);

test(
  'crash after writing the ctrl file, data under a retry name: orphan found by inode',
  withDir('sw-orphan-retry', async (dir) => {
    const base = '50.20240101120000000003.DNjkw';
    const pid = deadPid();
    // Another job's data file with the first-try name, which must survive.
    fs.mkdirSync(path.join(dir, 'data', 'k', 'w'), { recursive: true });
    fs.writeFileSync(path.join(dir, 'data', 'k', 'w', dataLocation(base).dname), 'other job');
    const c = new Crash(dir, base, pid);
    c.data();
    const dataPath = c.linkData(`${base}.${pid}.4711`);
    c.ctrl(dataPath);
    const s = await sweepTmp(dir, opts);
    assert.equal(s.orphansRemoved, 1);
    assert.deepEqual(listFiles(dir), [`data/k/w/${dataLocation(base).dname}`]);
  }),
);

test(
  'an orphan under a name of neither form is still found by inode among thousands of data files',
  withDir('sw-orphan-odd', async (dir) => {
    const base = '50.20240101120000000005.DNjkw';
    const hdir = path.join(dir, 'data', 'k', 'w');
    fs.mkdirSync(hdir, { recursive: true });
    const others = Array.from({ length: 3000 }, (_, i) => `50.2024010112${String(i).padStart(10, '0')}.DNj`);
    fs.writeFileSync(path.join(hdir, others[0]!), 'other jobs');
    for (const n of others.slice(1)) fs.linkSync(path.join(hdir, others[0]!), path.join(hdir, n));
    const c = new Crash(dir, base, deadPid());
    c.data();
    c.linkData('renamed-by-hand');
    const s = await sweepTmp(dir, opts);
    assert.equal(s.orphansRemoved, 1);
    assert.equal(fs.existsSync(path.join(hdir, 'renamed-by-hand')), false);
    assert.equal(fs.readdirSync(hdir).length, 3000);
  }),
);

test(
  'crash after the queue link, before the tmp unlinks: committed job kept and pickable',
  withDir('sw-committed', async (dir) => {
    const c = new Crash(dir, '50.20240101120000000004.DNjkw', deadPid());
    c.data();
    const dataPath = c.linkData();
    c.ctrl(dataPath);
    const q = c.linkCtrl();
    const s = await sweepTmp(dir, opts);
    assert.equal(s.committed, 1);
    assert.equal(s.orphansRemoved, 0);
    assert.deepEqual(fs.readdirSync(path.join(dir, 'tmp')), []);
    assert.equal(fs.statSync(q).nlink, 1);
    assert.equal(fs.statSync(dataPath).nlink, 1);
    const job = await new DirQueueReader(dir, { hostname: HOST }).pickup();
    assert.equal((await job?.readData())?.toString(), 'message');
  }),
);

test(
  'crash between the two tmp unlinks (only the ctrl tmp, 2 links): committed',
  withDir('sw-ctrl-only', async (dir) => {
    const c = new Crash(dir, '50.20240101120000000005.DNjkw', deadPid());
    c.data();
    const dataPath = c.linkData();
    c.ctrl(dataPath);
    c.linkCtrl();
    fs.unlinkSync(c.tmpPath('data'));
    const s = await sweepTmp(dir, opts);
    assert.equal(s.committed, 1);
    assert.deepEqual(listFiles(dir).sort(), ['data/k/w/50.20240101120000000005.DNj', 'queue/50.20240101120000000005.DNjkw']);
  }),
);

test(
  'committed job already finished by a consumer (both tmp names back to 1 link): tmp names removed',
  withDir('sw-finished', async (dir) => {
    const c = new Crash(dir, '50.20240101120000000006.DNjkw', deadPid());
    c.data();
    const dataPath = c.linkData();
    c.ctrl(dataPath);
    const q = c.linkCtrl();
    fs.unlinkSync(q);
    fs.unlinkSync(dataPath);
    await sweepTmp(dir, opts);
    assert.deepEqual(listFiles(dir), []);
  }),
);

test(
  'never touches live writers, young files, other hosts, Perl tmp files or consumer locks',
  withDir('sw-keep', async (dir) => {
    const dead = deadPid();
    new Crash(dir, '50.20240101120000000007.DNjkw', process.pid).data();
    new Crash(dir, '50.20240101120000000008.DNjkw', dead, 'other-host').data();
    const young = new Crash(dir, '50.20240101120000000009.DNjkw', dead);
    fs.writeFileSync(young.tmpPath('data'), 'just now');
    const foreign = [
      '50.20240101120000000010.DNjkw.data',
      '50.20240101120000000010.DNjkw.ctrl',
      `50.20240101120000000010.DNjkw.1704110400.${os.hostname()}.${dead}.active`,
    ];
    for (const f of foreign) {
      fs.writeFileSync(path.join(dir, 'tmp', f), 'x');
      old(path.join(dir, 'tmp', f));
    }
    const before = listFiles(dir);
    const s = await sweepTmp(dir, opts);
    assert.deepEqual(listFiles(dir), before);
    assert.equal(s.kept, 3);
    assert.equal(s.tmpRemoved, 0);
  }),
);

test(
  'a real writer that dies mid-message is cleaned up by the next sweep',
  withDir('sw-real', async (dir) => {
    const w = new DirQueueWriter(dir, { hostname: HOST });
    const job = await w.begin();
    await job.write(Buffer.from('half a mess'));
    const [name] = fs.readdirSync(path.join(dir, 'tmp'));
    // Our own pid is alive: the sweep must wait...
    assert.equal((await sweepTmp(dir, { ...opts, minAgeMs: 0 })).kept, 1);
    // ...and a renamed copy under a dead pid is what a crashed process would have left.
    const deadName = (name as string).replace(new RegExp(`\\.${process.pid}(s\\d+)?\\.`), `.${deadPid()}$1.`);
    fs.renameSync(path.join(dir, 'tmp', name as string), path.join(dir, 'tmp', deadName));
    await sweepTmp(dir, { ...opts, minAgeMs: 0 });
    assert.deepEqual(listFiles(dir), []);
  }),
);

test(
  'sweepSpool visits every queue directory of a spool and nothing else',
  withDir('sw-spool', async (spool) => {
    const pid = deadPid();
    new Crash(path.join(spool, 'incoming'), '50.20240101120000000011.DNjkw', pid).data();
    new Crash(path.join(spool, 'forward-mx-25'), '50.20240101120000000012.DNjkw', pid).data();
    fs.mkdirSync(path.join(spool, 'deadletter', 'queue'), { recursive: true });
    fs.mkdirSync(path.join(spool, '.spamtrapd.lock'));
    fs.mkdirSync(path.join(spool, 'notaqueue', 'stuff'), { recursive: true });
    fs.writeFileSync(path.join(spool, 'file'), '');
    assert.deepEqual((await findQueueDirs(spool)).map((d) => path.basename(d)), ['deadletter', 'forward-mx-25', 'incoming']);
    const { total, byQueue } = await sweepSpool(spool, opts);
    assert.equal(total.tmpRemoved, 2);
    assert.deepEqual(Object.keys(byQueue).sort(), ['deadletter', 'forward-mx-25', 'incoming']);
    assert.deepEqual(listFiles(spool), ['file']);
  }),
);

test(
  "a pid reused by another process (same pid, another start time) is not the writer: its files go; the writer's own stay",
  withDir('sw-pid-reuse', async (dir) => {
    // This test process plays the later process that got the dead writer's pid (as after a restart in a fresh pid
    // namespace, where pids repeat at once).
    const mine = processStartTicks('self')!;
    const tmp = path.join(dir, 'tmp');
    fs.mkdirSync(tmp, { recursive: true });
    const name = (base: string, start: string, kind: 'data' | 'ctrl') => path.join(tmp, tmpName({ base, host: HOST, pid: process.pid, start, seq: 1 }, kind));
    const gone = name('50.20240101120000000041.DNjkw', String(Number(mine) - 1), 'data');
    const live = name('50.20240101120000000042.DNjkw', mine, 'data');
    for (const p of [gone, live]) {
      fs.writeFileSync(p, 'x');
      old(p);
    }
    const s = await sweepTmp(dir, opts);
    assert.deepEqual(listFiles(dir), [path.relative(dir, live)]);
    assert.equal(s.tmpRemoved, 1);
  }),
);
