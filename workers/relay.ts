// Entry point of the forward relay process (forked by the primary through node:cluster with SPAMTRAPD_SLOT=relay).
import { loadConfig } from '../src/config/env';
import { ForwardRelay, RELAY_SLOT } from '../src/forward';
import type { PrimaryToWorker } from '../src/ipc';
import { createLogger } from '../src/log';
import { startWorkerMetrics } from '../src/metrics';
import { dropPrivileges, runAsFromEnv } from '../src/privileges';

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

  let stopping = false;
  const shutdown = (why: string): void => {
    if (stopping) return;
    stopping = true;
    log.info('relay_stopping', { why, grace_ms: cfg.shutdownGraceMs });
    void (async () => {
      await relay.stop(cfg.shutdownGraceMs);
      metrics.stop();
      // The final push makes the forward counters exact for a relay that stops normally.
      await metrics.pushNow().catch(() => undefined);
      process.exit(0);
    })();
  };
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));
  // The primary owns reloads, and the relay reads no config/ file: a SIGHUP to the process group is not for it.
  process.on('SIGHUP', () => undefined);
  process.on('message', (msg: PrimaryToWorker) => {
    if (msg?.type === 'trap:shutdown') shutdown('primary');
  });
  // An orphaned relay would keep delivering beside the one a restarted primary forks.
  if (process.connected) process.on('disconnect', () => shutdown('primary gone'));

  await relay.start();
}

main().catch((err: Error) => {
  process.stderr.write(`spamtrapd relay ${process.pid}: fatal: ${err.stack ?? err.message}\n`);
  process.exit(1);
});
