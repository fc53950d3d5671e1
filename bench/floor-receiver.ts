/**
 * Floor receivers for bench/smtp-bench.ts: the least a Node.js cluster does per SMTP message, so the bench can tell
 * what the trap costs beyond Node's own sockets. Built like the trap (src/primary.ts): node:cluster, SCHED_NONE, one
 * raw `net` server per worker on one shared port, but with a minimal SMTP line loop instead of smtp-server.
 *   discard  drops every message
 *   write    writes every message with one fs.writeFile (a unique name in DIR) and answers 250 once it is written
 * A floor, not a product: no size or line limits beyond a cap on command lines, no timeouts, no TLS, and the message
 * is written as it came (dot-stuffing kept: smtp-source never sends a line that starts with a dot).
 * It logs like the trap (src/log.ts lines on stdout), which is how the bench finds its processes.
 * Usage: node dist/bench/floor-receiver.js discard|write HOST PORT WORKERS [DIR]
 */
import cluster from 'node:cluster';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { formatLine, type LogFields } from '../src/log';

const END_OF_DATA = Buffer.from('\r\n.\r\n');
/** The CRLF that ended the DATA command line: with it in front, a message that is only ".\r\n" ends at once. */
const DATA_START = Buffer.from('\r\n');
const EMPTY = Buffer.alloc(0);
/** A command line longer than this is not SMTP; the connection is dropped instead of buffering it. */
const MAX_COMMAND_LINE = 64 * 1024;
const EHLO_REPLY = '250-floor.bench\r\n250-PIPELINING\r\n250 8BITMIME\r\n';

type Mode = 'discard' | 'write';

/** `proc=NAME pid=N` first, as in the trap's lines: the bench names processes by that pair. */
function log(event: string, proc: string, fields: LogFields = {}): void {
  process.stdout.write(formatLine('info', event, { proc, pid: process.pid, ...fields }));
}

/** Where CRLF.CRLF ends in `chunk` given the data's last bytes before it (`tail`, at most 4); -1 if not in it. */
export function endOfDataIn(tail: Buffer, chunk: Buffer): number {
  // A terminator that starts in the tail is found in tail + the first 4 bytes of the chunk, and comes first.
  const seam = Buffer.concat([tail, chunk.subarray(0, 4)]);
  const s = seam.indexOf(END_OF_DATA);
  if (s >= 0) return s + END_OF_DATA.length - tail.length;
  const i = chunk.indexOf(END_OF_DATA);
  return i < 0 ? -1 : i + END_OF_DATA.length;
}

/** The last 4 bytes of tail + chunk: all a terminator split across chunks can have started with. */
function lastFour(tail: Buffer, chunk: Buffer): Buffer {
  if (chunk.length >= 4) return Buffer.from(chunk.subarray(chunk.length - 4));
  const both = Buffer.concat([tail, chunk]);
  return both.subarray(Math.max(0, both.length - 4));
}

let written = 0;

/**
 * One connection. Commands may arrive pipelined, several in one chunk; replies are answered strictly in order and
 * sent together per chunk. In write mode nothing after a message is read until its 250 is out.
 */
class Session {
  private input: Buffer = EMPTY;
  private inData = false;
  private tail: Buffer = DATA_START;
  private parts: Buffer[] = [];
  private waiting = false;
  private closed = false;
  private out: string[] = [];

  constructor(
    private readonly socket: net.Socket,
    private readonly mode: Mode,
    private readonly dir: string,
  ) {
    socket.on('data', (chunk: Buffer) => {
      this.input = this.input.length ? Buffer.concat([this.input, chunk]) : chunk;
      this.run();
    });
    socket.on('error', () => socket.destroy());
    socket.on('close', () => (this.closed = true));
    socket.write('220 floor.bench ESMTP\r\n');
  }

  private run(): void {
    while (!this.waiting && !this.closed && this.input.length > 0) {
      if (this.inData ? !this.takeData() : !this.takeCommand()) break;
    }
    this.flush();
  }

  private flush(): void {
    if (this.out.length === 0 || this.socket.destroyed) return;
    this.socket.write(this.out.join(''));
    this.out = [];
  }

  private takeCommand(): boolean {
    const nl = this.input.indexOf(0x0a);
    if (nl < 0) {
      if (this.input.length > MAX_COMMAND_LINE) this.socket.destroy();
      return false;
    }
    const line = this.input.toString('latin1', 0, nl > 0 && this.input[nl - 1] === 0x0d ? nl - 1 : nl);
    this.input = this.input.subarray(nl + 1);
    this.command(line);
    return true;
  }

