/**
 * Judges a two-host run (scenario.ts): the numbers the issue asks for (sent, acked, consumed, lost, duplicated,
 * failover time) and one check per promise of docs/scale-out.md. Pure: the test asserts the checks, the script
 * prints them.
 */
import { haproxyEvents } from './balancer';
import { messageFor, idOf } from './messages';
import { DEAD, SURVIVOR, type Evidence } from './scenario';
import type { Session } from './flood';
import type { TmpFile } from './queue-files';
import { splitReceived } from '../stored-message';

export interface Report {
  consumers: string[];
  consumersMissing: string[];
  sessions: number;
  /** Sessions that sent a whole message (its final dot). */
  sent: number;
  acked: number;
  ackedBy: Record<string, number>;
  consumed: number;
  consumedBy: Record<string, number>;
  lost: number;
  duplicated: number;
  damaged: number;
  /** Consumed, but the session never saw its 250 (cut between the commit and the reply). */
  committedUnacked: number;
  failover: {
    /** From the SIGKILL until HAProxy's stats read DOWN for the dead host: from then on every new client goes to the survivor. */
    downAfterMs: number;
    /** Sessions that failed after the kill (cut in flight, or sent to the dead host before it was marked DOWN). */
    failedSessions: number;
    /** From the kill until the last of those failed. */
    lastFailureAfterMs: number | null;
    /** Each failed session: start and end relative to the kill, the host that greeted it, the error. */
    failures: string[];
    /**
     * The longest acknowledged session begun between the kill and DOWN: HAProxy still sent some of those to the
     * dead host, and redispatched them to the survivor after a failed connect.
     */
    slowestServedBeforeDownMs: number | null;
  };
  /** HAProxy's own lines about servers going UP or DOWN, and why. */
  haproxyEvents: string[];
  pids: {
    acceptor: Record<string, number>;
    /** The pid in the dead host's in-flight tmp file, the survivor acceptor killed to trigger its sweep, the returned host's acceptor. */
    deadHostLeftover: number;
    survivorVictim: number;
    returnedAcceptor: number;
  };
  restart: { ms: number; waitedForLock: boolean };
}

export interface Check {
  name: string;
  ok: boolean;
  detail: string;
}

const has = (files: TmpFile[], f: TmpFile) => files.some((g) => g.name === f.name && g.ino === f.ino);
const slowest = (ss: Session[]) => (ss.length ? Math.max(...ss.map((s) => s.endedAt - s.startedAt)) : null);
const sample = (xs: readonly string[]) => (xs.length > 5 ? `${xs.slice(0, 5).join(', ')} ... (${xs.length})` : xs.join(', '));

