/**
 * The processes the primary forks. Acceptors are cluster workers: they share the SMTP port (SCHED_NONE: each accepts
 * on the shared socket itself; round-robin would put the primary in the data path and measured ~30% slower). The
 * relay serves no port, so it is a plain child process: node:cluster would end it at once when the primary's IPC
 * channel closes, cutting deliveries in flight, where the relay's own handler stops it gracefully.
 */
import { fork } from 'node:child_process';
import cluster from 'node:cluster';
import path from 'node:path';
import { NODE_FLAGS } from './node-flags';

/** What the primary needs of a forked process, whichever way it was forked. */
export interface Child {
  readonly pid: number;
  connected(): boolean;
  /** Never throws: a channel closing under the send (the child is exiting) makes the message moot. */
  send(msg: unknown): void;
  kill(signal: NodeJS.Signals): void;
  onMessage(fn: (msg: unknown) => void): void;
  onExit(fn: (code: number | null, signal: NodeJS.Signals | null) => void): void;
  onError(fn: (err: Error) => void): void;
}

const WORKERS_DIR = path.join(__dirname, '..', '..', 'workers');

/** NODE_FLAGS, then the primary's own flags (an operator's flag comes last and wins), each flag once. */
function forkExecArgv(): string[] {
  return [...NODE_FLAGS.filter((f) => !process.execArgv.includes(f)), ...process.execArgv];
}

let clusterReady = false;

export function forkAcceptor(slot: number, env: Record<string, string>): Child {
  if (!clusterReady) {
    cluster.schedulingPolicy = cluster.SCHED_NONE;
    cluster.setupPrimary({ exec: path.join(WORKERS_DIR, 'acceptor.js'), execArgv: forkExecArgv() });
    clusterReady = true;
  }
  const w = cluster.fork({ ...env, SPAMTRAPD_SLOT: String(slot) });
  return {
    pid: w.process.pid!,
    connected: () => w.isConnected(),
    send(msg) {
      if (w.isConnected()) w.send(msg as never, undefined, undefined, () => undefined);
    },
    kill: (signal) => void w.process.kill(signal),
    onMessage: (fn) => void w.on('message', fn),
    onExit: (fn) => void w.on('exit', fn),
    onError: (fn) => void w.on('error', fn),
  };
}

export function forkRelay(env: Record<string, string>): Child {
  const c = fork(path.join(WORKERS_DIR, 'relay.js'), [], { execArgv: forkExecArgv(), env: { ...process.env, ...env, SPAMTRAPD_SLOT: 'relay' }, stdio: 'inherit' });
  return {
    pid: c.pid!,
    connected: () => c.connected,
    send(msg) {
      if (c.connected) c.send(msg as never, undefined, undefined, () => undefined);
    },
    kill: (signal) => void c.kill(signal),
    onMessage: (fn) => void c.on('message', fn),
    onExit: (fn) => void c.on('exit', fn),
    onError: (fn) => void c.on('error', fn),
  };
}
