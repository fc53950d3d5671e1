/**
 * `spamtrapd tail`: the running trap's filed messages as they come (GET /tail, server-sent events), one line each,
 * until Ctrl-C (exit 0). A line starting with `#` says how many this reader missed by falling behind.
 */
import { parseArgs } from 'node:util';
import type { TrapConfig } from '../config/env';
import { formatDroppedJson, formatDroppedLine, formatTailLine, parseTailJson, SseParser } from '../intel/tail';
import type { CliIo } from './listing';
import { bodyText, getFromTrap, TrapUnreachable, trapEndpoint } from './trap-http';

export const TAIL_USAGE = `usage: spamtrapd tail [--json]

  one line per message the trap files, as it files it: time, client address, HELO, MAIL FROM, recipients,
  queues, size, fingerprint (--json: one JSON object per line). Ctrl-C stops.

Asks the running trap on METRICS_HOST:METRICS_PORT.`;

/** The trap sends a keep-alive comment every 15 s: this long without a byte means the connection is dead. */
const IDLE_MS = 60_000;

export interface TailIo extends CliIo {
  /** Resolves when the reader asks to stop (SIGINT by default). */
  interrupted?: Promise<void>;
}

function onSigint(): Promise<void> {
  return new Promise((resolve) => process.once('SIGINT', () => resolve()));
}

export async function runTailCommand(argv: string[], cfg: Pick<TrapConfig, 'metricsHost' | 'metricsPort'>, io: TailIo): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({ args: argv, options: { json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } } }));
  } catch (err) {
    io.stderr.write(`spamtrapd tail: ${(err as Error).message}\n${TAIL_USAGE}\n`);
    return 2;
  }
  if (values.help) {
    io.stderr.write(TAIL_USAGE + '\n');
    return 0;
  }
  const json = values.json === true;
  const interrupted = io.interrupted ?? onSigint();
  let opened;
  try {
    opened = await getFromTrap(trapEndpoint(cfg), '/tail', IDLE_MS);
  } catch (err) {
    io.stderr.write(`spamtrapd tail: ${err instanceof TrapUnreachable ? err.message : (err as Error).message}\n`);
    return 1;
  }
  const { req, res } = opened;
  if (res.statusCode !== 200) {
    io.stderr.write(`spamtrapd tail: ${(await bodyText(res)).trim()}\n`);
    return 1;
  }
  const parser = new SseParser();
  res.setEncoding('utf8');
  res.on('data', (text: string) => {
    let full = false;
    const print = (line: string) => {
      if (!io.stdout.write(line + '\n')) full = true;
    };
    for (const m of parser.push(text)) {
      if (m.event === 'dropped') {
        const n = Number(/^\{"dropped":(\d+)\}$/.exec(m.data)?.[1]);
        if (Number.isSafeInteger(n)) print(json ? formatDroppedJson(n) : formatDroppedLine(n));
      } else if (m.event === 'message') {
        const e = parseTailJson(m.data);
        if (e) print(json ? m.data : formatTailLine(e));
      }
    }
    // A slow stdout (a pager, a full pipe) stops the stream here, so the trap's per-reader bound and its dropped
    // count apply, instead of this process buffering without end.
    if (full) {
      res.pause();
      io.stdout.once('drain', () => res.resume());
    }
  });
  const ended = new Promise<string | null>((resolve) => {
    res.once('end', () => resolve('the trap closed the stream (it is stopping?)'));
    res.once('error', (err) => resolve(err.message));
    req.once('error', (err) => resolve(err.message));
    // The reader went away (| head): done, not failed.
    io.stdout.once('error', () => resolve(null));
  });
  const outcome = await Promise.race([interrupted.then(() => null), ended]);
  req.destroy();
  if (outcome === null) return 0;
  io.stderr.write(`spamtrapd tail: ${outcome}\n`);
  return 1;
}
