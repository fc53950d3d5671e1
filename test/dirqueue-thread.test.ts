/**
 * The spool writer thread: jobs written through it are the same IPC::DirQueue jobs the in-process writer makes
 * (the reader picks them up with their bytes and metadata), errors come back at commit with their code and leave
 * nothing behind, abort removes everything, and a large message passes the back-pressure point. What crosses to the
 * thread is only the message's bytes, moved rather than cloned, and never more than the high-water mark (plus one
 * write) is posted and not yet known written.
 */
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { Worker, type TransferListItem } from 'node:worker_threads';
import { DirQueueReader, HIGH_WATER_BYTES, SpoolWriterThread } from '../src/dirqueue';
import { Spool } from '../src/spool';

function tree(dir: string): string[] {
  if (!fs.existsSync(dir)) return [];
  return fs.readdirSync(dir, { recursive: true, withFileTypes: true }).filter((e) => e.isFile()).map((e) => path.join(e.parentPath, e.name));
}

describe('spool writer thread', () => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'dq-thread-'));
  const thread = new SpoolWriterThread();
  after(async () => {
    await thread.close();
    fs.rmSync(root, { recursive: true, force: true });
  });

  test('concurrent jobs in several queues land whole, in the IPC::DirQueue format', async () => {
    const sent = new Map<string, string>();
    await Promise.all(
      Array.from({ length: 200 }, async (_, i) => {
        const q = thread.queue(path.join(root, `q${i % 3}`));
        const body = crypto.randomBytes(100 + (i * 37) % 9000);
        const job = await q.begin({ metadata: { n: String(i) } });
        await job.write(Buffer.from(`header ${i}\r\n`));
        for (let off = 0; off < body.length; off += 1000) await job.write(body.subarray(off, off + 1000));
        const c = await job.commit();
        assert.equal(c.size, Buffer.byteLength(`header ${i}\r\n`) + body.length);
        assert.ok(path.isAbsolute(c.dataPath));
        sent.set(String(i), crypto.createHash('sha256').update(`header ${i}\r\n`).update(body).digest('hex'));
      }),
    );
    let seen = 0;
    for (const q of ['q0', 'q1', 'q2']) {
      const reader = new DirQueueReader(path.join(root, q));
      for (let job = await reader.pickup(); job; job = await reader.pickup()) {
        const data = await job.readData();
        assert.equal(crypto.createHash('sha256').update(data).digest('hex'), sent.get(job.metadata.n));
        assert.equal(job.size, data.length);
        await job.finish();
        seen++;
      }
      assert.deepEqual(fs.readdirSync(path.join(root, q, 'tmp')), []);
    }
    assert.equal(seen, 200);
  });

  test('a failing queue reports the error with its code at commit and leaves no file', async () => {
    const blocker = path.join(root, 'not-a-dir');
    fs.writeFileSync(blocker, 'x');
    const job = await thread.queue(path.join(blocker, 'q')).begin({ metadata: { a: 'b' } });
    await job.write(Buffer.from('hello'));
    await assert.rejects(job.commit(), (e: NodeJS.ErrnoException) => e.code === 'ENOTDIR');
    const bad = await thread.queue(path.join(root, 'qbad')).begin();
    await bad.write(Buffer.from('x'));
    await assert.rejects(bad.commit({ QDFN: 'evil' }), /invalid metadatum/);
    assert.deepEqual(tree(path.join(root, 'qbad')), []);
  });

  test('abort removes the job', async () => {
    const job = await thread.queue(path.join(root, 'qa')).begin();
    await job.write(Buffer.from('partial'));
    await job.abort();
    const probe = await thread.queue(path.join(root, 'qa')).begin();
    await probe.abort(); // ordered after the first abort: everything before it is done
    assert.deepEqual(tree(path.join(root, 'qa')), []);
  });

  test('after close() every request fails with EWRITERTHREAD instead of hanging or starting a new thread', async () => {
    const t = new SpoolWriterThread();
    const job = await t.queue(path.join(root, 'qclosed')).begin();
    await t.close();
    await assert.rejects(job.write(Buffer.from('late')), (e: NodeJS.ErrnoException) => e.code === 'EWRITERTHREAD' && /closed/.test(e.message));
    // begin() posts nothing (it rides on the job's first post): the job begun later fails at its commit.
    const late = await t.queue(path.join(root, 'qclosed')).begin();
    await assert.rejects(late.commit(), /closed/);
    assert.deepEqual(tree(path.join(root, 'qclosed')), []);
  });

  test('a message larger than the back-pressure mark is written whole', async () => {
    const job = await thread.queue(path.join(root, 'qbig')).begin();
    const chunk = Buffer.alloc(64 * 1024, 7);
    for (let i = 0; i < 200; i++) await job.write(chunk); // 12.5 MiB
    const c = await job.commit();
    assert.equal(fs.statSync(c.dataPath).size, 200 * chunk.length);
  });

  test('Spool uses the thread without fsync and the in-process writer with it; both file readable jobs', async () => {
    for (const fsync of [false, true]) {
      const spool = new Spool(path.join(root, `spool-${fsync}`), { fsync });
      const job = await spool.writer('incoming').begin({ metadata: { fsync: String(fsync) } });
      await job.write(Buffer.from('m\r\n'));
      await job.commit();
      await spool.close();
      const j = await new DirQueueReader(path.join(root, `spool-${fsync}`, 'incoming')).pickup();
      assert.equal(j?.metadata.fsync, String(fsync));
      assert.equal((await j!.readData()).toString(), 'm\r\n');
    }
  });

  test('bytes in flight never exceed the high-water mark plus one write, however many jobs write at once', async (ctx) => {
    const spy = spyOnThreadPosts();
    const t = new SpoolWriterThread();
    const dir = path.join(root, 'qflight');
    const JOBS = 48;
    const WRITES = 6;
    const fill = (i: number, k: number) => (i * WRITES + k) % 251;
    try {
      const committed = await Promise.all(
        Array.from({ length: JOBS }, async (_, i) => {
          const job = await t.queue(dir).begin();
          for (let k = 0; k < WRITES; k++) await job.write(Buffer.alloc(CHUNK, fill(i, k)));
          return job.commit();
        }),
      );
      for (const [i, c] of committed.entries()) {
        const data = fs.readFileSync(c.dataPath);
        assert.equal(data.length, WRITES * CHUNK);
        for (let k = 0; k < WRITES; k++) assert.ok(data.subarray(k * CHUNK, (k + 1) * CHUNK).every((x) => x === fill(i, k)), `job ${i} write ${k}`);
      }
    } finally {
      spy.restore();
      await t.close();
    }
    ctx.diagnostic(`at most ${spy.state.peak} bytes were posted and not yet known written`);
    assert.ok(spy.state.peak <= HIGH_WATER_BYTES + CHUNK, `${spy.state.peak} bytes were posted and not yet known written`);
  });

  test('a view crosses to the thread as its own bytes, never with the buffer it is a view of', async () => {
    const spy = spyOnThreadPosts();
    const t = new SpoolWriterThread();
    try {
      const big = Buffer.alloc(4 * 1024 * 1024, 0x61);
      const job = await t.queue(path.join(root, 'qview')).begin();
      await job.write(big.subarray(100, 110));
      await job.write(Buffer.from('pooled\r\n'));
      const c = await job.commit();
      assert.equal(fs.readFileSync(c.dataPath).toString(), 'aaaaaaaaaapooled\r\n');
    } finally {
      spy.restore();
      await t.close();
    }
    assert.equal(spy.state.posted, 18);
    assert.equal(spy.state.extraBacking, 0, 'bytes beyond the view crossed to the thread');
  });

  test('a buffer handed over moves to the thread; a pooled one is copied, its pool left alone', async () => {
    const job = await thread.queue(path.join(root, 'qmove')).begin();
    const owned = Buffer.allocUnsafeSlow(1000).fill(0x37);
    const pooled = Buffer.from('pooled bytes');
    const neighbour = Buffer.from('neighbour');
    await job.write(owned, { handOver: true });
    await job.write(pooled, { handOver: true });
    assert.equal(owned.length, 0, 'moved, not copied');
    assert.equal(pooled.toString(), 'pooled bytes');
    assert.equal(neighbour.toString(), 'neighbour');
    const c = await job.commit();
    assert.deepEqual(fs.readFileSync(c.dataPath), Buffer.concat([Buffer.alloc(1000, 0x37), Buffer.from('pooled bytes')]));
  });
});

