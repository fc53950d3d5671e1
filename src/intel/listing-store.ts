/**
 * The listing on disk, so it survives restarts (SIGKILL included: the file is replaced atomically, atomic-file.ts,
 * so it is at most one write interval old). Format (docs/listing.md), JSON lines:
 *
 *   {"format":"spamtrapd-listing","version":1,"written":"<ISO time>","columns":[...]}
 *   ["192.0.2.7",3,1,1764600000,1764600100,"bot.example","v1-abcdefghijkl","quit",2,"0badf00d1badcafe"]
 *   ...one array per entry, least recently seen first...
 *   {"end":true,"entries":N}
 *
 * Rows are arrays in the header's column order (half the size of objects at a million entries); the recipient
 * sketch is its hashes as 8 hex digits each. The trailer proves the file is whole: a file without it, with another
 * header, or with one bad row is refused as a whole and the trap starts with an empty listing.
 */
import fs from 'node:fs';
import readline from 'node:readline';
import { setImmediate as yieldToLoop } from 'node:timers/promises';
import { writeFileAtomic } from './atomic-file';
import type { SessionEnd } from './fingerprint';
import { INTEL_LIMITS } from './limits';
import type { Listing, ListingRecord } from './listing';

export const LISTING_FILE_FORMAT = 'spamtrapd-listing';
export const LISTING_FILE_VERSION = 1;
export const LISTING_COLUMNS = Object.freeze([
  'ip',
  'messages',
  'connections',
  'first_seen',
  'last_seen',
  'helo',
  'fingerprint',
  'last_end',
  'rcpt_state',
  'rcpt_hashes',
]);

const K = INTEL_LIMITS.listing.recipientHashesPerEntry;

/** One row; built by hand (JSON.stringify only for the strings) because it runs a million times per write. */
export function encodeRecord(r: ListingRecord): string {
  let hex = '';
  for (const h of r.recipientHashes) hex += h.toString(16).padStart(8, '0');
  const str = (s: string | null) => (s === null ? 'null' : JSON.stringify(s));
  return (
    `[${str(r.ip)},${r.messages},${r.connections},${r.firstSeenSec},${r.lastSeenSec},` +
    `${str(r.helo)},${str(r.fingerprint)},${str(r.lastEnd)},${r.recipientState},"${hex}"]`
  );
}

const isU32 = (v: unknown): v is number => typeof v === 'number' && Number.isInteger(v) && v >= 0 && v <= 0xffff_ffff;
const isNullableString = (v: unknown, max: number): v is string | null =>
  v === null || (typeof v === 'string' && v.length <= max);

/** A row back into a record, or a reason it is not one. */
export function decodeRecord(line: string): ListingRecord | string {
  let row: unknown;
  try {
    row = JSON.parse(line);
  } catch {
    return 'not JSON';
  }
  if (!Array.isArray(row) || row.length !== LISTING_COLUMNS.length) return `not a ${LISTING_COLUMNS.length}-column row`;
  const [ip, messages, connections, first, last, helo, fp, end, state, hex] = row as unknown[];
  if (typeof ip !== 'string' || ip.length > 64) return 'bad ip';
  if (!isU32(messages) || !isU32(connections) || !isU32(first) || !isU32(last)) return 'bad count or time';
  if (!isNullableString(helo, INTEL_LIMITS.listing.heloMaxChars)) return 'bad helo';
  if (!isNullableString(fp, 64)) return 'bad fingerprint';
  if (end !== null && end !== 'quit' && end !== 'drop') return 'bad last_end';
  if (!isU32(state) || state > K + 1) return 'bad rcpt_state';
  if (typeof hex !== 'string' || !/^(?:[0-9a-f]{8}){0,8}$/.test(hex)) return 'bad rcpt_hashes';
  const hashes: number[] = [];
  for (let i = 0; i < hex.length; i += 8) hashes.push(parseInt(hex.slice(i, i + 8), 16));
  if (hashes.length !== Math.min(state, K) || hashes.some((h, i) => i > 0 && h <= hashes[i - 1])) {
    return 'rcpt_hashes do not match rcpt_state';
  }
  return {
    ip,
    messages,
    connections,
    firstSeenSec: first,
    lastSeenSec: last,
    helo,
    fingerprint: fp,
    lastEnd: end as SessionEnd | null,
    recipientState: state,
    recipientHashes: hashes,
  };
}

