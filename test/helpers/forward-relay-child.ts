/**
 * A ForwardRelay in its own process, so tests can SIGKILL it at chosen moments and start another on the same spool.
 * Env: FWD_SPOOL (required); FWD_CRASH_AFTER_RESOLVED=1 makes it SIGKILL itself the moment a job's outcome is durable
 * (after the MTA's 250, before finish()). Logs go to stderr; a line `ready` goes to stdout once it has started.
 */
import { ForwardRelay } from '../../src/forward';
import { createLogger } from '../../src/log';

async function main(): Promise<void> {
  const spoolDir = process.env['FWD_SPOOL'];
  if (!spoolDir) throw new Error('FWD_SPOOL is required');
  const crash = process.env['FWD_CRASH_AFTER_RESOLVED'] === '1';
  const relay = new ForwardRelay({
    spoolDir,
    retryBaseMs: 100,
    retryMaxMs: 400,
    destinationBackoffMaxMs: 200,
    pollIntervalMs: 20,
    rescanIntervalMs: 100,
    heloName: 'relay-child.test',
    log: createLogger('debug', { proc: 'relay-child', pid: process.pid }),
    afterResolved: crash
      ? () => {
          process.kill(process.pid, 'SIGKILL');
          // Never resolves: nothing after the marker may run before the signal lands.
          return new Promise<void>(() => undefined);
        }
      : undefined,
  });
  process.on('SIGTERM', () => {
    void relay.stop(2000).then(() => process.exit(0));
  });
  await relay.start();
  process.stdout.write('ready\n');
}

main().catch((err: Error) => {
  process.stderr.write(`forward-relay-child: ${err.stack ?? err.message}\n`);
  process.exit(1);
});