  private command(line: string): void {
    switch (line.slice(0, 4).toUpperCase()) {
      case 'EHLO':
        this.out.push(EHLO_REPLY);
        break;
      case 'HELO':
        this.out.push('250 floor.bench\r\n');
        break;
      case 'MAIL':
      case 'RCPT':
      case 'RSET':
      case 'NOOP':
        this.out.push('250 2.0.0 Ok\r\n');
        break;
      case 'DATA':
        this.out.push('354 End data with <CR><LF>.<CR><LF>\r\n');
        this.inData = true;
        this.tail = DATA_START;
        this.parts = [];
        break;
      case 'QUIT':
        this.out.push('221 2.0.0 Bye\r\n');
        this.flush();
        this.socket.end();
        this.closed = true;
        break;
      default:
        this.out.push('502 5.5.2 Command not recognized\r\n');
    }
  }

  /** Consumes the input as message data; true when the message ended (the rest of the input is commands again). */
  private takeData(): boolean {
    const chunk = this.input;
    const end = endOfDataIn(this.tail, chunk);
    if (end < 0) {
      if (this.mode === 'write') this.parts.push(chunk);
      this.tail = lastFour(this.tail, chunk);
      this.input = EMPTY;
      return false;
    }
    if (this.mode === 'write') this.parts.push(chunk.subarray(0, end));
    this.input = chunk.subarray(end);
    this.inData = false;
    this.messageDone();
    return true;
  }

  private messageDone(): void {
    if (this.mode === 'discard') {
      this.out.push('250 2.0.0 Ok: discarded\r\n');
      return;
    }
    const data = Buffer.concat(this.parts);
    this.parts = [];
    // Everything up to and including the CRLF before the final ".\r\n".
    const message = data.subarray(0, data.length - 3);
    this.waiting = true;
    this.flush();
    fs.writeFile(path.join(this.dir, `${process.pid}.${++written}`), message, (err) => {
      this.waiting = false;
      this.out.push(err ? `451 4.3.0 ${err.code ?? 'write failed'}\r\n` : '250 2.0.0 Ok: written\r\n');
      this.run();
    });
  }
}

function usage(): never {
  process.stderr.write('usage: node dist/bench/floor-receiver.js discard|write HOST PORT WORKERS [DIR]\n');
  process.exit(2);
}

function primary(args: string[]): void {
  const [mode, host, port, workers, dir] = args;
  if ((mode !== 'discard' && mode !== 'write') || !host || !/^\d+$/.test(port ?? '') || !/^[1-9]\d*$/.test(workers ?? '')) usage();
  if (mode === 'write' && !dir) usage();
  // As src/primary.ts: each worker accepts on the shared socket itself; the primary stays out of the data path.
  cluster.schedulingPolicy = cluster.SCHED_NONE;
  log('starting', 'primary', { mode, host, port, workers });
  let stopping = false;
  for (let i = 0; i < Number(workers); i++) {
    cluster.fork({ FLOOR_SLOT: String(i), FLOOR_MODE: mode, FLOOR_HOST: host, FLOOR_PORT: port, FLOOR_DIR: dir ?? '' });
  }
  // The bench counts `worker_died` lines, as it does for the trap: a floor that lost a worker measured less.
  cluster.on('exit', (w, code, signal) => {
    if (!stopping) log('worker_died', 'primary', { worker: w.process.pid, code, signal });
  });
  process.on('SIGTERM', () => {
    stopping = true;
    for (const w of Object.values(cluster.workers ?? {})) w?.process.kill('SIGKILL');
    process.exit(0);
  });
}

function worker(): void {
  const slot = process.env.FLOOR_SLOT as string;
  const mode = process.env.FLOOR_MODE as Mode;
  const dir = process.env.FLOOR_DIR as string;
  const server = net.createServer((socket) => new Session(socket, mode, dir));
  server.listen({ host: process.env.FLOOR_HOST, port: Number(process.env.FLOOR_PORT), backlog: 4096 }, () => {
    log('listening', `acceptor${slot}`, { mode });
  });
}

if (require.main === module) {
  if (cluster.isPrimary) primary(process.argv.slice(2));
  else worker();
}
