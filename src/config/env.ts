/**
 * The trap's settings: environment variables, optionally from a `.env` file, validated once at start into a frozen,
 * typed object. A bad value stops the trap with a ConfigError that names the variable, the value and what is
 * allowed, instead of surfacing later as an odd runtime failure.
 *
 * Conventions (also in .env.example):
 *  - A variable that is unset or empty (after trimming) takes its default. A variable set in the real environment,
 *    even to an empty value, wins over `.env` (dotenv never overrides).
 *  - Integers are plain decimal digits; MAX_MESSAGE_SIZE also takes a k/m/g suffix (powers of 1024).
 *  - Booleans are true/false/1/0/yes/no, and word values (LOG_LEVEL, RCPT_DEFAULT) are case-insensitive.
 */
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { config as dotenvConfig } from 'dotenv';
import { ConfigError } from '../errors';
import { parseCidrList } from './cidr-list';
import { parseRcptRegexp, type ConfigProblem, type RcptDefaultCode, type RcptRule } from './rcpt-regexp';
import { DEFAULT_ROUTES, parseRoutes, type Route } from './routes';

export type LogLevel = 'error' | 'warn' | 'info' | 'debug';

export interface TrapConfig {
  readonly smtpHost: string;
  readonly smtpPort: number;
  readonly smtpBacklog: number;
  readonly workers: number;
  /** Absolute. */
  readonly spoolDir: string;
  /** Absolute. */
  readonly configDir: string;
  readonly me: string;
  readonly metricsHost: string;
  readonly metricsPort: number;
  readonly metricsPushIntervalMs: number;
  readonly logLevel: LogLevel;
  readonly maxMessageSize: number;
  readonly maxRecipients: number;
  readonly spoolFsync: boolean;
  readonly rcptDefault: RcptDefaultCode;
  /** 0 = no reverse DNS lookups. */
  readonly rdnsTimeoutMs: number;
  /** Absolute paths, both set or both null (then the daemon generates a pair into tlsGeneratedDir). */
  readonly tlsKeyFile: string | null;
  readonly tlsCertFile: string | null;
  /** SPOOL_DIR/.tls */
  readonly tlsGeneratedDir: string;
  readonly maxConnectionsPerWorker: number;
  /** 0 = unlimited. */
  readonly maxConnectionsPerIp: number;
  readonly greetingDelayMs: number;
  readonly idleTimeoutMs: number;
  readonly dataTimeoutMs: number;
  readonly shutdownGraceMs: number;
  readonly spoolSweepMinAgeMs: number;
  readonly queueScanIntervalMs: number;
  /** Unprivileged account to switch to after binding; null = stay as started. */
  readonly runAs: { readonly user: string; readonly group: string | null } | null;
  readonly forwardRetryBaseMs: number;
  readonly forwardRetryMaxMs: number;
  readonly forwardMaxAttempts: number;
  /** Canonical CIDRs whose connections must begin with a PROXY header; empty = PROXY protocol off. */
  readonly proxyFrom: readonly string[];
  readonly proxyTimeoutMs: number;
  /** The .env file that was read, or null when there was none. */
  readonly envFile: string | null;
  /** Non-fatal findings, e.g. unknown SPAMTRAPD-looking variables in .env; the caller logs them. */
  readonly warnings: readonly string[];
}

const DAY_MS = 86_400_000;

