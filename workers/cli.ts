#!/usr/bin/env node
// Entry point of the `spamtrapd` command (start, check, queue, ...).
import { runCli } from '../src/cli/main';
import { runMain } from '../src/process-main';

runMain('cli', () => runCli(process.argv.slice(2)));
