/**
 * Interoperability with the real IPC::DirQueue 1.1 (Perl). Runs only where the module has been exported as
 * ../shared/tools/dirqueue/README.md says; CI has no copy, and the other dirqueue tests prove the format alone.
 */
import { test, TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { DirQueueReader, DirQueueWriter, dirqueueHashBytes } from '../src/dirqueue';
import { runWorker } from './helpers/dirqueue-workers';
import { jobContent, sha256 } from './helpers/job-fixtures';
import { sharedDir } from './helpers/paths';
import { perlModuleFound, perlModuleLib } from './helpers/perl-dirqueue';
import { makeTmpDir, rmTmpDir } from './helpers/temp-dirs';

const tools = () => path.join(sharedDir(), 'tools', 'dirqueue');

/** Both halves are needed: the real module (not in CI unless set up by hand) and the shared/ tools beside the repo. */
function skipWithoutPerl(t: TestContext): boolean {
  if (!perlModuleFound()) {
    t.skip(`IPC::DirQueue module not found at ${perlModuleLib()} (set IPC_DIRQUEUE_LIB): see shared/tools/dirqueue/README.md`);
    return true;
  }
  if (!fs.existsSync(path.join(tools(), 'dq-verify'))) {
    t.skip(`dq-verify not found at ${tools()}: shared/ must sit beside the repository`);
    return true;
  }
  return false;
}

/** The line dq-verify and dq-enqueue write per job: sha256, size, canonical (sorted-key) JSON of the metadata. */
function shaLine(data: Buffer, meta: Record<string, string>): string {
  const sorted: Record<string, string> = {};
  for (const k of Object.keys(meta).sort()) sorted[k] = meta[k] as string;
  return `${sha256(data)} ${data.length} ${JSON.stringify(sorted)}`;
}

function sortedLines(text: string): string[] {
  return text.split('\n').filter(Boolean).sort();
}

test('HASH equals Perl hash_string_to_filename for every 16-bit sum', (t) => {
  if (skipWithoutPerl(t)) return;
  const perl = `use IPC::DirQueue; for my $s (0..65535) { print IPC::DirQueue::hash_string_to_filename(("\\xff" x int($s/255)) . chr($s % 255)), "\\n" }`;
  const r = spawnSync('perl', ['-I', perlModuleLib(), '-e', perl], { encoding: 'latin1', maxBuffer: 1 << 24 });
  assert.equal(r.status, 0, r.stderr);
  const theirs = r.stdout.split('\n');
  for (let s = 0; s < 65536; s++) {
    const bytes = Buffer.concat([Buffer.alloc(Math.floor(s / 255), 0xff), Buffer.from([s % 255])]);
    if (dirqueueHashBytes(bytes) !== theirs[s]) assert.fail(`sum ${s}: ours ${dirqueueHashBytes(bytes)}, Perl ${theirs[s]}`);
  }
});

test('dq-verify --strict --pickup accepts a queue our writer made', { timeout: 60_000 }, async (t) => {
  if (skipWithoutPerl(t)) return;
  const dir = makeTmpDir('perl-verify');
  try {
    const q = path.join(dir, 'q');
    const clock = { sec: 1704110400, usec: 1 };
    const collide = new DirQueueWriter(q, { now: () => clock });
    const w = new DirQueueWriter(q);
    const ours: string[] = [];
    for (let i = 0; i < 300; i++) {
      const data = jobContent(9, i);
      const meta = { rcpt: `trap${i}@example.org`, subject: `Re: ${i}: colons: and\ttabs\r`, empty: '', '': 'empty key', 'k k': 'x' };
      // Every 50th job reuses one clock reading, so collision names (.PID.RAND) are checked too.
      await (i % 50 === 0 ? collide : w).enqueueStream([data], meta, { priority: i % 100 });
      ours.push(shaLine(data, meta));
    }
    const shaFile = path.join(dir, 'sha');
    const r = spawnSync(path.join(tools(), 'dq-verify'), [q, '--strict', '--pickup', '--expect', '300', '--sha-list', shaFile], { encoding: 'utf8' });
    // CR at the end of a value is a deliberate, tolerated deviation check: strict turns it into errors, so expect exactly those.
    const nonCr = r.stdout.split('\n').filter((l) => /^(ERROR|WARN)/.test(l) && !l.includes('ctrl-cr'));
    assert.deepEqual(nonCr, [], r.stdout);
    assert.match(r.stdout, /300 picked up and finished/);
    assert.deepEqual(sortedLines(fs.readFileSync(shaFile, 'latin1')), sortedLines(Buffer.from(ours.join('\n'), 'utf8').toString('latin1')));
  } finally {
    rmTmpDir(dir);
  }
});

test('dq-verify --strict --pickup passes with zero errors and warnings on a plain queue', { timeout: 60_000 }, async (t) => {
  if (skipWithoutPerl(t)) return;
  const dir = makeTmpDir('perl-strict');
  try {
    const q = path.join(dir, 'q');
    const w = new DirQueueWriter(q, { fsync: true });
    for (let i = 0; i < 100; i++) await w.enqueueStream([jobContent(3, i)], { rcpt: `t${i}@example.org`, subject: 'a: b\tc' });
    const r = spawnSync(path.join(tools(), 'dq-verify'), [q, '--strict', '--pickup', '--expect', '100'], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /dq-verify: 100 jobs, 0 errors, 0 warnings, 100 picked up and finished/);
  } finally {
    rmTmpDir(dir);
  }
});

test('our reader consumes a queue written by the real module from 3 processes', { timeout: 60_000 }, async (t) => {
  if (skipWithoutPerl(t)) return;
  const dir = makeTmpDir('perl-read');
  try {
    const q = path.join(dir, 'q');
    const shaFile = path.join(dir, 'sha');
    const e = spawnSync(path.join(tools(), 'dq-enqueue'), [q, '400', '--procs', '3', '--size', '777', '--sha-list', shaFile], { encoding: 'utf8' });
    assert.equal(e.status, 0, e.stderr);
    const r = new DirQueueReader(q);
    assert.equal((await r.stats()).bytes, 400 * 777);
    const mine: string[] = [];
    for (let job = await r.pickup(); job; job = await r.pickup()) {
      const data = await job.readData();
      assert.equal(data.length, job.size);
      mine.push(shaLine(data, job.metadata));
      await job.finish();
    }
    assert.deepEqual(mine.sort(), sortedLines(fs.readFileSync(shaFile, 'utf8')));
    for (const sub of ['queue', 'active', 'tmp']) assert.deepEqual(fs.readdirSync(path.join(q, sub)), [], sub);
  } finally {
    rmTmpDir(dir);
  }
});

test('a Perl consumer and our reader share a queue while our writers write: each job taken once', { timeout: 90_000 }, async (t) => {
  if (skipWithoutPerl(t)) return;
  const dir = makeTmpDir('perl-mixed');
  try {
    const q = path.join(dir, 'q');
    const stop = path.join(dir, 'stop');
    fs.mkdirSync(q);
    const perlConsumer = `
      use IPC::DirQueue; use Digest::SHA qw(sha256_hex); $| = 1;
      my ($dir, $stop) = @ARGV; my $dq = IPC::DirQueue->new({ dir => $dir });
      while (1) {
        my $stopping = -e $stop;
        my $job = $dq->pickup_queued_job();
        if (!$job) { last if $stopping; select(undef, undef, undef, 0.005); next }
        my $d = $job->get_data();
        print $job->{jobid}, " ", sha256_hex($d), " ", (sha256_hex($d) eq $job->{metadata}{sha} ? "ok" : "BAD"), "\\n";
        $job->finish();
      }`;
    let perlOut = '';
    let perlErr = '';
    const perl = spawn('perl', ['-I', perlModuleLib(), '-e', perlConsumer, q, stop]);
    perl.stdout.on('data', (d: Buffer) => (perlOut += d.toString()));
    perl.stderr.on('data', (d: Buffer) => (perlErr += d.toString()));
    const perlDone = new Promise<number | null>((res) => perl.on('close', res));
    const nodeReader = runWorker(['pickup', q, stop], 80_000);
    const writers = await Promise.all([7, 8].map((seed) => runWorker(['enqueue', q, '500', String(seed)], 80_000)));
    fs.writeFileSync(stop, '');
    const [perlCode, nodeOut] = await Promise.all([perlDone, nodeReader]);
    assert.equal(perlCode, 0, perlErr);
    assert.equal(perlErr, '', 'IPC::DirQueue warned');
    assert.equal(nodeOut.code, 0, nodeOut.stderr);
    const written = new Set<string>();
    for (const w of writers) {
      assert.equal(w.code, 0, w.stderr);
      for (const line of w.stdout.split('\n').filter(Boolean)) written.add(line.split(' ')[2] as string);
    }
    const taken = [...perlOut.split('\n'), ...nodeOut.stdout.split('\n')].filter(Boolean).map((l) => l.split(' '));
    assert.ok(taken.every((l) => l[2] === 'ok'), 'content intact');
    assert.equal(taken.length, written.size, 'no job taken twice');
    assert.deepEqual(new Set(taken.map((l) => l[0])), written, 'every job taken');
    assert.ok(perlOut.length > 0 && nodeOut.stdout.length > 0, 'both consumers took jobs');
  } finally {
    rmTmpDir(dir);
  }
});
