/**
 * One SMTP acceptor: a cluster worker that owns a share of the connections on the trap's port. Rules are
 * re-read on the primary's say (SIGHUP), and SIGTERM drains: sessions in DATA finish, others get 421.
 */
import { rulesOf, type RunningConfig } from '../config/running-config';
import { IntelEventBatcher } from '../intel/events';
import type { WorkerToPrimary } from '../ipc';
import { createLogger, type Logger } from '../log';
import { startWorkerMetrics } from '../metrics/worker';
import { createObserver } from '../metrics/observer';
import { dropPrivileges, runAsFromEnv } from '../privileges';
import { cidrMatcher } from '../ip-address';
import { TrapServer, type TrapConnection, type TrapProxyOptions } from '../smtp/overrides';
import { createReverseLookup } from '../smtp/rdns';
import { createSessionHandlers, type RuleSet } from '../smtp/session';
import { loadTlsMaterial } from '../smtp/tls';
import { Spool } from '../spool';
import { EXIT_FATAL } from '../exit-codes';
import { failpoint } from '../failpoints';
import { VERSION } from '../version';
import { connectToPrimary, exitAfterFinalPush } from '../worker-process';

/** How long a stopping acceptor waits for its last intel events to reach the primary. */
const INTEL_FLUSH_MS = 2000;

/** Rules and routes from the text the primary handed over; skipped rcpt_regexp lines are the primary's to report. */
function ruleSetOf(config: RunningConfig): RuleSet {
  const loaded = rulesOf(config);
  return { rules: loaded.rules, routes: loaded.routes, defaultCode: config.settings.rcptDefault };
}

