// Entry point of the forward relay process (forked by the primary through node:cluster with SPAMTRAPD_SLOT=relay).
import { loadConfig } from '../src/config/env';
import { ForwardRelay, RELAY_SLOT } from '../src/forward';
import { createLogger } from '../src/log';
import { startWorkerMetrics } from '../src/metrics';
import { dropPrivileges, runAsFromEnv } from '../src/privileges';
import { exitAfterFinalPush, onPrimarySignals } from '../src/worker-process';

async function main(): Promise<void> {
  const cfg = loadConfig();
  const log = createLogger(cfg.logLevel, { proc: RELAY_SLOT, pid: process.pid });
  // The relay needs no privilege at all: it reads queues and talks SMTP to the internal MTA.
  const runAs = runAsFromEnv();
  if (runAs) {
    dropPrivileges(runAs);
    log.info('privileges_dropped', { user: runAs.user, group: runAs.group, uid: runAs.uid, gid: runAs.gid });
  }
  const metrics = startWorkerMetrics({ slot: RELAY_SLOT, intervalMs: cfg.metricsPushIntervalMs });
  const relay = new ForwardRelay({
    spoolDir: cfg.spoolDir,
    retryBaseMs: cfg.forwardRetryBaseMs,
    retryMaxMs: cfg.forwardRetryMaxMs,
    maxAttempts: cfg.forwardMaxAttempts,
    heloName: cfg.me,
    log,
    metrics: {
      delivered: metrics.metrics.forwardDelivered,
      deferred: metrics.metrics.forwardDeferred,
      failed: metrics.metrics.forwardFailed,
    },
    onEnqueue: (queue, at) => metrics.reportEnqueue(queue, at),
  });

  const shutdown = (why: string): void => {
    log.info('relay_stopping', { why, grace_ms: cfg.shutdownGraceMs });
    void (async () => {
      await relay.stop(cfg.shutdownGraceMs);
      metrics.stop();
      await exitAfterFinalPush(metrics);
    })();
  };
  // The relay reads no config/ file, so it has nothing to reload.
  const stop = onPrimarySignals({ shutdown });
  // An orphaned relay would keep delivering beside the one a restarted primary forks.
  if (process.connected) process.on('disconnect', () => stop('primary gone'));

  await relay.start();
}

main().catch((err: Error) => {
  process.stderr.write(`spamtrapd relay ${process.pid}: fatal: ${err.stack ?? err.message}\n`);
  process.exit(1);
});
