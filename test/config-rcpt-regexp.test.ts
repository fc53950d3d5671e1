/**
 * config/rcpt_regexp as qpsmtpd read it: every code and its reply, notes, literal vs regex, the old trap's file,
 * bad lines reported with file:line and skipped.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';
import {
  evaluateRecipient,
  MAX_REPLY_TEXT,
  parseRcptRegexp,
  rcptReply,
  type RcptDefaultCode,
  type RcptRule,
} from '../src/config/rcpt-regexp';
import { repoRoot } from './helpers/paths';

const OLD_TRAP = `# a hamtrap address
/^address\\@traps.spamassassin.org$/    OK Sure [note=ham]
# old spamtraps that are no longer usable
/^oldtrap\\@example\\.com$/              DENY Sorry, too much nonspam - please turn off the forward
# all others: trap
/^.*$/                                 OK Sure
`;

function rules(text: string): RcptRule[] {
  const { rules: r, problems } = parseRcptRegexp(text, 'rcpt_regexp');
  assert.deepEqual(problems, []);
  return r;
}

function reply(text: string, address: string, def: RcptDefaultCode = 'OK') {
  return rcptReply(evaluateRecipient(rules(text), address), address, def);
}

describe('rcpt_regexp replies (the table in docs/compat.md)', () => {
  test('OK: 250 <user@host>, recipient ok; COMMENT not sent', () => {
    assert.deepEqual(reply('/^a\\@b\\.c$/ OK Sure', 'a@b.c'), {
      accepted: true,
      code: 250,
      message: '<a@b.c>, recipient ok',
      disconnect: false,
      note: null,
      decidedBy: { file: 'rcpt_regexp', line: 1 },
    });
  });

  test('the OK reply echoes the address as the client wrote it (case kept)', () => {
    assert.equal(reply('/^a\\@b\\.c$/ OK', 'A@B.C').message, '<A@B.C>, recipient ok');
  });

  test('DENY: 550 COMMENT, stays', () => {
    const r = reply('x@y.z DENY No thanks', 'x@y.z');
    assert.equal(r.accepted, false);
    assert.equal(r.code, 550);
    assert.equal(r.message, 'No thanks');
    assert.equal(r.disconnect, false);
  });

  test('DENY without COMMENT: 550 relaying denied', () => {
    assert.equal(reply('x@y.z DENY', 'x@y.z').message, 'relaying denied');
  });

  test('DENYSOFT: 450 COMMENT [relaying denied]', () => {
    const r = reply('x@y.z DENYSOFT later', 'x@y.z');
    assert.deepEqual([r.code, r.message, r.disconnect, r.accepted], [450, 'later', false, false]);
    assert.equal(reply('x@y.z DENYSOFT', 'x@y.z').message, 'relaying denied');
  });

  test('DENY_DISCONNECT and its alias DENYHARD: 550 COMMENT [delivery denied], then closed', () => {
    for (const code of ['DENY_DISCONNECT', 'DENYHARD']) {
      const r = reply(`x@y.z ${code} go away`, 'x@y.z');
      assert.deepEqual([r.code, r.message, r.disconnect, r.accepted], [550, 'go away', true, false]);
      const d = reply(`x@y.z ${code}`, 'x@y.z');
      assert.deepEqual([d.code, d.message, d.disconnect], [550, 'delivery denied', true]);
    }
  });

  test('DENYSOFT_DISCONNECT: 421 COMMENT [relaying denied], then closed', () => {
    const r = reply('x@y.z DENYSOFT_DISCONNECT busy', 'x@y.z');
    assert.deepEqual([r.code, r.message, r.disconnect, r.accepted], [421, 'busy', true, false]);
    assert.equal(reply('x@y.z DENYSOFT_DISCONNECT', 'x@y.z').message, 'relaying denied');
  });

  test('DONE is treated as OK', () => {
    const r = reply('x@y.z DONE whatever [note=n]', 'x@y.z');
    assert.deepEqual([r.accepted, r.code, r.message, r.note], [true, 250, '<x@y.z>, recipient ok', 'n']);
  });

  test('DECLINED and no match fall to the configurable default', () => {
    const text = 'x@y.z DECLINED [note=ham] nope';
    for (const addr of ['x@y.z', 'other@y.z']) {
      const ok = reply(text, addr, 'OK');
      assert.deepEqual([ok.accepted, ok.code, ok.message, ok.decidedBy, ok.note], [
        true,
        250,
        `<${addr}>, recipient ok`,
        'default',
        null,
      ]);
      const deny = reply(text, addr, 'DENY');
      assert.deepEqual([deny.accepted, deny.code, deny.message, deny.disconnect], [false, 550, 'relaying denied', false]);
      const soft = reply(text, addr, 'DENYSOFT');
      assert.deepEqual([soft.accepted, soft.code, soft.message], [false, 450, 'relaying denied']);
    }
  });

  test('DECLINED ends the file: a later matching rule is not consulted', () => {
    const r = reply('/^x\\@/ DECLINED\n/^.*$/ DENY no', 'x@y.z', 'OK');
    assert.equal(r.code, 250);
    assert.equal(r.decidedBy, 'default');
    const v = evaluateRecipient(rules('/^x\\@/ DECLINED\n/^.*$/ DENY no'), 'x@y.z');
    assert.equal(v.code, 'DECLINED');
    assert.equal(v.rule?.line, 1);
    assert.equal(v.reason, 'matched');
  });

  test('no rules at all: the default decides', () => {
    const r = rcptReply(evaluateRecipient([], 'a@b'), 'a@b', 'OK');
    assert.deepEqual([r.code, r.decidedBy], [250, 'default']);
  });
});

describe('notes', () => {
  test('[note=NAME] is removed from the text and becomes the note, on OK rules too', () => {
    assert.equal(reply('x@y.z OK Sure [note=ham]', 'x@y.z').note, 'ham');
    const d = reply('x@y.z DENY Sorry [note=gone] - turn off the forward', 'x@y.z');
    assert.equal(d.note, 'gone');
    assert.equal(d.message, 'Sorry - turn off the forward');
  });

  test('a COMMENT that is only a note gives the default text', () => {
    const d = reply('x@y.z DENY [note=n]', 'x@y.z');
    assert.deepEqual([d.message, d.note], ['relaying denied', 'n']);
  });

  test('NAME has no white space and must not be empty; malformed tags stay text', () => {
    assert.equal(reply('x@y.z DENY a [note=] b', 'x@y.z').message, 'a [note=] b');
    assert.equal(reply('x@y.z DENY a [note=] b', 'x@y.z').note, null);
    assert.equal(reply('x@y.z DENY a [note=x y] b', 'x@y.z').note, null);
    assert.equal(reply('x@y.z DENY a [note=x y] b', 'x@y.z').message, 'a [note=x y] b');
  });

  test('the last of several tags wins, all are removed', () => {
    const d = reply('x@y.z DENY a [note=one] b [note=two]', 'x@y.z');
    assert.deepEqual([d.message, d.note], ['a b', 'two']);
  });

  test('note names keep their case', () => {
    assert.equal(reply('x@y.z OK [note=Ham]', 'x@y.z').note, 'Ham');
  });
});

describe('matching', () => {
  test('literal addresses compare case-insensitively for equality (no substring, no regex)', () => {
    const r = rules('Info@Example.COM DENY literal\na.b@c.d DENY dot');
    assert.equal(evaluateRecipient(r, 'INFO@example.com').rule?.line, 1);
    assert.equal(evaluateRecipient(r, 'xinfo@example.com').reason, 'no-match');
    assert.equal(evaluateRecipient(r, 'axb@c.d').reason, 'no-match');
  });

  test('a pattern is a regex only with a slash first and last', () => {
    const r = rules('/a@b DENY x\n/ DENY y');
    assert.equal(r[0].kind, 'literal');
    assert.equal(r[1].kind, 'literal');
    assert.equal(evaluateRecipient(r, '/a@b').rule?.line, 1);
  });

  test('// is an empty regex that matches everything', () => {
    assert.equal(evaluateRecipient(rules('// DENY all'), 'a@b').code, 'DENY');
  });

  test('regexes match case-insensitively against the lower-cased address', () => {
    const r = rules('/^BIG\\@HOST\\.TEST$/ DENY x\n/^[a-z]+\\@lower$/ DENY y');
    assert.equal(evaluateRecipient(r, 'big@host.test').code, 'DENY');
    assert.equal(evaluateRecipient(r, 'Big@Host.Test').code, 'DENY');
    assert.equal(evaluateRecipient(r, 'ABC@LOWER').rule?.line, 2);
  });

  test('the first matching rule decides', () => {
    const r = rules('/^a/ DENYSOFT first\n/^a\\@b$/ DENY second');
    assert.equal(evaluateRecipient(r, 'a@b').rule?.line, 1);
  });

  test('addresses with no user or no host part are not checked (DECLINED)', () => {
    const r = rules('// DENY everything');
    for (const a of ['postmaster', '@host', 'user@', '', '@']) {
      const v = evaluateRecipient(r, a);
      assert.deepEqual([v.code, v.reason, v.rule], ['DECLINED', 'not-checked', null], a);
      assert.equal(rcptReply(v, a, 'OK').code, 250);
    }
  });

  test('Perl-style patterns used in practice', () => {
    const r = rules(
      [
        '/^user\\d+\\@doma\\.in$/ DENY digits',
        '/^(sales|info)\\@shop\\.test$/ DENY alternation',
        '/^[^@]+\\@old\\.test\\Z/ DENY class-and-Z',
        '/\\Aroot\\@/ DENY A',
      ].join('\n'),
    );
    assert.equal(evaluateRecipient(r, 'user42@doma.in').rule?.line, 1);
    assert.equal(evaluateRecipient(r, 'userx@doma.in').reason, 'no-match');
    assert.equal(evaluateRecipient(r, 'info@shop.test').rule?.line, 2);
    assert.equal(evaluateRecipient(r, 'anyone@old.test').rule?.line, 3);
    assert.equal(evaluateRecipient(r, 'root@x').rule?.line, 4);
    assert.equal(evaluateRecipient(r, 'xroot@x').reason, 'no-match');
  });
});

describe('parsing', () => {
  test('fields split on the first two runs of white space; COMMENT keeps inner spacing; lines are trimmed', () => {
    const [r] = rules('   /^a$/ \t DENY   two  spaces\there   \r\n');
    assert.equal(r.pattern, '/^a$/');
    assert.equal(r.code, 'DENY');
    assert.equal(r.comment, 'two  spaces\there');
    assert.equal(r.line, 1);
  });

  test('blank lines and # comments (also indented) are ignored, line numbers stay the file lines', () => {
    const r = rules('\n# c\n   # indented\n\t\na@b DENY x\n');
    assert.equal(r.length, 1);
    assert.equal(r[0].line, 5);
  });

  test('CRLF files work', () => {
    const r = rules('a@b DENY x\r\n/^c\\@d$/ OK\r\n');
    assert.equal(evaluateRecipient(r, 'c@d').code, 'OK');
    assert.equal(r[0].comment, 'x');
  });

  test('bad lines are reported with file, line, reason and text, and skipped; the rest still works', () => {
    const text = [
      '/^ok\\@x$/ OK fine', // 1
      '/^(unclosed\\@x$/ DENY bad regex', // 2
      'a@b NOPE unknown code', // 3
      '/^nocode$/', // 4
      'c@d ok lower-case code', // 5
      '$include other_file', // 6
      '/^a++$/ DENY possessive', // 7
      '/^z\\@x$/ DENY last', // 8
    ].join('\n');
    const { rules: r, problems } = parseRcptRegexp(text, '/etc/trap/rcpt_regexp');
    assert.deepEqual(
      r.map((x) => x.line),
      [1, 8],
    );
    assert.deepEqual(
      problems.map((p) => [p.file, p.line]),
      [
        ['/etc/trap/rcpt_regexp', 2],
        ['/etc/trap/rcpt_regexp', 3],
        ['/etc/trap/rcpt_regexp', 4],
        ['/etc/trap/rcpt_regexp', 5],
        ['/etc/trap/rcpt_regexp', 6],
        ['/etc/trap/rcpt_regexp', 7],
      ],
    );
    assert.match(problems[0].reason, /invalid regex/);
    assert.equal(problems[0].text, '/^(unclosed\\@x$/ DENY bad regex');
    assert.match(problems[1].reason, /unknown CODE "NOPE"/);
    assert.match(problems[2].reason, /missing CODE/);
    assert.match(problems[3].reason, /upper case: OK/);
    assert.match(problems[4].reason, /\$include/);
    assert.match(problems[5].reason, /possessive/);
    assert.equal(evaluateRecipient(r, 'z@x').code, 'DENY');
  });

  test('rules are frozen', () => {
    const [r] = rules('a@b DENY x');
    assert.ok(Object.isFrozen(r));
  });
});

describe('reply text safety', () => {
  test('no CR, LF or other control or 8-bit characters reach a reply', () => {
    const r = reply('/^x/ OK', 'x\r\n250 forged\u0000\u00e9@y');
    assert.doesNotMatch(r.message, /[\r\n\x00-\x1f\x7f-\uffff]/);
    assert.equal(r.message, '<x??250 forged??@y>, recipient ok');
    const d = reply('x@y DENY caf\u00e9\u0007 closed', 'x@y');
    assert.equal(d.message, 'caf?? closed');
  });

  test('replies stay within the SMTP line limit, even for a huge address', () => {
    const addr = 'a'.repeat(5000) + '@b';
    const r = reply('// OK', addr);
    assert.ok(r.message.length <= MAX_REPLY_TEXT, String(r.message.length));
    assert.match(r.message, /^<a+\.\.\.>, recipient ok$/);
    const d = reply(`x@y DENY ${'z'.repeat(2000)}`, 'x@y');
    assert.ok(d.message.length <= MAX_REPLY_TEXT);
  });
});

describe("the old trap's file (docs/compat.md)", () => {
  test('ham address: 250 with note ham; old trap: 550 with its text; everything else: 250, no note', () => {
    const r = rules(OLD_TRAP);
    const ham = rcptReply(evaluateRecipient(r, 'Address@Traps.SpamAssassin.org'), 'Address@Traps.SpamAssassin.org', 'OK');
    assert.deepEqual([ham.code, ham.note, ham.message], [250, 'ham', '<Address@Traps.SpamAssassin.org>, recipient ok']);
    const old = rcptReply(evaluateRecipient(r, 'oldtrap@example.com'), 'oldtrap@example.com', 'OK');
    assert.deepEqual(
      [old.code, old.message, old.disconnect, old.decidedBy],
      [550, 'Sorry, too much nonspam - please turn off the forward', false, { file: 'rcpt_regexp', line: 4 }],
    );
    const other = rcptReply(evaluateRecipient(r, 'random@bait.test'), 'random@bait.test', 'DENY');
    assert.deepEqual([other.code, other.note, other.decidedBy], [250, null, { file: 'rcpt_regexp', line: 6 }]);
  });

  test('the unescaped dot in the ham pattern is a regex dot, as in Perl', () => {
    const r = rules(OLD_TRAP);
    assert.equal(evaluateRecipient(r, 'address@trapsXspamassassin.org').rule?.line, 2);
  });

  test('the shipped config/rcpt_regexp is this file, parses cleanly, and traps everything else', () => {
    const file = path.join(repoRoot(), 'config', 'rcpt_regexp');
    const text = fs.readFileSync(file, 'utf8');
    const { rules: r, problems } = parseRcptRegexp(text, file);
    assert.deepEqual(problems, []);
    assert.deepEqual(
      r.map((x) => [x.pattern, x.code, x.comment]),
      [
        ['/^address\\@traps.spamassassin.org$/', 'OK', 'Sure [note=ham]'],
        ['/^oldtrap\\@example\\.com$/', 'DENY', 'Sorry, too much nonspam - please turn off the forward'],
        ['/^.*$/', 'OK', 'Sure'],
      ],
    );
    assert.equal(evaluateRecipient(r, 'spam@bait.example').code, 'OK');
  });
});
