/**
 * loadSettings: defaults, .env handling (never overriding the real environment), one validation per variable with
 * errors that name the variable, its value and what is allowed.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { ConfigError } from '../src/errors';
import { loadSettings, SETTING_NAMES } from '../src/config/env';
import { repoRoot } from './helpers/paths';

const tmpRoot = fs.mkdtempSync(path.join(os.tmpdir(), 'spamtrapd-env-'));
after(() => fs.rmSync(tmpRoot, { recursive: true, force: true }));
let n = 0;

/** A fresh working directory, optionally with a .env. */
function workdir(dotenv?: string): string {
  const dir = path.join(tmpRoot, String(n++));
  fs.mkdirSync(dir);
  if (dotenv !== undefined) fs.writeFileSync(path.join(dir, '.env'), dotenv);
  return dir;
}

function load(env: Record<string, string>, dotenv?: string) {
  return loadSettings(env, { cwd: workdir(dotenv) });
}

function configError(env: Record<string, string>, dotenv?: string): ConfigError {
  try {
    load(env, dotenv);
  } catch (err) {
    assert.ok(err instanceof ConfigError, String(err));
    return err;
  }
  assert.fail(`expected a ConfigError for ${JSON.stringify(env)}`);
}

describe('defaults', () => {
  test('every documented default, with relative dirs resolved once against cwd', () => {
    const cwd = workdir();
    const cfg = loadSettings({}, { cwd });
    const hasV6 = Object.values(os.networkInterfaces()).some((l) => (l ?? []).some((a) => a.family === 'IPv6'));
    assert.equal(cfg.smtpHost, hasV6 ? '::' : '0.0.0.0');
    assert.equal(cfg.smtpPort, 25);
    assert.equal(cfg.smtpBacklog, 4096);
    assert.equal(cfg.workers, os.availableParallelism());
    assert.equal(cfg.spoolDir, path.join(cwd, 'spool'));
    assert.equal(cfg.configDir, path.join(cwd, 'config'));
    assert.equal(cfg.me, os.hostname());
    assert.equal(cfg.metricsHost, '127.0.0.1');
    assert.equal(cfg.metricsPort, 9725);
    assert.equal(cfg.metricsPushIntervalMs, 1000);
    assert.equal(cfg.logLevel, 'info');
    assert.equal(cfg.maxMessageSize, 10485760);
    assert.equal(cfg.maxRecipients, 1000);
    assert.equal(cfg.spoolFsync, false);
    assert.equal(cfg.spoolWriter, 'inline');
    assert.equal(cfg.rcptDefault, 'OK');
    assert.equal(cfg.rdnsTimeoutMs, 1000);
    assert.equal(cfg.tlsKeyFile, null);
    assert.equal(cfg.tlsCertFile, null);
    assert.equal(cfg.tlsGeneratedDir, path.join(cwd, 'spool', '.tls'));
    assert.equal(cfg.maxConnectionsPerWorker, 5000);
    assert.equal(cfg.maxConnectionsPerIp, 0);
    assert.equal(cfg.greetingDelayMs, 0);
    assert.equal(cfg.idleTimeoutMs, 60000);
    assert.equal(cfg.dataTimeoutMs, 120000);
    assert.equal(cfg.shutdownGraceMs, 10000);
    assert.equal(cfg.spoolSweepMinAgeMs, 60000);
    assert.equal(cfg.queueScanIntervalMs, 5000);
    assert.equal(cfg.runAs, null);
    assert.equal(cfg.forwardRetryBaseMs, 30000);
    assert.equal(cfg.forwardRetryMaxMs, 3600000);
    assert.equal(cfg.forwardMaxAttempts, 20);
    assert.equal(cfg.envFile, null);
    assert.deepEqual(cfg.warnings, []);
    assert.ok(Object.isFrozen(cfg));
  });

  test('empty or blank values mean the default', () => {
    const cfg = load({ SMTP_PORT: '', LOG_LEVEL: '  ', RUN_AS: '' });
    assert.equal(cfg.smtpPort, 25);
    assert.equal(cfg.logLevel, 'info');
    assert.equal(cfg.runAs, null);
  });

  test('absolute dirs stay as given; relative ones resolve against opts.cwd', () => {
    const cfg = load({ SPOOL_DIR: '/var/spool/trap', CONFIG_DIR: 'etc/../conf' });
    assert.equal(cfg.spoolDir, '/var/spool/trap');
    assert.ok(path.isAbsolute(cfg.configDir) && cfg.configDir.endsWith(`${path.sep}conf`));
  });

  test('.env.example lists exactly the variables loadSettings reads, and copied to .env gives the defaults', () => {
    const example = fs.readFileSync(path.join(repoRoot(), '.env.example'), 'utf8');
    const names = [...example.matchAll(/^([A-Z_]+)=/gm)].map((m) => m[1]).sort();
    assert.deepEqual(names, [...SETTING_NAMES].sort());
    for (const name of names) {
      const i = example.indexOf(`\n${name}=`);
      const before = example.slice(0, i).split('\n');
      assert.match(before[before.length - 1], /^# ./, `${name} has a comment line above it`);
      assert.doesNotMatch(before[before.length - 2], /^# /, `${name}: the comment is one line`);
    }
    const cwd = workdir(example);
    const fromExample = loadSettings({}, { cwd });
    const plain = loadSettings({}, { cwd: workdir() });
    // Paths under the working directory differ between the two; everything else must be equal.
    const underCwd = { spoolDir: '', configDir: '', tlsGeneratedDir: '', listingZoneFile: '', listingStateFile: '' };
    assert.deepEqual({ ...fromExample, envFile: null, ...underCwd }, { ...plain, ...underCwd });
    assert.equal(fromExample.envFile, path.join(cwd, '.env'));
  });
});

describe('.env', () => {
  test('values from .env are used; the real environment wins, even when empty', () => {
    const cfg = load({ SMTP_PORT: '2526', LOG_LEVEL: '' }, 'SMTP_PORT=2525\nMAX_RECIPIENTS=7\nLOG_LEVEL=debug\n');
    assert.equal(cfg.smtpPort, 2526);
    assert.equal(cfg.maxRecipients, 7);
    assert.equal(cfg.logLevel, 'info');
  });

  test('the env object passed in is not modified', () => {
    const env = { SMTP_PORT: '2526' };
    loadSettings(env, { cwd: workdir('MAX_RECIPIENTS=7\n') });
    assert.deepEqual(env, { SMTP_PORT: '2526' });
  });

  test('opts.envFile picks another file, relative to cwd', () => {
    const cwd = workdir();
    fs.writeFileSync(path.join(cwd, 'trap.env'), 'METRICS_PORT=9999\n');
    const cfg = loadSettings({}, { cwd, envFile: 'trap.env' });
    assert.equal(cfg.metricsPort, 9999);
    assert.equal(cfg.envFile, path.join(cwd, 'trap.env'));
  });

  test('a missing .env is fine; an unreadable one is a ConfigError naming the file', () => {
    assert.equal(load({}).envFile, null);
    const cwd = workdir();
    fs.mkdirSync(path.join(cwd, '.env'));
    assert.throws(
      () => loadSettings({}, { cwd }),
      (err: unknown) => err instanceof ConfigError && err.where === path.join(cwd, '.env') && /cannot read/.test(err.reason),
    );
  });

  test('DOTENV_* variables in process.env cannot make .env override the environment', () => {
    const saved = { o: process.env.DOTENV_CONFIG_OVERRIDE, p: process.env.DOTENV_CONFIG_PATH };
    process.env.DOTENV_CONFIG_OVERRIDE = 'true';
    process.env.DOTENV_CONFIG_PATH = '/nonexistent/.env';
    try {
      const cfg = load({ SMTP_PORT: '2526' }, 'SMTP_PORT=2525\nMAX_RECIPIENTS=9\n');
      assert.equal(cfg.smtpPort, 2526);
      assert.equal(cfg.maxRecipients, 9);
    } finally {
      if (saved.o === undefined) delete process.env.DOTENV_CONFIG_OVERRIDE;
      else process.env.DOTENV_CONFIG_OVERRIDE = saved.o;
      if (saved.p === undefined) delete process.env.DOTENV_CONFIG_PATH;
      else process.env.DOTENV_CONFIG_PATH = saved.p;
    }
  });

  test('an unknown variable that looks like ours gives a warning, others are ignored', () => {
    const cfg = load({}, 'SMTP_PROT=25\nNODE_OPTIONS=--max-old-space-size=512\nWORKER=3\n');
    assert.equal(cfg.warnings.length, 2);
    assert.match(cfg.warnings[0], /unknown variable SMTP_PROT/);
    assert.match(cfg.warnings[1], /unknown variable WORKER\b/);
  });
});

describe('values', () => {
  test('sizes take k/m/g suffixes (x1024), case-insensitive', () => {
    assert.equal(load({ MAX_MESSAGE_SIZE: '10m' }).maxMessageSize, 10485760);
    assert.equal(load({ MAX_MESSAGE_SIZE: '64K' }).maxMessageSize, 65536);
    assert.equal(load({ MAX_MESSAGE_SIZE: '1g' }).maxMessageSize, 1073741824);
    assert.equal(load({ MAX_MESSAGE_SIZE: '2048' }).maxMessageSize, 2048);
  });

  test('booleans: true/false/1/0/yes/no in any case', () => {
    for (const v of ['true', 'TRUE', '1', 'yes', 'Yes']) assert.equal(load({ SPOOL_FSYNC: v }).spoolFsync, true, v);
    for (const v of ['false', '0', 'no', 'NO']) assert.equal(load({ SPOOL_FSYNC: v }).spoolFsync, false, v);
  });

  test('word values are case-insensitive and normalised', () => {
    assert.equal(load({ LOG_LEVEL: 'DEBUG' }).logLevel, 'debug');
    assert.equal(load({ RCPT_DEFAULT: 'denysoft' }).rcptDefault, 'DENYSOFT');
  });

  test('hosts: IPs (IPv6 with or without brackets) and names', () => {
    assert.equal(load({ SMTP_HOST: '[::1]' }).smtpHost, '::1');
    assert.equal(load({ SMTP_HOST: '192.0.2.7' }).smtpHost, '192.0.2.7');
    assert.equal(load({ METRICS_HOST: 'localhost' }).metricsHost, 'localhost');
    assert.equal(load({ METRICS_HOST: '::' }).metricsHost, '::');
  });

  test('RUN_AS: user, user:group, numeric ids', () => {
    assert.deepEqual(load({ RUN_AS: 'nobody' }).runAs, { user: 'nobody', group: null });
    assert.deepEqual(load({ RUN_AS: 'node:node' }).runAs, { user: 'node', group: 'node' });
    assert.deepEqual(load({ RUN_AS: '1000:1000' }).runAs, { user: '1000', group: '1000' });
  });

  test('TLS files: both, resolved to absolute paths', () => {
    const cwd = workdir();
    fs.writeFileSync(path.join(cwd, 'k.pem'), 'key');
    fs.writeFileSync(path.join(cwd, 'c.pem'), 'cert');
    const cfg = loadSettings({ TLS_KEY_FILE: 'k.pem', TLS_CERT_FILE: 'c.pem' }, { cwd });
    assert.equal(cfg.tlsKeyFile, path.join(cwd, 'k.pem'));
    assert.equal(cfg.tlsCertFile, path.join(cwd, 'c.pem'));
  });

  test('0 ports (any free port) and 0 = off/unlimited where documented', () => {
    const cfg = load({ SMTP_PORT: '0', METRICS_PORT: '0', RDNS_TIMEOUT_MS: '0', MAX_CONNECTIONS_PER_IP: '0' });
    assert.deepEqual([cfg.smtpPort, cfg.metricsPort, cfg.rdnsTimeoutMs, cfg.maxConnectionsPerIp], [0, 0, 0, 0]);
  });
});

describe('errors name the variable, the value and what is allowed', () => {
  const cases: Array<[Record<string, string>, string, RegExp]> = [
    [{ SMTP_PORT: '65536' }, 'SMTP_PORT', /invalid value "65536": expected a whole number from 0 to 65535/],
    [{ SMTP_PORT: '25x' }, 'SMTP_PORT', /"25x"/],
    [{ SMTP_PORT: '-1' }, 'SMTP_PORT', /"-1"/],
    [{ SMTP_PORT: '2.5' }, 'SMTP_PORT', /"2\.5"/],
    [{ SMTP_PORT: '0x19' }, 'SMTP_PORT', /"0x19"/],
    [{ SMTP_PORT: '1e3' }, 'SMTP_PORT', /"1e3"/],
    [{ SMTP_HOST: 'not a host' }, 'SMTP_HOST', /"not a host": expected an IP address/],
    [{ SMTP_BACKLOG: '0' }, 'SMTP_BACKLOG', /from 1 to 65535/],
    [{ WORKERS: '0' }, 'WORKERS', /from 1 to 1024/],
    [{ WORKERS: 'many' }, 'WORKERS', /"many"/],
    [{ ME: 'has space' }, 'ME', /"has space": expected a host name/],
    [{ METRICS_HOST: 'bad_host!' }, 'METRICS_HOST', /"bad_host!"/],
    [{ METRICS_PORT: '99999' }, 'METRICS_PORT', /from 0 to 65535/],
    [{ METRICS_PUSH_INTERVAL_MS: '5000' }, 'METRICS_PUSH_INTERVAL_MS', /from 10 to 1000/],
    [{ LOG_LEVEL: 'verbose' }, 'LOG_LEVEL', /"verbose": expected one of error, warn, info, debug/],
    [{ MAX_MESSAGE_SIZE: '10 m' }, 'MAX_MESSAGE_SIZE', /"10 m": expected a size in bytes .* k, m or g suffix/],
    [{ MAX_MESSAGE_SIZE: '1.5m' }, 'MAX_MESSAGE_SIZE', /"1\.5m"/],
    [{ MAX_MESSAGE_SIZE: '2g' }, 'MAX_MESSAGE_SIZE', /"2g"/],
    [{ MAX_MESSAGE_SIZE: '10mb' }, 'MAX_MESSAGE_SIZE', /"10mb"/],
    [{ MAX_RECIPIENTS: '0' }, 'MAX_RECIPIENTS', /from 1 to 100000/],
    [{ SPOOL_FSYNC: 'on' }, 'SPOOL_FSYNC', /"on": expected true, false, 1, 0, yes or no/],
    [{ RCPT_DEFAULT: 'DECLINED' }, 'RCPT_DEFAULT', /"DECLINED": expected one of OK, DENY, DENYSOFT/],
    [{ RDNS_TIMEOUT_MS: '120000' }, 'RDNS_TIMEOUT_MS', /0 = no reverse DNS/],
    [{ TLS_KEY_FILE: '/k.pem' }, 'TLS_CERT_FILE', /is not set but TLS_KEY_FILE is: set both/],
    [{ TLS_CERT_FILE: '/c.pem' }, 'TLS_KEY_FILE', /is not set but TLS_CERT_FILE is/],
    [{ TLS_KEY_FILE: '/nonexistent/k.pem', TLS_CERT_FILE: '/nonexistent/c.pem' }, 'TLS_KEY_FILE', /readable file \(ENOENT/],
    [{ MAX_CONNECTIONS_PER_WORKER: '0' }, 'MAX_CONNECTIONS_PER_WORKER', /from 1/],
    [{ MAX_CONNECTIONS_PER_IP: 'x' }, 'MAX_CONNECTIONS_PER_IP', /0 = unlimited/],
    [{ GREETING_DELAY_MS: '-5' }, 'GREETING_DELAY_MS', /"-5"/],
    [{ IDLE_TIMEOUT_MS: '10' }, 'IDLE_TIMEOUT_MS', /from 1000/],
    [{ DATA_TIMEOUT_MS: '10' }, 'DATA_TIMEOUT_MS', /from 1000/],
    [{ SHUTDOWN_GRACE_MS: 'soon' }, 'SHUTDOWN_GRACE_MS', /"soon"/],
    [{ SPOOL_SWEEP_MIN_AGE_MS: 'x' }, 'SPOOL_SWEEP_MIN_AGE_MS', /"x"/],
    [{ QUEUE_SCAN_INTERVAL_MS: '10' }, 'QUEUE_SCAN_INTERVAL_MS', /from 100/],
    [{ RUN_AS: 'a:b:c' }, 'RUN_AS', /"a:b:c": expected user or user:group/],
    [{ RUN_AS: 'bad user' }, 'RUN_AS', /"bad user"/],
    [{ FORWARD_RETRY_BASE_MS: '1' }, 'FORWARD_RETRY_BASE_MS', /from 100/],
    [{ FORWARD_RETRY_MAX_MS: '1000' }, 'FORWARD_RETRY_MAX_MS', /must not be less than FORWARD_RETRY_BASE_MS \(30000\)/],
    [{ FORWARD_MAX_ATTEMPTS: '0' }, 'FORWARD_MAX_ATTEMPTS', /from 1 to 1000/],
  ];
  for (const [env, name, reason] of cases) {
    test(`${name}=${JSON.stringify(Object.values(env).join(','))}`, () => {
      const err = configError(env);
      assert.equal(err.where, name);
      assert.match(err.reason, reason);
      assert.ok(err.message.startsWith(`${name}: `));
    });
  }

  test('a bad value from .env is reported the same way', () => {
    const err = configError({}, 'SMTP_PORT=abc\n');
    assert.equal(err.where, 'SMTP_PORT');
    assert.match(err.reason, /"abc"/);
  });

  test('long or control-character values are shown escaped and shortened', () => {
    const err = configError({ LOG_LEVEL: 'x\u0007' + 'y'.repeat(500) });
    assert.match(err.reason, /"x\\u0007y+\.\.\."/);
    assert.ok(err.reason.length < 400);
  });
});
