#!/usr/bin/env node
// spamtrapd's one command line: start the trap, check its configuration, look inside its queues.
import { ConfigError } from '../src/errors';
import { explainAddress } from '../src/config/check';
import { loadConfig, loadRules } from '../src/config/env';
import { runPrimary } from '../src/primary';
import { runQueueCommand } from '../src/queue-cli';

const USAGE = `usage: spamtrapd <command> [args]

commands:
  start                      run the trap in the foreground (primary + one acceptor per worker slot)
  check [ADDRESS ...]        validate .env and config/; for each ADDRESS tell which rule and route it gets
  queue stats|list|show|pickup|reinject ...
                             look inside a queue without Perl (spamtrapd queue --help)

Configuration comes from the environment and .env; see .env.example.`;

async function main(argv: string[]): Promise<number> {
  const [command, ...args] = argv;
  switch (command) {
    case 'start':
      await runPrimary(loadConfig());
      return -1; // keeps running until a signal
    case 'check':
      return check(args);
    case 'queue':
      return runQueueCommand(args, loadConfig());
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
  const cfg = loadConfig();
  const loaded = loadRules(cfg);
  process.stdout.write(`config: ${cfg.configDir}\nspool: ${cfg.spoolDir}\n`);
  process.stdout.write(`rcpt_regexp: ${loaded.rules.length} rules; routes: ${loaded.routes.length} lines\n`);
  for (const p of loaded.problems) process.stdout.write(`${p.file}:${p.line}: ${p.reason} (line skipped)\n`);
  for (const address of addresses) {
    process.stdout.write(explainAddress(loaded.rules, loaded.routes, address, cfg.rcptDefault) + '\n');
  }
  return loaded.problems.length > 0 ? 1 : 0;
}

main(process.argv.slice(2)).then(
  (code) => {
    if (code >= 0) process.exitCode = code;
  },
  (err: Error) => {
    if (err instanceof ConfigError) {
      process.stderr.write(`spamtrapd: configuration error: ${err.message}\n`);
      process.exit(2);
    }
    process.stderr.write(`spamtrapd: fatal: ${err.stack ?? err.message}\n`);
    process.exit(1);
  },
);
