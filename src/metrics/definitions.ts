import client, { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { TrapRejection } from '../smtp/replies';

/**
 * Every series name the trap exposes. Dashboards, alerts and the tests check against this list, so a rename here is a
 * breaking change for operators.
 */
export const SERIES = {
  connectionsTotal: 'spamtrapd_connections_total',
  connectionsActive: 'spamtrapd_connections_active',
  messagesAccepted: 'spamtrapd_messages_accepted_total',
  messageBytes: 'spamtrapd_message_bytes_total',
  recipients: 'spamtrapd_recipients_total',
  rejections: 'spamtrapd_rejections_total',
  earlyTalkers: 'spamtrapd_early_talkers_total',
  tlsSessions: 'spamtrapd_tls_sessions_total',
  proxyLocal: 'spamtrapd_proxy_local_connections_total',
  proxyRejections: 'spamtrapd_proxy_rejections_total',
  spoolWriteSeconds: 'spamtrapd_spool_write_seconds',
  sessionSeconds: 'spamtrapd_session_seconds',
  forwardDelivered: 'spamtrapd_forward_delivered_total',
  forwardDeferred: 'spamtrapd_forward_deferred_total',
  forwardFailed: 'spamtrapd_forward_failed_total',
  // Owned by the primary (see primary.ts / queue-gauges.ts), never created in a worker.
  queueJobs: 'spamtrapd_queue_jobs',
  queueOldestSeconds: 'spamtrapd_queue_oldest_seconds',
  workerRestarts: 'spamtrapd_worker_restarts_total',
  workers: 'spamtrapd_workers',
  snapshotAgeSeconds: 'spamtrapd_metrics_snapshot_age_seconds',
  // The primary's trap intelligence (src/metrics/intel.ts): no series per client address, ever.
  listingListed: 'spamtrapd_listing_listed',
  listingEntries: 'spamtrapd_listing_entries',
  listingEvictions: 'spamtrapd_listing_evictions_total',
  listingExpirations: 'spamtrapd_listing_expirations_total',
  listingWriteFailures: 'spamtrapd_listing_write_failures_total',
  listingLastWrite: 'spamtrapd_listing_last_write_timestamp_seconds',
  fingerprintMessages: 'spamtrapd_fingerprint_messages_total',
  tailSubscribers: 'spamtrapd_tail_subscribers',
  tailDropped: 'spamtrapd_tail_dropped_total',
  intelEventsDropped: 'spamtrapd_intel_events_dropped_total',
} as const;

/** Prefix given to prom-client's default (process / Node.js runtime) metrics in every process. */
export const DEFAULT_METRICS_PREFIX = 'spamtrapd_';

/** The label that tells per-process series apart: the worker slot (0..N-1) or a role name such as `relay`. */
export const WORKER_LABEL = 'worker';

/** Reply codes counted per recipient; created at zero so `rate()` and absent-series alerts work from the start. */
export const RECIPIENT_CODES = ['250', '450', '550', '421'] as const;

/** Reasons known today; the label is open, the session code may count others. Created at zero for the same reason. */
export const REJECTION_REASONS: readonly TrapRejection[] = [
  'size',
  'too_many_recipients',
  'queue_error',
  'syntax',
  'timeout',
  'connection_limit',
  'shutdown',
];

/**
 * Why a connection from a PROXY_FROM balancer was closed before SMTP: no PROXY signature, a header that breaks the
 * protocol, one longer than the limits, one not complete within PROXY_TIMEOUT_MS, or the peer gone before it was;
 * `reset` is a connection reset before its peer address could even be read (whether it owed a header is unknown:
 * HAProxy's plain layer-4 checks and connect scans do this). A fixed set: the label never carries client bytes.
 */
export const PROXY_REJECTION_REASONS = ['missing', 'malformed', 'oversized', 'timeout', 'closed', 'reset'] as const;
export type ProxyRejectionReason = (typeof PROXY_REJECTION_REASONS)[number];

/*
 * Bucket choices.
 * spool write (tmp write + fsync + link of data and control file): a healthy local disk takes well under a
 * millisecond without fsync and a few ms with it; a loaded or network disk tens to hundreds of ms; anything past 1 s
 * already delays the 250 reply visibly. 0.5 ms .. 5 s in roughly 1-2.5-5 steps keeps p50 and p99 readable in both the
 * healthy and the sick range with 13 buckets.
 * session: bots that connect and drop take ~10 ms; a typical spam delivery 0.1-2 s; tarpitted or slow-drip sessions
 * run into the minutes until the idle timeout (5 min is the classic SMTP command timeout), so 10 ms .. 300 s.
 */
export const SPOOL_WRITE_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5];
export const SESSION_BUCKETS = [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300];

