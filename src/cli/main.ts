/**
 * spamtrapd's one command line: start the trap, check its configuration, look inside its queues, read its listing
 * and watch it live. Each command lives in a module of its own; this one only dispatches.
 */
import { explainAddress } from '../config/check';
import { loadConfigDir } from '../config/config-dir';
import { loadSettings } from '../config/env';
import { runPrimary } from '../primary/main';
import { runListingCommand } from './listing';
import { runQueueCommand } from './queue';
import { runTailCommand } from './tail';

const USAGE = `usage: spamtrapd <command> [args]

commands:
  start                      run the trap in the foreground (primary + one acceptor per worker slot)
  check [ADDRESS ...]        validate .env and config/; for each ADDRESS tell which rule and route it gets
  queue stats|list|show|pickup|reinject ...
                             look inside a queue without Perl (spamtrapd queue --help)
  listing [--json] [--min-hits N] [--since T] [--rcpt]
                             the running trap's listed addresses, or its most-hit trap recipients
  tail [--json]              the running trap's filed messages as they come, until Ctrl-C

Configuration comes from the environment and .env; see .env.example.`;

/** The exit status, or undefined while `start` keeps running until a signal. */
export async function runCli(argv: string[]): Promise<number | undefined> {
  const [command, ...args] = argv;
  switch (command) {
    case 'start':
      await runPrimary();
      return undefined;
    case 'check':
      return check(args);
    case 'queue':
      return runQueueCommand(args, loadSettings());
    case 'listing':
      return runListingCommand(args, loadSettings(), { stdout: process.stdout, stderr: process.stderr });
    case 'tail':
      return runTailCommand(args, loadSettings(), { stdout: process.stdout, stderr: process.stderr });
    case undefined:
    case '-h':
    case '--help':
    case 'help':
      process.stdout.write(USAGE + '\n');
      return command === undefined ? 2 : 0;
    default:
      process.stderr.write(`spamtrapd: unknown command ${JSON.stringify(command)}\n${USAGE}\n`);
      return 2;
  }
}

function check(addresses: string[]): number {
  const cfg = loadSettings();
  const loaded = loadConfigDir(cfg.configDir);
  process.stdout.write(`config: ${cfg.configDir}\nspool: ${cfg.spoolDir}\n`);
  process.stdout.write(`rcpt_regexp: ${loaded.rules.length} rules; routes: ${loaded.routes.length} lines\n`);
  for (const p of loaded.problems) process.stdout.write(`${p.file}:${p.line}: ${p.reason} (line skipped)\n`);
  for (const address of addresses) {
    process.stdout.write(explainAddress(loaded.rules, loaded.routes, address, cfg.rcptDefault) + '\n');
  }
  return loaded.problems.length > 0 ? 1 : 0;
}
