/**
 * The metrics path with a real node:cluster: workers push over IPC, one is SIGKILLed and replaced, one exits
 * gracefully, one blocks its event loop. Scrapes run all along and must never see a total go backwards.
 */
import assert from 'node:assert/strict';
import { ChildProcess, fork, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { SERIES } from '../src/metrics';
import { ClusterCommand, ClusterEvent, HELPER_ENV } from './helpers/metrics-cluster';
import { httpRequest } from './helpers/http';
import { repoRoot } from './helpers/paths';
import { parseExposition, Sample, sampleValue } from './helpers/prometheus';
import { waitForValue } from './helpers/waiting';

const HELPER = path.join(__dirname, 'helpers', 'metrics-cluster.js');
const ACCEPTED = SERIES.messagesAccepted;

describe('metrics with a real cluster', { timeout: 60_000 }, () => {
  let child: ChildProcess;
  let port = 0;
  const events: ClusterEvent[] = [];
  const workerPids = new Set<number>();
  let nextId = 1;
  // Totals seen by the background scraper, checked for monotonicity after every scrape.
  const watched = new Map<string, number>();
  const regressions: string[] = [];
  let scraping = true;
  let scraper: Promise<void> = Promise.resolve();
  let scrapes = 0;

  const send = (c: ClusterCommand): void => {
    child.send(c);
  };
  const scrape = async (): Promise<{ samples: Sample[]; ms: number; body: string }> => {
    const r = await httpRequest(port, '/metrics');
    assert.equal(r.status, 200);
    return { samples: parseExposition(r.body), ms: r.ms, body: r.body };
  };
  const watch = (s: Sample[], body: string): void => {
    const monotonic = new Set<string>();
    for (const m of body.matchAll(/^# TYPE (\S+) (counter|histogram)$/gm)) {
      monotonic.add(m[1]!);
      if (m[2] === 'histogram') for (const suffix of ['_bucket', '_sum', '_count']) monotonic.add(m[1]! + suffix);
    }
    for (const x of s) {
      if (!monotonic.has(x.name)) continue;
      const key = `${x.name}${JSON.stringify(x.labels)}`;
      const prev = watched.get(key);
      if (prev !== undefined && x.value < prev) regressions.push(`${key}: ${prev} -> ${x.value}`);
      watched.set(key, x.value);
    }
  };
  const count = async (slot: number, n: number): Promise<void> => {
    const id = nextId++;
    send({ cmd: 'count', slot, n, id });
    await waitForValue(`count ack ${id}`, () => (events.some((e) => e.ev === 'counted' && e.id === id) ? true : undefined));
  };
  const accepted = async (): Promise<number | undefined> =>
    sampleValue((await scrape()).samples, ACCEPTED, { queue: 'incoming' });
  const startedPid = (slot: number, not?: number): number | undefined =>
    [...events].reverse().find((e): e is Extract<ClusterEvent, { ev: 'started' }> => e.ev === 'started' && e.slot === slot && e.pid !== not)
      ?.pid;
  const pushedBy = async (slot: number): Promise<true | undefined> => {
    const s = (await scrape()).samples;
    return sampleValue(s, SERIES.snapshotAgeSeconds, { worker: String(slot) }) !== undefined ? true : undefined;
  };

  before(async () => {
    assert.ok(fs.existsSync(HELPER), `${HELPER} missing: build first`);
    child = fork(HELPER, [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'], env: { ...process.env, [HELPER_ENV]: '1' } });
    child.on('message', (e: ClusterEvent) => {
      events.push(e);
      if (e.ev === 'started') workerPids.add(e.pid);
      if (e.ev === 'ready') port = e.port;
    });
    await waitForValue('helper ready', () => (port ? true : undefined));
    await waitForValue('both workers pushing', async () => ((await pushedBy(0)) && (await pushedBy(1)) ? true : undefined));
    scraper = (async () => {
      while (scraping) {
        try {
          const { samples, body } = await scrape();
          watch(samples, body);
          scrapes++;
        } catch (err) {
          regressions.push(`scrape failed: ${String(err)}`);
        }
        await new Promise((r) => setTimeout(r, 15));
      }
    })();
  });

  after(async () => {
    scraping = false;
    await scraper;
    if (child.exitCode === null && child.signalCode === null) {
      const exited = new Promise<void>((r) => child.once('exit', () => r()));
      child.send({ cmd: 'shutdown' } satisfies ClusterCommand);
      await Promise.race([exited, new Promise((r) => setTimeout(r, 3000))]);
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    }
    // Workers exit when the primary's IPC channel closes; make sure none of ours outlives the test anyway.
    for (const pid of workerPids) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
  });

  it('sums exact counts over workers, keeps them through a SIGKILL, counts the restart', async () => {
    await count(0, 5);
    await count(1, 7);
    assert.equal(await accepted(), 12);

    const oldPid = startedPid(1)!;
    send({ cmd: 'kill', slot: 1 });
    await waitForValue('slot 1 exit', () =>
      events.some((e) => e.ev === 'exited' && e.pid === oldPid && e.signal === 'SIGKILL') ? true : undefined,
    );
    // The 7 were pushed before the kill (the count was acknowledged after the push), so nothing of them is lost.
    assert.equal(await accepted(), 12);
    const newPid = await waitForValue('slot 1 replaced', () => startedPid(1, oldPid));
    assert.notEqual(newPid, oldPid);
    await waitForValue('new slot 1 pushing', async () => {
      const s = (await scrape()).samples;
      // A fresh process has a fresh start time; once it shows, the new incarnation's snapshot is in.
      const start = sampleValue(s, 'spamtrapd_process_start_time_seconds', { worker: '1' });
      return start !== undefined && sampleValue(s, SERIES.workers) === 2 ? true : undefined;
    });
    const s = (await scrape()).samples;
    assert.equal(sampleValue(s, ACCEPTED, { queue: 'incoming' }), 12, 'new incarnation from zero adds nothing yet');
    assert.equal(sampleValue(s, SERIES.workerRestarts), 1);
    await count(1, 3);
    assert.equal(await accepted(), 15);
    assert.equal(sampleValue((await scrape()).samples, `${SERIES.spoolWriteSeconds}_count`), 3);
  });

  it('keeps the counts of a gracefully exiting worker exact (final push)', async () => {
    const oldPid = startedPid(0)!;
    send({ cmd: 'graceful', slot: 0, n: 4 });
    await waitForValue('slot 0 graceful exit', () =>
      events.some((e) => e.ev === 'exited' && e.pid === oldPid && e.code === 0) ? true : undefined,
    );
    await waitForValue('slot 0 replaced', () => startedPid(0, oldPid));
    // The final push may arrive just after the exit event; it must then be counted, exactly once.
    await waitForValue('final push counted', async () => ((await accepted()) === 19 ? true : undefined), 3000);
    await new Promise((r) => setTimeout(r, 300));
    const s = (await scrape()).samples;
    assert.equal(sampleValue(s, ACCEPTED, { queue: 'incoming' }), 19);
    assert.equal(sampleValue(s, SERIES.workerRestarts), 2);
  });

  it('answers scrapes in under 100 ms while a worker blocks its event loop for 2 s', async () => {
    send({ cmd: 'block', slot: 1, ms: 2000 });
    await new Promise((r) => setTimeout(r, 400));
    const times: number[] = [];
    let age = 0;
    for (let i = 0; i < 10; i++) {
      const { samples, ms } = await scrape();
      times.push(ms);
      age = sampleValue(samples, SERIES.snapshotAgeSeconds, { worker: '1' }) ?? -1;
      assert.equal(sampleValue(samples, ACCEPTED, { queue: 'incoming' }), 19, 'blocked worker keeps its last values');
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.ok(age > 0.5, `worker 1 snapshot age ${age}: it should have been blocked while we scraped`);
    // The median, not the maximum: an aggregator that waited on the blocked worker would be slow on every scrape of
    // the block, while a loaded CI machine can delay any single one.
    const median = [...times].sort((a, b) => a - b)[Math.floor(times.length / 2)];
    assert.ok(median < 100, `scrape times ${times.map((t) => t.toFixed(1)).join(', ')} ms`);
    // And it recovers: pushes resume after the block.
    await waitForValue('worker 1 pushing again', async () => {
      const a = sampleValue((await scrape()).samples, SERIES.snapshotAgeSeconds, { worker: '1' });
      return a !== undefined && a < 0.5 ? true : undefined;
    }, 5000);
  });

  it('passes promtool check metrics on a live scrape', (t) => {
    const root = repoRoot();
    // Where scripts/install-test-deps.sh puts it, also when the promtool it found was already on PATH.
    const promtool = path.join(root, '.tools', 'bin', 'promtool');
    if (!fs.existsSync(promtool)) {
      const msg = 'promtool not found: run `bash scripts/install-test-deps.sh` (installs .tools/bin/promtool)';
      if (process.env.CI) assert.fail(msg);
      t.skip(msg);
      return;
    }
    return scrape().then(({ body }) => {
      const r = spawnSync(promtool, ['check', 'metrics'], { input: body, encoding: 'utf8', timeout: 20_000 });
      assert.equal(r.error, undefined);
      assert.equal(r.status, 0, `promtool check metrics failed:\n${r.stdout}${r.stderr}`);
      assert.equal(`${r.stdout}${r.stderr}`.trim(), '', 'promtool reports no lint problems');
    });
  });

  it('never saw a counter or histogram total go backwards in any scrape', () => {
    assert.ok(scrapes > 20, `only ${scrapes} background scrapes`);
    assert.ok(watched.size > 20, `only ${watched.size} counter/histogram series watched`);
    assert.ok(watched.has(`${ACCEPTED}{"queue":"incoming"}`));
    assert.deepEqual(regressions, []);
  });
});
