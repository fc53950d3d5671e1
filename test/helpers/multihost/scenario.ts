/**
 * The two-host run of issue 15, step by step: two trap hosts in their own namespaces on one shared queue behind
 * HAProxy, live consumers, a flood, one host killed outright, the survivor's sweep, the dead host's return under its
 * name. It records what happened (Evidence); verdict.ts judges it. Every wait is bounded, and cleanup() undoes
 * everything whatever step failed.
 */
import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { waitServerUp, type Haproxy } from '../haproxy';
import { LOCK_NAME, parseControl } from '../../../src/dirqueue';
import { BACKEND, haproxyEvents, startBalancer, watchForDown } from './balancer';
import { availableConsumers, readConsumed, spawnInQueueView, startConsumer, type Consumed, type Consumer, type ConsumerKind } from './consumers';
import { idOf } from './messages';
import { hangOn, startFlood, type Flood, type HangingSession, type Session } from './flood';
import { hereFromView, makeLayout, type Layout } from './layout';
import { listTmp, ownLeftovers, plantConsumerLock, plantTmp, snapshot, tmpFilesOf, type TmpFile } from './queue-files';
import { startTrapHost, type TrapHost, type TrapHostSpec } from './trap-host';
import { sharedDir } from '../paths';
import { perlModuleFound, perlModuleLib } from '../perl-dirqueue';
import { freePort } from '../sockets';
import { waitFor } from '../waiting';

export const DEAD = 'trapa';
export const SURVIVOR = 'trapb';

export interface ScenarioOptions {
  /** Concurrent flood connections (default 8). */
  floodLoops?: number;
  /** Acknowledged messages from each host before the kill (default 75). */
  ackedEachBeforeKill?: number;
  /** Acknowledged messages from the survivor once HAProxy marked the dead host DOWN (default 150). */
  ackedAfterDown?: number;
  /** Messages sent once the dead host is back, left for dq-verify (default 10). */
  afterReturn?: number;
  /** Progress lines. */
  log?: (line: string) => void;
}

export interface Evidence {
  consumers: ConsumerKind[];
  consumersMissing: string[];
  /** Each host's acceptor pid at the start, as its own pid namespace numbers it. */
  acceptorPids: Record<string, number>;
  sessions: Session[];
  ackedIds: Set<string>;
  killedAt: number;
  /** When HAProxy's stats first showed the dead host DOWN. */
  downAt: number;
  consumed: Consumed[];
  /** queue/ entries left once the consumers stopped on an empty queue. */
  queueLeftAfterConsumers: string[];
  survivorSweep: {
    /** The dead host's tmp files before and after the survivor swept, and the survivor's own. */
    deadHostBefore: TmpFile[];
    deadHostAfter: TmpFile[];
    survivorBefore: TmpFile[];
    survivorAfter: TmpFile[];
    /** The survivor's acceptor killed to make its primary sweep at once (namespace pid). */
    victimPid: number;
    /** The tmp file of the session left hanging on the dead host. */
    deadHostHanging: TmpFile;
    survivorHanging: TmpFile;
    sweptLine: string;
    /** Every `sweep` action line the survivor logged during the whole run. */
    actions: string[];
  };
  returnSweep: {
    before: Map<string, bigint>;
    after: Map<string, bigint>;
    expectedRemoved: Set<string>;
    plantedOwn: string;
    plantedOthers: string[];
    /** The returned host's pid 1 and acceptor: pids its dead predecessor's files carry. */
    newAcceptorPid: number;
    sweptLine: string;
    /** Its dead predecessor's spool lock was still fresh: the start waited for it to go stale (docs/dirqueue.md). */
    waitedForLock: boolean;
    /** From the restart until its acceptor listened. */
    restartMs: number;
  };
  afterReturn: {
    acked: Map<string, { host: string; at: number }>;
    queued: Array<{ id: string; host: string; message: Buffer }>;
  };
  stops: Record<string, { code: number | null; signal: string | null }>;
  tmpAtEnd: string[];
  /** Every file left in the shared queue once dq-verify (or spamtrapd's reader) took the last jobs. */
  filesAtEnd: string[];
  dqVerify: { ran: boolean; why?: string; status?: number | null; output?: string };
  logs: Record<string, string>;
}

