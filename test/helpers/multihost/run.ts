/**
 * The two-host run by hand: `node dist/test/helpers/multihost/run.js` (or scripts/multihost/run.sh, which builds
 * first), as root, with haproxy and unshare installed. Prints progress, the report and one line per check; exits 1
 * when a check fails, 2 when the run could not be carried out. MULTIHOST_KEEP=1 keeps the temporary directory
 * (spools, shared queue, consumed copies) for a look afterwards.
 */
import { multihostSkipReason } from './layout';
import { TwoHostScenario } from './scenario';
import { formatReport, judge } from './verdict';

async function main(): Promise<number> {
  let why: string | false;
  try {
    why = multihostSkipReason();
  } catch (err) {
    why = (err as Error).message;
  }
  if (why) {
    process.stderr.write(`multihost: cannot run: ${why}\n`);
    return 2;
  }
  const t0 = Date.now();
  const say = (line: string) => process.stdout.write(`[${((Date.now() - t0) / 1000).toFixed(1)}s] ${line}\n`);
  const scenario = new TwoHostScenario({ log: say });
  const interrupted = () =>
    void scenario.cleanup().finally(() => {
      say('interrupted: cleaned up');
      process.exit(130);
    });
  process.once('SIGINT', interrupted);
  process.once('SIGTERM', interrupted);
  try {
    const evidence = await scenario.run();
    const { report, checks } = judge(evidence);
    process.stdout.write(`\n${formatReport(report, checks, evidence)}\n`);
    if (checks.every((c) => c.ok)) return 0;
    process.stdout.write(`${scenario.diagnostics()}\n`);
    return 1;
  } catch (err) {
    process.stderr.write(`multihost: the run failed: ${(err as Error).stack ?? err}\n${scenario.diagnostics()}\n`);
    return 2;
  } finally {
    await scenario.cleanup();
    say('cleaned up');
  }
}

void main().then((code) => process.exit(code));
