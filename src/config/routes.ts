/**
 * config/routes: which destination each accepted recipient is filed to (docs/compat.md#notes-and-destinations).
 *
 *     note=ham                     queue hamincoming
 *     rcpt=/^(root|postmaster)@/   forward smtp://127.0.0.1:10025
 *     rcpt=/^seed-/                queue seeds   listing=no
 *     *                            queue incoming
 *
 * `listing=yes|no` after a queue destination says whether its recipients count for the listing of client
 * addresses (docs/listing.md); without it they do, except recipients noted `ham` and forwarded ones, which never
 * count (src/intel/trap-recipients.ts).
 * Unlike rcpt_regexp, a bad line is fatal: filing mail into the wrong queue without a word is worse than refusing
 * to start (and on SIGHUP the running routes stay in force). The last line must be the catch-all `*`, so every
 * recipient has a destination and an operator sees where "everything else" goes.
 */
import { isIPv6 } from 'node:net';
import { ConfigError } from '../errors';
import { forwardQueueName, queueNameProblem } from '../spool-layout';
import { translatePerlRegex } from './perl-regex';

export type Destination =
  | { readonly kind: 'queue'; readonly queue: string }
  | { readonly kind: 'forward'; readonly host: string; readonly port: number; readonly queue: string; readonly url: string };

export type RouteMatch =
  | { readonly kind: 'note'; readonly note: string }
  | { readonly kind: 'rcpt'; readonly pattern: string; readonly regex: RegExp }
  | { readonly kind: 'any' };

export interface Route {
  readonly file: string;
  readonly line: number;
  readonly match: RouteMatch;
  readonly destination: Destination;
  /** The line as written (trimmed), for `spamtrapd check` and logs. */
  readonly text: string;
  /** `listing=yes|no` on the line; null when it does not say. */
  readonly listing: boolean | null;
}

export interface RoutedRecipient {
  readonly address: string;
  readonly note: string | null;
}

const DEFAULT_SMTP_PORT = 25;

/** The file name used in DEFAULT_ROUTES' `file` field. */
export const DEFAULT_ROUTES_FILE = '(default routes)';

function queueDest(queue: string): Destination {
  return Object.freeze({ kind: 'queue' as const, queue });
}

/** The old trap's routing, used when config/routes does not exist. */
export const DEFAULT_ROUTES: readonly Route[] = Object.freeze([
  Object.freeze({
    file: DEFAULT_ROUTES_FILE,
    line: 1,
    match: Object.freeze({ kind: 'note' as const, note: 'ham' }),
    destination: queueDest('hamincoming'),
    text: 'note=ham queue hamincoming',
    listing: null,
  }),
  Object.freeze({
    file: DEFAULT_ROUTES_FILE,
    line: 2,
    match: Object.freeze({ kind: 'any' as const }),
    destination: queueDest('incoming'),
    text: '* queue incoming',
    listing: null,
  }),
]);

function isHostname(h: string): boolean {
  if (h.length === 0 || h.length > 253) return false;
  return h
    .replace(/\.$/, '')
    .split('.')
    .every((label) => /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/i.test(label));
}

function isIPv4(h: string): boolean {
  const parts = h.split('.');
  return parts.length === 4 && parts.every((p) => /^(?:0|[1-9]\d{0,2})$/.test(p) && Number(p) <= 255);
}

