/**
 * GET /listing on the metrics port (docs/listing.md): the listed addresses, as text or as JSON with their evidence,
 * or the most-hit trap recipients. The answer is streamed in batches with the event loop handed back between them
 * and the client's pace respected (a million entries never become one string), and only a few run at once.
 */
import type http from 'node:http';
import { setImmediate as yieldToLoop } from 'node:timers/promises';
import { formatValue } from '../log';
import { sendText, type HttpRoute } from '../metrics/http-server';
import type { FingerprintCatalog } from './fingerprint-catalog';
import { INTEL_LIMITS } from './limits';
import type { Listing, ListingEntry } from './listing';
import { qualifies } from './listing-policy';
import { parseListingQuery, type ListingQuery } from './listing-query';
import type { TopCounts } from './top-counts';

/** What the route reads. */
export interface ListingSource {
  readonly listing: Listing;
  readonly fingerprints: FingerprintCatalog;
  readonly topRecipients: TopCounts;
}

/** Exports at once; more get 503: each holds a copy of the listing's keys while it streams. */
export const MAX_CONCURRENT_EXPORTS = 4;

const TEXT = 'text/plain; charset=utf-8';
const JSON_TYPE = 'application/json; charset=utf-8';
const iso = (ms: number) => new Date(ms).toISOString();

/** One entry as the JSON export shows it. */
export function entryJson(e: ListingEntry, listed: boolean, features: string | null): string {
  return JSON.stringify({
    ip: e.ip,
    listed,
    messages: e.messages,
    connections: e.connections,
    recipients: e.recipients,
    recipients_estimated: e.recipientsEstimated,
    first_seen: iso(e.firstSeen),
    last_seen: iso(e.lastSeen),
    helo: e.helo,
    fingerprint: e.fingerprint,
    fingerprint_features: features,
    last_end: e.lastEnd,
  });
}

/** The answer's pieces, a batch of entries at a time. */
function* addressChunks(src: ListingSource, q: Extract<ListingQuery, { kind: 'addresses' }>, nowMs: number): Generator<string> {
  const policy = src.listing.currentPolicy();
  const minHits = q.minHits ?? policy.minHits;
  const json = q.format === 'json';
  let chunk = json ? '[' : '';
  let n = 0;
  for (const e of src.listing.entries(nowMs)) {
    if (e.messages < minHits || (q.sinceMs !== null && e.lastSeen < q.sinceMs)) continue;
    if (json) chunk += `${n === 0 ? '\n' : ',\n'}${entryJson(e, qualifies(e, nowMs, policy), src.fingerprints.featuresOf(e.fingerprint))}`;
    else chunk += `${e.ip}\n`;
    if (++n % INTEL_LIMITS.listing.writeBatchEntries === 0) {
      yield chunk;
      chunk = '';
    }
  }
  yield json ? `${chunk}${n === 0 ? '' : '\n'}]\n` : chunk;
}

function recipientsBody(src: ListingSource, q: Extract<ListingQuery, { kind: 'recipients' }>): string {
  const top = src.topRecipients.top(q.limit);
  if (q.format === 'json') {
    return JSON.stringify(top.map((t) => ({ rcpt: t.key, messages: t.count, overcount: t.error }))) + '\n';
  }
  return top.map((t) => `${String(t.count).padStart(9)} ${formatValue(t.key)}\n`).join('');
}

/** Writes each chunk as the client takes it; stops early when the client goes away. */
async function stream(res: http.ServerResponse, chunks: Iterable<string>): Promise<void> {
  for (const chunk of chunks) {
    if (res.destroyed) return;
    if (chunk !== '' && !res.write(chunk)) {
      await new Promise<void>((resolve) => {
        const done = () => {
          res.off('drain', done);
          res.off('close', done);
          resolve();
        };
        res.on('drain', done);
        res.on('close', done);
      });
    } else await yieldToLoop();
  }
  if (!res.destroyed) res.end();
}

export function listingRoute(src: ListingSource, opts: { now?: () => number } = {}): HttpRoute {
  const now = opts.now ?? Date.now;
  let running = 0;
  return (req, res, query) => {
    const nowMs = now();
    const q = parseListingQuery(query, nowMs);
    if (typeof q === 'string') return sendText(res, 400, TEXT, `${q}\n`);
    if (q.kind === 'recipients') return sendText(res, 200, q.format === 'json' ? JSON_TYPE : TEXT, recipientsBody(src, q));
    if (running >= MAX_CONCURRENT_EXPORTS) {
      return sendText(res, 503, TEXT, `${MAX_CONCURRENT_EXPORTS} listing exports are running; try again in a moment\n`, { 'Retry-After': '1' });
    }
    res.writeHead(200, { 'Content-Type': q.format === 'json' ? JSON_TYPE : TEXT, 'Cache-Control': 'no-store' });
    if (req.method === 'HEAD') return void res.end();
    running++;
    stream(res, addressChunks(src, q, nowMs))
      .catch(() => res.destroy())
      .finally(() => running--);
  };
}
