import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { DirQueueReader, parseControl } from '../src/dirqueue';
import { runWorker } from './helpers/dirqueue-workers';
import { sha256 } from './helpers/job-fixtures';
import { listFiles, makeTmpDir, rmTmpDir } from './helpers/temp-dirs';

function parseLines(out: string): string[][] {
  return out.split('\n').filter(Boolean).map((l) => l.split(' '));
}

test('4 processes x 2000 enqueues on one queue: every job intact, tmp/ empty', { timeout: 120_000 }, async () => {
  const dir = makeTmpDir('stress');
  try {
    const q = path.join(dir, 'q');
    const results = await Promise.all([1, 2, 3, 4].map((seed) => runWorker(['enqueue', q, '2000', String(seed)], 110_000)));
    const expected = new Map<string, string>();
    for (const r of results) {
      assert.equal(r.code, 0, r.stderr);
      for (const [sha, , jobId] of parseLines(r.stdout)) expected.set(jobId as string, sha as string);
    }
    assert.equal(expected.size, 8000, 'job ids are unique');
    const names = await new DirQueueReader(q).list();
    assert.equal(names.length, 8000);
    const dataFiles = new Set<string>();
    for (const name of names) {
      const ctrl = parseControl(fs.readFileSync(path.join(q, 'queue', name)));
      const qdfn = ctrl.fields['QDFN'] as string;
      const data = fs.readFileSync(qdfn);
      assert.equal(sha256(data), expected.get(name), name);
      assert.equal(ctrl.metadata['sha'], expected.get(name));
      assert.equal(Number(ctrl.fields['QDSB']), data.length);
      assert.equal(fs.statSync(qdfn).nlink, 1);
      dataFiles.add(qdfn);
    }
    assert.equal(dataFiles.size, 8000, 'no two jobs share a data file');
    assert.deepEqual(fs.readdirSync(path.join(q, 'tmp')), []);
    assert.equal(listFiles(path.join(q, 'data')).length, 8000, 'no orphan data files');
  } finally {
    rmTmpDir(dir);
  }
});

test('readers in several processes pick up while writers run: every job taken exactly once', { timeout: 120_000 }, async () => {
  const dir = makeTmpDir('pickup');
  try {
    const q = path.join(dir, 'q');
    const stop = path.join(dir, 'stop');
    const readers = [1, 2, 3].map(() => runWorker(['pickup', q, stop], 110_000));
    const writers = await Promise.all([5, 6].map((seed) => runWorker(['enqueue', q, '600', String(seed)], 110_000)));
    fs.writeFileSync(stop, '');
    const taken = await Promise.all(readers);
    const written = new Map<string, string>();
    for (const w of writers) {
      assert.equal(w.code, 0, w.stderr);
      for (const [sha, , jobId] of parseLines(w.stdout)) written.set(jobId as string, sha as string);
    }
    const seen = new Map<string, number>();
    let busyReaders = 0;
    for (const r of taken) {
      assert.equal(r.code, 0, r.stderr);
      const lines = parseLines(r.stdout);
      if (lines.length > 0) busyReaders++;
      for (const [jobId, sha, verdict] of lines) {
        assert.equal(verdict, 'ok', `${jobId} content`);
        assert.equal(sha, written.get(jobId as string), `${jobId} is a job that was written`);
        seen.set(jobId as string, (seen.get(jobId as string) ?? 0) + 1);
      }
    }
    assert.equal(seen.size, written.size, 'every job taken');
    assert.ok([...seen.values()].every((n) => n === 1), 'no job taken twice');
    assert.ok(busyReaders >= 2, 'the readers really competed');
    assert.deepEqual(listFiles(q), [], 'queue/, data/, active/ and tmp/ all empty');
  } finally {
    rmTmpDir(dir);
  }
});
