import { httpRequest } from './http';
/** Reading a running trap's listing over HTTP (GET /listing) in tests, and waiting for what acceptors reported. */

/** An entry of GET /listing?format=json. */
export interface ListingJsonEntry {
  ip: string;
  listed: boolean;
  messages: number;
  connections: number;
  recipients: number;
  recipients_estimated: boolean;
  first_seen: string;
  last_seen: string;
  helo: string | null;
  fingerprint: string | null;
  fingerprint_features: string | null;
  last_end: 'quit' | 'drop' | null;
}

/** Every stored entry (min_hits=1), listed or not. */
export async function listingEntries(metricsPort: number): Promise<ListingJsonEntry[]> {
  const r = await httpRequest(metricsPort, '/listing?format=json&min_hits=1');
  if (r.status !== 200) throw new Error(`GET /listing: ${r.status} ${r.body}`);
  return JSON.parse(r.body) as ListingJsonEntry[];
}

export async function listingEntry(metricsPort: number, ip: string): Promise<ListingJsonEntry | undefined> {
  return (await listingEntries(metricsPort)).find((e) => e.ip === ip);
}

/**
 * Waits until the entry of `ip` satisfies `done` (events reach the primary in batches, within a few hundred ms);
 * resolves with it, or rejects after timeoutMs saying what was there.
 */
export async function waitForEntry(
  metricsPort: number,
  ip: string,
  done: (e: ListingJsonEntry | undefined) => boolean,
  timeoutMs = 15_000,
): Promise<ListingJsonEntry | undefined> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const e = await listingEntry(metricsPort, ip);
    if (done(e)) return e;
    if (Date.now() > deadline) throw new Error(`the listing entry of ${ip} never got there; last seen: ${JSON.stringify(e)}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
