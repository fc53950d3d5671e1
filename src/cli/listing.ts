/**
 * `spamtrapd listing`: the running trap's listing from GET /listing (docs/listing.md), written to stdout as it
 * arrives, so a million addresses can go straight into a pipe.
 */
import { pipeline } from 'node:stream/promises';
import { parseArgs } from 'node:util';
import type { TrapConfig } from '../config/env';
import { bodyText, getFromTrap, TrapUnreachable, trapEndpoint } from './trap-http';

export const LISTING_USAGE = `usage: spamtrapd listing [--json] [--min-hits N] [--since T]
       spamtrapd listing --rcpt [--limit N] [--json]

  (no option)      the listed addresses, one per line (what rbldnsd serves)
  --json           a JSON array of entries with their evidence (messages, connections, recipients, first and
                   last seen, HELO, fingerprint, how the last session ended)
  --min-hits N     addresses with at least N messages instead of LISTING_MIN_HITS (listed or not yet)
  --since T        last seen at or after T: an ISO 8601 time or a duration ago (15m, 2h, 7d)
  --rcpt           the most-hit trap recipients with their message counts instead (--limit N, default 100)

Asks the running trap on METRICS_HOST:METRICS_PORT.`;

/** A quiet answer can still be a big one coming slowly: give up only when nothing arrives for this long. */
const IDLE_MS = 30_000;

export interface CliIo {
  stdout: NodeJS.WritableStream;
  stderr: { write(s: string): unknown };
}

export async function runListingCommand(argv: string[], cfg: Pick<TrapConfig, 'metricsHost' | 'metricsPort'>, io: CliIo): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        json: { type: 'boolean' },
        'min-hits': { type: 'string' },
        since: { type: 'string' },
        rcpt: { type: 'boolean' },
        limit: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    }));
  } catch (err) {
    io.stderr.write(`spamtrapd listing: ${(err as Error).message}\n${LISTING_USAGE}\n`);
    return 2;
  }
  if (values.help) {
    io.stderr.write(LISTING_USAGE + '\n');
    return 0;
  }
  // The trap checks every value and says what is wrong with it (400), so the rules live in one place.
  const q = new URLSearchParams();
  if (values.json) q.set('format', 'json');
  if (values.rcpt) q.set('by', 'rcpt');
  if (values['min-hits'] !== undefined) q.set('min_hits', values['min-hits']);
  if (values.since !== undefined) q.set('since', values.since);
  if (values.limit !== undefined) q.set('limit', values.limit);
  const path = `/listing${q.size > 0 ? `?${q}` : ''}`;
  try {
    const { res } = await getFromTrap(trapEndpoint(cfg), path, IDLE_MS);
    if (res.statusCode !== 200) {
      io.stderr.write(`spamtrapd listing: ${(await bodyText(res)).trim()}\n`);
      return res.statusCode === 400 ? 2 : 1;
    }
    await pipeline(res, io.stdout, { end: false });
    return 0;
  } catch (err) {
    // A reader that went away (| head) is not a failure.
    if ((err as NodeJS.ErrnoException).code === 'EPIPE') return 0;
    io.stderr.write(`spamtrapd listing: ${err instanceof TrapUnreachable ? err.message : `reading the listing failed: ${(err as Error).message}`}\n`);
    return 1;
  }
}