export function judge(e: Evidence): { report: Report; checks: Check[] } {
  const checks: Check[] = [];
  const check = (name: string, ok: boolean, detail: string) => checks.push({ name, ok, detail });
  const sessionById = new Map(e.sessions.map((s) => [s.id, s]));

  // Consumed messages: which flood message each is, how often, and whether its bytes are the ones sent.
  const copies = new Map<string, number>();
  const damaged: string[] = [];
  const foreign: string[] = [];
  const wrongClient: string[] = [];
  for (const c of e.consumed) {
    const id = idOf(c.message);
    if (id === null) {
      foreign.push(c.jobId);
      continue;
    }
    copies.set(id, (copies.get(id) ?? 0) + 1);
    let rest: Buffer;
    let received: string;
    try {
      ({ rest, unfolded: received } = splitReceived(c.message));
    } catch {
      damaged.push(id);
      continue;
    }
    if (!rest.equals(messageFor(id))) damaged.push(id);
    // Through HAProxy with PROXY v2: the client recorded is the flood loop's own address.
    const loop = sessionById.get(id)?.loop;
    if (loop === undefined || !received.includes(`[127.0.20.${loop + 1}]`)) wrongClient.push(id);
  }
  const lost = [...e.ackedIds].filter((id) => !copies.has(id));
  const duplicated = [...copies].filter(([, n]) => n > 1).map(([id]) => id);
  const unacked = [...copies.keys()].filter((id) => !e.ackedIds.has(id));
  const unexplained = unacked.filter((id) => !sessionById.get(id)?.sent);

  const after = e.sessions.filter((s) => s.endedAt >= e.killedAt && !s.acked);
  const afterDown = e.sessions.filter((s) => s.startedAt > e.downAt);
  const count = (hosts: string[], f: (h: string) => number) => Object.fromEntries(hosts.map((h) => [h, f(h)]));
  const report: Report = {
    consumers: e.consumers,
    consumersMissing: e.consumersMissing,
    sessions: e.sessions.length,
    sent: e.sessions.filter((s) => s.sent).length,
    acked: e.ackedIds.size,
    ackedBy: count([DEAD, SURVIVOR], (h) => e.sessions.filter((s) => s.acked && s.host === h).length),
    consumed: e.consumed.length,
    consumedBy: count(e.consumers, (k) => e.consumed.filter((c) => c.consumer === k).length),
    lost: lost.length,
    duplicated: duplicated.length,
    damaged: damaged.length,
    committedUnacked: unacked.length,
    failover: {
      downAfterMs: e.downAt - e.killedAt,
      failedSessions: after.length,
      lastFailureAfterMs: after.length ? Math.max(...after.map((s) => s.endedAt)) - e.killedAt : null,
      slowestServedBeforeDownMs: slowest(e.sessions.filter((s) => s.acked && s.startedAt >= e.killedAt && s.startedAt <= e.downAt)),
      failures: after.map((s) => `${s.startedAt - e.killedAt}..${s.endedAt - e.killedAt} ms ${s.host ?? 'no greeting'}: ${s.error ?? 'no 250'}`),
    },
    haproxyEvents: haproxyEvents(e.logs.haproxy ?? ''),
    pids: {
      acceptor: e.acceptorPids,
      deadHostLeftover: e.survivorSweep.deadHostHanging.parsed!.pid,
      survivorVictim: e.survivorSweep.victimPid,
      returnedAcceptor: e.returnSweep.newAcceptorPid,
    },
    restart: { ms: e.returnSweep.restartMs, waitedForLock: e.returnSweep.waitedForLock },
  };

  check('no message acknowledged with 250 is lost', lost.length === 0, lost.length ? `missing: ${sample(lost)}` : `${e.ackedIds.size} acknowledged, all consumed`);
  check(
    'no message is consumed twice',
    duplicated.length === 0,
    duplicated.length ? `twice or more: ${sample(duplicated)}` : `${copies.size} distinct messages, each once`,
  );
  check(
    'every consumed message is byte for byte what was sent, behind our Received header',
    damaged.length === 0 && foreign.length === 0,
    `${damaged.length} damaged${damaged.length ? ` (${sample(damaged)})` : ''}, ${foreign.length} not from the flood${foreign.length ? ` (${sample(foreign)})` : ''}`,
  );
  check(
    'a message consumed without its 250 was fully sent by a session cut short',
    unexplained.length === 0,
    `${unacked.length} committed but not acknowledged${unexplained.length ? `; never fully sent: ${sample(unexplained)}` : ''}`,
  );
  check('the client recorded is the flood\'s own address (PROXY v2 through HAProxy), never HAProxy\'s', wrongClient.length === 0, wrongClient.length ? `wrong: ${sample(wrongClient)}` : 'every consumed message');
  check('the consumers leave an empty queue', e.queueLeftAfterConsumers.length === 0, `${e.queueLeftAfterConsumers.length} jobs left`);

  const afterDownFailed = afterDown.filter((s) => !s.acked || s.host !== SURVIVOR);
  check(
    `HAProxy marks ${DEAD} DOWN within 5 s, and every client after that is served by ${SURVIVOR}`,
    report.failover.downAfterMs <= 5000 && afterDown.length > 0 && afterDownFailed.length === 0,
    `DOWN after ${report.failover.downAfterMs} ms; ${afterDown.length} sessions after, ${afterDownFailed.length} not acknowledged by ${SURVIVOR}` +
      (afterDownFailed.length ? `: ${sample(afterDownFailed.map((s) => `${s.host ?? 'no greeting'} ${s.error ?? ''}`))}` : ''),
  );

  const sw = e.survivorSweep;
  const deadHostTouched = sw.deadHostBefore.filter((f) => !has(sw.deadHostAfter, f));
  const namedDead = sw.actions.filter((line) => line.includes(`.spamtrapd.${DEAD}.`));
  check(
    `${SURVIVOR}'s sweeps leave every tmp file of ${DEAD} in place`,
    has(sw.deadHostBefore, sw.deadHostHanging) && deadHostTouched.length === 0 && namedDead.length === 0,
    `${sw.deadHostBefore.length} files of ${DEAD} before its sweep, ${deadHostTouched.length} gone after${namedDead.length ? `; sweep lines naming them: ${sample(namedDead)}` : ''}`,
  );
  check(
    `${SURVIVOR}'s sweep after its acceptor died removes that acceptor's own tmp file`,
    has(sw.survivorBefore, sw.survivorHanging) && !has(sw.survivorAfter, sw.survivorHanging) && /tmpRemoved=[1-9]/.test(sw.sweptLine),
    sw.sweptLine.replace(/^.* why=/, 'why='),
  );
  check(
    'the pids collide: both hosts\' acceptors have the same pid, and the survivor\'s dead acceptor the same pid as the dead host\'s leftover',
    report.pids.acceptor[DEAD] === report.pids.acceptor[SURVIVOR] && report.pids.deadHostLeftover === report.pids.survivorVictim,
    `acceptor ${report.pids.acceptor[DEAD]} on ${DEAD}, ${report.pids.acceptor[SURVIVOR]} on ${SURVIVOR}; ${DEAD}'s leftover from pid ${report.pids.deadHostLeftover}, ${SURVIVOR}'s killed acceptor ${report.pids.survivorVictim}`,
  );

  const rs = e.returnSweep;
  const removed = [...rs.before.keys()].filter((p) => !rs.after.has(p)).sort();
  const expected = [...rs.expectedRemoved].sort();
  const changed = [...rs.after].filter(([p, ino]) => rs.before.has(p) && rs.before.get(p) !== ino).map(([p]) => p);
  const added = [...rs.after.keys()].filter((p) => !rs.before.has(p));
  const hanging = `tmp/${sw.deadHostHanging.name}`;
  check(
    `${DEAD}, back under its name, sweeps all its own leftovers at start and nothing else`,
    JSON.stringify(removed) === JSON.stringify(expected) && expected.includes(rs.plantedOwn) && expected.includes(hanging) && changed.length === 0 && added.length === 0 && rs.plantedOthers.every((p) => rs.after.has(p)),
    `removed ${removed.length} of ${expected.length} expected (its in-flight files, the planted pid-1 file); ` +
      `unexpected: ${sample(removed.filter((p) => !rs.expectedRemoved.has(p)))}; left: ${sample(expected.filter((p) => rs.after.has(p)))}; ` +
      `changed: ${sample(changed)}; added: ${sample(added)}; kept: ${rs.plantedOthers.filter((p) => rs.after.has(p)).length}/${rs.plantedOthers.length} of the others' files; ${rs.sweptLine.replace(/^.* why=/, 'why=')}`,
  );

  check(
    `${DEAD}, restarted at once in fresh namespaces, waits for its dead predecessor's spool lock instead of taking the old pid 1 for itself`,
    rs.waitedForLock,
    `listening ${rs.restartMs} ms after the restart; ${rs.waitedForLock ? 'waited for the stale lock' : 'did not wait'}`,
  );

  const ar = e.afterReturn;
  const queuedIds = new Set(ar.queued.map((q) => q.id));
  const queuedBad = ar.queued.filter((q) => {
    try {
      return !splitReceived(q.message).rest.equals(messageFor(q.id));
    } catch {
      return true;
    }
  });
  const hostsWriting = new Set(ar.queued.map((q) => q.host));
  check(
    `after ${DEAD}'s return both hosts file messages into the shared queue again`,
    [...ar.acked.keys()].every((id) => queuedIds.has(id)) && ar.queued.length === ar.acked.size && queuedBad.length === 0 && hostsWriting.has(DEAD) && hostsWriting.has(SURVIVOR),
    `${ar.acked.size} acknowledged, ${ar.queued.length} queued (QSHN ${[...hostsWriting].sort().join(', ')}), ${queuedBad.length} damaged`,
  );
  check(
    'both hosts stop with exit 0 and leave nothing in tmp/',
    Object.values(e.stops).every((s) => s.code === 0) && e.tmpAtEnd.length === 0,
    `${Object.entries(e.stops).map(([h, s]) => `${h} ${s.code ?? s.signal}`).join(', ')}; tmp/: ${sample(e.tmpAtEnd) || 'empty'}`,
  );
  check(
    `the shared queue ends with no file at all once the last jobs are taken (${e.dqVerify.ran ? 'by dq-verify --pickup' : "by spamtrapd's reader"})`,
    e.filesAtEnd.length === 0,
    e.filesAtEnd.length ? `left: ${sample(e.filesAtEnd)}` : 'no job, no data file, no tmp file, no lock',
  );
  if (e.dqVerify.ran) {
    check('dq-verify --strict --pickup (the real IPC::DirQueue) accepts the shared queue', e.dqVerify.status === 0, (e.dqVerify.output ?? '').trim().split('\n').slice(-3).join(' | '));
  }
  return { report, checks };
}

