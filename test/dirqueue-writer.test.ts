import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { once } from 'node:events';
import { Readable } from 'node:stream';
import { DirQueueFs, DirQueueReader, DirQueueWriter, InvalidMetadatumError, parseControl } from '../src/dirqueue';
import { openFdCount } from './helpers/open-fds';
import { listFiles, withDir } from './helpers/temp-dirs';

const fixedClock = () => ({ sec: 1704110400, usec: 123456 });

test(
  'the worked example of docs/dirqueue.md writes exactly its two files',
  withDir('example', async (root) => {
    const dir = path.join(root, 'trap1-example');
    const w = new DirQueueWriter(dir, { hostname: 'trap1', pid: 1234, now: fixedClock });
    const job = await w.enqueueStream([Buffer.from('hello\n')], { rcpt: 'trap@example.org' });
    const dataPath = `${dir}/data/k/w/50.20240101120000123456.DNj`;
    assert.deepEqual(job, {
      jobId: '50.20240101120000123456.DNjkw',
      dataPath,
      queuePath: `${dir}/queue/50.20240101120000123456.DNjkw`,
      size: 6,
    });
    assert.deepEqual(listFiles(dir), ['data/k/w/50.20240101120000123456.DNj', 'queue/50.20240101120000123456.DNjkw']);
    assert.deepEqual(fs.readdirSync(path.join(dir, 'tmp')), []);
    assert.equal(
      fs.readFileSync(job.queuePath, 'latin1'),
      `QDFN: ${dataPath}\nQDSB: 6\nQSTT: 1704110400\nQSTM: 123456\nQSHN: trap1\nrcpt: trap@example.org\n`,
    );
    assert.equal(fs.readFileSync(dataPath, 'latin1'), 'hello\n');
    for (const p of [job.queuePath, dataPath]) assert.equal(fs.statSync(p).nlink, 1);
  }),
);

test(
  'same clock reading twice: the second job gets .PID.RAND names in the same data dir',
  withDir('collide', async (dir) => {
    const w = new DirQueueWriter(dir, { hostname: 'trap1', pid: 1234, now: fixedClock });
    const first = await w.enqueueStream([Buffer.from('one\n')], {});
    const second = await w.enqueueStream([Buffer.from('two\n')], {});
    assert.equal(first.jobId, '50.20240101120000123456.DNjkw');
    assert.match(second.jobId, /^50\.20240101120000123456\.DNjkw\.1234\.\d{1,5}$/);
    assert.match(second.dataPath, /\/data\/k\/w\/50\.20240101120000123456\.DNjkw\.1234\.\d{1,5}$/);
    assert.ok(Number(second.jobId.split('.').pop()) <= 65535);
    const ctrl = parseControl(fs.readFileSync(second.queuePath));
    assert.equal(ctrl.fields['QDFN'], second.dataPath);
    assert.equal(fs.readFileSync(second.dataPath, 'utf8'), 'two\n');
    assert.equal(listFiles(dir).length, 4);
    // Two jobs begun in one microsecond by one process must not share a tmp name either.
    const [a, b] = await Promise.all([w.begin(), w.begin()]);
    await a.write(Buffer.from('a'));
    await b.write(Buffer.from('b'));
    const [ja, jb] = await Promise.all([a.commit({}), b.commit({})]);
    assert.notEqual(ja.jobId, jb.jobId);
    assert.deepEqual(fs.readdirSync(path.join(dir, 'tmp')), []);
  }),
);

test(
  'priorities set PP and the pickup order; bad priorities write nothing',
  withDir('pri', async (dir) => {
    const w = new DirQueueWriter(dir);
    for (const p of [99, 50, 0, 7]) await w.enqueueStream([Buffer.from(String(p))], { p: String(p) }, { priority: p });
    const r = new DirQueueReader(dir);
    assert.deepEqual((await r.list()).map((n) => n.slice(0, 2)), ['00', '07', '50', '99']);
    const order: string[] = [];
    for (let j = await r.pickup(); j; j = await r.pickup()) {
      order.push(j.metadata['p'] as string);
      await j.finish();
    }
    assert.deepEqual(order, ['0', '7', '50', '99']);
    const empty = path.join(dir, 'nothing');
    const w2 = new DirQueueWriter(empty);
    for (const p of [-1, 100, 2.5]) await assert.rejects(w2.begin({ priority: p }), /bad priority/);
    assert.equal(fs.existsSync(empty), false);
  }),
);

