/**
 * Which filed recipients are evidence against the sender, i.e. count for the listing. A recipient noted `ham` never
 * counts (a hamtrap catches legitimate mail), nor does a forwarded one (postmaster@, abuse@: people write there), so
 * no routes file can make either list an address. Any other recipient counts unless its route says `listing=no`
 * (the routes token proposed for config/routes). With the default routes, `incoming` counts and `hamincoming` does not.
 */
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
