/**
 * Which filed recipients are evidence against the sender, i.e. count for the listing. A recipient noted `ham` never
 * counts (a hamtrap catches legitimate mail), nor does a forwarded one (postmaster@, abuse@: people write there), so
 * no routes file can make either list an address. Any other recipient counts unless its route says `listing=no`
 * (config/routes). With the default routes, `incoming` counts and `hamincoming` does not.
 */
import type { Destination, GroupedRecipient } from '../config/routes';
import type { FiledCopy } from './events';

export const HAM_NOTE = 'ham';

export interface RoutedForListing {
  readonly note: string | null;
  readonly destination: { readonly kind: 'queue' | 'forward' };
  /** The route's `listing=yes|no`; null when the route does not say. */
  readonly listing: boolean | null;
}

export function countsForListing(r: RoutedForListing): boolean {
  if (r.note === HAM_NOTE) return false;
  if (r.destination.kind === 'forward') return false;
  return r.listing ?? true;
}

/** The same decision with its reason, for `spamtrapd check`. */
export function listingVerdict(r: RoutedForListing): string {
  if (r.note === HAM_NOTE) return 'not counted (noted ham: a hamtrap catches legitimate mail)';
  if (r.destination.kind === 'forward') return 'not counted (forwarded: people write there)';
  if (r.listing === false) return 'not counted (listing=no on its route)';
  return 'counted: its sender is listed from LISTING_MIN_HITS such messages on';
}

/**
 * A filed message's copies as the listing and the tail see them: per destination, the recipients that count, then
 * those that do not (a route can send both to one queue, e.g. a catch-all that also gets some `ham` notes).
 */
export function listingCopies(groups: ReadonlyArray<{ destination: Destination; recipients: readonly GroupedRecipient[] }>): FiledCopy[] {
  const copies: FiledCopy[] = [];
  for (const g of groups) {
    const counted: string[] = [];
    const other: string[] = [];
    for (const r of g.recipients) {
      (countsForListing({ note: r.note, destination: g.destination, listing: r.route.listing }) ? counted : other).push(r.address);
    }
    if (counted.length > 0) copies.push({ queue: g.destination.queue, recipients: counted, trap: true });
    if (other.length > 0) copies.push({ queue: g.destination.queue, recipients: other, trap: false });
  }
  return copies;
}