async function* fileLines(listing: Listing, nowMs: number, entries: { n: number }): AsyncGenerator<string> {
  yield JSON.stringify({
    format: LISTING_FILE_FORMAT,
    version: LISTING_FILE_VERSION,
    written: new Date(nowMs).toISOString(),
    columns: LISTING_COLUMNS,
  }) + '\n';
  // Lines go out in batches: one async step per line would cost more than encoding it.
  let chunk = '';
  let batch = 0;
  for (const r of listing.records(nowMs)) {
    chunk += encodeRecord(r) + '\n';
    entries.n++;
    if (++batch === INTEL_LIMITS.listing.writeBatchEntries) {
      yield chunk;
      chunk = '';
      batch = 0;
      await yieldToLoop();
    }
  }
  yield chunk + JSON.stringify({ end: true, entries: entries.n }) + '\n';
}

export async function saveListing(file: string, listing: Listing, nowMs: number): Promise<{ entries: number; bytes: number }> {
  const entries = { n: 0 };
  const { bytes } = await writeFileAtomic(file, fileLines(listing, nowMs, entries), { mode: 0o600 });
  return { entries: entries.n, bytes };
}

export type LoadOutcome =
  | { readonly status: 'loaded'; readonly entries: number; readonly skipped: number }
  | { readonly status: 'missing' }
  | { readonly status: 'refused'; readonly reason: string };

/**
 * Reads `file` into `listing` (meant to be empty), oldest entry first. On `refused` the listing holds a part of the
 * file: the caller throws it away and starts with a fresh one. `skipped` counts rows the listing did not take
 * (expired by now, excluded by the current policy).
 */
export async function loadListing(file: string, listing: Listing, nowMs: number): Promise<LoadOutcome> {
  let stream: fs.ReadStream;
  try {
    await fs.promises.access(file, fs.constants.R_OK);
    stream = fs.createReadStream(file, { encoding: 'utf8' });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { status: 'missing' };
    return { status: 'refused', reason: `cannot read: ${(err as Error).message}` };
  }
  const lines = readline.createInterface({ input: stream, crlfDelay: Infinity });
  let lineNo = 0;
  let entries = 0;
  let skipped = 0;
  let trailer: number | null = null;
  const refuse = (reason: string): LoadOutcome => {
    lines.close();
    stream.destroy();
    return { status: 'refused', reason: lineNo > 0 ? `line ${lineNo}: ${reason}` : reason };
  };
  try {
    for await (const line of lines) {
      lineNo++;
      if (trailer !== null) return refuse('data after the end marker');
      if (lineNo === 1) {
        const problem = headerProblem(line);
        if (problem) return refuse(problem);
        continue;
      }
      if (line.startsWith('{')) {
        const t = parseTrailer(line);
        if (t === null) return refuse('bad end marker');
        trailer = t;
        continue;
      }
      const r = decodeRecord(line);
      if (typeof r === 'string') return refuse(r);
      entries++;
      if (!listing.restore(r, nowMs)) skipped++;
      if (entries % INTEL_LIMITS.listing.writeBatchEntries === 0) await yieldToLoop();
    }
  } catch (err) {
    return refuse(`read failed: ${(err as Error).message}`);
  }
  if (lineNo === 0) return refuse('empty file');
  if (trailer === null) return refuse('no end marker: the file is cut short');
  if (trailer !== entries) return refuse(`end marker says ${trailer} entries, the file has ${entries}`);
  return { status: 'loaded', entries, skipped };
}

function headerProblem(line: string): string | null {
  let h: unknown;
  try {
    h = JSON.parse(line);
  } catch {
    return 'not a spamtrapd listing (first line is not JSON)';
  }
  const o = h as Record<string, unknown>;
  if (typeof h !== 'object' || h === null || o.format !== LISTING_FILE_FORMAT) return 'not a spamtrapd listing';
  if (o.version !== LISTING_FILE_VERSION) return `listing file version ${String(o.version)}, this trap reads ${LISTING_FILE_VERSION}`;
  if (JSON.stringify(o.columns) !== JSON.stringify(LISTING_COLUMNS)) return 'unexpected columns';
  return null;
}

function parseTrailer(line: string): number | null {
  try {
    const t = JSON.parse(line) as Record<string, unknown>;
    return t.end === true && isU32(t.entries) ? t.entries : null;
  } catch {
    return null;
  }
}
