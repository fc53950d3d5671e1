/**
 * The primary: holds the spool's instance lock, sweeps crash leftovers, forks one acceptor per slot on one
 * shared port, replaces dead ones with back-off, serves metrics, and turns SIGHUP/SIGTERM into reload/drain.
 * It never touches a message itself.
 */
import cluster, { type Worker } from 'node:cluster';
import path from 'node:path';
import { loadRules, type TrapConfig } from './config/env';
import type { Route } from './config/routes';
import { acquireSpoolLock, findQueueDirs, sweepSpool } from './dirqueue';
import { forkRelay, RELAY_SLOT } from './forward';
import type { PrimaryToWorker } from './ipc';
import { createLogger, type Logger } from './log';
import { checkSpoolWritable, resolveRunAs, runAsEnv } from './privileges';
import { dirQueueScanner, MetricsAggregator, startMetricsServer } from './metrics';
import { loadTlsMaterial } from './smtp/tls';
import { VERSION } from './version';

/** Restart back-off for a slot whose acceptor keeps dying: doubles from 100 ms, capped at 30 s. */
export function restartDelayMs(recentFailures: number): number {
  if (recentFailures <= 1) return 0;
  return Math.min(30_000, 100 * 2 ** (recentFailures - 2));
}

/** Periodic crash-leftover sweep, beside the ones at start and after a worker dies. */
const SWEEP_EVERY_MS = 15 * 60_000;

/** A worker that lived this long before dying is not "crash-looping": its slot's failure count resets. */
const STABLE_AFTER_MS = 10_000;

interface Slot {
  /** `0`..`N-1` for acceptors, `relay` for the forward relay: the metrics `worker` label. */
  name: string;
  fork: () => Worker;
  worker: Worker | null;
  startedAt: number;
  failures: number;
  timer: NodeJS.Timeout | null;
}