const lastMatch = (text: string, re: RegExp) => [...text.matchAll(new RegExp(re.source, 'g'))].at(-1)?.[0] ?? '';

export class TwoHostScenario {
  readonly layout: Layout;
  private readonly opts: Required<Omit<ScenarioOptions, 'log'>> & { log: (line: string) => void };
  private readonly hosts: TrapHost[] = [];
  private haproxy?: Haproxy;
  private readonly consumers: Consumer[] = [];
  private readonly floods: Flood[] = [];
  private readonly hanging: HangingSession[] = [];
  /** The consumer's pickup lock planted before the dead host's return (removed by hand at the end). */
  private plantedLock: string[] = [];

  /** Hosts and consumers run detached (process groups of their own): they must not outlive this process. */
  private readonly killOnExit = () => {
    for (const t of this.hosts) t.killNow();
    for (const c of this.consumers) c.destroy();
  };

  constructor(opts: ScenarioOptions = {}) {
    this.opts = { floodLoops: 8, ackedEachBeforeKill: 75, ackedAfterDown: 150, afterReturn: 10, log: () => undefined, ...opts };
    this.layout = makeLayout([DEAD, SURVIVOR]);
    process.once('exit', this.killOnExit);
  }

  private say(line: string): void {
    this.opts.log(line);
  }

