/**
 * Perl regex -> JavaScript: each construct that means something different in the two dialects either gets its
 * Perl meaning or is refused with a reason; never a silently different match.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { translatePerlRegex } from '../src/config/perl-regex';

function re(perl: string): RegExp {
  const t = translatePerlRegex(perl);
  if (!t.ok) assert.fail(`${perl} refused: ${t.reason}`);
  assert.equal(t.regex.flags, 'i', 'case-insensitive, no u/g/y');
  return t.regex;
}

function refused(perl: string, reason: RegExp): void {
  const t = translatePerlRegex(perl);
  assert.equal(t.ok, false, `${perl} should be refused`);
  if (!t.ok) assert.match(t.reason, reason);
}

function matches(perl: string, yes: string[], no: string[]): void {
  const r = re(perl);
  for (const s of yes) assert.ok(r.test(s), `${perl} should match ${JSON.stringify(s)}`);
  for (const s of no) assert.ok(!r.test(s), `${perl} should not match ${JSON.stringify(s)}`);
}

describe('escapes Perl and JS read differently', () => {
  test('\\@ is a literal @ (and other punctuation escapes are literals)', () => {
    matches('^a\\@b$', ['a@b'], ['a\\@b']);
    matches('^a\\-b\\#c\\%d\\=e\\:f\\,g\\ h\\!$', ['a-b#c%d=e:f,g h!'], []);
    matches('^a\\.b$', ['a.b'], ['axb']);
    matches('^a\\/b$', ['a/b'], []);
  });

  test('\\A, \\z, \\Z are anchors, not letters', () => {
    matches('\\Aab', ['abc'], ['xab', 'Aab']);
    matches('ab\\z', ['xab'], ['ab\n', 'abz']);
    matches('ab\\Z', ['xab', 'xab\n'], ['ab\n\n', 'abZ']);
  });

  test('$ also matches before a final newline, as in Perl', () => {
    matches('^ab$', ['ab', 'ab\n'], ['ab\nx', 'ab\n\n']);
  });

  test('. does not match newline but does match CR (Perl), unlike JS', () => {
    matches('^a.b$', ['a\rb', 'axb', 'a\u2028b'], ['a\nb']);
  });

  test('(?s) makes . match newline, scoped to its group', () => {
    matches('(?s)^a.b$', ['a\nb'], []);
    matches('^(?s:a.b)c.d$', ['a\nbcxd'], ['a\nbc\nd']);
    matches('^(a(?s).b)c.d$', ['a\nbcxd'], ['a\nbc\nd']);
  });

  test('(?m) ^ and $ work at line boundaries', () => {
    matches('(?m)^b$', ['a\nb\nc'], ['abc']);
  });

  test('(?x) ignores white space and # comments', () => {
    matches('(?x)^a#comment', ['ab'], ['xa']);
  });

  test('(?i) and (?i:...) are accepted (rules are case-insensitive anyway); turning i off is refused', () => {
    matches('(?i)^abc$', ['ABC'], []);
    matches('^(?i:abc)$', ['AbC'], []);
    matches('(?^i:^abc$)', ['ABC'], []);
    refused('(?-i)abc', /case-insensitive/);
    refused('(?^:abc)', /case-insensitivity off/);
  });

  test('\\e, \\a, \\h, \\v, \\R, \\N, \\x{..}, \\o{..}, \\c, octal', () => {
    matches('^\\e\\a$', ['\x1b\x07'], ['ea']);
    matches('^a\\hb$', ['a b', 'a\tb'], ['ahb', 'a\nb']);
    matches('^a\\vb$', ['a\nb', 'a\rb'], ['avb', 'a\x0bxb', 'a b']);
    matches('^a\\Hb$', ['axb'], ['a b']);
    matches('^a\\Rb$', ['a\r\nb', 'a\nb'], ['ab']);
    matches('^a\\Nb$', ['axb'], ['a\nb']);
    matches('^\\x{263A}\\x41\\x7$', ['\u263aA\x07'], []);
    matches('^\\o{101}\\101\\0$', ['AA\0'], []);
    matches('^\\cA\\c?$', ['\x01\x7f'], []);
    matches('^\\N{U+41}$', ['A'], []);
  });

  test('unknown or unsupported letter escapes are refused, not read as letters', () => {
    refused('\\q', /unknown escape \\q/);
    refused('\\Qa.b\\E', /\\Q\.\.\.\\E/);
    refused('\\pL', /Unicode properties/);
    refused('a\\Kb', /\\K/);
    refused('\\Ga', /\\G/);
    refused('\\Ua', /case-changing/);
    refused('\\N{LATIN SMALL LETTER A}', /named characters/);
    refused('\\b{wb}', /boundaries/);
  });
});

describe('classes', () => {
  test('a ] first in a class is a literal (JS would read [] as an empty class)', () => {
    matches('^[]a]+$', [']a]'], ['b']);
    matches('^[^]a]+$', ['bc'], [']']);
  });

  test('POSIX classes', () => {
    matches('^[[:alpha:]]+\\@[[:digit:]]+$', ['abc@123'], ['a1@1']);
    matches('^[[:alnum:]_.-]+$', ['a.b_c-1'], ['a b']);
    matches('^[[:^digit:]]+$', ['abc'], ['a1']);
    matches('^[[:punct:]]$', ['!', '@', '[', '~', '`'], ['a', ' ']);
    refused('[[:foo:]]', /unknown POSIX class/);
    refused('[[:^alpha:]]', /negated POSIX class/);
    refused('[[=a=]]', /reserved/);
  });

  test('escapes inside classes: \\@, \\d, \\h, octal, \\b is backspace', () => {
    matches('^[\\@\\d]+$', ['@1@'], ['a']);
    matches('^[\\h]$', [' ', '\t'], ['\n']);
    matches('^[\\101]$', ['A'], ['1']);
    matches('^[\\b]$', ['\b'], ['b']);
    matches('^[a\\]b]+$', [']ab'], ['c']);
    refused('[\\H]', /inside a character class/);
    refused('[\\q]', /unknown escape/);
  });

  test('unterminated class is refused', () => {
    refused('[abc', /unmatched \[/);
  });
});

describe('groups, quantifiers, back-references', () => {
  test('back-references to existing groups work; to missing groups are refused (JS would read octal)', () => {
    matches('^(a)\\1$', ['aa', 'aA'], ['ab']);
    matches('^(a)(b)\\g{-1}\\g1$', ['abba'], ['abab']);
    matches('^(?<x>a)\\k<x>\\g{x}(?P=x)$', ['aaaa'], []);
    matches("^(?'y'a)\\k{y}$", ['aa'], []);
    matches('^(?P<z>a)\\k<z>$', ['aa'], []);
    refused('^(a)\\2', /does not exist/);
    refused('^a\\1', /does not exist/);
    refused('^(a)\\k<nope>', /does not exist/);
    // \10 and up: a back-reference only when that many groups exist, otherwise octal (Perl's rule).
    matches('^(a)\\12$', ['a\n'], []);
    matches('^(a)(b)(c)(d)(e)(f)(g)(h)(i)(j)\\10$', ['abcdefghijj'], []);
    refused('^(a)\\89', /does not exist/);
  });

  test('a back-reference is not glued to a following digit', () => {
    matches('^(a)\\g{1}2$', ['aa2'], []);
  });

  test('{ that is not a quantifier is a literal, as in Perl', () => {
    matches('^a{$', ['a{'], []);
    matches('^a{x}$', ['a{x}'], []);
    matches('^a{2}$', ['aa'], ['a']);
    matches('^a{1,2}b$', ['ab', 'aab'], ['aaab']);
    matches('^a{2,}$', ['aaa'], ['a']);
  });

  test('lazy quantifiers work; possessive ones are refused', () => {
    matches('^a+?b$', ['aab'], []);
    refused('a++', /possessive/);
    refused('a*+', /possessive/);
    refused('a?+', /possessive/);
    refused('a{1,3}+', /possessive/);
  });

  test('lookaround works', () => {
    matches('^(?!abuse\\@).*\\@x$', ['a@x'], ['abuse@x']);
    matches('(?<=\\@)host$', ['a@host'], ['ahost']);
  });

  test('(?#comment) is removed', () => {
    matches('^a(?#this is ignored)b$', ['ab'], []);
  });

  test('constructs without a JS equivalent are refused with a reason', () => {
    refused('(?>a)', /atomic/);
    refused('(?|a)', /branch reset/);
    refused('(?(1)a|b)', /conditional/);
    refused('(?{ 1 })', /code/);
    refused('(??{ 1 })', /code/);
    refused('(?R)', /recursion/);
    refused('(a)(?1)', /recursion/);
    refused('(?&n)', /recursion/);
    refused('(*FAIL)', /control verbs/);
    refused('(?n)a', /modifier n/);
    refused('\u{1F600}', /Basic Multilingual Plane/);
    refused('a\\', /trailing backslash/);
  });

  test('syntax errors report the reason without the translated pattern', () => {
    const t = translatePerlRegex('(a');
    assert.equal(t.ok, false);
    if (!t.ok) {
      assert.match(t.reason, /^invalid regex: /);
      assert.doesNotMatch(t.reason, /\/\(a/);
    }
    refused('*a', /invalid regex/);
    refused('a)', /invalid regex/);
  });

  test('the empty pattern matches everything', () => {
    matches('', ['', 'anything'], []);
  });
});
