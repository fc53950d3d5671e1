/**
 * The primary: the one source of configuration (it reads `.env` and config/ at start and on SIGHUP and hands the
 * validated result to every process it forks), holder of the spool's instance lock, sweeper of crash leftovers,
 * keeper of the acceptor slots (and of the relay while a forward destination needs it), keeper of the listing of
 * client addresses (src/intel/trap-intel.ts), server of /metrics, /healthz, /listing and /tail, and the place where
 * SIGHUP and SIGTERM become reload and drain. It never touches a message itself.
 */
import fs from 'node:fs';
import path from 'node:path';
import { readRunningConfig, reloadRunningConfig, type LoadedConfig } from '../config/read-running-config';
import type { RunningConfig } from '../config/running-config';
import type { LoadedRules } from '../config/config-dir';
import type { Route } from '../config/routes';
import { acquireSpoolLock, findQueueDirs, sweepSpool } from '../dirqueue';
import { EXIT_LOCK_LOST } from '../exit-codes';
import { isIntelBatch } from '../intel/events';
import { TrapIntel } from '../intel/trap-intel';
import type { PrimaryToWorker } from '../ipc';
import { isWorkerHello, listeningSlot } from '../ipc';
import { createLogger, type Logger } from '../log';
import { dirQueueScanner, MetricsAggregator, startMetricsServer } from '../metrics';
import { checkSpoolWritable, resolveRunAs, runAsEnv } from '../privileges';
import { loadTlsMaterial } from '../smtp/tls';
import { FORWARD_QUEUE_PREFIX } from '../spool-layout';
import { VERSION } from '../version';
import type { Child } from './forks';
import { forkAcceptor, forkRelay } from './forks';
import { evaluateHealth, type HealthReport } from './health';
import { Slot } from './slots';

/** Periodic crash-leftover sweep, beside the ones at start and after each death of a process of ours. */
const SWEEP_EVERY_MS = 15 * 60_000;
/** How often the primary looks whether a forward queue holds jobs while no route forwards (e.g. after a reinject). */
const RELAY_CHECK_EVERY_MS = 60_000;
/** An acceptor silent for this long (no metrics push, which comes every second or less) is not up. */
const SILENT_AFTER_MS = 5_000;
/** At a stop, how long the primary waits for the last messages of processes that exited (see finishStop). */
const LAST_MESSAGES_WAIT_MS = 2_000;