test(
  'within a priority, first in first out; QDFN absolute even for a relative dir',
  withDir('fifo', async (dir) => {
    const rel = path.relative(process.cwd(), path.join(dir, 'q'));
    const w = new DirQueueWriter(rel);
    const ids: string[] = [];
    for (let i = 0; i < 20; i++) ids.push((await w.enqueueStream([Buffer.from(`m${i}`)], {})).jobId);
    assert.deepEqual(await new DirQueueReader(path.join(dir, 'q')).list(), ids);
    const ctrl = parseControl(fs.readFileSync(path.join(dir, 'q', 'queue', ids[0] as string)));
    assert.equal(ctrl.fields['QDFN'], path.join(dir, 'q', 'data', (ids[0] as string).slice(-2, -1), (ids[0] as string).slice(-1), (ids[0] as string).slice(0, -2)));
  }),
);

test(
  'streams chunk by chunk from a Readable, and several queues take one message in parallel',
  withDir('stream', async (dir) => {
    const chunks = Array.from({ length: 50 }, (_, i) => Buffer.alloc(1000 + i, i));
    const writers = ['incoming', 'copy'].map((q) => new DirQueueWriter(path.join(dir, q)));
    const jobs = await Promise.all(writers.map((w) => w.begin({ metadata: { rcpt: 'a@b' } })));
    await Promise.all(jobs.map((j) => j.write(Buffer.from('Received: x\r\n'))));
    for (const c of chunks) await Promise.all(jobs.map((j) => j.write(c)));
    const done = await Promise.all(jobs.map((j) => j.commit()));
    const expected = Buffer.concat([Buffer.from('Received: x\r\n'), ...chunks]);
    for (const d of done) {
      assert.equal(d.size, expected.length);
      assert.ok(fs.readFileSync(d.dataPath).equals(expected));
      assert.equal(parseControl(fs.readFileSync(d.queuePath)).metadata['rcpt'], 'a@b');
    }
    const viaReadable = await writers[0]!.enqueueStream(Readable.from(chunks), { r: '1' });
    assert.ok(fs.readFileSync(viaReadable.dataPath).equals(Buffer.concat(chunks)));
    const empty = await writers[0]!.enqueueStream([], {});
    assert.equal(empty.size, 0);
    assert.equal(fs.statSync(empty.dataPath).size, 0);
  }),
);

test(
  'one write at a time: a second write while one is in flight is refused',
  withDir('inflight', async (dir) => {
    const job = await new DirQueueWriter(dir).begin();
    const first = job.write(Buffer.alloc(1 << 20));
    await assert.rejects(job.write(Buffer.from('x')), /one write at a time/);
    await first;
    assert.equal(job.bytes, 1 << 20);
    await job.abort();
    assert.deepEqual(listFiles(dir), []);
  }),
);

test(
  'forbidden metadata, at begin or at commit, leave nothing behind',
  withDir('meta', async (dir) => {
    const q = path.join(dir, 'q');
    const w = new DirQueueWriter(q);
    await assert.rejects(w.begin({ metadata: { QDFN: 'x' } }), (e: unknown) => e instanceof InvalidMetadatumError && e.message === "invalid metadatum: 'QDFN'");
    await assert.rejects(w.enqueueStream([Buffer.from('x')], { 'a:b': '1' }), /invalid metadatum: 'a:b'/);
    assert.equal(fs.existsSync(q), false, 'nothing was even created');
    const job = await w.begin();
    await job.write(Buffer.from('data'));
    await assert.rejects(job.commit({ ok: 'line\nbreak' }), /invalid metadatum: 'ok'/);
    assert.deepEqual(listFiles(q), []);
    await assert.rejects(job.commit({}), /failed/);
  }),
);

test(
  'abort removes everything, before or after writing',
  withDir('abort', async (dir) => {
    const w = new DirQueueWriter(dir);
    const a = await w.begin();
    await a.abort();
    const b = await w.begin();
    await b.write(Buffer.from('partial'));
    await b.abort();
    await b.abort();
    assert.deepEqual(listFiles(dir), []);
  }),
);

