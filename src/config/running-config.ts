/**
 * The running configuration: the validated settings plus the text of the config directory's files. The primary is
 * its one source: it reads `.env` and config/ at start and on SIGHUP, and hands this object to every process it forks
 * (replacements included), which parse the texts themselves and never read a file. Plain data, so it crosses IPC.
 */
import { ConfigError } from '../errors';
import { parseConfigDir, type ConfigDirTexts, type LoadedRules } from './config-dir';
import type { TrapConfig } from './env';

export interface RunningConfig {
  readonly settings: TrapConfig;
  readonly files: ConfigDirTexts;
}

/** A forked process's view: the rules and routes from the texts it was handed. */
export function rulesOf(config: RunningConfig): LoadedRules {
  try {
    return parseConfigDir(config.files);
  } catch (err) {
    // The primary parsed the same text before handing it over; failing here means the two disagree.
    if (err instanceof ConfigError) throw new Error(`config from the primary does not parse: ${err.message}`);
    throw err;
  }
}
