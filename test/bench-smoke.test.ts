/**
 * Keeps bench/smtp-bench.ts from rotting: runs the compiled benchmark with --smoke (every mode, tiny counts) as a
 * child process and checks that its JSON report has every figure the benchmark promises and that every message
 * sent was stored. It measures nothing: the counts are far too small for the numbers to mean anything.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { builtRoot, repoRoot } from './helpers/paths';

interface Spread {
  median: number;
  min: number;
  max: number;
}

interface Latency {
  samples: number;
  p50Ms: number;
  p99Ms: number;
  errors: string[];
}

interface Summary {
  variant: string;
  perConnection: number;
  msgsPerSec: Spread;
  ratioVsSink: Spread | null;
  ratioVsFloorDiscard: Spread | null;
  ratioVsFloorWrite: Spread | null;
  serverCpuMsPerMsg: Spread;
  cpuRatioVsSink: Spread | null;
  cpuRatioVsFloorDiscard: Spread | null;
  cpuRatioVsFloorWrite: Spread | null;
  latency: Latency;
  sent: number;
  stored: number | null;
}

interface Soak {
  reproduce: string;
  consume: boolean;
  sent: number;
  stored: number;
  samples: Array<{ messages: number; rssKb: Record<string, number> }>;
  growthFrom10PercentKb: Record<string, { kb: number; percent: number }>;
}

interface HostileShape {
  shape: string;
  sessions: number;
  wireBytes: number;
  messageBytes: number;
  replies: string[];
  endOfDataToReplyMs: number;
  transferMs: number;
  acceptorCpuMs: number;
  takers: string[];
  peakRssKb: Record<string, number>;
  peakRssGrowthKb: number;
  stored: number;
  storedOk: boolean;
}

interface Footprint {
  reproduce: string;
  idle: { rssKb: Record<string, number>; totalKb: number };
  afterFlood: { rssKb: Record<string, number>; totalKb: number };
  peakKb: Record<string, number>;
  sent: number;
  stored: number;
}

interface Report {
  ok: boolean;
  problems: string[];
  options: { messages: number; stormIdle: number; stormMessages: number; soakMessages: number; perConnection: number[]; footprintMessages: number; hostileSize: number };
  commands: Record<string, string>;
  throughput: { reproduce: string; perConnection: number[]; turns: Array<Record<string, unknown>>; summary: Summary[] };
  storm: {
    reproduce: string;
    idleRequested: number;
    idleOpened: number;
    idleStillOpenAfterFlood: number;
    refused: number;
    sent: number;
    stored: number;
    greetingProbes: number;
    greetingMaxMs: number;
    memoryPerIdleConnKb: number;
    targets: Record<string, boolean>;
  };
  soak: Soak;
  soakNoConsume: Soak;
  hostile: { reproduce: string; size: number; shared: boolean; shapes: HostileShape[] };
  footprint: Footprint;
}

function run(args: string[], timeoutMs: number): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    // SIGTERM first: the bench then kills its own smtp-sink and daemons before exiting.
    const t = setTimeout(() => {
      child.kill('SIGTERM');
      setTimeout(() => child.kill('SIGKILL'), 5000).unref();
    }, timeoutMs);
    child.once('exit', (code) => {
      clearTimeout(t);
      resolve({ code, stdout, stderr });
    });
  });
}

const positive = (n: unknown) => typeof n === 'number' && Number.isFinite(n) && n > 0;

const finiteAtLeast0 = (n: unknown) => typeof n === 'number' && Number.isFinite(n) && n >= 0;

test('bench/smtp-bench --smoke: every mode runs, reports every figure, stores every message sent', { timeout: 180_000 }, async (t) => {
  if (!fs.existsSync(path.join(repoRoot(), '.tools', 'bin', 'smtp-source'))) {
    if (process.env.CI) assert.fail('smtp-source missing: CI must run scripts/install-test-deps.sh before the tests');
    t.skip('smtp-source not installed: run scripts/install-test-deps.sh (the benchmark itself would install it)');
    return;
  }
  const script = path.join(builtRoot(), 'bench', 'smtp-bench.js');
  const { code, stdout, stderr } = await run([script, '--smoke', '--json'], 150_000);
  assert.equal(code, 0, `bench exited ${code}:\n${stderr}`);
  const r = JSON.parse(stdout) as Report;
  assert.equal(r.ok, true, r.problems.join('\n'));
  assert.deepEqual(r.problems, []);
  for (const k of ['smtpSource', 'smtpSink', 'daemon']) assert.ok(r.commands[k], `commands.${k}`);

  // Smoke runs one message per connection and 5 per connection (smtp-source -d) as variants of every round.
  assert.deepEqual(r.throughput.perConnection, [1, 5]);
  assert.deepEqual(r.options.perConnection, [1, 5]);
  const variants = new Map(r.throughput.summary.map((s) => [s.variant, s]));
  const servers = ['floor-discard', 'floor-write', 'smtp-sink', 'spamtrapd fsync=off', 'spamtrapd fsync=on'];
  assert.deepEqual([...variants.keys()].sort(), [...servers, ...servers.map((v) => `${v} 5/conn`)].sort());
  const ratio = (x: Spread | null) => x !== null && positive(x.median) && positive(x.min) && x.min <= x.median && x.median <= x.max;
  for (const s of variants.values()) {
    assert.ok(positive(s.msgsPerSec.median), `${s.variant} msgs/s`);
    assert.ok(s.msgsPerSec.min <= s.msgsPerSec.median && s.msgsPerSec.median <= s.msgsPerSec.max, `${s.variant} spread`);
    assert.ok(positive(s.serverCpuMsPerMsg.median), `${s.variant} server CPU ms/msg`);
    assert.ok(s.latency.samples > 0, `${s.variant} latency samples`);
    assert.ok(s.latency.p50Ms > 0 && s.latency.p50Ms <= s.latency.p99Ms, `${s.variant} p50 <= p99`);
    assert.deepEqual(s.latency.errors, []);
    assert.ok(s.sent >= r.options.messages, `${s.variant} sent`);
    // Every variant is compared with every reference but itself, in the same round.
    const server = s.variant.replace(/ 5\/conn$/, '');
    assert.equal(s.perConnection, server === s.variant ? 1 : 5, `${s.variant} per connection`);
    const refs = { 'smtp-sink': [s.ratioVsSink, s.cpuRatioVsSink], 'floor-discard': [s.ratioVsFloorDiscard, s.cpuRatioVsFloorDiscard], 'floor-write': [s.ratioVsFloorWrite, s.cpuRatioVsFloorWrite] };
    for (const [ref, pair] of Object.entries(refs)) {
      for (const x of pair) {
        if (ref === server) assert.equal(x, null, `${s.variant} against itself`);
        else assert.ok(ratio(x), `${s.variant} ratio vs ${ref}: ${JSON.stringify(x)}`);
      }
    }
    if (server === 'smtp-sink' || server === 'floor-discard') assert.equal(s.stored, null, `${s.variant} stores nothing`);
    else assert.equal(s.stored, s.sent, `${s.variant}: stored == sent`);
  }
  for (const turn of r.throughput.turns) {
    for (const k of ['round', 'sent', 'stored', 'wallMs', 'msgsPerSec', 'serverCpuMs', 'serverCpuMsPerMsg', 'perProcessCpuMs', 'clientCpuMsPerMsg', 'latency', 'ratios', 'cpuRatios', 'perConnection']) {
      assert.ok(k in turn, `turn field ${k}`);
    }
  }

  const s = r.storm;
  assert.equal(s.idleOpened, r.options.stormIdle);
  assert.equal(s.idleStillOpenAfterFlood, s.idleOpened);
  assert.equal(s.refused, 0);
  assert.equal(s.sent, r.options.stormMessages);
  assert.equal(s.stored, s.sent, 'storm: stored == sent');
  assert.ok(s.greetingProbes > 0 && positive(s.greetingMaxMs), 'storm greeting probes');
  assert.equal(typeof s.memoryPerIdleConnKb, 'number');
  for (const k of ['noRefusals', 'everyMessageStored', 'greetedWithin1s', 'memoryPerIdleConnAtMost30Kb']) assert.equal(typeof s.targets[k], 'boolean', k);

  // Smoke runs the soak both ways: consuming the queue as it fills, and leaving it to grow.
  for (const [soak, consume] of [[r.soak, true], [r.soakNoConsume, false]] as const) {
    const what = consume ? 'soak' : 'soak --no-consume';
    assert.equal(soak.consume, consume, what);
    assert.equal(soak.sent, r.options.soakMessages);
    assert.equal(soak.stored, soak.sent, `${what}: stored == sent`);
    assert.ok(soak.samples.length >= 2, `${what} RSS samples`);
    assert.equal(soak.samples[soak.samples.length - 1]?.messages, soak.sent);
    // Every process of the daemon is sampled (the forward relay too); these three exist whatever else it forks.
    for (const p of ['primary', 'acceptor0', 'acceptor1']) assert.ok(p in soak.growthFrom10PercentKb, `${what} RSS growth of ${p}`);
    for (const sample of soak.samples) for (const kb of Object.values(sample.rssKb)) assert.ok(positive(kb), `${what}: RSS sampled`);
    assert.equal(soak.reproduce.includes('--no-consume'), !consume, `${what}: ${soak.reproduce}`);
  }

  const h = r.hostile;
  assert.equal(h.size, r.options.hostileSize);
  assert.equal(h.shared, true, 'smoke sends every shape to one daemon');
  assert.deepEqual(h.shapes.map((x) => x.shape), ['plain', 'dots', 'one-byte-lines', 'bare-lf', 'long-line', 'cr-only', 'nul', 'dots-x4']);
  for (const x of h.shapes) {
    assert.ok(x.storedOk, `hostile ${x.shape}: stored as sent (${x.stored} jobs, replies ${x.replies.join(' | ')})`);
    assert.equal(x.stored, x.sessions, `hostile ${x.shape}: one job per session`);
    assert.equal(x.takers.length, x.sessions, `hostile ${x.shape}: the acceptor of every session is known`);
    assert.ok(x.replies.every((reply) => reply.startsWith('250')), `hostile ${x.shape}: 250`);
    assert.ok(x.wireBytes > r.options.hostileSize * 0.95 && x.messageBytes > 0, `hostile ${x.shape}: about --hostile-size bytes`);
    assert.ok(positive(x.endOfDataToReplyMs) && x.endOfDataToReplyMs <= x.transferMs, `hostile ${x.shape}: times`);
    // CPU ticks are 10 ms: a small message may cost less than one.
    assert.ok(finiteAtLeast0(x.acceptorCpuMs), `hostile ${x.shape}: acceptor CPU`);
    for (const kb of Object.values(x.peakRssKb)) assert.ok(positive(kb), `hostile ${x.shape}: peak RSS`);
    assert.equal(typeof x.peakRssGrowthKb, 'number');
  }
  assert.equal(h.shapes.find((x) => x.shape === 'dots-x4')?.sessions, 4);

  const f = r.footprint;
  assert.equal(f.sent, r.options.footprintMessages);
  assert.equal(f.stored, f.sent, 'footprint: stored == sent');
  for (const reading of [f.idle, f.afterFlood]) {
    for (const p of ['primary', 'acceptor0', 'acceptor1']) assert.ok(positive(reading.rssKb[p]), `footprint RSS of ${p}`);
    assert.equal(reading.totalKb, Object.values(reading.rssKb).reduce((a, b) => a + b, 0), 'footprint total is the sum');
  }
  for (const kb of Object.values(f.peakKb)) assert.ok(positive(kb), 'footprint peak RSS');

  // Each mode names the command that reruns it alone, with the smoke's counts spelled out instead of --smoke.
  for (const [mode, cmd] of [['throughput', r.throughput.reproduce], ['storm', r.storm.reproduce], ['soak', r.soak.reproduce], ['hostile', h.reproduce], ['footprint', f.reproduce]]) {
    assert.match(cmd as string, new RegExp(`smtp-bench\\.js --mode ${mode} `), `${mode}: ${cmd}`);
    assert.doesNotMatch(cmd as string, /--smoke/);
  }
});