function faultyFs(over: Partial<Record<keyof DirQueueFs | 'write', (...args: any[]) => unknown>>): DirQueueFs {
  const fail = (code: string) => Object.assign(new Error(`injected ${code}`), { code });
  const base: DirQueueFs = {
    open: fsp.open,
    link: fsp.link,
    unlink: fsp.unlink,
    mkdir: fsp.mkdir,
    lstat: fsp.lstat,
  };
  const out = { ...base } as any;
  for (const [k, v] of Object.entries(over)) {
    if (k === 'write') continue;
    out[k] = async (...args: unknown[]) => {
      const r = v(...args);
      if (typeof r === 'string') throw fail(r);
      return (base as any)[k](...args);
    };
  }
  if (over.write) {
    const decide = over.write;
    const origOpen = out.open;
    out.open = async (...args: unknown[]) => {
      const h = await origOpen(...args);
      const realWrite = h.write.bind(h);
      h.write = async (...wa: unknown[]) => {
        const r = decide(args[0], ...wa);
        if (typeof r === 'string') throw fail(r);
        return realWrite(...wa);
      };
      return h;
    };
  }
  return out as DirQueueFs;
}

test(
  'fault injection: ENOSPC on write, EIO on either link, EACCES on open leave no file and keep the code',
  withDir('faults', async (dir) => {
    const cases: { name: string; over: Parameters<typeof faultyFs>[0]; code: string }[] = [
      { name: 'ENOSPC on the 3rd data write', over: { write: (p: string) => (String(p).endsWith('.data') && ++writes === 3 ? 'ENOSPC' : undefined) }, code: 'ENOSPC' },
      { name: 'ENOSPC on the control file write', over: { write: (p: string) => (String(p).endsWith('.ctrl') ? 'ENOSPC' : undefined) }, code: 'ENOSPC' },
      { name: 'EIO on the data link', over: { link: (_s: string, d: string) => (d.includes('/data/') ? 'EIO' : undefined) }, code: 'EIO' },
      { name: 'EIO on the queue link', over: { link: (_s: string, d: string) => (d.includes('/queue/') ? 'EIO' : undefined) }, code: 'EIO' },
      { name: 'EACCES on the data open', over: { open: (p: string) => (String(p).endsWith('.data') ? 'EACCES' : undefined) }, code: 'EACCES' },
      { name: 'EACCES on the control open', over: { open: (p: string) => (String(p).endsWith('.ctrl') ? 'EACCES' : undefined) }, code: 'EACCES' },
    ];
    let writes = 0;
    for (const c of cases) {
      writes = 0;
      const q = path.join(dir, c.code + Math.random().toString(36).slice(2));
      const w = new DirQueueWriter(q, { fs: faultyFs(c.over) });
      await assert.rejects(
        w.enqueueStream([Buffer.from('a'), Buffer.from('b'), Buffer.from('c'), Buffer.from('d')], { k: 'v' }),
        (e: NodeJS.ErrnoException) => e.code === c.code,
        c.name,
      );
      assert.deepEqual(listFiles(q), [], c.name);
      // The same writer keeps working once the fault is gone.
      const ok = await new DirQueueWriter(q).enqueueStream([Buffer.from('fine')], {});
      assert.equal(fs.readFileSync(ok.dataPath, 'utf8'), 'fine');
    }
  }),
);

test(
  'fsync on: a failed fsync of queue/ after the link never takes back a job consumers can already see',
  withDir('fsync-after-link', async (dir) => {
    const failing: DirQueueFs = {
      ...fsp,
      open: (async (...args: Parameters<typeof fsp.open>) => {
        const h = await fsp.open(...args);
        if (path.basename(String(args[0])) === 'queue') h.sync = async () => Promise.reject(Object.assign(new Error('injected EIO'), { code: 'EIO' }));
        return h;
      }) as typeof fsp.open,
    };
    const w = new DirQueueWriter(dir, { fsync: true, fs: failing, hostname: 'trap1', pid: 1234, now: fixedClock });
    await assert.rejects(w.enqueueStream([Buffer.from('hello\n')], { rcpt: 'trap@example.org' }), (e: NodeJS.ErrnoException & { jobVisible?: string }) => {
      assert.equal(e.code, 'EIO');
      assert.equal(e.jobVisible, '50.20240101120000123456.DNjkw');
      return true;
    });
    assert.deepEqual(listFiles(dir), ['data/k/w/50.20240101120000123456.DNj', 'queue/50.20240101120000123456.DNjkw'], 'the job stays whole, tmp/ is clean');
    const job = await new DirQueueReader(dir).pickup();
    assert.equal((await job!.readData()).toString(), 'hello\n');
  }),
);