export interface WorkerMetrics {
  connectionsTotal: Counter<never>;
  connectionsActive: Gauge<never>;
  messagesAccepted: Counter<'queue'>;
  messageBytes: Counter<'queue'>;
  recipients: Counter<'code'>;
  rejections: Counter<'reason'>;
  earlyTalkers: Counter<never>;
  tlsSessions: Counter<never>;
  proxyLocal: Counter<never>;
  proxyRejections: Counter<'reason'>;
  spoolWriteSeconds: Histogram<never>;
  sessionSeconds: Histogram<never>;
  forwardDelivered: Counter<never>;
  forwardDeferred: Counter<never>;
  forwardFailed: Counter<never>;
}

/**
 * Creates the trap's own series on `registry`. They carry no `worker` label on purpose: the primary sums them over all
 * workers (and over retired incarnations), which is what an operator asks about; per-process detail lives in the
 * default metrics, which do carry the label. The forward series are created in every process so they exist (at zero)
 * before the relay first runs, which keeps `absent()`-free alert expressions simple.
 */
export function createWorkerMetrics(registry: Registry): WorkerMetrics {
  const registers = [registry];
  const m: WorkerMetrics = {
    connectionsTotal: new client.Counter({
      name: SERIES.connectionsTotal,
      help: 'SMTP connections that reached the session layer (including 421s for the per-IP limit or shutdown; the per-worker cap is counted in rejections).',
      registers,
    }),
    connectionsActive: new client.Gauge({
      name: SERIES.connectionsActive,
      help: 'SMTP connections open right now.',
      registers,
    }),
    messagesAccepted: new client.Counter({
      name: SERIES.messagesAccepted,
      help: 'Messages answered 250 after DATA and committed to a queue.',
      labelNames: ['queue'],
      registers,
    }),
    messageBytes: new client.Counter({
      name: SERIES.messageBytes,
      help: 'Bytes of messages committed to a queue, as stored.',
      labelNames: ['queue'],
      registers,
    }),
    recipients: new client.Counter({
      name: SERIES.recipients,
      help: 'RCPT TO commands answered, by the three-digit reply code sent.',
      labelNames: ['code'],
      registers,
    }),
    rejections: new client.Counter({
      name: SERIES.rejections,
      help: 'Refusals and aborted transactions, by reason.',
      labelNames: ['reason'],
      registers,
    }),
    earlyTalkers: new client.Counter({
      name: SERIES.earlyTalkers,
      help: 'Clients that sent data before the greeting.',
      registers,
    }),
    tlsSessions: new client.Counter({
      name: SERIES.tlsSessions,
      help: 'Sessions upgraded with STARTTLS.',
      registers,
    }),
    proxyLocal: new client.Counter({
      name: SERIES.proxyLocal,
      help: 'Connections from a PROXY_FROM balancer whose header names no client (v2 LOCAL such as health checks, v2 UNSPEC or UNIX, v1 UNKNOWN): answered, not counted as clients.',
      registers,
    }),
    proxyRejections: new client.Counter({
      name: SERIES.proxyRejections,
      help: 'Connections from a PROXY_FROM balancer closed without a reply because their PROXY header was missing, malformed, oversized, late or cut off; reset: reset before the peer address could be read.',
      labelNames: ['reason'],
      registers,
    }),
    spoolWriteSeconds: new client.Histogram({
      name: SERIES.spoolWriteSeconds,
      help: 'Time from the end of DATA (the final dot) until the message is committed in every queue it goes to.',
      buckets: SPOOL_WRITE_BUCKETS,
      registers,
    }),
    sessionSeconds: new client.Histogram({
      name: SERIES.sessionSeconds,
      help: 'Duration of SMTP sessions from accept to close.',
      buckets: SESSION_BUCKETS,
      registers,
    }),
    forwardDelivered: new client.Counter({
      name: SERIES.forwardDelivered,
      help: 'Messages the relay handed to a forward destination for good.',
      registers,
    }),
    forwardDeferred: new client.Counter({
      name: SERIES.forwardDeferred,
      help: 'Forward attempts that failed temporarily and will be retried.',
      registers,
    }),
    forwardFailed: new client.Counter({
      name: SERIES.forwardFailed,
      help: 'Messages the relay gave up on (refused for good or out of retries) and moved to deadletter.',
      registers,
    }),
  };
  for (const code of RECIPIENT_CODES) m.recipients.inc({ code }, 0);
  for (const reason of REJECTION_REASONS) m.rejections.inc({ reason }, 0);
  for (const reason of PROXY_REJECTION_REASONS) m.proxyRejections.inc({ reason }, 0);
  return m;
}