  private async startHosts(specs: TrapHostSpec[]): Promise<TrapHost[]> {
    const started = await Promise.allSettled(specs.map((s) => startTrapHost(this.layout, s)));
    for (const r of started) if (r.status === 'fulfilled') this.hosts.push(r.value);
    const failed = started.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) throw failed.reason;
    return started.map((r) => (r as PromiseFulfilledResult<TrapHost>).value);
  }

  async run(): Promise<Evidence> {
    const { specs, dead, survivor, acceptorPids } = await this.startHostsAndBalancer();
    const kinds = this.startConsumers();
    const kill = await this.floodThroughKill(dead);
    const drained = await this.drainConsumers(kinds, kill.flood);
    const survivorSweep = await this.survivorSweeps(survivor, kill.hangingFiles);
    const { back, returnSweep } = await this.deadHostReturns(specs[DEAD], survivor, kill.deadInitStart);
    const afterReturn = await this.bothHostsServeAgain();
    const end = await this.stopBothAndVerify([back, survivor]);
    return {
      consumers: kinds,
      consumersMissing: availableConsumers().missing,
      acceptorPids,
      sessions: kill.flood.sessions,
      ackedIds: drained.ackedIds,
      killedAt: kill.killedAt,
      downAt: kill.downAt,
      consumed: drained.consumed,
      queueLeftAfterConsumers: drained.queueLeft,
      survivorSweep,
      returnSweep,
      afterReturn,
      ...end,
      logs: { [`${DEAD} (first run)`]: dead.logs(), [SURVIVOR]: survivor.logs(), [`${DEAD} (returned)`]: back.logs(), haproxy: this.balancer().logs() },
    };
  }

  private balancer(): Haproxy {
    if (!this.haproxy) throw new Error('HAProxy is not running');
    return this.haproxy;
  }

  /** Both hosts on one SMTP port, each on its own loopback address, and HAProxy with both UP. */
  private async startHostsAndBalancer() {
    const l = this.layout;
    const [smtpPort, metricsPort] = [await freePort(), await freePort()];
    const spec = (name: string, address: string): TrapHostSpec => ({
      name,
      address,
      smtpPort,
      metricsPort,
      // The returning host's start sweep needs its leftovers to be only this old; SHUTDOWN_GRACE_MS keeps stops short.
      env: { PROXY_FROM: '127.0.0.1/32', SPOOL_SWEEP_MIN_AGE_MS: '2000', SHUTDOWN_GRACE_MS: '3000' },
    });
    const specs: Record<string, TrapHostSpec> = { [DEAD]: spec(DEAD, '127.0.10.1'), [SURVIVOR]: spec(SURVIVOR, '127.0.10.2') };
    this.say(`spool ${l.spoolDir} on each host; shared queue ${l.sharedQueue} bound at ${path.join(l.spoolDir, 'incoming')}`);
    const [dead, survivor] = await this.startHosts([specs[DEAD], specs[SURVIVOR]]);
    const acceptorPids = { [DEAD]: dead.acceptorPids()[0], [SURVIVOR]: survivor.acceptorPids()[0] };
    this.say(`hosts up: ${DEAD} acceptor pid ${acceptorPids[DEAD]}, ${SURVIVOR} acceptor pid ${acceptorPids[SURVIVOR]} (each in its own pid namespace)`);

    const h = (this.haproxy = await startBalancer([DEAD, SURVIVOR].map((name) => ({ name, address: specs[name].address, port: smtpPort }))));
    await waitServerUp(h, BACKEND, DEAD, 15_000);
    await waitServerUp(h, BACKEND, SURVIVOR, 15_000);
    this.say(`haproxy on 127.0.0.1:${h.ports.frontend}: both servers UP (L7OK through PROXY v2 LOCAL checks)`);
    return { specs, dead, survivor, acceptorPids };
  }

  private startConsumers(): ConsumerKind[] {
    const { kinds, missing } = availableConsumers();
    for (const k of kinds) this.consumers.push(startConsumer(k, this.layout));
    this.say(`consumers: ${kinds.join(', ')}${missing.length ? `; not run: ${missing.join('; ')}` : ''}`);
    return kinds;
  }

  /**
   * The flood until both hosts have acknowledged enough, a session left inside DATA on each, the kill, HAProxy's
   * DOWN, and the flood on the survivor alone until it has acknowledged enough more.
   */
  private async floodThroughKill(dead: TrapHost) {
    const h = this.balancer();
    const queue = this.layout.sharedQueue;
    const flood = startFlood(h.ports.frontend, this.opts.floodLoops);
    this.floods.push(flood);
    const each = this.opts.ackedEachBeforeKill;
    await waitFor(`${each} acknowledged messages from each host`, () => flood.ackedBy(DEAD) >= each && flood.ackedBy(SURVIVOR) >= each, 60_000);

    // A session left inside DATA on each host guarantees each a tmp file in flight, whatever the flood's timing.
    this.hanging.push(await hangOn(h.ports.frontend, DEAD, `never finished on ${DEAD}`));
    this.hanging.push(await hangOn(h.ports.frontend, SURVIVOR, `never finished on ${SURVIVOR}`));
    const heldFile = (host: string): TmpFile | undefined =>
      tmpFilesOf(queue, host).find(
        (f) => f.parsed!.kind === 'data' && readHead(path.join(queue, 'tmp', f.name)).includes(`Subject: never finished on ${host}`),
      );
    await waitFor('both hanging sessions have a tmp file', () => !!heldFile(DEAD) && !!heldFile(SURVIVOR), 15_000);
    const hangingFiles = { dead: heldFile(DEAD)!, survivor: heldFile(SURVIVOR)! };
    const deadInitStart = dead.startTicks(1);

    const watch = watchForDown(h, DEAD);
    const killedAt = Date.now();
    this.say(`killing ${DEAD} (SIGKILL to its namespace's pid 1) after ${flood.acked.size} acknowledged messages`);
    await dead.killHost();
    const downAt = await watch.seenAt;
    if (downAt === null) throw new Error(`HAProxy never marked ${DEAD} DOWN:\n${h.logs()}`);
    this.say(`haproxy marked ${DEAD} DOWN ${downAt - killedAt} ms after the kill`);
    const more = this.opts.ackedAfterDown;
    await waitFor(`${more} messages acknowledged by ${SURVIVOR} after the failover`, () => flood.ackedBy(SURVIVOR, downAt) >= more, 60_000);
    await flood.stop();
    this.say(`flood stopped: ${flood.sessions.length} sessions, ${flood.acked.size} acknowledged`);
    return { flood, killedAt, downAt, hangingFiles, deadInitStart };
  }

  /** Every acknowledged message taken (bounded), then the consumers stop on an empty queue. */
  private async drainConsumers(kinds: ConsumerKind[], flood: Flood) {
    const l = this.layout;
    const ackedIds = new Set(flood.acked.keys());
    const consumedIds = () => new Set(readConsumed(l, kinds).map((c) => idOf(c.message)));
    // Not fatal: a message that never comes is what the report counts as lost.
    await waitFor('every acknowledged message consumed', () => {
      const got = consumedIds();
      return [...ackedIds].every((id) => got.has(id));
    }, 90_000, 250).catch(() => this.say('not every acknowledged message was consumed within 90 s'));
    fs.writeFileSync(l.stopFile, '');
    for (const c of this.consumers) await c.waitExit(60_000);
    const consumed = readConsumed(l, kinds);
    this.say(`consumed ${consumed.length} (${kinds.map((k) => `${k} ${consumed.filter((c) => c.consumer === k).length}`).join(', ')})`);
    return { ackedIds, consumed, queueLeft: fs.readdirSync(path.join(l.sharedQueue, 'queue')) };
  }

  /**
   * The survivor sweeps at once after one of its acceptors dies, with that pid among the known dead: the pid the
   * dead host's hanging file carries too, when the pid namespaces numbered both alike.
   */
  private async survivorSweeps(survivor: TrapHost, hangingFiles: { dead: TmpFile; survivor: TmpFile }): Promise<Evidence['survivorSweep']> {
    const queue = this.layout.sharedQueue;
    const deadHostBefore = tmpFilesOf(queue, DEAD);
    const survivorBefore = tmpFilesOf(queue, SURVIVOR);
    const victimPid = survivor.acceptorPids().at(-1)!;
    const sweepRe = / info swept proc=primary pid=\d+ why="worker 0 died" [^\n]*/;
    const count = (re: RegExp) => (survivor.logs().match(new RegExp(re.source, 'g')) ?? []).length;
    const [sweeps, listening] = [count(sweepRe), survivor.acceptorPids().length];
    survivor.killProcess(victimPid);
    await survivor.daemon.waitForLog(sweepRe, 15_000, sweeps + 1);
    await survivor.daemon.waitForLog(/ info listening proc=acceptor0 /, 15_000, listening + 1);
    for (const s of this.hanging.splice(0)) s.close();
    const sweptLine = lastMatch(survivor.logs(), sweepRe);
    this.say(`${SURVIVOR} swept after its acceptor ${victimPid} died: ${sweptLine.replace(/^.* why=/, 'why=')}`);
    return {
      deadHostBefore,
      deadHostAfter: tmpFilesOf(queue, DEAD),
      survivorBefore,
      survivorAfter: tmpFilesOf(queue, SURVIVOR),
      victimPid,
      deadHostHanging: hangingFiles.dead,
      survivorHanging: hangingFiles.survivor,
      sweptLine,
      actions: survivor.logs().split('\n').filter((line) => / warn sweep /.test(line)),
    };
  }

  /**
   * The dead host comes back under its name, in fresh namespaces. Planted first: a leftover of its own named by
   * pid 1 (its new primary's pid) with the old pid 1's start time, a dead writer's file of the survivor's, and a
   * consumer's pickup lock; the first must go, the others stay.
   */
  private async deadHostReturns(spec: TrapHostSpec, survivor: TrapHost, deadInitStart: string) {
    const l = this.layout;
    const queue = l.sharedQueue;
    const old = 10 * 60_000;
    const plantedOwn = plantTmp(queue, { base: '50.20260101000000000001.Own', host: DEAD, pid: 1, start: deadInitStart, seq: 1 }, 'data', old);
    this.plantedLock = plantConsumerLock(queue, '50.20260101000000000003.Held', DEAD, 1, old);
    const survivorsDead = { base: '50.20260101000000000002.Other', host: SURVIVOR, pid: survivor.acceptorPids().at(-1)!, start: '1', seq: 1 };
    const plantedOthers = [plantTmp(queue, survivorsDead, 'data', old), ...this.plantedLock];
    const before = snapshot(queue);
    const expectedRemoved = ownLeftovers(queue, before, DEAD);
    this.say(`restarting ${DEAD}: ${expectedRemoved.size} leftovers of its own to sweep`);

    // A supervisor brings a dead host back within seconds, while its spool lock is still fresh; this run's steps
    // since the kill may have taken longer. Dated now, the lock is as fresh as at the kill, so the start meets a
    // holder named pid 1 on this host, its own pid and name, every time.
    const lock = path.join(l.hostSpool(DEAD), LOCK_NAME);
    fs.utimesSync(lock, new Date(), new Date());
    const restartedAt = Date.now();
    const [back] = await this.startHosts([spec]);
    const restartMs = Date.now() - restartedAt;
    const startSweep = / info swept proc=primary pid=\d+ why=start [^\n]*/;
    await back.daemon.waitForLog(startSweep, 5_000);
    const returnSweep: Evidence['returnSweep'] = {
      before,
      after: snapshot(queue),
      expectedRemoved,
      plantedOwn,
      plantedOthers,
      newAcceptorPid: back.acceptorPids()[0],
      sweptLine: lastMatch(back.logs(), startSweep),
      waitedForLock: / warn spool_lock_stale_wait /.test(back.logs()),
      restartMs,
    };
    this.say(`${DEAD} back: ${returnSweep.sweptLine.replace(/^.* why=/, 'why=')}`);
    return { back, returnSweep };
  }

  /** HAProxy takes the returned host back, and both file messages again; they stay queued for dq-verify. */
  private async bothHostsServeAgain(): Promise<Evidence['afterReturn']> {
    const h = this.balancer();
    await waitServerUp(h, BACKEND, DEAD, 15_000);
    const again = startFlood(h.ports.frontend, 2);
    this.floods.push(again);
    const n = this.opts.afterReturn;
    const bothServe = () => again.acked.size >= n && again.ackedBy(DEAD) > 0 && again.ackedBy(SURVIVOR) > 0;
    await waitFor(`${n} messages acknowledged after ${DEAD} came back, by both hosts`, bothServe, 30_000);
    await again.stop();
    return { acked: again.acked, queued: queuedMessages(this.layout) };
  }

  /**
   * Both stop as a service manager stops them; the consumer lock planted earlier goes as an operator removes a dead
   * consumer's lock by hand; then the last jobs are taken and the queue must be left with no file at all.
   */
  private async stopBothAndVerify(hosts: TrapHost[]) {
    const queue = this.layout.sharedQueue;
    const stops: Evidence['stops'] = {};
    for (const t of hosts) {
      await t.stop();
      stops[t.name] = { code: t.daemon.exitCode, signal: t.daemon.exitSignal };
    }
    for (const p of this.plantedLock) fs.rmSync(path.join(queue, p), { force: true });
    const tmpAtEnd = listTmp(queue).map((f) => f.name);
    const dqVerify = await this.verifyAndDrain(queuedMessages(this.layout).length);
    return { stops, tmpAtEnd, filesAtEnd: [...snapshot(queue).keys()], dqVerify };
  }

  /**
   * dq-verify --strict --pickup on the quiescent shared queue, where the Perl module and the tool are present;
   * otherwise spamtrapd's reader drains it, so it ends empty either way.
   */
  private async verifyAndDrain(expect: number): Promise<Evidence['dqVerify']> {
    const l = this.layout;
    // DQ_VERIFY names the tool where shared/ is not beside the checkout (a git worktree elsewhere).
    const tool = process.env.DQ_VERIFY || path.join(sharedDir(), 'tools', 'dirqueue', 'dq-verify');
    const why = !perlModuleFound() ? `IPC::DirQueue not found at ${perlModuleLib()}` : !fs.existsSync(tool) ? `dq-verify not found at ${tool}` : undefined;
    const queueView = path.join(l.spoolDir, 'incoming');
    if (why) {
      fs.mkdirSync(l.consumedDir('drain'), { recursive: true });
      const drain = spawnInQueueView(l, [process.execPath, path.join(__dirname, 'node-consumer.js'), queueView, l.consumedDir('drain'), l.stopFile]);
      await exitOf(drain, 60_000);
      return { ran: false, why };
    }
    const proc = spawnInQueueView(l, [tool, queueView, '--strict', '--pickup', '--expect', String(expect)]);
    let output = '';
    proc.stdout?.on('data', (d: Buffer) => (output += d.toString('utf8')));
    proc.stderr?.on('data', (d: Buffer) => (output += d.toString('utf8')));
    return { ran: true, status: await exitOf(proc, 60_000), output };
  }

  /** The last lines of every host's log and HAProxy's server events: what to look at when run() threw. */
  diagnostics(): string {
    const tail = (text: string) => text.split('\n').slice(-15).join('\n');
    return [
      ...this.hosts.map((t) => `--- ${t.name} (last lines)\n${tail(t.logs())}`),
      `--- haproxy server events\n${haproxyEvents(this.haproxy?.logs() ?? '').join('\n')}`,
      ...this.consumers.map((c) => `--- consumer ${c.kind}\n${tail(c.output())}`),
    ].join('\n');
  }

  /** Kills and removes everything the run started or made, whatever state it is in. */
  async cleanup(): Promise<void> {
    for (const s of this.hanging.splice(0)) s.close();
    // A flood loop ends within its socket timeouts; the bound only guards against a hang, and must not hold the process.
    for (const f of this.floods) await boundedWait(f.stop(), 30_000);
    for (const c of this.consumers) c.destroy();
    await this.haproxy?.stop();
    for (const t of this.hosts) await t.destroy();
    process.removeListener('exit', this.killOnExit);
    // Nothing is mounted outside the namespaces, which ended with their last process: only files remain.
    if (process.env.MULTIHOST_KEEP) this.say(`kept ${this.layout.root}`);
    else fs.rmSync(this.layout.root, { recursive: true, force: true });
  }
}

