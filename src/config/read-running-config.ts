/**
 * Reading the running configuration: at start and on SIGHUP, by the primary only (running-config.ts says what is
 * handed to the processes it forks). Kept apart so that those processes never load the .env reader.
 */
import { parseConfigDir, readConfigDir, type LoadedRules } from './config-dir';
import { loadSettings, type TrapConfig } from './env';
import type { RunningConfig } from './running-config';
import { SETTINGS } from './settings';

export interface LoadedConfig {
  readonly config: RunningConfig;
  readonly rules: LoadedRules;
}

/** Start: settings from the environment and `.env`, then the config directory they name. Throws ConfigError. */
export function readRunningConfig(env: NodeJS.ProcessEnv = process.env, opts: { cwd?: string; envFile?: string } = {}): LoadedConfig {
  const settings = loadSettings(env, opts);
  const files = readConfigDir(settings.configDir);
  return { config: Object.freeze({ settings, files }), rules: parseConfigDir(files) };
}

export interface Reloaded extends LoadedConfig {
  /** Settings changed in `.env` that only a restart applies; their running values stay. */
  readonly deferred: readonly string[];
}

function same(a: unknown, b: unknown): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

/**
 * SIGHUP: `.env` and config/ read again. Settings marked `reload` take their new values; any other that changed keeps
 * its running value and is named in `deferred` (the spool, the ports, the worker count cannot move under a running
 * trap). Throws ConfigError, and then nothing changes anywhere.
 */
export function reloadRunningConfig(current: RunningConfig, env: NodeJS.ProcessEnv = process.env, opts: { cwd?: string; envFile?: string } = {}): Reloaded {
  const fresh = loadSettings(env, opts);
  const merged: Record<string, unknown> = { ...current.settings, warnings: fresh.warnings };
  const deferred: string[] = [];
  for (const s of SETTINGS) {
    const now = (fresh as unknown as Record<string, unknown>)[s.key];
    if (same(now, (current.settings as unknown as Record<string, unknown>)[s.key])) continue;
    if (s.reload) merged[s.key] = now;
    else deferred.push(s.name);
  }
  const settings = Object.freeze(merged) as unknown as TrapConfig;
  const files = readConfigDir(settings.configDir);
  return { config: Object.freeze({ settings, files }), rules: parseConfigDir(files), deferred };
}