export function formatReport(report: Report, checks: Check[], e: Pick<Evidence, 'dqVerify'>): string {
  const f = report.failover;
  const p = report.pids;
  const lines = [
    `two trap hosts on one queue behind HAProxy: ${DEAD} killed mid-flood, ${SURVIVOR} survives, ${DEAD} returns`,
    `consumers: ${report.consumers.map((k) => `${k} ${report.consumedBy[k]}`).join(', ')}${report.consumersMissing.length ? ` (not run: ${report.consumersMissing.join('; ')})` : ''}`,
    `sent ${report.sent}  acked ${report.acked} (${DEAD} ${report.ackedBy[DEAD]}, ${SURVIVOR} ${report.ackedBy[SURVIVOR]})  consumed ${report.consumed}  lost ${report.lost}  duplicated ${report.duplicated}  damaged ${report.damaged}  committed without a 250 ${report.committedUnacked}  (sessions ${report.sessions})`,
    `failover: HAProxy marked ${DEAD} DOWN ${f.downAfterMs} ms after the kill (every new client to ${SURVIVOR} from then on); ` +
      `sessions begun before that and served took up to ${f.slowestServedBeforeDownMs ?? '-'} ms; ${f.failedSessions} sessions failed after the kill` +
      (f.lastFailureAfterMs === null ? '' : `, the last ${f.lastFailureAfterMs} ms after it`),
    ...f.failures.map((x) => `  failed session (times from the kill): ${x}`),
    `haproxy's server events, in order (${SURVIVOR} goes DOWN once on purpose: its only acceptor is killed to make it sweep):`,
    ...report.haproxyEvents.map((x) => `  ${x}`),
    `pids: acceptor ${p.acceptor[DEAD]} on ${DEAD} and ${p.acceptor[SURVIVOR]} on ${SURVIVOR} (${p.acceptor[DEAD] === p.acceptor[SURVIVOR] ? 'equal' : 'different'}); ` +
      `${DEAD}'s in-flight file names pid ${p.deadHostLeftover}, ${SURVIVOR} swept after its own pid ${p.survivorVictim} died; the returned ${DEAD}'s acceptor is pid ${p.returnedAcceptor}, its primary pid 1`,
    `restart: ${DEAD} listened again ${report.restart.ms} ms after its restart under the same name` +
      (report.restart.waitedForLock ? " (it waited for its dead predecessor's spool lock to go stale)" : ''),
    `dq-verify: ${e.dqVerify.ran ? `ran, exit ${e.dqVerify.status}` : `not run: ${e.dqVerify.why}`}`,
    ...checks.map((c) => `${c.ok ? 'ok  ' : 'FAIL'} ${c.name}: ${c.detail}`),
  ];
  return lines.join('\n');
}