test(
  'a failed enqueueStream closes the stream it was given: 200 failures leak no descriptor',
  withDir('fdleak', async (dir) => {
    const src = path.join(dir, 'message');
    // Two read chunks, so a failure can also come between them.
    fs.writeFileSync(src, Buffer.alloc(100_000, 'x'));
    const cases: { name: string; over: Parameters<typeof faultyFs>[0]; code: string }[] = [
      { name: 'ENOSPC creating the tmp data file (begin() fails)', over: { open: (p: string) => (String(p).endsWith('.data') ? 'ENOSPC' : undefined) }, code: 'ENOSPC' },
      { name: 'EMFILE creating the tmp data file (begin() fails)', over: { open: (p: string) => (String(p).endsWith('.data') ? 'EMFILE' : undefined) }, code: 'EMFILE' },
      { name: 'ENOSPC on the second data write', over: { write: (p: string) => (String(p).endsWith('.data') && ++writes % 2 === 0 ? 'ENOSPC' : undefined) }, code: 'ENOSPC' },
      { name: 'EIO linking into queue/ (the stream was read to its end)', over: { link: (_s: string, d: string) => (d.includes('/queue/') ? 'EIO' : undefined) }, code: 'EIO' },
    ];
    let writes = 0;
    for (const c of cases) {
      const q = path.join(dir, c.code + Math.random().toString(36).slice(2));
      const w = new DirQueueWriter(q, { fs: faultyFs(c.over) });
      const before = openFdCount();
      let leftOpen = 0;
      for (let i = 0; i < 200; i++) {
        const stream = fs.createReadStream(src);
        // Half of them with the file already open, as when begin() takes longer than the open; half still opening.
        if (i % 2 === 0) await once(stream, 'ready');
        await assert.rejects(w.enqueueStream(stream, { k: 'v' }), (e: NodeJS.ErrnoException) => e.code === c.code, c.name);
        if (!stream.closed) leftOpen++;
      }
      // enqueueStream awaits the close: nothing may still be open, or be opened later, once it has rejected.
      assert.ok(openFdCount() <= before, `${c.name}: ${openFdCount() - before} descriptors more than before 200 failed enqueues`);
      assert.equal(leftOpen, 0, `${c.name}: streams not closed when enqueueStream rejected`);
      assert.deepEqual(listFiles(q), [], c.name);
    }
  }),
);

test(
  'fsync mode syncs files and directories and still writes the same format',
  withDir('fsync', async (dir) => {
    const synced: string[] = [];
    const spy: DirQueueFs = {
      ...fsp,
      open: (async (...args: Parameters<typeof fsp.open>) => {
        const h = await fsp.open(...args);
        const s = h.sync.bind(h);
        h.sync = async () => {
          synced.push(path.relative(dir, String(args[0])));
          return s();
        };
        return h;
      }) as typeof fsp.open,
    };
    const w = new DirQueueWriter(dir, { fsync: true, fs: spy, hostname: 'trap1', pid: 1234, now: fixedClock });
    await w.enqueueStream([Buffer.from('hello\n')], { rcpt: 'trap@example.org' });
    const tmpSyncs = synced.filter((s) => s.startsWith('tmp/'));
    assert.equal(tmpSyncs.length, 2, 'data and control file');
    for (const d of ['data/k/w', 'queue', 'data/k', 'data', '', 'tmp'.slice(0, 0)]) assert.ok(synced.includes(d), `fsync of '${d}'`);
    synced.length = 0;
    await w.enqueueStream([Buffer.from('again\n')], {});
    assert.deepEqual(synced.filter((s) => !s.startsWith('tmp/')).sort(), ['data/k/w', 'queue'], 'existing dirs: only the two parents');
  }),
);

test(
  "a commit moves queue/'s mtime to now, which is what wait_for_queued_job polls",
  withDir('mtime', async (dir) => {
    const w = new DirQueueWriter(dir);
    await w.enqueueStream([Buffer.from('one\n')], {});
    const past = new Date(Date.now() - 3600_000);
    fs.utimesSync(path.join(dir, 'queue'), past, past);
    const before = Date.now();
    await w.enqueueStream([Buffer.from('two\n')], {});
    assert.ok(fs.statSync(path.join(dir, 'queue')).mtimeMs >= before - 1000, 'queue/ mtime is the time of the last commit');
  }),
);
