/**
 * What a consumer finds in a spool: every job read and checked whole, tmp/ leftovers, data files no control file
 * points at, and a queue emptied the way a consumer empties it.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { DirQueueReader, findQueueDirs, parseControl, type Job } from '../../src/dirqueue';

export interface StoredJob {
  queue: string;
  jobId: string;
  data: Buffer;
  metadata: Record<string, string>;
}

/**
 * Reads every job of every queue under the spool the way a consumer sees it, without taking any, and asserts that
 * each is complete: the control file parses, names an existing data file under this queue, and QDSB is its size.
 */
export async function inspectSpool(spoolDir: string): Promise<StoredJob[]> {
  const out: StoredJob[] = [];
  for (const dir of await findQueueDirs(spoolDir)) {
    const queue = path.relative(spoolDir, dir);
    const qdir = path.join(dir, 'queue');
    if (!fs.existsSync(qdir)) continue;
    for (const name of fs.readdirSync(qdir).sort()) {
      const ctrl = parseControl(fs.readFileSync(path.join(qdir, name)));
      const qdfn = ctrl.fields['QDFN'];
      assert.ok(qdfn, `${queue}/${name}: control file has QDFN`);
      assert.ok(qdfn.startsWith(path.join(dir, 'data') + path.sep), `${queue}/${name}: QDFN ${qdfn} inside the queue's data/`);
      assert.ok(fs.existsSync(qdfn), `${queue}/${name}: data file ${qdfn} exists`);
      const data = fs.readFileSync(qdfn);
      assert.equal(Number(ctrl.fields['QDSB']), data.length, `${queue}/${name}: QDSB equals the data file's size`);
      out.push({ queue, jobId: name, data, metadata: ctrl.metadata });
    }
  }
  return out;
}

/** Files left in any queue's tmp/ (consumers' `.active` locks excluded: they are not ours). */
export async function tmpLeftovers(spoolDir: string): Promise<string[]> {
  const out: string[] = [];
  for (const dir of await findQueueDirs(spoolDir)) {
    const tmp = path.join(dir, 'tmp');
    if (!fs.existsSync(tmp)) continue;
    for (const n of fs.readdirSync(tmp)) if (!n.endsWith('.active')) out.push(path.join(tmp, n));
  }
  return out;
}

/** Takes and finishes every job in one queue, the way a consumer empties it. */
export async function drain(queueDir: string): Promise<Array<{ job: Job; data: Buffer }>> {
  if (!fs.existsSync(queueDir)) return [];
  const reader = new DirQueueReader(queueDir, { warn: () => undefined });
  const out: Array<{ job: Job; data: Buffer }> = [];
  for (let job = await reader.pickup(); job; job = await reader.pickup()) {
    out.push({ job, data: await job.readData() });
    await job.finish();
  }
  return out;
}

/** drain(), the messages only. */
export async function consume(queueDir: string): Promise<Buffer[]> {
  return (await drain(queueDir)).map((j) => j.data);
}

/** data/ files that no control file in queue/ points at: what a crash between the two links would leave. */
export async function dataOrphans(spoolDir: string): Promise<string[]> {
  const out: string[] = [];
  for (const dir of await findQueueDirs(spoolDir)) {
    const referenced = new Set<string>();
    const qdir = path.join(dir, 'queue');
    if (fs.existsSync(qdir)) {
      for (const n of fs.readdirSync(qdir)) referenced.add(parseControl(fs.readFileSync(path.join(qdir, n))).fields['QDFN'] ?? '');
    }
    const walk = (d: string) => {
      if (!fs.existsSync(d)) return;
      for (const e of fs.readdirSync(d, { withFileTypes: true })) {
        const p = path.join(d, e.name);
        if (e.isDirectory()) walk(p);
        else if (!referenced.has(p)) out.push(p);
      }
    };
    walk(path.join(dir, 'data'));
  }
  return out;
}