function boundedWait(p: Promise<unknown>, ms: number): Promise<void> {
  let t: NodeJS.Timeout | undefined;
  return Promise.race([p.then(() => undefined), new Promise<void>((r) => (t = setTimeout(r, ms)))]).finally(() => clearTimeout(t));
}

/** The exit code, or null once killed after timeoutMs. */
function exitOf(proc: ChildProcess, timeoutMs: number): Promise<number | null> {
  return new Promise((resolve) => {
    const t = setTimeout(() => proc.kill('SIGKILL'), timeoutMs);
    proc.once('exit', (code) => {
      clearTimeout(t);
      resolve(code);
    });
  });
}

function readHead(p: string, bytes = 4096): string {
  try {
    const fd = fs.openSync(p, 'r');
    try {
      const buf = Buffer.alloc(bytes);
      return buf.subarray(0, fs.readSync(fd, buf, 0, bytes, 0)).toString('latin1');
    } finally {
      fs.closeSync(fd);
    }
  } catch {
    return ''; // committed and unlinked between the listing and the read
  }
}


/** The jobs waiting in the shared queue, read from here without taking them (QDFN translated to this namespace). */
function queuedMessages(l: Layout): Array<{ id: string; host: string; message: Buffer }> {
  const qdir = path.join(l.sharedQueue, 'queue');
  return fs.readdirSync(qdir).map((name) => {
    const ctrl = parseControl(fs.readFileSync(path.join(qdir, name)));
    const message = fs.readFileSync(hereFromView(l, ctrl.fields['QDFN'] ?? ''));
    return { id: idOf(message) ?? '', host: ctrl.fields['QSHN'] ?? '', message };
  });
}