/** The size of the writes that test the in-flight bound (the session writes 64 KiB blocks). */
const CHUNK = 64 * 1024;

/**
 * Watches what crosses to the spool thread from outside the code under test: the bytes of every write posted
 * (and any bytes of a backing buffer beyond them), and, since the thread answers strictly in posting order, the
 * bytes each reply proves written. `peak` is the most ever posted and not yet proven written.
 */
function spyOnThreadPosts() {
  const original = Worker.prototype.postMessage;
  const state = { posted: 0, proven: 0, peak: 0, extraBacking: 0 };
  const covers = new Map<number, number>();
  const hooked = new WeakSet<Worker>();
  Worker.prototype.postMessage = function (this: Worker, msg: unknown, transfer?: readonly TransferListItem[]) {
    if (!hooked.has(this)) {
      hooked.add(this);
      // Before the writer's own listener, which may post more in reply.
      this.prependListener('message', (r: { id: number }) => {
        const c = covers.get(r.id);
        if (c !== undefined && c > state.proven) state.proven = c;
      });
    }
    const m = msg as { op: string; id: number; chunk?: Uint8Array };
    if (m.op === 'write' && m.chunk) {
      state.posted += m.chunk.byteLength;
      state.extraBacking += m.chunk.buffer.byteLength - m.chunk.byteLength;
      state.peak = Math.max(state.peak, state.posted - state.proven);
    } else covers.set(m.id, state.posted);
    return original.call(this, msg, transfer);
  };
  return { state, restore: () => void (Worker.prototype.postMessage = original) };
}