/** Every variable the trap reads, with its default as documented in .env.example. */
export const ENV_DEFAULTS: Readonly<Record<string, string>> = Object.freeze({
  SMTP_HOST: '(:: when the host has IPv6, else 0.0.0.0)',
  SMTP_PORT: '25',
  SMTP_BACKLOG: '4096',
  WORKERS: '(os.availableParallelism())',
  SPOOL_DIR: './spool',
  CONFIG_DIR: './config',
  ME: '(os.hostname())',
  METRICS_HOST: '127.0.0.1',
  METRICS_PORT: '9725',
  METRICS_PUSH_INTERVAL_MS: '1000',
  LOG_LEVEL: 'info',
  MAX_MESSAGE_SIZE: '10485760',
  MAX_RECIPIENTS: '1000',
  SPOOL_FSYNC: 'false',
  RCPT_DEFAULT: 'OK',
  RDNS_TIMEOUT_MS: '1000',
  TLS_KEY_FILE: '',
  TLS_CERT_FILE: '',
  MAX_CONNECTIONS_PER_WORKER: '5000',
  MAX_CONNECTIONS_PER_IP: '0',
  GREETING_DELAY_MS: '0',
  IDLE_TIMEOUT_MS: '60000',
  DATA_TIMEOUT_MS: '120000',
  SHUTDOWN_GRACE_MS: '10000',
  SPOOL_SWEEP_MIN_AGE_MS: '60000',
  QUEUE_SCAN_INTERVAL_MS: '5000',
  RUN_AS: '',
  FORWARD_RETRY_BASE_MS: '30000',
  FORWARD_RETRY_MAX_MS: '3600000',
  FORWARD_MAX_ATTEMPTS: '20',
  PROXY_FROM: '',
  PROXY_TIMEOUT_MS: '5000',
});

/** Prefixes of the trap's variables: an unknown one in .env is most likely a typo worth a warning. */
const LOOKS_OURS = /^(?:SMTP|METRICS|SPOOL|CONFIG|TLS|MAX|RCPT|RDNS|FORWARD|QUEUE|RUN|LOG|IDLE|DATA|SHUTDOWN|GREETING|PROXY)_|^WORKERS?$|^ME$/;

function shown(value: string): string {
  const v = value.length > 200 ? value.slice(0, 200) + '...' : value;
  return JSON.stringify(v);
}

function bad(name: string, value: string, allowed: string): never {
  throw new ConfigError(name, `invalid value ${shown(value)}: ${allowed}`);
}

/** Whether binding `::` can work: a kernel with IPv6 disabled has no IPv6 address, not even ::1 on lo. */
function hostHasIPv6(): boolean {
  try {
    return Object.values(os.networkInterfaces()).some((list) => (list ?? []).some((a) => a.family === 'IPv6'));
  } catch {
    return false;
  }
}

