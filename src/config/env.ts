/**
 * The environment: the settings table (settings.ts) read from the process environment and an optional `.env` file,
 * validated once into a frozen object. A bad value stops the trap with a ConfigError that names the variable, the
 * value, what is allowed and, for a value from `.env`, the file and line.
 *
 * A variable set in the real environment, even to an empty value, wins over `.env` (dotenv never overrides).
 * Only the primary calls this when the trap runs; every process it forks gets the result from it.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { config as dotenvConfig } from 'dotenv';
import { ConfigError } from '../errors';
import { LISTING_DIR, LISTING_STATE_FILE, LISTING_ZONE_FILE, TLS_DIR } from '../spool-layout';
import { checkPresence, checkValues, SETTINGS, type ParseContext, type SettingValues } from './settings';

export type { LogLevel } from '../log';

export interface TrapConfig extends SettingValues {
  /** SPOOL_DIR/.tls, where a generated STARTTLS pair lives. */
  readonly tlsGeneratedDir: string;
  /** LISTING_ZONE_FILE, absolute; SPOOL_DIR/.listing/listing.ip4set when unset. */
  readonly listingZoneFile: string;
  /** SPOOL_DIR/.listing/listing.jsonl, the persisted listing. */
  readonly listingStateFile: string;
  /** The .env file that was read, or null when there was none. */
  readonly envFile: string | null;
  /** Non-fatal findings, e.g. unknown variables in .env that look like ours; the primary logs them. */
  readonly warnings: readonly string[];
}

/** Names of every variable the trap reads. */
export const SETTING_NAMES: readonly string[] = Object.freeze(SETTINGS.map((s) => s.name));

/** Prefixes of the trap's variables: an unknown one in .env is most likely a typo worth a warning. */
const LOOKS_OURS = /^(?:SMTP|METRICS|SPOOL|CONFIG|TLS|MAX|RCPT|RDNS|FORWARD|QUEUE|RUN|LOG|IDLE|DATA|SHUTDOWN|GREETING|LISTING|PROXY|FINGERPRINT|TAIL)_|^WORKERS?$|^ME$/;

function shown(value: string): string {
  const v = value.length > 200 ? value.slice(0, 200) + '...' : value;
  return JSON.stringify(v);
}

/** Whether binding `::` can work: a kernel with IPv6 disabled has no IPv6 address, not even ::1 on lo. */
function hostHasIPv6(): boolean {
  try {
    return Object.values(os.networkInterfaces()).some((list) => (list ?? []).some((a) => a.family === 'IPv6'));
  } catch {
    return false;
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

/** The line of `.env` that sets `name` (the last one, as dotenv keeps the last), for error messages. */
function envFileLine(file: string, name: string): number | null {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch {
    return null;
  }
  const re = new RegExp(`^\\s*(?:export\\s+)?${name}\\s*=`);
  let found: number | null = null;
  text.split('\n').forEach((line, i) => {
    if (re.test(line)) found = i + 1;
  });
  return found;
}

/**
 * Loads `.env` (opts.envFile, default CWD/.env; a missing file is fine), validates every variable and returns the
 * frozen configuration. Throws ConfigError naming the first bad variable. Does not modify `env`.
 */
export function loadSettings(env: NodeJS.ProcessEnv = process.env, opts: { envFile?: string; cwd?: string } = {}): TrapConfig {
  const cwd = path.resolve(opts.cwd ?? process.cwd());
  const envFile = path.resolve(cwd, opts.envFile ?? '.env');
  const { merged, loaded, keys } = readEnvFile(envFile, env);
  const fromFile = new Set(keys.filter((k) => env[k] === undefined));
  const raw = (name: string): string | null => {
    const v = merged[name];
    if (v === undefined) return null;
    const t = v.trim();
    return t === '' ? null : t;
  };
  const where = (name: string): string => {
    if (!fromFile.has(name)) return '';
    const line = envFileLine(envFile, name);
    return ` (set in ${envFile}${line ? `:${line}` : ''})`;
  };
  const failWith = (name: string, reason: string): never => {
    throw new ConfigError(name, reason + where(name));
  };

  checkPresence((name) => raw(name) !== null, failWith);
  const facts = { cwd, hostHasIPv6: hostHasIPv6(), hostname: os.hostname(), cpus: os.availableParallelism() };
  const values: Record<string, unknown> = {};
  for (const s of SETTINGS) {
    const ctx: ParseContext = {
      ...facts,
      name: s.name,
      fail: (value, allowed) => failWith(s.name, `invalid value ${shown(value)}: ${allowed}`),
    };
    values[s.key] = s.parser.parse(raw(s.name), ctx);
  }
  const settings = values as unknown as SettingValues;
  checkValues(settings, failWith);

  const warnings = keys
    .filter((k) => !SETTING_NAMES.includes(k) && LOOKS_OURS.test(k))
    .map((k) => `${envFile}: unknown variable ${k} (ignored); see .env.example`);
  return Object.freeze({
    ...settings,
    tlsGeneratedDir: path.join(settings.spoolDir, TLS_DIR),
    listingZoneFile: settings.listingZoneFile ?? path.join(settings.spoolDir, LISTING_DIR, LISTING_ZONE_FILE),
    listingStateFile: path.join(settings.spoolDir, LISTING_DIR, LISTING_STATE_FILE),
    envFile: loaded ? envFile : null,
    warnings: Object.freeze(warnings),
  });
}