export async function runPrimary(cfg: TrapConfig): Promise<void> {
  const log = createLogger(cfg.logLevel, { proc: 'primary', pid: process.pid });
  log.info('starting', {
    version: VERSION,
    spool: cfg.spoolDir,
    config: cfg.configDir,
    port: cfg.smtpPort,
    workers: cfg.workers,
  });

  // Resolved and checked before anything is created in the spool as root, which the RUN_AS user could not write.
  const runAs = cfg.runAs ? resolveRunAs(cfg.runAs) : null;
  if (runAs) {
    checkSpoolWritable(cfg.spoolDir, runAs);
    log.info('run_as', { user: runAs.user, group: runAs.group, uid: runAs.uid, gid: runAs.gid });
  }
  const releaseLock = await acquireSpoolLock(cfg.spoolDir, {
    onCompromised: (err: Error) => {
      // Another process took the spool over (or the lock dir vanished): two traps on one spool would
      // sweep each other's in-flight files, so stop hard rather than run on.
      log.error('spool_lock_compromised', { spool: cfg.spoolDir, error: err.message });
      process.exit(3);
    },
    onWaiting: (holder, staleMs) => log.warn('spool_lock_stale_wait', { spool: cfg.spoolDir, dead_holder: holder, stale_ms: staleMs }),
  });
  // The sweep removes only files whose writer (this host, that pid) is dead: safe beside running writers. It runs at
  // start, again once a dead worker's leftovers are old enough, and every SWEEP_EVERY_MS for anything missed.
  const sweep = async (why: string) => {
    try {
      const swept = await sweepSpool(cfg.spoolDir, {
        minAgeMs: cfg.spoolSweepMinAgeMs,
        log: (msg) => log.warn('sweep', { action: msg }),
      });
      log.info('swept', { why, ...swept.total });
    } catch (err) {
      log.error('sweep_failed', { why, error: (err as Error).message });
    }
  };
  let sweepTimer: NodeJS.Timeout | null = null;
  const sweepLater = (why: string) => {
    if (sweepTimer) return;
    sweepTimer = setTimeout(() => {
      sweepTimer = null;
      void sweep(why);
    }, cfg.spoolSweepMinAgeMs + 1000);
    sweepTimer.unref();
  };
  await sweep('start');
  setInterval(() => void sweep('periodic'), SWEEP_EVERY_MS).unref();

  // A routes file that cannot be parsed stops start-up (it throws); skipped rcpt_regexp lines are only logged.
  const startRules = loadRules(cfg);
  logRules(cfg, startRules, log);
  // Generated here, once, so acceptors starting together never race to create it.
  const tls = await loadTlsMaterial({
    keyFile: cfg.tlsKeyFile,
    certFile: cfg.tlsCertFile,
    spoolDir: cfg.spoolDir,
    hostname: cfg.me,
  });
  log.info('tls', { certificate: tls.source });

  const aggregator = new MetricsAggregator({
    queues: {
      scan: dirQueueScanner(cfg.spoolDir),
      queues: await knownQueues(cfg, startRules.routes),
      scanIntervalMs: cfg.queueScanIntervalMs,
      onError: (queue, err) => log.warn('queue_scan_failed', { queue, error: (err as Error).message }),
    },
  });
  aggregator.start();
  // SCHED_NONE: each acceptor accepts on the shared socket itself. Round-robin would make the primary
  // accept every connection and pass it on, which measured ~30% slower and puts the primary in the data path.
  cluster.schedulingPolicy = cluster.SCHED_NONE;
  cluster.setupPrimary({ exec: path.join(__dirname, '..', 'workers', 'acceptor.js') });
  const newSlot = (name: string, fork: () => Worker): Slot => ({ name, fork, worker: null, startedAt: 0, failures: 0, timer: null });
  const slots: Slot[] = [
    ...Array.from({ length: cfg.workers }, (_, i) =>
      newSlot(String(i), () => cluster.fork({ SPAMTRAPD_SLOT: String(i), ...runAsEnv(runAs) })),
    ),
    // One relay, not one per CPU: it drains the forward-* queues to their MTAs (docs/forward.md).
    newSlot(RELAY_SLOT, () => forkRelay(runAsEnv(runAs))),
  ];
  const metricsServer = await startMetricsServer({ host: cfg.metricsHost, port: cfg.metricsPort, aggregator });
  log.info('metrics', { host: cfg.metricsHost, port: metricsServer.address().port });

  let stopping = false;
  const fork = (slot: Slot) => {
    slot.timer = null;
    slot.startedAt = Date.now();
    const worker = slot.fork();
    slot.worker = worker;
    const pid = worker.process.pid!;
    aggregator.workerStarted(slot.name, pid);
    // An IPC error on one worker (its channel closing under a send) must not become an unhandled 'error' event
    // in the primary, which would take every acceptor down with it.
    worker.on('error', (err: Error) => log.warn('worker_ipc_error', { slot: slot.name, pid, error: err.message }));
    let toldToStop = false;
    worker.on('message', (msg: unknown) => {
      aggregator.handleMessage(msg);
      // A worker forked just before the stop may have missed the broadcast (no listener yet): every worker
      // talks within a metrics push interval, and is then told again.
      if (stopping && !toldToStop && worker.isConnected()) {
        toldToStop = true;
        tell(worker, { type: 'trap:shutdown' });
      }
    });
    worker.on('exit', (code, signal) => {
      slot.worker = null;
      aggregator.workerExited(slot.name, pid);
      if (stopping) return;
      sweepLater(`worker ${slot.name} died`);
      const lived = Date.now() - slot.startedAt;
      slot.failures = lived > STABLE_AFTER_MS ? 1 : slot.failures + 1;
      const delay = restartDelayMs(slot.failures);
      log.error('worker_died', { slot: slot.name, pid, code, signal, lived_ms: lived, restart_in_ms: delay });
      slot.timer = setTimeout(() => fork(slot), delay);
    });
  };
  slots.forEach(fork);

  process.on('SIGHUP', () => {
    if (checkRules(cfg, log)) broadcast(slots, { type: 'trap:reload' });
    else log.error('reload_refused', { reason: 'config/ has errors; the running rules stay in force' });
  });

  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info('stopping', { signal, grace_ms: cfg.shutdownGraceMs });
    for (const s of slots) if (s.timer) clearTimeout(s.timer);
    broadcast(slots, { type: 'trap:shutdown' });
    const hardStop = setTimeout(() => {
      for (const s of slots) s.worker?.process.kill('SIGKILL');
    }, cfg.shutdownGraceMs + 10_000);
    hardStop.unref();
    let finishing = false;
    const finish = async () => {
      if (finishing || slots.some((s) => s.worker)) return;
      finishing = true;
      clearTimeout(hardStop);
      // Every worker has stopped and every acknowledged message is on disk: a failure to tidy up from here on is
      // worth a log line, not a non-zero exit that a service manager would read as a crash.
      try {
        aggregator.close();
        await metricsServer.close();
        await releaseLock();
      } catch (err) {
        log.error('stop_cleanup_failed', { error: (err as Error).message });
      }
      log.info('stopped');
      process.exit(0);
    };
    cluster.on('exit', () => void finish());
    void finish();
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

/** Queues to watch from the start: those on disk and those the routes name (new ones join on first enqueue). */
async function knownQueues(cfg: TrapConfig, routes: Route[]): Promise<string[]> {
  const onDisk = (await findQueueDirs(cfg.spoolDir)).map((d) => path.relative(cfg.spoolDir, d));
  const routed = routes.map((r) => r.destination.queue);
  return [...new Set(['incoming', 'deadletter', ...onDisk, ...routed])];
}

/**
 * A worker's IPC channel can close between isConnected() and send() (it is exiting: e.g. right after its final
 * metrics push). Without a callback that would be an 'error' event on the worker, and an unhandled one takes the
 * primary down; the message is moot for a worker that is going away anyway.
 */
function tell(worker: Worker, msg: PrimaryToWorker): void {
  if (!worker.isConnected()) return;
  worker.send(msg, undefined, undefined, () => undefined);
}

function broadcast(slots: Slot[], msg: PrimaryToWorker): void {
  for (const s of slots) {
    if (s.worker) tell(s.worker, msg);
  }
}

function logRules(cfg: TrapConfig, loaded: ReturnType<typeof loadRules>, log: Logger): void {
  for (const p of loaded.problems) log.warn('rcpt_regexp_line_skipped', { file: p.file, line: p.line, reason: p.reason });
  log.info('rules', { dir: cfg.configDir, rules: loaded.rules.length, routes: loaded.routes.length, skipped: loaded.problems.length });
}

/** Reads config/ the way acceptors will, before telling them to reload: a bad routes file keeps the old rules. */
function checkRules(cfg: TrapConfig, log: Logger): boolean {
  try {
    logRules(cfg, loadRules(cfg), log);
    return true;
  } catch (err) {
    log.error('config_error', { error: (err as Error).message });
    return false;
  }
}
