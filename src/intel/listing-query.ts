/**
 * The query string of GET /listing (docs/listing.md), checked before anything is read: a value the trap cannot use
 * is answered 400 with the reason, never guessed at.
 *
 *   (none)                 listed addresses, one per line
 *   format=json            the same as a JSON array of entries with their evidence
 *   min_hits=N             addresses with at least N messages instead of LISTING_MIN_HITS (listed or not yet)
 *   since=T                last seen at or after T: an ISO 8601 time, or a duration ago (15m, 2h, 7d)
 *   by=rcpt [limit=N]      the most-hit trap recipients instead, with their message counts (N <= 1000)
 */
import { parseDuration } from '../config/settings';
import { INTEL_LIMITS } from './limits';

export type ListingFormat = 'text' | 'json';

export type ListingQuery =
  | { readonly kind: 'addresses'; readonly format: ListingFormat; readonly minHits: number | null; readonly sinceMs: number | null }
  | { readonly kind: 'recipients'; readonly format: ListingFormat; readonly limit: number };

/** Recipients shown by `by=rcpt` without a limit. */
export const DEFAULT_RCPT_LIMIT = 100;

const KNOWN = new Set(['format', 'min_hits', 'since', 'by', 'limit']);
/** An ISO 8601 date, optionally with a time: what `since` takes besides a duration. */
const ISO_TIME = /^\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?(?:Z|[+-]\d{2}:?\d{2})?)?$/;

function wholeNumber(v: string, min: number, max: number): number | null {
  if (!/^\d{1,10}$/.test(v)) return null;
  const n = Number(v);
  return n >= min && n <= max ? n : null;
}

/** The query, or the reason it is refused (for a 400). `nowMs` anchors a relative `since`. */
export function parseListingQuery(q: URLSearchParams, nowMs: number): ListingQuery | string {
  const seen = new Set<string>();
  for (const key of q.keys()) {
    if (!KNOWN.has(key)) return `unknown parameter ${JSON.stringify(key)}: expected format, min_hits, since, by or limit`;
    if (seen.has(key)) return `${key} given more than once`;
    seen.add(key);
  }
  const format = q.get('format') ?? 'text';
  if (format !== 'text' && format !== 'json') return `format must be text or json, got ${JSON.stringify(format)}`;

  const by = q.get('by');
  if (by !== null) {
    if (by !== 'rcpt') return `by must be rcpt, got ${JSON.stringify(by)}`;
    if (q.has('min_hits') || q.has('since')) return 'min_hits and since filter addresses, not by=rcpt';
    const max = INTEL_LIMITS.topRecipients.shown;
    const limitText = q.get('limit');
    const limit = limitText === null ? DEFAULT_RCPT_LIMIT : wholeNumber(limitText, 1, max);
    if (limit === null) return `limit must be a whole number from 1 to ${max}, got ${JSON.stringify(limitText)}`;
    return { kind: 'recipients', format, limit };
  }
  if (q.has('limit')) return 'limit goes with by=rcpt';

  let minHits: number | null = null;
  const minText = q.get('min_hits');
  if (minText !== null) {
    minHits = wholeNumber(minText, 1, 0xffff_ffff);
    if (minHits === null) return `min_hits must be a whole number of at least 1, got ${JSON.stringify(minText)}`;
  }
  let sinceMs: number | null = null;
  const sinceText = q.get('since');
  if (sinceText !== null) {
    const ago = parseDuration(sinceText);
    const at = ISO_TIME.test(sinceText) ? Date.parse(sinceText) : NaN;
    if (ago !== null) sinceMs = nowMs - ago;
    else if (!Number.isNaN(at)) sinceMs = at;
    else return `since must be an ISO 8601 time (2026-11-25T12:00:00Z) or a duration ago (15m, 2h, 7d), got ${JSON.stringify(sinceText)}`;
  }
  return { kind: 'addresses', format, minHits, sinceMs };
}
