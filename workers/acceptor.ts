// Entry point of an acceptor process (forked by the primary through node:cluster).
import { runAcceptor } from '../src/acceptor/main';
import { runMain } from '../src/process-main';

runMain('acceptor', runAcceptor);
