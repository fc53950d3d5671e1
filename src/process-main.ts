/**
 * How every entry point in workers/ runs its main: a number it returns is the exit status; a ConfigError is a
 * configuration error (exit 2, the message names the variable or file:line); anything else is fatal (exit 1).
 */
import { ConfigError } from './errors';
import { EXIT_CONFIG, EXIT_FATAL } from './exit-codes';

export function runMain(name: string, main: () => Promise<number | void>): void {
  main().then(
    (code) => {
      if (typeof code === 'number') process.exitCode = code;
    },
    (err: Error) => {
      if (err instanceof ConfigError) {
        process.stderr.write(`spamtrapd: configuration error: ${err.message}\n`);
        process.exit(EXIT_CONFIG);
      }
      process.stderr.write(`spamtrapd ${name} ${process.pid}: fatal: ${err.stack ?? err.message}\n`);
      process.exit(EXIT_FATAL);
    },
  );
}
