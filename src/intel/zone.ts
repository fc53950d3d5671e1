/**
 * The listing as rbldnsd data files (docs/listing.md), so a DNSBL can be served from it:
 *
 *   LISTING_ZONE_FILE           ip4set: IPv4 addresses          rbldnsd ... bl.example:ip4set:FILE
 *   the same path, .ip6trie     ip6trie: IPv6 addresses (/128)  rbldnsd ... bl.example:ip6trie:FILE6
 *
 * Each file starts with the default A value (`:127.0.0.2:`), then one line per listed address with its TXT text,
 * which says why: `$ sent N messages to spamtraps, last seen <ISO time>` (rbldnsd puts the queried address in
 * place of `$`). Only listed addresses are written (threshold, TTL and exclusions applied at write time). Both files
 * are replaced atomically (atomic-file.ts), as rbldnsd's manual asks, and readable by rbldnsd's own user (0644).
 */
import { setImmediate as yieldToLoop } from 'node:timers/promises';
import { writeFileAtomic } from './atomic-file';
import { isIPv6Key } from '../ip-address';
import { INTEL_LIMITS } from './limits';
import type { Listing, ListingEntry } from './listing';

/** The A record of a listed address: 127.0.0.2, what DNSBL clients take for "listed". */
export const LISTED_A_VALUE = '127.0.0.2';

/** Where the IPv6 dataset goes: beside the IPv4 one, `.ip4set` replaced by (or else followed by) `.ip6trie`. */
export function ipv6ZonePath(ip4File: string): string {
  return ip4File.endsWith('.ip4set') ? ip4File.slice(0, -'.ip4set'.length) + '.ip6trie' : ip4File + '.ip6trie';
}

/** The TXT text of an entry; only digits, letters and punctuation rbldnsd reads literally (no `$` but the address). */
export function txtText(e: Pick<ListingEntry, 'messages' | 'lastSeen'>): string {
  return `$ sent ${e.messages} message${e.messages === 1 ? '' : 's'} to spamtraps, last seen ${isoSecond(e.lastSeen)}`;
}

/** Entries come in recency order, so neighbours often share their last-seen second: format each second once. */
let lastSecond = NaN;
let lastIso = '';
function isoSecond(ms: number): string {
  const sec = Math.floor(ms / 1000);
  if (sec !== lastSecond) {
    lastSecond = sec;
    lastIso = new Date(sec * 1000).toISOString().replace('.000Z', 'Z');
  }
  return lastIso;
}

export function zoneLine(e: ListingEntry): string {
  return `${isIPv6Key(e.ip) ? `${e.ip}/128` : e.ip} ${txtText(e)}\n`;
}

async function* zoneLines(listing: Listing, nowMs: number, family: 4 | 6, count: { n: number }): AsyncGenerator<string> {
  const kind = family === 4 ? 'ip4set' : 'ip6trie';
  yield `# spamtrapd listing, ${kind} dataset for rbldnsd, written ${new Date(nowMs).toISOString()}\n`;
  yield `:${LISTED_A_VALUE}:\n`;
  // Lines go out in batches: one async step per line would cost more than formatting it.
  let chunk = '';
  let seen = 0;
  for (const e of listing.listed(nowMs, family)) {
    chunk += zoneLine(e);
    count.n++;
    if (++seen % INTEL_LIMITS.listing.writeBatchEntries === 0) {
      yield chunk;
      chunk = '';
      await yieldToLoop();
    }
  }
  yield chunk + `# ${count.n} addresses\n`;
}

export interface ZoneWriteResult {
  readonly ipv4: number;
  readonly ipv6: number;
  readonly bytes: number;
}

export async function writeZoneFiles(ip4File: string, listing: Listing, nowMs: number): Promise<ZoneWriteResult> {
  const v4 = { n: 0 };
  const v6 = { n: 0 };
  const a = await writeFileAtomic(ip4File, zoneLines(listing, nowMs, 4, v4), { mode: 0o644 });
  const b = await writeFileAtomic(ipv6ZonePath(ip4File), zoneLines(listing, nowMs, 6, v6), { mode: 0o644 });
  return { ipv4: v4.n, ipv6: v6.n, bytes: a.bytes + b.bytes };
}
