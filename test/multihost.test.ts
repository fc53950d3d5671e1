/**
 * Issue 15, "two trap hosts on one queue, run for real": two trap hosts in their own UTS, mount and pid namespaces
 * (different host names, colliding pids), each with its own spool and the one shared queue mounted at the same path,
 * behind HAProxy (round robin, PROXY v2, SMTP health checks), with live consumers (the real Perl IPC::DirQueue
 * where its module is present, spamtrapd's reader, `spamtrapd queue pickup`). One host is killed outright during a
 * flood, the survivor sweeps, the dead host comes back under its name. The run is test/helpers/multihost/scenario.ts;
 * scripts/multihost/run.sh does the same by hand.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { multihostSkipReason } from './helpers/multihost/layout';
import { TwoHostScenario, type Evidence } from './helpers/multihost/scenario';
import { formatReport, judge, type Check } from './helpers/multihost/verdict';

const skip = multihostSkipReason();
if (skip) console.log(`multihost: skipped: ${skip}`);

describe('two trap hosts on one shared queue behind HAProxy, one killed mid-flood', { skip }, () => {
  let scenario: TwoHostScenario | undefined;
  let evidence: Evidence;
  let checks: Check[] = [];

  before(async () => {
    scenario = new TwoHostScenario({ log: (line) => console.log(`multihost: ${line}`) });
    try {
      evidence = await scenario.run();
    } catch (err) {
      console.log(scenario.diagnostics());
      throw err;
    }
    const judged = judge(evidence);
    checks = judged.checks;
    console.log(formatReport(judged.report, checks, evidence));
    if (checks.some((c) => !c.ok)) console.log(scenario.diagnostics());
  }, { timeout: 180_000 });

  after(async () => {
    await scenario?.cleanup();
  });

  const expectCheck = (prefix: string) => () => {
    const matching = checks.filter((c) => c.name.startsWith(prefix));
    assert.ok(matching.length > 0, `no check named "${prefix}..."`);
    for (const c of matching) assert.ok(c.ok, `${c.name}: ${c.detail}`);
  };

  test('no message acknowledged with 250 is lost, none is consumed twice, each is byte for byte what was sent', () => {
    expectCheck('no message acknowledged')();
    expectCheck('no message is consumed twice')();
    expectCheck('every consumed message is byte for byte')();
    expectCheck('a message consumed without its 250')();
    expectCheck('the consumers leave an empty queue')();
  });

  test('every message records the client, not HAProxy', expectCheck('the client recorded'));

  test('HAProxy moves the clients to the surviving host', expectCheck('HAProxy marks'));

  test('the pids of the two hosts collide', expectCheck('the pids collide'));

  test("the surviving host's sweep never touches the dead host's files, and removes its own dead writer's", () => {
    expectCheck("trapb's sweeps leave")();
    expectCheck("trapb's sweep after its acceptor died")();
  });

  test('the dead host, back under its name, sweeps its own leftovers and nothing else', expectCheck('trapa, back under its name'));

  test("the dead host restarted at once waits for its old spool lock, though the old holder's pid is its own", expectCheck('trapa, restarted at once'));

  test('after the return both hosts file messages again, and both stop cleanly', () => {
    expectCheck("after trapa's return")();
    expectCheck('both hosts stop')();
    expectCheck('the shared queue ends with no file')();
  });

  test('dq-verify --strict --pickup (the real IPC::DirQueue) accepts the shared queue', (t) => {
    if (!evidence.dqVerify.ran) return t.skip(`dq-verify not run: ${evidence.dqVerify.why}`);
    expectCheck('dq-verify')();
  });
});
