/** explainAddress, the heart of `spamtrapd check ADDRESS`: which line decided, the reply, note and destination. */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { explainAddress } from '../src/config/check';
import { parseRcptRegexp } from '../src/config/rcpt-regexp';
import { DEFAULT_ROUTES, parseRoutes } from '../src/config/routes';

const { rules } = parseRcptRegexp(
  `# a hamtrap address
/^address\\@traps.spamassassin.org$/    OK Sure [note=ham]
/^oldtrap\\@example\\.com$/              DENY Sorry, too much nonspam - please turn off the forward
/^gone\\@/                               DENY_DISCONNECT
/^skip\\@/                               DECLINED [note=ham]
/^root\\@/                               OK
`,
  'config/rcpt_regexp',
);
const routes = parseRoutes(
  'note=ham queue hamincoming\nrcpt=/^root@/ forward smtp://127.0.0.1:10025\n* queue incoming\n',
  'config/routes',
);

describe('explainAddress', () => {
  test('ham address: rule line, 250 reply, note, routed by the note', () => {
    assert.equal(
      explainAddress(rules, routes, 'Address@Traps.SpamAssassin.org', 'OK'),
      [
        '"Address@Traps.SpamAssassin.org":',
        '  rule:        config/rcpt_regexp:2: /^address\\@traps.spamassassin.org$/ OK Sure [note=ham]',
        '  reply:       250 <Address@Traps.SpamAssassin.org>, recipient ok',
        '  note:        ham',
        '  destination: queue hamincoming (config/routes:1: note=ham queue hamincoming)',
        '  listing:     not counted (noted ham: a hamtrap catches legitimate mail)',
      ].join('\n'),
    );
  });

  test('denied address: no destination', () => {
    assert.equal(
      explainAddress(rules, routes, '<oldtrap@example.com>', 'OK'),
      [
        '"oldtrap@example.com":',
        '  rule:        config/rcpt_regexp:3: /^oldtrap\\@example\\.com$/ DENY Sorry, too much nonspam - please turn off the forward',
        '  reply:       550 Sorry, too much nonspam - please turn off the forward',
        '  note:        (none)',
        '  destination: none (recipient refused, nothing is filed for it)',
      ].join('\n'),
    );
  });

  test('disconnecting codes say so', () => {
    assert.match(explainAddress(rules, routes, 'gone@x', 'OK'), /reply: {7}550 delivery denied \(then the connection is closed\)/);
  });

  test('DECLINED: the rule is shown, the default decides, its note does not apply', () => {
    const out = explainAddress(rules, routes, 'skip@x', 'DENYSOFT');
    assert.match(out, /rule: {8}config\/rcpt_regexp:5: /);
    assert.match(out, /DECLINED: falls through to the default DENYSOFT \(its note ham does not apply\)/);
    assert.match(out, /reply: {7}450 relaying denied/);
    assert.match(out, /note: {8}\(none\)/);
  });

  test('no match: the default, and the route for the accepted recipient (forward shown with its queue)', () => {
    const out = explainAddress(rules.slice(0, 2), routes, 'ROOT@x', 'OK');
    assert.match(out, /no rule matches "root@x" -> default OK/);
    assert.match(
      out,
      /destination: forward smtp:\/\/127\.0\.0\.1:10025 \(queue forward-127\.0\.0\.1-10025\) \(config\/routes:2: rcpt=\/\^root@\/ forward smtp:\/\/127\.0\.0\.1:10025\)/,
    );
  });

  test('an address without a host is not checked', () => {
    const out = explainAddress(rules, DEFAULT_ROUTES, 'postmaster', 'OK');
    assert.match(out, /not checked \(no user or no host part\) -> default OK/);
    assert.match(out, /destination: queue incoming \(\(default routes\):2: \* queue incoming\)/);
    assert.match(out, /listing: {5}counted: its sender is listed from LISTING_MIN_HITS such messages on/);
  });

  test('tells whether a recipient counts for the listing: forwarded and listing=no ones do not', () => {
    assert.match(explainAddress(rules.slice(0, 2), routes, 'root@x', 'OK'), /listing: {5}not counted \(forwarded: people write there\)/);
    const seeds = parseRoutes('rcpt=/^seed@/ queue seeds listing=no\n* queue incoming listing=yes\n', 'config/routes');
    assert.match(explainAddress([], seeds, 'seed@x', 'OK'), /listing: {5}not counted \(listing=no on its route\)/);
    assert.match(explainAddress([], seeds, 'other@x', 'OK'), /listing: {5}counted/);
  });
});
