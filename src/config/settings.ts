/**
 * Every setting the trap reads, in one declarative table: name, default, parser with its limits, one-line meaning.
 * The loader (load-settings.ts), `.env.example` and the README's settings table are all made from it
 * (settings-docs.ts; test/config-settings-table.test.ts fails when the files differ from what the table says).
 *
 * Conventions: a variable that is unset or empty (after trimming) takes its default. Integers are plain decimal
 * digits; sizes also take a k/m/g suffix (powers of 1024). Booleans are true/false/1/0/yes/no, and word values are
 * case-insensitive.
 */
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import type { LogLevel } from '../log';
import { parseCidrList } from '../ip-address';
import type { RcptDefaultCode } from './rcpt-regexp';

/** What a parser may need besides the value: where relative paths start, and the host's facts for computed defaults. */
export interface ParseContext {
  readonly name: string;
  readonly cwd: string;
  readonly hostHasIPv6: boolean;
  readonly hostname: string;
  readonly cpus: number;
  /** Throws the ConfigError naming the variable, its value and what is allowed. */
  fail(value: string, allowed: string): never;
}

export interface Parser<T> {
  /** `raw` is the trimmed value, or null when unset or empty. */
  parse(raw: string | null, ctx: ParseContext): T;
  /** The default as written in `.env.example` (empty when it is computed at start). */
  readonly example: string;
  /** The default as the README shows it. */
  readonly shown: string;
}

export interface SettingDef<K extends string, T> {
  readonly name: string;
  readonly key: K;
  readonly parser: Parser<T>;
  /** One line: the README's "meaning" column and the comment above the variable in `.env.example`. */
  readonly meaning: string;
  /** Takes effect on SIGHUP; any other setting changed in `.env` waits for the next start (and the log says so). */
  readonly reload?: boolean;
}

function setting<K extends string, T>(name: string, key: K, parser: Parser<T>, meaning: string, opts: { reload?: boolean } = {}): SettingDef<K, T> {
  return Object.freeze({ name, key, parser, meaning, reload: opts.reload ?? false });
}

const code = (s: string) => '`' + s + '`';

// ---------------------------------------------------------------------------------------------------------------
// Parsers

function int(def: number, min: number, max: number, note = '', shown?: string): Parser<number> {
  return {
    example: String(def),
    shown: shown ?? code(String(def)),
    parse(raw, ctx) {
      if (raw === null) return def;
      const allowed = `expected a whole number from ${min} to ${max}${note ? ` (${note})` : ''}`;
      if (!/^\d+$/.test(raw)) ctx.fail(raw, allowed);
      const n = Number(raw);
      if (!Number.isSafeInteger(n) || n < min || n > max) ctx.fail(raw, allowed);
      return n;
    },
  };
}

/** An integer whose default is computed at start (e.g. the CPU count). */
function computedInt(def: (ctx: ParseContext) => number, min: number, max: number, shown: string): Parser<number> {
  const inner = int(0, min, max);
  return { example: '', shown, parse: (raw, ctx) => (raw === null ? def(ctx) : inner.parse(raw, ctx)) };
}

