/**
 * The spamtrap `Received:` header (docs/compat.md#the-received-header):
 *
 *     Received: from HELO (RDNS [IP]) by ME (spamtrapd/VERSION) with PROTO ident=unknown MAIL_FROM=<sender> RCPT_TO=<a>,<b>; DATE
 *
 * Every value but PROTO and DATE can come from the client (or from its DNS), so each is cleaned before it is placed:
 *  - C0 controls (CR, LF, NUL, TAB ...), DEL, C1 controls (incl. NEL U+0085), U+2028/U+2029 and lone surrogates
 *    become `?`, like Postfix does in its Received header. A line break in any form would let a client add a header
 *    line or make a parser see one; TAB is replaced too so the only white space inside a value is SP and folding is
 *    unambiguous. A one-for-one replacement never lengthens a value.
 *  - Printable non-ASCII is kept as UTF-8: a trap records bots as they are, and RFC 6532 allows UTF-8 in headers.
 *    All lengths are counted in octets.
 *  - MAIL_FROM, each recipient, RDNS, ME and VERSION must stay single tokens for `KEY=(\S+)`-style parsers of the old
 *    format, so white space in them becomes `?`; in addresses `<`, `>`, `,` and `;` too, so no recipient can forge
 *    an extra list entry or end the list early. `MAIL_FROM=` and `RCPT_TO=` inside any value become `MAIL_FROM?` and
 *    `RCPT_TO?`, so no value can forge a field. HELO keeps its spaces ("as given"); a parser finds RDNS by the
 *    `(... [IP])` that follows, and the date after the last `;` (RFC 5322's received grammar).
 *  - A missing HELO (the client never sent HELO/EHLO) is written `unknown`, like a missing RDNS: qpsmtpd always had
 *    one (it refused MAIL before HELO), and an empty field would leave `from  (` for parsers to trip over. An empty
 *    HELO argument that was given stays empty, as given.
 *  - An IPv4-mapped IPv6 address (`::ffff:192.0.2.1`, what a dual-stack `::` listener reports for IPv4 clients) is
 *    written as the IPv4 address, as the old IPv4-only trap wrote it.
 *
 * Folding (docs/compat.md#folding): at 78 octets where a field boundary allows, and never past RFC 5322's 998; the
 * recipient list goes on in a further `RCPT_TO=` field so `RCPT_TO=(\S+)` parsers still get every recipient. Only a
 * single token too long for any 998-octet line is cut (TRUNCATED_MARKER): the one case where a value is shortened.
 */

export interface ReceivedInput {
  readonly helo: string | null;
  readonly rdns: string | null;
  readonly ip: string;
  readonly me: string;
  readonly version: string;
  readonly proto: 'SMTP' | 'ESMTP' | 'ESMTPS';
  /** '' is the null sender. */
  readonly mailFrom: string;
  readonly recipients: readonly string[];
  readonly date: Date;
}

/** RFC 5322 2.1.1: a line is at most 998 octets, excluding CRLF. */
export const MAX_LINE = 998;
/** RFC 5322 2.1.1: lines SHOULD stay within 78 octets; folding points are used when a line would pass it. */
export const FOLD_AT = 78;
export const TRUNCATED_MARKER = '...[truncated]';
const FOLD = '\r\n\t';

const DAYS = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'];
const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];

function pad2(n: number): string {
  return n < 10 ? '0' + n : String(n);
}

/** RFC 5322 date-time in UTC, e.g. `Wed, 25 Nov 2026 14:14:00 +0000`. */
export function formatRfc5322Date(date: Date): string {
  const t = date.getTime();
  if (!Number.isFinite(t)) throw new RangeError('formatRfc5322Date: invalid Date');
  return (
    `${DAYS[date.getUTCDay()]}, ${pad2(date.getUTCDate())} ${MONTHS[date.getUTCMonth()]} ${date.getUTCFullYear()} ` +
    `${pad2(date.getUTCHours())}:${pad2(date.getUTCMinutes())}:${pad2(date.getUTCSeconds())} +0000`
  );
}

