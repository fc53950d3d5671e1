/** A stored message as a consumer reads it: our Received header, then the message as received. */
import assert from 'node:assert/strict';

/**
 * Our Received header (the first line and every continuation line, which starts with SP or HTAB) and the rest.
 * A client's message that began with white space would be unfolded into our header by every reader, so it shows
 * up here as a `rest` that lost its first line.
 */
export function splitReceived(data: Buffer): { received: string; unfolded: string; rest: Buffer } {
  const text = data.toString('latin1');
  assert.ok(text.startsWith('Received: from '), `stored message starts with our Received header: ${JSON.stringify(text.slice(0, 80))}`);
  let end = text.indexOf('\r\n');
  while (end >= 0 && (text[end + 2] === '\t' || text[end + 2] === ' ')) end = text.indexOf('\r\n', end + 2);
  assert.ok(end >= 0, 'the Received header ends with CRLF');
  const received = text.slice(0, end + 2);
  return { received, unfolded: received.slice(0, -2).replace(/\r\n(?=[ \t])/g, ''), rest: data.subarray(end + 2) };
}

/**
 * The shape of our header once unfolded: one field, every part in place, the date last. White space is SP or TAB,
 * the only kinds the header has: `\s` would also take the byte 0xA0 that splitReceived's latin1 decoding makes of
 * UTF-8 (U+05E0 is D7 A0), and reject a well-formed header with such a character in an address.
 */
export const RECEIVED_SHAPE =
  /^Received: from [^\r\n]* \([^ \t]+ \[[^\] \t]+\]\)[ \t]+by [^ \t]+ \(spamtrapd\/[^ \t]+\)[ \t]+with E?SMTPS? ident=unknown[ \t]+MAIL_FROM=<[^ \t<>]*>([ \t]+RCPT_TO=<[^ \t<>,;]*>(,<[^ \t<>,;]*>)*)+[ \t]*; (Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} \d\d:\d\d:\d\d \+0000$/;