export async function runPrimary(env: NodeJS.ProcessEnv = process.env): Promise<void> {
  let loaded: LoadedConfig = readRunningConfig(env);
  const cfg = loaded.config.settings;
  const log = createLogger(cfg.logLevel, { proc: 'primary', pid: process.pid });
  log.info('starting', { version: VERSION, spool: cfg.spoolDir, config: cfg.configDir, port: cfg.smtpPort, workers: cfg.workers });
  for (const w of cfg.warnings) log.warn('env_warning', { warning: w });

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
      log.flush();
      process.exit(EXIT_LOCK_LOST);
    },
    onWaiting: (holder, staleMs) => log.warn('spool_lock_stale_wait', { spool: cfg.spoolDir, dead_holder: holder, stale_ms: staleMs }),
  });

  const sweeper = createSweeper(cfg.spoolDir, cfg.spoolSweepMinAgeMs, log);
  await sweeper.sweep('start');
  setInterval(() => void sweeper.sweep('periodic'), SWEEP_EVERY_MS).unref();

  logRules(loaded, log);
  // Generated here, once, so acceptors starting together never race to create it.
  const tls = await loadTlsMaterial({
    keyFile: cfg.tlsKeyFile,
    certFile: cfg.tlsCertFile,
    spoolDir: cfg.spoolDir,
    hostname: cfg.me,
    onIncomplete: (aside) => log.warn('tls_incomplete_set_aside', { moved_to: aside, note: 'a key without its certificate (or the reverse); a new pair is generated' }),
  });
  log.info('tls', { certificate: tls.source });

  const slots: Slot[] = [];
  const acceptors = () => slots.filter((s) => s !== relay);
  const health = (): HealthReport =>
    evaluateHealth(
      acceptors().map((s) => s.health(Date.now())),
      cfg.workers,
      Date.now(),
      SILENT_AFTER_MS,
    );
  const aggregator = new MetricsAggregator({
    queues: {
      scan: dirQueueScanner(cfg.spoolDir),
      queues: await knownQueues(cfg.spoolDir, loaded.rules.routes),
      scanIntervalMs: cfg.queueScanIntervalMs,
      onError: (queue, err) => log.warn('queue_scan_failed', { queue, error: (err as Error).message }),
    },
    workersUp: () => health().workersUp,
  });
  aggregator.start();
  // Loaded before any acceptor runs, so no event lands in a listing that is still being read from disk.
  const intel = await TrapIntel.start(cfg, aggregator.registry, log);
  const metricsServer = await startMetricsServer({ host: cfg.metricsHost, port: cfg.metricsPort, aggregator, health, routes: intel.httpRoutes() });
  log.info('metrics', { host: cfg.metricsHost, port: metricsServer.address().port });

  let stopping = false;
  const config = (): RunningConfig => loaded.config;
  const deadPids = new Set<number>();
  const exitedWhileStopping: Child[] = [];
  const hooks = {
    started(slot: Slot, child: Child) {
      aggregator.workerStarted(slot.name, child.pid);
      // An IPC error on one worker (its channel closing under a send) must not become an unhandled 'error' event
      // in the primary, which would take every acceptor down with it.
      child.onError((err) => log.warn('worker_ipc_error', { slot: slot.name, pid: child.pid, error: err.message }));
      // A process forked just before the stop hears about it when it says hello (see message()).
    },
    message(slot: Slot, child: Child, msg: unknown) {
      if (aggregator.handleMessage(msg)) return;
      if (isIntelBatch(msg)) return intel.apply(msg);
      if (isWorkerHello(msg)) {
        tell(child, { type: 'trap:config', config: config() });
        if (stopping) tell(child, { type: 'trap:shutdown' });
        return;
      }
      if (listeningSlot(msg) !== null) slot.listening = true;
    },
    exited(slot: Slot, child: Child, info: { code: number | null; signal: NodeJS.Signals | null; livedMs: number; restartInMs: number | null }) {
      aggregator.workerExited(slot.name, child.pid);
      deadPids.add(child.pid);
      // The primary saw this process die: its tmp/ leftovers go now, not after an age guard.
      void sweeper.sweep(`worker ${slot.name} died`, new Set([child.pid]));
      if (stopping) {
        exitedWhileStopping.push(child);
        return void finishStop();
      }
      if (slot === relay && info.restartInMs === null) {
        log.info('relay_stopped', { pid: child.pid, code: info.code });
        return;
      }
      log.error('worker_died', { slot: slot.name, pid: child.pid, code: info.code, signal: info.signal, lived_ms: info.livedMs, restart_in_ms: info.restartInMs });
    },
  };
  for (let i = 0; i < cfg.workers; i++) slots.push(new Slot(String(i), () => forkAcceptor(i, runAsEnv(runAs)), hooks));
  // One relay, not one per CPU, and only while there is something to forward (docs/forward.md).
  const relay = new Slot('relay', () => forkRelay(runAsEnv(runAs)), hooks);
  slots.push(relay);
  for (const s of acceptors()) s.start();

  const reconsiderRelay = async (why: string) => {
    if (stopping) return;
    const wanted = routesForward(loaded.rules.routes) || (await forwardQueueHoldsJobs(cfg.spoolDir));
    if (wanted && !relay.running) {
      log.info('relay_starting', { why });
      relay.start();
    } else if (!wanted && relay.running) {
      log.info('relay_retiring', { why: 'no route forwards and every forward queue is empty' });
      relay.retire();
      tell(relay.child!, { type: 'trap:shutdown' });
    }
  };
  await reconsiderRelay('start');
  setInterval(() => void reconsiderRelay('periodic check'), RELAY_CHECK_EVERY_MS).unref();

  process.on('SIGHUP', () => {
    let next;
    try {
      next = reloadRunningConfig(loaded.config, env);
    } catch (err) {
      log.error('config_error', { error: (err as Error).message });
      log.error('reload_refused', { reason: 'the configuration has errors; the running one stays in force everywhere' });
      return;
    }
    loaded = next;
    for (const w of next.config.settings.warnings) log.warn('env_warning', { warning: w });
    for (const name of next.deferred) log.warn('reload_deferred', { setting: name, note: 'changed in .env; takes effect at the next start' });
    intel.reload(next.config.settings);
    logRules(next, log);
    for (const s of slots) if (s.child) tell(s.child, { type: 'trap:config', config: next.config });
    for (const q of next.rules.routes) aggregator.queueGauges?.addQueue(q.destination.queue);
    void reconsiderRelay('reload');
  });

  let hardStop: NodeJS.Timeout | null = null;
  let finishing = false;
  const finishStop = async () => {
    if (finishing || slots.some((s) => s.running)) return;
    finishing = true;
    if (hardStop) clearTimeout(hardStop);
    // Every process of ours has exited and every acknowledged message is on disk: tmp/ is swept once more with all
    // their pids, and a failure to tidy up from here on is worth a log line, not a non-zero exit that a service
    // manager would read as a crash.
    try {
      await sweeper.sweep('stop', deadPids);
      // An exit can be reported before the process's last IPC messages are read (its final intel batch); its
      // channel closes only after them. Then the listing is written once more, under the lock.
      const deadline = Date.now() + LAST_MESSAGES_WAIT_MS;
      while (exitedWhileStopping.some((c) => c.connected()) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      await intel.close();
      aggregator.close();
      await metricsServer.close();
      await releaseLock();
    } catch (err) {
      log.error('stop_cleanup_failed', { error: (err as Error).message });
    }
    log.info('stopped');
    log.flush();
    process.exit(0);
  };
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info('stopping', { signal, grace_ms: cfg.shutdownGraceMs });
    for (const s of slots) s.retire();
    for (const s of slots) if (s.child) tell(s.child, { type: 'trap:shutdown' });
    hardStop = setTimeout(() => {
      for (const s of slots) s.child?.kill('SIGKILL');
    }, cfg.shutdownGraceMs + 10_000);
    hardStop.unref();
    void finishStop();
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

function tell(child: Child, msg: PrimaryToWorker): void {
  child.send(msg);
}

/** Sweeps one at a time: a sweep after a death may come while the periodic one runs. */
function createSweeper(spoolDir: string, minAgeMs: number, log: Logger) {
  let chain: Promise<void> = Promise.resolve();
  return {
    sweep(why: string, knownDead?: ReadonlySet<number>): Promise<void> {
      chain = chain.then(async () => {
        try {
          const swept = await sweepSpool(spoolDir, { minAgeMs, knownDead, log: (msg) => log.warn('sweep', { action: msg }) });
          log.info('swept', { why, ...swept.total });
        } catch (err) {
          log.error('sweep_failed', { why, error: (err as Error).message });
        }
      });
      return chain;
    },
  };
}

/** Queues to watch from the start: those on disk and those the routes name (new ones join on first enqueue). */
async function knownQueues(spoolDir: string, routes: Route[]): Promise<string[]> {
  const onDisk = (await findQueueDirs(spoolDir)).map((d) => path.relative(spoolDir, d));
  const routed = routes.map((r) => r.destination.queue);
  return [...new Set(['incoming', 'deadletter', ...onDisk, ...routed])];
}

function routesForward(routes: readonly Route[]): boolean {
  return routes.some((r) => r.destination.kind === 'forward');
}

/** Whether any forward-* queue has a job: one directory entry read per queue, whatever its depth. */
async function forwardQueueHoldsJobs(spoolDir: string): Promise<boolean> {
  let names: string[];
  try {
    names = (await fs.promises.readdir(spoolDir)).filter((n) => n.startsWith(FORWARD_QUEUE_PREFIX));
  } catch {
    return false;
  }
  for (const name of names) {
    let dir: fs.Dir;
    try {
      dir = await fs.promises.opendir(path.join(spoolDir, name, 'queue'), { bufferSize: 32 });
    } catch {
      continue;
    }
    try {
      for await (const e of dir) if (/^\d/.test(e.name)) return true;
    } finally {
      await dir.close().catch(() => undefined);
    }
  }
  return false;
}

function logRules(loaded: { rules: LoadedRules; config: RunningConfig }, log: Logger): void {
  for (const p of loaded.rules.problems) log.warn('rcpt_regexp_line_skipped', { file: p.file, line: p.line, reason: p.reason });
  log.info('rules', {
    dir: loaded.config.settings.configDir,
    rules: loaded.rules.rules.length,
    routes: loaded.rules.routes.length,
    skipped: loaded.rules.problems.length,
  });
}
