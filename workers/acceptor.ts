// Entry point of an acceptor process (forked by the primary through node:cluster).
import { runAcceptor } from '../src/acceptor';

runAcceptor().catch((err: Error) => {
  process.stderr.write(`spamtrapd acceptor ${process.pid}: fatal: ${err.stack ?? err.message}\n`);
  process.exit(1);
});