/** Parse `smtp://HOST[:PORT]`; HOST is a name, an IPv4 address or `[IPv6]`. Returns the reason on failure. */
export function parseForwardUrl(url: string): Destination | string {
  const m = /^smtp:\/\/(\[[^\]]*\]|[^:/?#@[\]]*)(?::(\d*))?\/?$/i.exec(url);
  if (!m) {
    return `bad forward destination ${JSON.stringify(url)}: expected smtp://HOST:PORT (no user, path or query)`;
  }
  let host: string;
  if (m[1].startsWith('[')) {
    const inner = m[1].slice(1, -1);
    if (inner.includes('%')) return `IPv6 zone ids are not supported in ${url}`;
    if (!isIPv6(inner)) return `bad IPv6 address ${m[1]} in ${url}`;
    // Canonical form, so [0:0::1] and [::1] share one queue.
    host = new URL(`http://[${inner}]/`).hostname.slice(1, -1);
  } else {
    const h = m[1].toLowerCase();
    if (isIPv4(h)) host = h;
    else if (/^[\d.]+$/.test(h)) return `bad IPv4 address ${h} in ${url}`;
    else if (isHostname(h)) host = h.replace(/\.$/, '');
    else return `bad host ${JSON.stringify(m[1])} in ${url}: expected a host name, an IPv4 address or [IPv6]`;
  }
  let port = DEFAULT_SMTP_PORT;
  if (m[2] !== undefined) {
    if (!/^\d{1,5}$/.test(m[2]) || Number(m[2]) < 1 || Number(m[2]) > 65535) {
      return `bad port ${JSON.stringify(m[2])} in ${url}: expected 1-65535 (or leave it out for 25)`;
    }
    port = Number(m[2]);
  }
  const hostPart = host.includes(':') ? `[${host}]` : host;
  return Object.freeze({
    kind: 'forward' as const,
    host,
    port,
    queue: forwardQueueName(host, port),
    url: `smtp://${hostPart}:${port}`,
  });
}

function parseMatch(token: string): RouteMatch | string {
  if (token === '*') return Object.freeze({ kind: 'any' as const });
  if (token.startsWith('note=')) {
    const note = token.slice(5);
    if (note === '') return 'note= needs a name (note=NAME)';
    return Object.freeze({ kind: 'note' as const, note });
  }
  if (token.startsWith('rcpt=')) {
    const pattern = token.slice(5);
    if (pattern.length < 2 || !pattern.startsWith('/') || !pattern.endsWith('/')) {
      return `rcpt= needs a /regex/ (for one address: rcpt=/^user\\@host$/), got ${JSON.stringify(pattern)}`;
    }
    const t = translatePerlRegex(pattern.slice(1, -1));
    if (!t.ok) return `rcpt=${pattern}: ${t.reason}`;
    return Object.freeze({ kind: 'rcpt' as const, pattern, regex: t.regex });
  }
  return `unknown matcher ${JSON.stringify(token)}: expected note=NAME, rcpt=/regex/ or *`;
}

function parseDestination(kind: string | undefined, arg: string | undefined): Destination | string {
  if (kind === 'queue') {
    if (arg === undefined) return 'queue needs a name (queue NAME)';
    return queueNameProblem(arg) ?? queueDest(arg);
  }
  if (kind === 'forward') {
    if (arg === undefined) return 'forward needs a destination (forward smtp://HOST:PORT)';
    return parseForwardUrl(arg);
  }
  if (kind === undefined) return 'missing destination: expected MATCHER queue NAME or MATCHER forward smtp://HOST:PORT';
  return `unknown destination ${JSON.stringify(kind)}: expected queue NAME or forward smtp://HOST:PORT`;
}

/** Takes a trailing `listing=yes|no` off `words` and returns its value; null when the line has none. */
function takeListingToken(words: string[], where: string): boolean | null {
  const last = words[words.length - 1];
  if (!last.toLowerCase().startsWith('listing=')) return null;
  const value = last.slice('listing='.length).toLowerCase();
  if (value !== 'yes' && value !== 'no') throw new ConfigError(where, `listing= takes yes or no, got ${JSON.stringify(last)}`);
  words.pop();
  return value === 'yes';
}

/** Parse config/routes. Throws ConfigError(`FILE:LINE`, reason) on the first bad line. */
export function parseRoutes(text: string, file: string): Route[] {
  const routes: Route[] = [];
  const lines = text.split('\n');
  let catchAll: number | null = null;
  for (let n = 0; n < lines.length; n++) {
    const line = lines[n].trim();
    if (line === '' || line.startsWith('#')) continue;
    const where = `${file}:${n + 1}`;
    if (catchAll !== null) {
      throw new ConfigError(where, `unreachable: the catch-all * on line ${catchAll} already matches every recipient`);
    }
    const tokens = line.split(/\s+/);
    // A `#` word after the destination starts a comment; a pattern cannot hold white space, so this is unambiguous.
    const hash = tokens.findIndex((t, i) => i > 0 && t.startsWith('#'));
    const words = hash >= 0 ? tokens.slice(0, hash) : tokens;
    const listing = words.length > 1 ? takeListingToken(words, where) : null;
    if (words.length > 3) {
      throw new ConfigError(where, `unexpected ${JSON.stringify(words.slice(3).join(' '))} after the destination`);
    }
    const match = parseMatch(words[0]);
    if (typeof match === 'string') throw new ConfigError(where, match);
    const destination = parseDestination(words[1], words[2]);
    if (typeof destination === 'string') throw new ConfigError(where, destination);
    if (destination.kind === 'forward' && listing === true) {
      throw new ConfigError(where, 'listing=yes on a forward destination: forwarded recipients never count for the listing (people write to them)');
    }
    if (match.kind === 'any') catchAll = n + 1;
    routes.push(Object.freeze({ file, line: n + 1, match, destination, text: line, listing }));
  }
  if (routes.length === 0) {
    throw new ConfigError(file, 'no routes; add routes ending with a `* queue NAME` line, or delete the file for the default routing');
  }
  if (catchAll === null) {
    const last = routes[routes.length - 1];
    throw new ConfigError(
      `${file}:${last.line}`,
      'the last route must be the catch-all `* queue NAME` (or `* forward smtp://HOST:PORT`), so that every recipient has a destination',
    );
  }
  return routes;
}

function routeMatches(route: Route, lowered: string, note: string | null): boolean {
  switch (route.match.kind) {
    case 'any':
      return true;
    case 'note':
      return note === route.match.note;
    case 'rcpt':
      return route.match.regex.test(lowered);
  }
}

/** The first route that matches a recipient (`user@host`, any case) with its note. */
export function routeRecipient(
  routes: readonly Route[],
  address: string,
  note: string | null,
): { destination: Destination; route: Route } {
  const lowered = address.toLowerCase();
  for (const route of routes) {
    if (routeMatches(route, lowered, note)) return { destination: route.destination, route };
  }
  // parseRoutes and DEFAULT_ROUTES always end with `*`; only a hand-built list can get here.
  throw new Error(`no route matches ${address}: a route list must end with a catch-all *`);
}

/** A recipient in its destination's group, with the route line that sent it there. */
export interface GroupedRecipient {
  readonly address: string;
  readonly note: string | null;
  readonly route: Route;
}

/**
 * Groups recipients by destination: one group per destination (its queue), in the order destinations first
 * appear, each listing its recipients in the order given.
 */
export function splitByDestination(
  recipients: ReadonlyArray<RoutedRecipient>,
  routes: readonly Route[],
): Array<{ destination: Destination; recipients: GroupedRecipient[] }> {
  const groups = new Map<string, { destination: Destination; recipients: GroupedRecipient[] }>();
  for (const r of recipients) {
    const { destination, route } = routeRecipient(routes, r.address, r.note);
    let group = groups.get(destination.queue);
    if (!group) {
      group = { destination, recipients: [] };
      groups.set(destination.queue, group);
    }
    group.recipients.push({ address: r.address, note: r.note, route });
  }
  return [...groups.values()];
}

/** Human-readable destination, e.g. `queue incoming` or `forward smtp://127.0.0.1:10025 (queue forward-127.0.0.1-10025)`. */
export function describeDestination(d: Destination): string {
  return d.kind === 'queue' ? `queue ${d.queue}` : `forward ${d.url} (queue ${d.queue})`;
}