export async function runAcceptor(): Promise<void> {
  const slot = Number(process.env.SPAMTRAPD_SLOT ?? '0');
  // Both arrive with the configuration; a reload can only come after it.
  let log!: Logger;
  let ruleSet!: RuleSet;
  let accepting = true;
  let inFlight = 0;
  // Listening for the primary before anything slow (TLS, listen): a shutdown that arrives while this acceptor
  // starts is remembered and carried out once it listens, instead of being dropped.
  let drain: ((why: string) => void) | null = null;
  let stopRequested: string | null = null;
  let exitCode = 0;
  const link = await connectToPrimary({
    shutdown(why) {
      accepting = false;
      if (drain) drain(why);
      else stopRequested = why;
    },
    reload(next) {
      ruleSet = ruleSetOf(next);
      log.info('reloaded', { rules: ruleSet.rules.length, routes: ruleSet.routes.length });
    },
  });
  const { config } = link;
  const cfg = config.settings;
  log = createLogger(cfg.logLevel, { proc: `acceptor${slot}`, pid: process.pid });
  if (failpoint('acceptor-exit-at-start') === String(slot)) throw new Error('failpoint acceptor-exit-at-start');
  ruleSet = ruleSetOf(config);

  const metrics = startWorkerMetrics({ slot, intervalMs: cfg.metricsPushIntervalMs });
  const observer = createObserver(metrics);
  // Filed messages and ended sessions, for the primary's listing, tail and fingerprint metric (docs/listing.md).
  const intel = new IntelEventBatcher({ slot: String(slot) });
  const tls = await loadTlsMaterial({
    keyFile: cfg.tlsKeyFile,
    certFile: cfg.tlsCertFile,
    spoolDir: cfg.spoolDir,
    hostname: cfg.me,
  });
  // Dropped before listen(): with SCHED_NONE the root primary binds the port and hands the socket over, so an
  // unprivileged acceptor still gets port 25. The TLS key (0600, root) has been read just above.
  const runAs = runAsFromEnv();
  if (runAs) {
    dropPrivileges(runAs);
    log.info('privileges_dropped', { user: runAs.user, group: runAs.group, uid: runAs.uid, gid: runAs.gid });
  }
  const spool = new Spool(cfg.spoolDir, {
    fsync: cfg.spoolFsync,
    writer: cfg.spoolWriter,
    // Its fds and tmp files would outlive it under this live pid: only this process ending releases them, and the
    // primary sweeps the files of a process it saw exit. Sessions in DATA get 451, new ones 421.
    onWriterDeath(err) {
      log.error('writer_thread_died', { error: err.message, action: 'this acceptor stops; the primary replaces it' });
      exitCode = EXIT_FATAL;
      link.stop('writer thread died');
    },
  });
  const handlers = createSessionHandlers({
    settings: { me: cfg.me, version: VERSION, maxConnectionsPerIp: cfg.maxConnectionsPerIp },
    ruleSet: () => ruleSet,
    spool,
    reverseLookup: createReverseLookup(cfg.rdnsTimeoutMs),
    observer,
    intel,
    log,
    accepting: () => accepting,
  });
  const onData = handlers.onData!;
  const proxy: TrapProxyOptions | undefined =
    cfg.proxyFrom.length === 0
      ? undefined
      : {
          expectsHeader: cidrMatcher(cfg.proxyFrom),
          timeoutMs: cfg.proxyTimeoutMs,
          onRejected(peer, cid, reason, detail) {
            observer.proxyRejected(reason);
            // A reset names no peer and is routine (a balancer's layer-4 checks): not worth a warning each time.
            if (reason === 'reset') log.debug('proxy_rejected', { cid, reason, detail });
            else log.warn('proxy_rejected', { cid, peer, reason, detail });
          },
        };

  const server = new TrapServer({
    name: cfg.me,
    banner: `spamtrapd`,
    key: tls.key,
    cert: tls.cert,
    authOptional: true,
    disabledCommands: ['AUTH'],
    // qpsmtpd does not send enhanced status codes; the rule replies must read exactly as the old trap's.
    hideENHANCEDSTATUSCODES: true,
    // Reverse DNS runs beside the session (see session.ts) instead of holding the greeting.
    disableReverseLookup: true,
    lenientAddressParsing: true,
    size: cfg.maxMessageSize,
    rejectOversized: true,
    maxRecipients: cfg.maxRecipients,
    maxClients: cfg.maxConnectionsPerWorker,
    socketTimeout: cfg.idleTimeoutMs,
    // smtp-server reads 0 as "use 30 s"; a zero grace must mean closing at once.
    closeTimeout: Math.max(1, cfg.shutdownGraceMs),
    logger: false,
    onConnect: handlers.onConnect,
    onSecure: handlers.onSecure,
    onMailFrom: handlers.onMailFrom,
    onRcptTo: handlers.onRcptTo,
    onData(stream, session, callback) {
      inFlight++;
      onData(stream, session, (err, reply) => {
        inFlight--;
        callback(err, reply);
      });
    },
    onClose: handlers.onClose,
    proxy,
    trap: {
      greetingDelayMs: cfg.greetingDelayMs,
      dataTimeoutMs: cfg.dataTimeoutMs,
      commandTimeoutMs: cfg.idleTimeoutMs,
      ...handlers.hooks,
    },
  });
  server.on('error', (err: Error) => log.warn('smtp_error', { error: err.message }));

  await new Promise<void>((resolve, reject) => {
    server.server.once('error', reject);
    server.listen({ port: cfg.smtpPort, host: cfg.smtpHost, backlog: cfg.smtpBacklog }, () => {
      server.server.off('error', reject);
      resolve();
    });
  });
  log.info('listening', {
    host: cfg.smtpHost,
    port: cfg.smtpPort,
    tls: tls.source,
    rules: ruleSet.rules.length,
    ...(proxy ? { proxy_from: cfg.proxyFrom.join(',') } : {}),
  });
  process.send?.({ type: 'acceptor:listening', slot } satisfies WorkerToPrimary);

  drain = (why) => {
    log.info('draining', { why, connections: server.connections.size, in_data: inFlight });
    // Sessions not inside DATA are told now instead of idling until the grace period ends.
    for (const conn of server.connections as Set<TrapConnection>) {
      if (!conn._dataStream) conn.send(421, `${cfg.me} Service shutting down, try again later`);
    }
    server.close(async () => {
      const deadline = Date.now() + 5000;
      while (inFlight > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      // The server counts a connection gone before smtp-server reports its session closed (a turn or two later):
      // wait for those reports, whose session ends go out in the last batch.
      while (handlers.openSessions() > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
      await Promise.race([intel.flush(), new Promise((r) => setTimeout(r, INTEL_FLUSH_MS).unref())]);
      log.info('stopped', { in_data: inFlight, intel_events_dropped: intel.dropped });
      await exitAfterFinalPush(metrics, exitCode);
    });
  };
  if (stopRequested !== null) drain(stopRequested);
}
