/**
 * config/routes: parsing (a bad line is a hard error naming file:line), matching, forward queue names, and
 * splitting a message's recipients by destination.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ConfigError } from '../src/errors';
import {
  DEFAULT_ROUTES,
  parseForwardUrl,
  parseRoutes,
  routeRecipient,
  splitByDestination,
  type Destination,
} from '../src/config/routes';
import { forwardQueueName } from '../src/spool-layout';

const EXAMPLE = `# routes
note=ham                     queue hamincoming
rcpt=/^(root|postmaster)@/   forward smtp://127.0.0.1:10025

*                            queue incoming   # everything else
`;

function parseError(text: string): ConfigError {
  try {
    parseRoutes(text, 'config/routes');
  } catch (err) {
    assert.ok(err instanceof ConfigError, String(err));
    return err;
  }
  assert.fail(`expected a ConfigError for ${JSON.stringify(text)}`);
}

describe('parseRoutes', () => {
  test('the example parses: matchers, destinations, file lines', () => {
    const routes = parseRoutes(EXAMPLE, 'config/routes');
    assert.deepEqual(
      routes.map((r) => [r.line, r.match.kind, r.destination]),
      [
        [2, 'note', { kind: 'queue', queue: 'hamincoming' }],
        [
          3,
          'rcpt',
          { kind: 'forward', host: '127.0.0.1', port: 10025, queue: 'forward-127.0.0.1-10025', url: 'smtp://127.0.0.1:10025' },
        ],
        [5, 'any', { kind: 'queue', queue: 'incoming' }],
      ],
    );
    assert.equal(routes[0].text, 'note=ham                     queue hamincoming');
  });

  const bad: Array<[string, string, number, RegExp]> = [
    ['unknown matcher', 'to=x queue a\n* queue b', 1, /unknown matcher "to=x"/],
    ['empty note', 'note= queue a\n* queue b', 1, /note= needs a name/],
    ['rcpt literal', 'rcpt=a@b queue a\n* queue b', 1, /rcpt= needs a \/regex\//],
    ['invalid regex', 'rcpt=/(a/ queue a\n* queue b', 1, /rcpt=\/\(a\/: invalid regex/],
    ['perl-only regex', 'rcpt=/a++/ queue a\n* queue b', 1, /possessive/],
    ['missing destination', 'note=ham\n* queue b', 1, /missing destination/],
    ['unknown destination', 'note=ham file /tmp/x\n* queue b', 1, /unknown destination "file"/],
    ['queue without name', 'note=ham queue\n* queue b', 1, /queue needs a name/],
    ['bad queue name', 'note=ham queue ../etc\n* queue b', 1, /bad queue name/],
    ['queue name with slash', 'note=ham queue a/b\n* queue b', 1, /bad queue name/],
    ['reserved deadletter', 'note=ham queue DeadLetter\n* queue b', 1, /reserved/],
    ['reserved forward-', 'note=ham queue forward-x\n* queue b', 1, /reserved for forward/],
    ['too long queue name', `note=ham queue ${'a'.repeat(101)}\n* queue b`, 1, /longer than 100/],
    ['forward without url', 'note=ham forward\n* queue b', 1, /forward needs a destination/],
    ['forward other scheme', 'note=ham forward lmtp://h:24\n* queue b', 1, /expected smtp:\/\/HOST:PORT/],
    ['forward with user', 'note=ham forward smtp://u@h:25\n* queue b', 1, /no user, path or query/],
    ['forward with path', 'note=ham forward smtp://h:25/x\n* queue b', 1, /no user, path or query/],
    ['forward bad port', 'note=ham forward smtp://h:70000\n* queue b', 1, /bad port "70000"/],
    ['forward port 0', 'note=ham forward smtp://h:0\n* queue b', 1, /bad port/],
    ['forward empty port', 'note=ham forward smtp://h:\n* queue b', 1, /bad port ""/],
    ['forward bad host', 'note=ham forward smtp://-h-:25\n* queue b', 1, /bad host/],
    ['forward bad ipv4', 'note=ham forward smtp://1.2.3.256:25\n* queue b', 1, /bad IPv4/],
    ['forward bad ipv6', 'note=ham forward smtp://[1::2::3]:25\n* queue b', 1, /bad IPv6/],
    ['forward zone id', 'note=ham forward smtp://[fe80::1%eth0]:25\n* queue b', 1, /zone/],
    ['trailing words', 'note=ham queue a b\n* queue b', 1, /unexpected "b" after the destination/],
    ['listing= without yes or no', 'note=x queue a listing=maybe\n* queue b', 1, /listing= takes yes or no, got "listing=maybe"/],
    ['listing=yes on a forward', 'rcpt=/^abuse@/ forward smtp://h:25 listing=yes\n* queue b', 1, /forwarded recipients never count/],
    ['words after listing=', 'note=x queue a listing=no x\n* queue b', 1, /unexpected "listing=no x" after the destination/],
    ['no catch-all', '# x\nnote=ham queue a\nrcpt=/x/ queue b\n', 3, /last route must be the catch-all `\* queue NAME`/],
    ['unreachable after *', '* queue a\n\nnote=ham queue b\n', 3, /unreachable: the catch-all \* on line 1/],
  ];
  for (const [name, text, line, reason] of bad) {
    test(`hard error with file:line: ${name}`, () => {
      const err = parseError(text);
      assert.equal(err.where, `config/routes:${line}`);
      assert.match(err.reason, reason);
      assert.equal(err.message, `config/routes:${line}: ${err.reason}`);
    });
  }

  test('listing=yes|no after the destination, any case, before a comment; absent is null', () => {
    const routes = parseRoutes(
      'rcpt=/^seed-/ queue seeds listing=no # monitoring seeds\nrcpt=/^abuse@/ forward smtp://h:25 LISTING=No\n* queue incoming listing=yes\n',
      'f',
    );
    assert.deepEqual(
      routes.map((r) => [r.destination.queue, r.listing]),
      [
        ['seeds', false],
        ['forward-h-25', false],
        ['incoming', true],
      ],
    );
    assert.deepEqual(parseRoutes(EXAMPLE, 'f').map((r) => r.listing), [null, null, null]);
    assert.deepEqual(DEFAULT_ROUTES.map((r) => r.listing), [null, null]);
  });

  test('an empty routes file (only comments) is an error naming the file', () => {
    const err = parseError('# nothing\n\n');
    assert.equal(err.where, 'config/routes');
    assert.match(err.reason, /no routes.*delete the file for the default routing/);
  });

  test('CRLF lines, indented comments and trailing # comments are accepted', () => {
    const routes = parseRoutes('  # c\r\nnote=x queue a # why\r\n* queue b\r\n', 'f');
    assert.deepEqual(
      routes.map((r) => r.destination.queue),
      ['a', 'b'],
    );
  });

  test('a catch-all forward is allowed', () => {
    const routes = parseRoutes('* forward smtp://mx.example.net', 'f');
    assert.deepEqual(routes[0].destination, {
      kind: 'forward',
      host: 'mx.example.net',
      port: 25,
      queue: 'forward-mx.example.net-25',
      url: 'smtp://mx.example.net:25',
    });
  });
});

describe('forward destinations', () => {
  test('host names are lower-cased, a trailing dot dropped, port defaults to 25', () => {
    assert.deepEqual(parseForwardUrl('SMTP://MX.Example.NET.'), {
      kind: 'forward',
      host: 'mx.example.net',
      port: 25,
      queue: 'forward-mx.example.net-25',
      url: 'smtp://mx.example.net:25',
    });
  });

  test('IPv6 in brackets, canonicalised so equal addresses share a queue; unsafe characters become _', () => {
    const a = parseForwardUrl('smtp://[0:0::1]:2525') as Destination;
    const b = parseForwardUrl('smtp://[::1]:2525/') as Destination;
    assert.deepEqual(a, b);
    assert.deepEqual(a, { kind: 'forward', host: '::1', port: 2525, queue: 'forward-__1-2525', url: 'smtp://[::1]:2525' });
    assert.equal(forwardQueueName('2001:db8::25', 25), 'forward-2001_db8__25-25');
  });

  test('the derived queue name always is a valid name and never an ordinary queue name', () => {
    for (const url of ['smtp://a-b.example:1', 'smtp://[2001:db8::1]:65535', 'smtp://10.0.0.1']) {
      const d = parseForwardUrl(url) as Destination;
      assert.match(d.queue, /^forward-[A-Za-z0-9._-]+$/);
    }
  });
});

describe('routing', () => {
  const routes = parseRoutes(EXAMPLE, 'config/routes');

  test('first matching line decides: note, then rcpt regex (case-insensitive, lower-cased), then *', () => {
    assert.equal(routeRecipient(routes, 'root@x', 'ham').destination.queue, 'hamincoming');
    assert.equal(routeRecipient(routes, 'ROOT@x', null).destination.queue, 'forward-127.0.0.1-10025');
    assert.equal(routeRecipient(routes, 'Postmaster@Y', null).route.line, 3);
    assert.equal(routeRecipient(routes, 'someone@x', 'other').destination.queue, 'incoming');
  });

  test('notes compare exactly', () => {
    assert.equal(routeRecipient(routes, 'a@b', 'Ham').destination.queue, 'incoming');
  });

  test('DEFAULT_ROUTES: note ham -> hamincoming, everything else -> incoming', () => {
    assert.equal(routeRecipient(DEFAULT_ROUTES, 'a@b', 'ham').destination.queue, 'hamincoming');
    assert.equal(routeRecipient(DEFAULT_ROUTES, 'a@b', null).destination.queue, 'incoming');
    assert.equal(routeRecipient(DEFAULT_ROUTES, 'a@b', 'spam').destination.queue, 'incoming');
    assert.ok(Object.isFrozen(DEFAULT_ROUTES));
  });

  test('a hand-built list without a catch-all throws rather than dropping a recipient', () => {
    assert.throws(() => routeRecipient([], 'a@b', null), /no route matches/);
  });
});

describe('splitByDestination', () => {
  const routes = parseRoutes(EXAMPLE, 'config/routes');

  test('one group per destination, in order of first appearance, recipients in the order given', () => {
    const groups = splitByDestination(
      [
        { address: 'spam1@bait', note: null },
        { address: 'ham@bait', note: 'ham' },
        { address: 'root@bait', note: null },
        { address: 'spam2@bait', note: null },
        { address: 'ham2@bait', note: 'ham' },
        { address: 'postmaster@bait', note: 'x' },
      ],
      routes,
    );
    assert.deepEqual(
      groups.map((g) => [g.destination.queue, g.recipients.map((r) => r.address)]),
      [
        ['incoming', ['spam1@bait', 'spam2@bait']],
        ['hamincoming', ['ham@bait', 'ham2@bait']],
        ['forward-127.0.0.1-10025', ['root@bait', 'postmaster@bait']],
      ],
    );
    assert.deepEqual(groups[2].recipients[1], { address: 'postmaster@bait', note: 'x', route: routes[1] });
  });

  test('the old trap mix: a ham and a spam recipient give two copies (qpsmtpd filed both as ham)', () => {
    const groups = splitByDestination(
      [
        { address: 'address@traps.spamassassin.org', note: 'ham' },
        { address: 'x@bait', note: null },
      ],
      DEFAULT_ROUTES,
    );
    assert.deepEqual(
      groups.map((g) => g.destination.queue),
      ['hamincoming', 'incoming'],
    );
  });

  test('no recipients, no groups; duplicates kept', () => {
    assert.deepEqual(splitByDestination([], routes), []);
    const g = splitByDestination(
      [
        { address: 'a@b', note: null },
        { address: 'a@b', note: null },
      ],
      routes,
    );
    assert.equal(g[0].recipients.length, 2);
  });

  test('each grouped recipient carries the route line that sent it there', () => {
    const g = splitByDestination(
      [
        { address: 'ham@bait', note: 'ham' },
        { address: 'x@bait', note: null },
      ],
      routes,
    );
    assert.deepEqual(
      g.map((x) => x.recipients.map((r) => r.route.line)),
      [[2], [5]],
    );
  });
});