function isHostName(h: string): boolean {
  if (h.length === 0 || h.length > 253) return false;
  return h
    .replace(/\.$/, '')
    .split('.')
    .every((label) => /^[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$/.test(label));
}

class Reader {
  constructor(private readonly env: Record<string, string | undefined>) {}

  /** The trimmed value, or null when unset or empty. */
  raw(name: string): string | null {
    const v = this.env[name];
    if (v === undefined) return null;
    const t = v.trim();
    return t === '' ? null : t;
  }

  int(name: string, def: number, min: number, max: number, note = ''): number {
    const v = this.raw(name);
    if (v === null) return def;
    const allowed = `expected a whole number from ${min} to ${max}${note}`;
    if (!/^\d+$/.test(v)) bad(name, v, allowed);
    const n = Number(v);
    if (!Number.isSafeInteger(n) || n < min || n > max) bad(name, v, allowed);
    return n;
  }

  size(name: string, def: number, min: number, max: number): number {
    const v = this.raw(name);
    if (v === null) return def;
    const allowed = `expected a size in bytes from ${min} to ${max}, optionally with a k, m or g suffix (x1024)`;
    const m = /^(\d+)([kmg]?)$/i.exec(v);
    if (!m) bad(name, v, allowed);
    const mult = { '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3 }[m[2].toLowerCase() as '' | 'k' | 'm' | 'g'];
    const n = Number(m[1]) * mult;
    if (!Number.isSafeInteger(n) || n < min || n > max) bad(name, v, allowed);
    return n;
  }

  bool(name: string, def: boolean): boolean {
    const v = this.raw(name);
    if (v === null) return def;
    const l = v.toLowerCase();
    if (l === 'true' || l === '1' || l === 'yes') return true;
    if (l === 'false' || l === '0' || l === 'no') return false;
    return bad(name, v, 'expected true, false, 1, 0, yes or no');
  }

  oneOf<T extends string>(name: string, def: T, values: readonly T[], fold: (s: string) => string): T {
    const v = this.raw(name);
    if (v === null) return def;
    const f = fold(v);
    const hit = values.find((x) => x === f);
    if (hit === undefined) bad(name, v, `expected one of ${values.join(', ')}`);
    return hit;
  }

  host(name: string, def: string): string {
    const v = this.raw(name);
    if (v === null) return def;
    const unbracketed = /^\[(.*)\]$/.exec(v)?.[1] ?? v;
    if (net.isIP(unbracketed) !== 0 || isHostName(unbracketed)) return unbracketed;
    return bad(name, v, 'expected an IP address (IPv6 with or without brackets) or a host name');
  }

  dir(name: string, def: string, cwd: string): string {
    const v = this.raw(name) ?? def;
    if (v.includes('\0')) bad(name, v, 'expected a path');
    return path.resolve(cwd, v);
  }
}

function readEnvFile(file: string, base: Record<string, string | undefined>): {
  merged: Record<string, string | undefined>;
  loaded: boolean;
  keys: string[];
} {
  const merged: Record<string, string | undefined> = { ...base };
  // Every option is given, because dotenv otherwise takes DOTENV_* variables from process.env as options.
  const result = dotenvConfig({
    path: file,
    processEnv: merged,
    quiet: true,
    override: false,
    debug: false,
    encoding: 'utf8',
    fast: false,
  });
  if (result.error) {
    const code = (result.error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return { merged: { ...base }, loaded: false, keys: [] };
    throw new ConfigError(file, `cannot read the .env file: ${result.error.message}`);
  }
  return { merged, loaded: true, keys: Object.keys(result.parsed ?? {}) };
}

/**
 * Loads `.env` (opts.envFile, default CWD/.env; a missing file is fine), validates every variable and returns the
 * frozen configuration. Throws ConfigError naming the first bad variable. Does not modify `env`.
 */
export function loadConfig(
  env: NodeJS.ProcessEnv = process.env,
  opts: { envFile?: string; cwd?: string } = {},
): TrapConfig {
  const cwd = path.resolve(opts.cwd ?? process.cwd());
  const envFile = path.resolve(cwd, opts.envFile ?? '.env');
  const { merged, loaded, keys } = readEnvFile(envFile, env);
  const r = new Reader(merged);
  const warnings: string[] = [];
  for (const k of keys) {
    if (!(k in ENV_DEFAULTS) && LOOKS_OURS.test(k)) {
      warnings.push(`${envFile}: unknown variable ${k} (ignored); see .env.example`);
    }
  }

  const smtpHost = r.host('SMTP_HOST', hostHasIPv6() ? '::' : '0.0.0.0');
  const smtpPort = r.int('SMTP_PORT', 25, 0, 65535, ' (0 = any free port)');
  const smtpBacklog = r.int('SMTP_BACKLOG', 4096, 1, 65535);
  const workers = r.int('WORKERS', Math.max(1, os.availableParallelism()), 1, 1024);
  const spoolDir = r.dir('SPOOL_DIR', './spool', cwd);
  const configDir = r.dir('CONFIG_DIR', './config', cwd);

  const meRaw = r.raw('ME');
  const me = meRaw ?? os.hostname();
  // ME appears in the greeting and the Received header: one printable token.
  if (!/^[\x21-\x7e]{1,253}$/.test(me)) {
    bad('ME', me, meRaw === null ? 'os.hostname() is not usable as ME; set ME to this host\'s name' : 'expected a host name (printable, no spaces, at most 253 characters)');
  }

  const metricsHost = r.host('METRICS_HOST', '127.0.0.1');
  const metricsPort = r.int('METRICS_PORT', 9725, 0, 65535, ' (0 = any free port)');
  const metricsPushIntervalMs = r.int('METRICS_PUSH_INTERVAL_MS', 1000, 10, 1000);
  const logLevel = r.oneOf<LogLevel>('LOG_LEVEL', 'info', ['error', 'warn', 'info', 'debug'], (s) => s.toLowerCase());
  const maxMessageSize = r.size('MAX_MESSAGE_SIZE', 10485760, 1024, 1024 ** 3);
  const maxRecipients = r.int('MAX_RECIPIENTS', 1000, 1, 100000);
  const spoolFsync = r.bool('SPOOL_FSYNC', false);
  const rcptDefault = r.oneOf<RcptDefaultCode>('RCPT_DEFAULT', 'OK', ['OK', 'DENY', 'DENYSOFT'], (s) => s.toUpperCase());
  const rdnsTimeoutMs = r.int('RDNS_TIMEOUT_MS', 1000, 0, 60000, ' (0 = no reverse DNS)');

  const keyRaw = r.raw('TLS_KEY_FILE');
  const certRaw = r.raw('TLS_CERT_FILE');
  if ((keyRaw === null) !== (certRaw === null)) {
    const [set, unset] = keyRaw === null ? ['TLS_CERT_FILE', 'TLS_KEY_FILE'] : ['TLS_KEY_FILE', 'TLS_CERT_FILE'];
    throw new ConfigError(unset, `is not set but ${set} is: set both (your key and certificate) or neither (a self-signed pair is generated)`);
  }
  const tlsFile = (name: string, v: string | null): string | null => {
    if (v === null) return null;
    const p = path.resolve(cwd, v);
    try {
      fs.accessSync(p, fs.constants.R_OK);
    } catch (err) {
      bad(name, v, `expected a readable file (${(err as NodeJS.ErrnoException).code ?? (err as Error).message} for ${p})`);
    }
    return p;
  };
  const tlsKeyFile = tlsFile('TLS_KEY_FILE', keyRaw);
  const tlsCertFile = tlsFile('TLS_CERT_FILE', certRaw);

  const maxConnectionsPerWorker = r.int('MAX_CONNECTIONS_PER_WORKER', 5000, 1, 1_000_000);
  const maxConnectionsPerIp = r.int('MAX_CONNECTIONS_PER_IP', 0, 0, 1_000_000, ' (0 = unlimited)');
  const greetingDelayMs = r.int('GREETING_DELAY_MS', 0, 0, 60000);
  const idleTimeoutMs = r.int('IDLE_TIMEOUT_MS', 60000, 1000, DAY_MS);
  const dataTimeoutMs = r.int('DATA_TIMEOUT_MS', 120000, 1000, DAY_MS);
  const shutdownGraceMs = r.int('SHUTDOWN_GRACE_MS', 10000, 0, 3_600_000);
  const spoolSweepMinAgeMs = r.int('SPOOL_SWEEP_MIN_AGE_MS', 60000, 0, DAY_MS);
  const queueScanIntervalMs = r.int('QUEUE_SCAN_INTERVAL_MS', 5000, 100, 3_600_000);

  let runAs: TrapConfig['runAs'] = null;
  const runAsRaw = r.raw('RUN_AS');
  if (runAsRaw !== null) {
    const name = '(?:[A-Za-z_][A-Za-z0-9._-]{0,31}\\$?|\\d{1,10})';
    const m = new RegExp(`^(${name})(?::(${name}))?$`).exec(runAsRaw);
    if (!m) bad('RUN_AS', runAsRaw, 'expected user or user:group (names or numeric ids), or empty to keep the current user');
    runAs = Object.freeze({ user: m[1], group: m[2] ?? null });
  }

  const forwardRetryBaseMs = r.int('FORWARD_RETRY_BASE_MS', 30000, 100, DAY_MS);
  const forwardRetryMaxMs = r.int('FORWARD_RETRY_MAX_MS', 3600000, 100, 7 * DAY_MS);
  if (forwardRetryMaxMs < forwardRetryBaseMs) {
    bad('FORWARD_RETRY_MAX_MS', String(forwardRetryMaxMs), `must not be less than FORWARD_RETRY_BASE_MS (${forwardRetryBaseMs})`);
  }
  const forwardMaxAttempts = r.int('FORWARD_MAX_ATTEMPTS', 20, 1, 1000);
  const proxyFrom = Object.freeze(parseCidrList('PROXY_FROM', r.raw('PROXY_FROM')));
  const proxyTimeoutMs = r.int('PROXY_TIMEOUT_MS', 5000, 100, 60000);

  return Object.freeze({
    smtpHost,
    smtpPort,
    smtpBacklog,
    workers,
    spoolDir,
    configDir,
    me,
    metricsHost,
    metricsPort,
    metricsPushIntervalMs,
    logLevel,
    maxMessageSize,
    maxRecipients,
    spoolFsync,
    rcptDefault,
    rdnsTimeoutMs,
    tlsKeyFile,
    tlsCertFile,
    tlsGeneratedDir: path.join(spoolDir, '.tls'),
    maxConnectionsPerWorker,
    maxConnectionsPerIp,
    greetingDelayMs,
    idleTimeoutMs,
    dataTimeoutMs,
    shutdownGraceMs,
    spoolSweepMinAgeMs,
    queueScanIntervalMs,
    runAs,
    forwardRetryBaseMs,
    forwardRetryMaxMs,
    forwardMaxAttempts,
    proxyFrom,
    proxyTimeoutMs,
    envFile: loaded ? envFile : null,
    warnings: Object.freeze(warnings),
  });
}

export function configFiles(cfg: Pick<TrapConfig, 'configDir'>): { rcptRegexp: string; routes: string } {
  return {
    rcptRegexp: path.join(cfg.configDir, 'rcpt_regexp'),
    routes: path.join(cfg.configDir, 'routes'),
  };
}

/** The file's text, or null when it does not exist. */
function readOptional(file: string): string | null {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new ConfigError(file, `cannot read: ${(err as Error).message}`);
  }
}

export interface LoadedRules {
  rules: RcptRule[];
  /** Skipped rcpt_regexp lines; the trap runs without them. */
  problems: ConfigProblem[];
  routes: Route[];
  /** The files used; null = absent (no rules / DEFAULT_ROUTES). */
  sources: { rcptRegexp: string | null; routes: string | null };
}

/**
 * Reads config/rcpt_regexp and config/routes. A missing rcpt_regexp means no rules (every recipient gets the
 * default decision); a missing routes file means DEFAULT_ROUTES. An unreadable file, or a bad routes line, throws
 * ConfigError.
 */
export function loadRules(cfg: Pick<TrapConfig, 'configDir'>): LoadedRules {
  // A missing rcpt_regexp or routes file means "no rules" or "default routing"; a missing directory is a typo or an
  // unmounted volume, and accepting every recipient into the default queues because of it would be silent damage.
  let st: fs.Stats;
  try {
    st = fs.statSync(cfg.configDir);
  } catch (err) {
    throw new ConfigError('CONFIG_DIR', `${cfg.configDir}: ${(err as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such directory' : (err as Error).message}`);
  }
  if (!st.isDirectory()) throw new ConfigError('CONFIG_DIR', `${cfg.configDir}: not a directory`);
  const files = configFiles(cfg);
  const rcptText = readOptional(files.rcptRegexp);
  const routesText = readOptional(files.routes);
  const { rules, problems } = rcptText === null ? { rules: [], problems: [] } : parseRcptRegexp(rcptText, files.rcptRegexp);
  const routes = routesText === null ? [...DEFAULT_ROUTES] : parseRoutes(routesText, files.routes);
  return {
    rules,
    problems,
    routes,
    sources: { rcptRegexp: rcptText === null ? null : files.rcptRegexp, routes: routesText === null ? null : files.routes },
  };
}
