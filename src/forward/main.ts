/**
 * The relay process: forked by the primary (child_process, not cluster: it serves no port) while the routes name a
 * forward destination or a forward queue holds jobs. It drains the forward-* queues and stops gracefully on SIGTERM,
 * on the primary's word, and when the primary's IPC channel closes (the primary died): deliveries in flight finish
 * within SHUTDOWN_GRACE_MS instead of being cut and sent again after the restart.
 */
import { createLogger } from '../log';
import { startWorkerMetrics } from '../metrics';
import { dropPrivileges, runAsFromEnv } from '../privileges';
import { connectToPrimary, exitAfterFinalPush } from '../worker-process';
import { ForwardRelay } from './relay';

/** The relay's SPAMTRAPD_SLOT and metrics `worker` label. */
export const RELAY_SLOT = 'relay';

export async function runRelay(): Promise<void> {
  let shutdown: (why: string) => void = () => process.exit(0);
  const link = await connectToPrimary({ shutdown: (why) => shutdown(why) });
  const cfg = link.config.settings;
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

  shutdown = (why) => {
    log.info('relay_stopping', { why, grace_ms: cfg.shutdownGraceMs });
    void (async () => {
      await relay.stop(cfg.shutdownGraceMs);
      metrics.stop();
      await exitAfterFinalPush(metrics);
    })();
  };
  // An orphaned relay would keep delivering beside the one a restarted primary forks: it stops, gracefully.
  process.on('disconnect', () => link.stop('primary gone'));
  // The primary logs how the relay ended, unless the primary is what died: then this line is the only record.
  process.on('exit', (code) => {
    log.info('relay_exit', { code });
    log.flush();
  });
  await relay.start();
}
