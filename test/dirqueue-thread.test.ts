/**
 * The spool writer thread: jobs written through it are the same IPC::DirQueue jobs the in-process writer makes
 * (the reader picks them up with their bytes and metadata), errors come back at commit with their code and leave
 * nothing behind, abort removes everything, and a large message passes the back-pressure point.
 */
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { DirQueueReader, SpoolWriterThread } from '../src/dirqueue';
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
});