// C0, DEL, C1, LS, PS, and UTF-16 surrogates that are not part of a pair.
const UNSAFE = /[\x00-\x1f\x7f-\x9f\u2028\u2029]|[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g;

/** The header's own field markers, which consumers find with `KEY=(\S+)` anywhere in the unfolded header. */
const FIELD_MARKER = /(MAIL_FROM|RCPT_TO)=/gi;

/**
 * Replace every character that could break a header line (see the module comment), and defuse `MAIL_FROM=` and
 * `RCPT_TO=` inside a value (`=` -> `?`), or a HELO of `x RCPT_TO=<victim>` would add a recipient for every parser
 * that collects all `RCPT_TO=(\S+)` matches.
 */
export function cleanHeaderValue(value: string): string {
  return value.replace(UNSAFE, '?').replace(FIELD_MARKER, '$1?');
}

/** A value that must be one token: also no white space of any kind. */
function cleanToken(value: string): string {
  return cleanHeaderValue(value).replace(/\s/g, '?');
}

/** An address inside `<...>`: also none of the list's delimiters, nor the `;` that ends the list. */
export function cleanAddress(value: string): string {
  return cleanToken(value).replace(/[<>,;]/g, '?');
}

function octets(s: string): number {
  return Buffer.byteLength(s, 'utf8');
}

/** Cut `s` so that it fits `max` octets, marker included, without splitting a character. */
export function truncateOctets(s: string, max: number): string {
  if (octets(s) <= max) return s;
  const budget = max - TRUNCATED_MARKER.length;
  let out = '';
  let used = 0;
  for (const ch of s) {
    const n = octets(ch);
    if (used + n > budget) break;
    out += ch;
    used += n;
  }
  return out + TRUNCATED_MARKER;
}

function normalizeIp(ip: string): string {
  const mapped = /^::ffff:(\d{1,3}(?:\.\d{1,3}){3})$/i.exec(ip);
  return mapped ? mapped[1] : ip;
}

/**
 * Splits a string into pieces that may each start a continuation line: a piece after the first starts with the
 * last space of a run of spaces and then a non-space, so no folded line can consist of white space only.
 */
function foldPieces(s: string): string[] {
  const pieces: string[] = [];
  let start = 0;
  for (let i = 1; i < s.length - 1; i++) {
    if (s[i] === ' ' && s[i + 1] !== ' ') {
      pieces.push(s.slice(start, i));
      start = i;
    }
  }
  pieces.push(s.slice(start));
  return pieces.filter((p) => p.length > 0);
}

/** Below this many free octets a too-long token goes to a fresh line before it is cut, so the cut keeps something. */
const MIN_KEEP = 64;

/**
 * Lines of a text that may only be folded at its own spaces, each at most MAX_LINE octets; `lead` octets are
 * already taken on the first line (continuation lines start with the piece's own space). A piece that fits no
 * line is cut where it stands, so a huge HELO stays on the `Received: from` line.
 */
function hardFold(text: string, lead: number): string[] {
  const lines: string[] = [];
  let cur = '';
  let curLen = lead;
  for (let piece of foldPieces(text)) {
    let n = octets(piece);
    if (curLen + n > MAX_LINE) {
      if (cur !== '' && (n <= MAX_LINE || MAX_LINE - curLen < MIN_KEEP)) {
        lines.push(cur);
        cur = '';
        curLen = 0;
      }
      if (curLen + n > MAX_LINE) {
        piece = truncateOctets(piece, MAX_LINE - curLen);
        n = octets(piece);
      }
    }
    cur += piece;
    curLen += n;
  }
  lines.push(cur);
  return lines;
}

/** The RCPT_TO fields: as few as possible, each fitting a continuation line (TAB + field) of MAX_LINE octets. */
function rcptFields(recipients: readonly string[]): string[] {
  const prefix = 'RCPT_TO=';
  const room = MAX_LINE - 1 - prefix.length;
  const fields: string[] = [];
  let cur = '';
  for (const r of recipients) {
    const item = '<' + truncateOctets(cleanAddress(r), room - 2) + '>';
    if (cur !== '' && octets(cur) + 1 + octets(item) > room) {
      fields.push(prefix + cur);
      cur = '';
    }
    cur += (cur === '' ? '' : ',') + item;
  }
  fields.push(prefix + cur);
  return fields;
}

/** The full header, CRLF-terminated, as bytes ready to be prepended to the message. */
export function buildReceivedHeader(input: ReceivedInput): Buffer {
  if (input.recipients.length === 0) throw new RangeError('buildReceivedHeader: a copy has at least one recipient');
  const helo = input.helo === null ? 'unknown' : cleanHeaderValue(input.helo);
  const rdns = input.rdns === null || input.rdns === '' ? 'unknown' : cleanToken(input.rdns);
  const ip = cleanToken(normalizeIp(input.ip));
  const me = cleanToken(input.me);
  const version = cleanToken(input.version);

  // The first line; only HELO can make it long, and only at its own spaces can it fold.
  const lines = hardFold(`Received: from ${helo} (${rdns} [${ip}])`, 0);

  const mailFrom = '<' + truncateOctets(cleanAddress(input.mailFrom), MAX_LINE - 1 - 'MAIL_FROM=<>'.length) + '>';
  const fields: Array<{ text: string; sep: string }> = [
    { text: `by ${me} (spamtrapd/${version})`, sep: ' ' },
    { text: `with ${input.proto} ident=unknown`, sep: ' ' },
    { text: `MAIL_FROM=${mailFrom}`, sep: ' ' },
    ...rcptFields(input.recipients).map((text) => ({ text, sep: ' ' })),
    { text: `; ${formatRfc5322Date(input.date)}`, sep: '' },
  ];

  let out = lines.join('\r\n');
  let lineLen = octets(lines[lines.length - 1]);
  for (const f of fields) {
    const n = octets(f.text);
    if (lineLen + f.sep.length + n <= FOLD_AT) {
      out += f.sep + f.text;
      lineLen += f.sep.length + n;
      continue;
    }
    // `by ME (...)` is the only field with spaces that could pass MAX_LINE (a huge ME); fold it like HELO.
    const parts = hardFold(f.text, 1);
    out += FOLD + parts.join('\r\n');
    lineLen = (parts.length === 1 ? 1 : 0) + octets(parts[parts.length - 1]);
  }
  return Buffer.from(out + '\r\n', 'utf8');
}
