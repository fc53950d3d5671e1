/**
 * The config directory: `rcpt_regexp` and `routes`, read in one place. Reading (I/O) and parsing (pure) are apart:
 * the primary reads the files at start and on SIGHUP and hands their text to every process it forks, which parse
 * that text and never read config/ themselves, so a file edited without SIGHUP changes nothing anywhere.
 */
import fs from 'node:fs';
import path from 'node:path';
import { ConfigError } from '../errors';
import { parseRcptRegexp, type ConfigProblem, type RcptRule } from './rcpt-regexp';
import { DEFAULT_ROUTES, parseRoutes, type Route } from './routes';

export function configFiles(cfg: { configDir: string }): { rcptRegexp: string; routes: string } {
  return {
    rcptRegexp: path.join(cfg.configDir, 'rcpt_regexp'),
    routes: path.join(cfg.configDir, 'routes'),
  };
}

/** A config file as read: its path (for file:line in messages) and its text; null when the file does not exist. */
export interface ConfigFileText {
  readonly file: string;
  readonly text: string;
}

export interface ConfigDirTexts {
  readonly rcptRegexp: ConfigFileText | null;
  readonly routes: ConfigFileText | null;
}

export interface LoadedRules {
  rules: RcptRule[];
  /** Skipped rcpt_regexp lines; the trap runs without them. */
  problems: ConfigProblem[];
  routes: Route[];
  /** The files used; null = absent (no rules / DEFAULT_ROUTES). */
  sources: { rcptRegexp: string | null; routes: string | null };
}

/** The file's text, or null when it does not exist. */
function readOptional(file: string): ConfigFileText | null {
  try {
    return { file, text: fs.readFileSync(file, 'utf8') };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new ConfigError(file, `cannot read: ${(err as Error).message}`);
  }
}

/** Reads config/rcpt_regexp and config/routes. A missing directory or an unreadable file throws ConfigError. */
export function readConfigDir(configDir: string): ConfigDirTexts {
  // A missing rcpt_regexp or routes file means "no rules" or "default routing"; a missing directory is a typo or an
  // unmounted volume, and accepting every recipient into the default queues because of it would be silent damage.
  let st: fs.Stats;
  try {
    st = fs.statSync(configDir);
  } catch (err) {
    throw new ConfigError('CONFIG_DIR', `${configDir}: ${(err as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such directory' : (err as Error).message}`);
  }
  if (!st.isDirectory()) throw new ConfigError('CONFIG_DIR', `${configDir}: not a directory`);
  const files = configFiles({ configDir });
  return { rcptRegexp: readOptional(files.rcptRegexp), routes: readOptional(files.routes) };
}

/**
 * Parses what readConfigDir() read. A missing rcpt_regexp means no rules (every recipient gets the default
 * decision); a missing routes file means DEFAULT_ROUTES. A bad routes line throws ConfigError (file:line).
 */
export function parseConfigDir(texts: ConfigDirTexts): LoadedRules {
  const { rules, problems } = texts.rcptRegexp ? parseRcptRegexp(texts.rcptRegexp.text, texts.rcptRegexp.file) : { rules: [], problems: [] };
  const routes = texts.routes ? parseRoutes(texts.routes.text, texts.routes.file) : [...DEFAULT_ROUTES];
  return {
    rules,
    problems,
    routes,
    sources: { rcptRegexp: texts.rcptRegexp?.file ?? null, routes: texts.routes?.file ?? null },
  };
}

/** readConfigDir + parseConfigDir, for the tools that run on their own (`spamtrapd check`). */
export function loadConfigDir(configDir: string): LoadedRules {
  return parseConfigDir(readConfigDir(configDir));
}
