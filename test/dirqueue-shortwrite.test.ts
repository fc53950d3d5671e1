/**
 * A nearly full disk can accept part of a write(2) without an error. The writer must finish every file it links:
 * a control file cut short and linked into queue/ would be read by Perl consumers with metadata missing.
 */
import assert from 'node:assert/strict';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { test } from 'node:test';
import { DirQueueReader, DirQueueWriter, type DirQueueFs } from '../src/dirqueue';
import { withDir } from './helpers/temp-dirs';

/** fs/promises, except that every FileHandle.write takes at most 7 bytes per call. */
const stingyFs = {
  ...fsp,
  open: async (p: string, flags?: string, mode?: number) => {
    const h = await fsp.open(p, flags, mode);
    return new Proxy(h, {
      get(target, prop) {
        if (prop === 'write') {
          return (buf: Buffer, off = 0, len = buf.length - off) => target.write(buf, off, Math.min(len, 7));
        }
        const v = Reflect.get(target, prop, target);
        return typeof v === 'function' ? v.bind(target) : v;
      },
    });
  },
} as unknown as DirQueueFs;

test('short writes still give a complete data file and a complete control file', withDir('short', async (dir) => {
  const w = new DirQueueWriter(dir, { fs: stingyFs });
  const meta = { mail_from: 's@spam.example', rcpt_to: Array.from({ length: 40 }, (_, i) => `r${i}@bait.example`).join(','), note: 'ham' };
  const body = Buffer.from('Subject: short writes\r\n\r\n' + 'z'.repeat(3000) + '\r\n');
  const c = await w.enqueueStream([body], meta);
  const job = await new DirQueueReader(dir).pickup();
  assert.ok(job);
  assert.equal(job.jobId, path.basename(c.queuePath));
  assert.deepEqual({ ...job.metadata }, meta, 'every metadatum, to the last byte');
  assert.deepEqual(await job.readData(), body);
  assert.equal(job.size, body.length);
  assert.equal((await fsp.readFile(c.queuePath)).subarray(-1).toString(), '\n', 'control file ends its last line');
}));