const SIZE_UNITS: Record<string, number> = { '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3 };

function size(def: string, min: number, max: number): Parser<number> {
  const parse = (raw: string | null, ctx: ParseContext): number => {
    const v = raw ?? def;
    const allowed = `expected a size in bytes from ${min} to ${max}, optionally with a k, m or g suffix (x1024)`;
    const m = /^(\d+)([kmg]?)$/i.exec(v);
    if (!m) return ctx.fail(v, allowed);
    const n = Number(m[1]) * SIZE_UNITS[m[2].toLowerCase()];
    if (!Number.isSafeInteger(n) || n < min || n > max) ctx.fail(v, allowed);
    return n;
  };
  return { example: def, shown: code(def), parse };
}

function bool(def: boolean): Parser<boolean> {
  return {
    example: String(def),
    shown: code(String(def)),
    parse(raw, ctx) {
      if (raw === null) return def;
      const l = raw.toLowerCase();
      if (l === 'true' || l === '1' || l === 'yes') return true;
      if (l === 'false' || l === '0' || l === 'no') return false;
      return ctx.fail(raw, 'expected true, false, 1, 0, yes or no');
    },
  };
}

function oneOf<T extends string>(def: T, values: readonly T[], fold: (s: string) => string): Parser<T> {
  return {
    example: def,
    shown: code(def),
    parse(raw, ctx) {
      if (raw === null) return def;
      const hit = values.find((x) => x === fold(raw));
      return hit ?? ctx.fail(raw, `expected one of ${values.join(', ')}`);
    },
  };
}

export function isHostName(h: string): boolean {
  if (h.length === 0 || h.length > 253) return false;
  return h
    .replace(/\.$/, '')
    .split('.')
    .every((label) => /^[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$/.test(label));
}

/** An IP address (IPv6 with or without brackets) or a host name. */
function host(def: string | ((ctx: ParseContext) => string), shown?: string): Parser<string> {
  return {
    example: typeof def === 'string' ? def : '',
    shown: shown ?? code(String(def)),
    parse(raw, ctx) {
      if (raw === null) return typeof def === 'string' ? def : def(ctx);
      const unbracketed = /^\[(.*)\]$/.exec(raw)?.[1] ?? raw;
      if (net.isIP(unbracketed) !== 0 || isHostName(unbracketed)) return unbracketed;
      return ctx.fail(raw, 'expected an IP address (IPv6 with or without brackets) or a host name');
    },
  };
}

/** A directory, made absolute against the working directory once, at start. */
function dir(def: string): Parser<string> {
  return {
    example: def,
    shown: code(def),
    parse(raw, ctx) {
      const v = raw ?? def;
      if (v.includes('\0')) ctx.fail(v, 'expected a path');
      return path.resolve(ctx.cwd, v);
    },
  };
}

/** A readable file (made absolute), or null when unset. */
function optionalFile(shown: string): Parser<string | null> {
  return {
    example: '',
    shown,
    parse(raw, ctx) {
      if (raw === null) return null;
      const p = path.resolve(ctx.cwd, raw);
      try {
        fs.accessSync(p, fs.constants.R_OK);
      } catch (err) {
        ctx.fail(raw, `expected a readable file (${(err as NodeJS.ErrnoException).code ?? (err as Error).message} for ${p})`);
      }
      return p;
    },
  };
}

/** ME appears in the greeting and the Received header: one printable token. */
const me: Parser<string> = {
  example: '',
  shown: 'host name',
  parse(raw, ctx) {
    const v = raw ?? ctx.hostname;
    if (!/^[\x21-\x7e]{1,253}$/.test(v)) {
      ctx.fail(v, raw === null ? "os.hostname() is not usable as ME; set ME to this host's name" : 'expected a host name (printable, no spaces, at most 253 characters)');
    }
    return v;
  },
};

export interface RunAsSpec {
  readonly user: string;
  readonly group: string | null;
}

const runAs: Parser<RunAsSpec | null> = {
  example: '',
  shown: 'empty',
  parse(raw, ctx) {
    if (raw === null) return null;
    const name = '(?:[A-Za-z_][A-Za-z0-9._-]{0,31}\\$?|\\d{1,10})';
    const m = new RegExp(`^(${name})(?::(${name}))?$`).exec(raw);
    if (!m) return ctx.fail(raw, 'expected user or user:group (names or numeric ids), or empty to keep the current user');
    return Object.freeze({ user: m[1], group: m[2] ?? null });
  },
};

/** Comma-separated CIDRs, canonical (ip-address.ts says what is refused and why); empty = none. */
function cidrs(shown: string): Parser<readonly string[]> {
  return {
    example: '',
    shown,
    parse: (raw, ctx) => Object.freeze(parseCidrList(ctx.name, raw)),
  };
}

/** A file path made absolute against the working directory, or null when unset (the loader supplies the default). */
function optionalPath(shown: string): Parser<string | null> {
  return {
    example: '',
    shown,
    parse(raw, ctx) {
      if (raw === null) return null;
      if (raw.includes('\0')) ctx.fail(raw, 'expected a path');
      return path.resolve(ctx.cwd, raw);
    },
  };
}

const UNIT_MS: Record<string, number> = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 7 * 86_400_000 };

/** `7d`, `12h`, `90m`, `30s`, `2w`, or digits alone (seconds), in ms; null when it is none of these. */
export function parseDuration(text: string): number | null {
  const m = /^(\d{1,15})\s*([smhdw]?)$/i.exec(text.trim());
  if (!m) return null;
  const ms = Number(m[1]) * UNIT_MS[(m[2] || 's').toLowerCase()];
  return Number.isSafeInteger(ms) ? ms : null;
}

/** A duration with a unit (parseDuration), in ms. */
function duration(def: string, minMs: number, maxMs: number, range: string): Parser<number> {
  return {
    example: def,
    shown: code(def),
    parse(raw, ctx) {
      const v = raw ?? def;
      const ms = parseDuration(v);
      if (ms === null || ms < minMs || ms > maxMs) {
        ctx.fail(v, `expected a duration from ${range}: digits with s, m, h, d or w (e.g. 7d, 12h, 90m, 30s; digits alone are seconds)`);
      }
      return ms!;
    },
  };
}

// ---------------------------------------------------------------------------------------------------------------
// The table

const DAY_MS = 86_400_000;

export const SETTINGS = [
  setting('SMTP_HOST', 'smtpHost', host((ctx) => (ctx.hostHasIPv6 ? '::' : '0.0.0.0'), '`::` (or `0.0.0.0` without IPv6)'), 'Address to listen on for SMTP (`::` also takes IPv4).'),
  setting('SMTP_PORT', 'smtpPort', int(25, 0, 65535, '0 = any free port'), 'SMTP port (0 = any free port, for tests).'),
  setting('SMTP_BACKLOG', 'smtpBacklog', int(4096, 1, 65535), 'listen() backlog; the kernel caps it at net.core.somaxconn, so raise that too for connection storms.'),
  setting('WORKERS', 'workers', computedInt((ctx) => Math.max(1, ctx.cpus), 1, 1024, 'available CPUs'), 'Acceptor processes (default: os.availableParallelism()).'),
  setting('SPOOL_DIR', 'spoolDir', dir('./spool'), 'Where the queues live (IPC::DirQueue format); relative paths are resolved against the working directory.'),
  setting('CONFIG_DIR', 'configDir', dir('./config'), 'Where rcpt_regexp and routes live; relative to the working directory.'),
  setting('ME', 'me', me, "This host's name in the greeting and the Received header (default: os.hostname())."),
  setting('METRICS_HOST', 'metricsHost', host('127.0.0.1'), 'Address of /metrics and /healthz; keep it on loopback unless a firewall protects it.'),
  setting('METRICS_PORT', 'metricsPort', int(9725, 0, 65535, '0 = any free port'), 'Port of /metrics and /healthz (0 = any free port).'),
  setting('METRICS_PUSH_INTERVAL_MS', 'metricsPushIntervalMs', int(1000, 10, 1000), 'How often each worker pushes its counters to the primary, in ms (a SIGKILLed worker loses at most this).'),
  setting('LOG_LEVEL', 'logLevel', oneOf<LogLevel>('info', ['error', 'warn', 'info', 'debug'], (s) => s.toLowerCase()), 'error, warn, info or debug.'),
  setting('MAX_MESSAGE_SIZE', 'maxMessageSize', size('10m', 1024, 1024 ** 3), 'Largest message in bytes (k, m, g suffixes = x1024); bigger ones get 552 and nothing is filed.'),
  setting('MAX_RECIPIENTS', 'maxRecipients', int(1000, 1, 100000), 'Recipients per message; further RCPT commands get 452.'),
  setting('SPOOL_FSYNC', 'spoolFsync', bool(false), 'fsync data, control file and directories before 250 (true/false): safer on power loss, slower (see docs/dirqueue.md).'),
  setting('SPOOL_WRITER', 'spoolWriter', oneOf<'inline' | 'thread'>('inline', ['inline', 'thread'], (s) => s.toLowerCase()), 'With SPOOL_FSYNC=false, who makes the queue writes: inline (on each acceptor\'s event loop: least memory, no second V8 isolate per acceptor) or thread (a writer thread per acceptor: a slow disk does not stall sessions). CPU per message: bench/RESULTS.md. See docs/dirqueue.md.'),
  setting('RCPT_DEFAULT', 'rcptDefault', oneOf<RcptDefaultCode>('OK', ['OK', 'DENY', 'DENYSOFT'], (s) => s.toUpperCase()), 'Decision for recipients no rcpt_regexp rule decides (no match or DECLINED): OK, DENY or DENYSOFT.', { reload: true }),
  setting('RDNS_TIMEOUT_MS', 'rdnsTimeoutMs', int(1000, 0, 60000, '0 = no reverse DNS'), 'Reverse DNS timeout for the Received header, in ms (0 = no lookups; the name is then "unknown").'),
  setting('TLS_KEY_FILE', 'tlsKeyFile', optionalFile('generated'), 'STARTTLS private key (PEM); set with TLS_CERT_FILE, or neither for a self-signed pair made in SPOOL_DIR/.tls.'),
  setting('TLS_CERT_FILE', 'tlsCertFile', optionalFile('generated'), 'STARTTLS certificate chain (PEM) for TLS_KEY_FILE.'),
  setting('MAX_CONNECTIONS_PER_WORKER', 'maxConnectionsPerWorker', int(5000, 1, 1_000_000), 'Simultaneous connections per acceptor; more get 421.'),
  setting('MAX_CONNECTIONS_PER_IP', 'maxConnectionsPerIp', int(0, 0, 1_000_000, '0 = unlimited', '`0` (off)'), 'Simultaneous connections per client address and acceptor (0 = unlimited); more get 421.'),
  setting('GREETING_DELAY_MS', 'greetingDelayMs', int(0, 0, 60000), 'Wait this long before the 220 greeting, in ms (0 = greet at once); clients that talk first are recorded as early talkers, not refused.'),
  setting('IDLE_TIMEOUT_MS', 'idleTimeoutMs', int(60000, 1000, DAY_MS), 'Limit from one complete command to the next, in ms (idle or dripping a command byte by byte: 421 either way).'),
  setting('DATA_TIMEOUT_MS', 'dataTimeoutMs', int(120000, 1000, DAY_MS), 'Absolute limit on the DATA phase, in ms.'),
  setting('SHUTDOWN_GRACE_MS', 'shutdownGraceMs', int(10000, 0, 3_600_000), 'On SIGTERM, how long sessions inside DATA may take to finish, in ms.'),
  setting('SPOOL_SWEEP_MIN_AGE_MS', 'spoolSweepMinAgeMs', int(60000, 0, DAY_MS), "tmp/ leftovers of writers this trap did not start are removed only once this old, in ms (its own dead acceptors' at once)."),
  setting('QUEUE_SCAN_INTERVAL_MS', 'queueScanIntervalMs', int(5000, 100, 3_600_000), 'How often queue sizes are re-counted from disk for metrics, in ms; a slow scan stretches the period to 50 times its duration (docs/metrics.md).'),
  setting('RUN_AS', 'runAs', runAs, 'Switch to this account after binding the port: user or user:group (names or numeric ids); empty = stay.'),
  setting('FORWARD_RETRY_BASE_MS', 'forwardRetryBaseMs', int(30000, 100, DAY_MS), 'Forward destinations (config/routes): delay before the first retry, in ms; later retries wait longer.'),
  setting('FORWARD_RETRY_MAX_MS', 'forwardRetryMaxMs', int(3600000, 100, 7 * DAY_MS), 'Longest delay between forward retries, in ms.'),
  setting('FORWARD_MAX_ATTEMPTS', 'forwardMaxAttempts', int(20, 1, 1000), 'Attempts before a message that cannot be forwarded moves to the deadletter queue.'),
  setting('PROXY_FROM', 'proxyFrom', cidrs('empty (off)'), 'Load balancers (comma-separated CIDRs) whose connections must begin with a PROXY v1/v2 header; the client in it is the address recorded (docs/deployment.md).'),
  setting('PROXY_TIMEOUT_MS', 'proxyTimeoutMs', int(5000, 100, 60000), 'Deadline for that PROXY header, in ms; a late, missing or bad one closes the connection without a reply.'),
  setting('LISTING_MIN_HITS', 'listingMinHits', int(1, 1, 1_000_000), 'Trap messages a client address needs to be listed (docs/listing.md).', { reload: true }),
  setting('LISTING_TTL', 'listingTtlMs', duration('7d', 1000, 365 * DAY_MS, '1s to 365d'), 'An address stays listed this long after it was last seen (s, m, h, d or w; digits alone are seconds).', { reload: true }),
  setting('LISTING_EXCLUDE', 'listingExclude', cidrs('empty (none)'), 'Comma-separated CIDRs never listed, nor even counted (your own relays, monitoring probes).', { reload: true }),
  setting('LISTING_MAX_ENTRIES', 'listingMaxEntries', int(1_000_000, 1, 20_000_000), 'Client addresses the listing keeps in memory; beyond it the least recently seen is evicted (about 190 bytes each).'),
  setting('LISTING_WRITE_INTERVAL_MS', 'listingWriteIntervalMs', int(60_000, 1000, 3_600_000), 'How often the listing is saved (SPOOL_DIR/.listing/listing.jsonl) and the rbldnsd files rewritten, in ms: a SIGKILL loses at most this.'),
  setting('LISTING_ZONE_FILE', 'listingZoneFile', optionalPath('`SPOOL_DIR/.listing/listing.ip4set`'), 'rbldnsd ip4set file of the listed IPv4 addresses; the ip6trie file goes beside it (.ip6trie); relative to the working directory.'),
  setting('FINGERPRINT_METRIC_TOP', 'fingerprintMetricTop', int(50, 0, 1000), 'Fingerprint ids with a series of their own in spamtrapd_fingerprint_messages_total; the rest count as other (docs/fingerprints.md).'),
  setting('TAIL_BUFFER', 'tailBuffer', int(1000, 10, 100_000), 'Messages queued per `spamtrapd tail` reader (GET /tail); a reader further behind loses the oldest, and is told how many.'),
] as const;

type Table = typeof SETTINGS;
/** The value of every setting in the table, by key. */
export type SettingValues = { readonly [S in Table[number] as S['key']]: S['parser'] extends Parser<infer T> ? T : never };

/**
 * Checks that involve two settings. `set` tells whether a variable was given; `fail` throws the ConfigError naming
 * the variable. Presence is checked before any value is parsed, so a lone TLS_KEY_FILE is reported as the missing
 * certificate, not as an unreadable key.
 */
export function checkPresence(set: (name: string) => boolean, fail: (name: string, reason: string) => never): void {
  if (set('TLS_KEY_FILE') !== set('TLS_CERT_FILE')) {
    const [given, missing] = set('TLS_KEY_FILE') ? ['TLS_KEY_FILE', 'TLS_CERT_FILE'] : ['TLS_CERT_FILE', 'TLS_KEY_FILE'];
    fail(missing, `is not set but ${given} is: set both (your key and certificate) or neither (a self-signed pair is generated)`);
  }
}

export function checkValues(v: SettingValues, fail: (name: string, reason: string) => never): void {
  if (v.forwardRetryMaxMs < v.forwardRetryBaseMs) {
    fail('FORWARD_RETRY_MAX_MS', `invalid value "${v.forwardRetryMaxMs}": must not be less than FORWARD_RETRY_BASE_MS (${v.forwardRetryBaseMs})`);
  }
}
