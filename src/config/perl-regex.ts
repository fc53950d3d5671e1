/**
 * Longer than the project's ~400 lines on purpose: it is one translator, a single walk over Perl's pattern syntax whose
 * cases depend on each other (groups, classes, escapes, modifiers); split, the grammar would be read in pieces.
 *
 * Perl regex -> JavaScript RegExp, for the patterns of config/rcpt_regexp and config/routes.
 *
 * The two dialects share most syntax but disagree silently on some of it: in JavaScript `\A`, `\z`, `\Z`, `\e`, `\h`
 * are plain letters, `$` does not match before a final newline, `.` does not match CR, `[]a]` is an empty class, and a
 * reference to a missing group is an octal escape. A silent disagreement would route or refuse mail differently from
 * the old trap, so every construct is either translated to its exact Perl meaning or refused with the reason.
 *
 * The JavaScript `u` flag is NOT used: Perl treats a backslash before any punctuation (`\@`, `\-`, `\#`) and a `{`
 * that does not start a quantifier as literals, which is also what non-`u` JavaScript does and what `u` rejects as
 * syntax errors; and `u` + `i` makes `\w`/`\b` match U+017F and U+212A (Unicode case folding), which Perl on the old
 * trap's byte strings never did. The price is that non-`u` mode accepts unknown escapes as literal letters; the
 * translator therefore whitelists escapes and refuses unknown ones. Characters outside the Basic Multilingual Plane
 * are refused for the same reason (without `u` they are two code units).
 */

export type RegexTranslation =
  | { readonly ok: true; readonly regex: RegExp; readonly source: string }
  | { readonly ok: false; readonly reason: string };

interface Mode {
  m: boolean;
  s: boolean;
  x: boolean;
}

/** Perl's \h and \v sets, as class contents (JS has no \h, and its \v is the single character VT). */
const H_SET = '\\t \\xa0\\u1680\\u180e\\u2000-\\u200a\\u202f\\u205f\\u3000';
const V_SET = '\\n\\x0b\\f\\r\\x85\\u2028\\u2029';

/** POSIX bracket classes as class contents; the negated form where a JS escape exists. */
const POSIX: Record<string, { pos: string; neg: string | null }> = {
  alpha: { pos: 'a-zA-Z', neg: null },
  digit: { pos: '0-9', neg: '\\D' },
  alnum: { pos: '0-9a-zA-Z', neg: null },
  upper: { pos: 'A-Z', neg: null },
  lower: { pos: 'a-z', neg: null },
  space: { pos: '\\s', neg: '\\S' },
  blank: { pos: ' \\t', neg: null },
  punct: { pos: '!-\\/:-@\\[-`{-~', neg: null },
  xdigit: { pos: '0-9A-Fa-f', neg: null },
  word: { pos: '\\w', neg: '\\W' },
  cntrl: { pos: '\\x00-\\x1f\\x7f', neg: null },
  print: { pos: '\\x20-\\x7e', neg: null },
  graph: { pos: '\\x21-\\x7e', neg: null },
  ascii: { pos: '\\x00-\\x7f', neg: null },
};

class Refused extends Error {}

function refuse(reason: string): never {
  throw new Refused(reason);
}

function hex4(code: number): string {
  return '\\u' + code.toString(16).padStart(4, '0');
}

/** A code point as a JS-regex escape that can never combine with what follows it. */
function charEscape(code: number): string {
  if (code > 0xffff) refuse('characters outside the Basic Multilingual Plane are not supported');
  return hex4(code);
}

const JS_SYNTAX = new Set(['^', '$', '\\', '.', '*', '+', '?', '(', ')', '[', ']', '{', '}', '|', '/', '-']);

function literalChar(ch: string): string {
  return JS_SYNTAX.has(ch) ? '\\' + ch : ch;
}

/** Names and count of capture groups, so back-references can be checked (JS silently reads `\5` as octal). */
function scanGroups(src: string): { count: number; names: Set<string> } {
  let count = 0;
  const names = new Set<string>();
  let inClass = false;
  for (let i = 0; i < src.length; i++) {
    const c = src[i];
    if (c === '\\') {
      i++;
      continue;
    }
    if (inClass) {
      if (c === ']') inClass = false;
      continue;
    }
    if (c === '[') {
      inClass = true;
      if (src[i + 1] === '^') i++;
      if (src[i + 1] === ']') i++;
      continue;
    }
    if (c !== '(') continue;
    if (src[i + 1] !== '?') {
      if (src[i + 1] !== '*') count++;
      continue;
    }
    const named = /^\(\?(?:<|P<|')([A-Za-z_][A-Za-z0-9_]*)[>']/.exec(src.slice(i));
    if (named) {
      count++;
      names.add(named[1]);
    }
  }
  return { count, names };
}

/**
 * Translate a Perl regex (the text between the slashes of a rule) to a case-insensitive JS RegExp with the same
 * meaning, or say why it cannot be.
 */
export function translatePerlRegex(perl: string): RegexTranslation {
  try {
    const source = translate(perl);
    let regex: RegExp;
    try {
      regex = new RegExp(source, 'i');
    } catch (err) {
      const msg = (err as Error).message;
      // V8's message repeats the translated pattern, which would confuse an operator reading their own.
      const tail = msg.lastIndexOf(': ');
      return { ok: false, reason: `invalid regex: ${tail >= 0 ? msg.slice(tail + 2) : msg}` };
    }
    return { ok: true, regex, source };
  } catch (err) {
    if (err instanceof Refused) return { ok: false, reason: err.message };
    throw err;
  }
}

function translate(src: string): string {
  for (const ch of src) {
    if (ch.codePointAt(0)! > 0xffff) refuse('characters outside the Basic Multilingual Plane are not supported');
  }
  const groups = scanGroups(src);
  let out = '';
  let i = 0;
  let opened = 0;
  let mode: Mode = { m: false, s: false, x: false };
  const stack: Mode[] = [];

  const backref = (n: number, written: string): string => {
    if (n < 1 || n > groups.count) refuse(`${written} refers to a group that does not exist`);
    // `(?:)` keeps a following digit from being read as part of the group number.
    return `\\${n}(?:)`;
  };
  const namedRef = (name: string, written: string): string => {
    if (!groups.names.has(name)) refuse(`${written} refers to a named group that does not exist`);
    return `\\k<${name}>`;
  };

  /** Reads `{...}` after an escape letter at src[pos]; returns the contents and the index after `}`. */
  const braced = (pos: number, what: string): { body: string; end: number } => {
    if (src[pos] !== '{') refuse(`${what} needs {...}`);
    const close = src.indexOf('}', pos);
    if (close < 0) refuse(`missing } after ${what}`);
    return { body: src.slice(pos + 1, close), end: close + 1 };
  };

  /**
   * Escapes valid both in and out of a class that denote one character: returns [code point, next index] or null.
   * `pos` is the index of the character after the backslash.
   */
  const charEscapeAt = (pos: number, inClass: boolean): [number, number] | null => {
    const c = src[pos];
    switch (c) {
      case 'n':
        return [0x0a, pos + 1];
      case 'r':
        return [0x0d, pos + 1];
      case 't':
        return [0x09, pos + 1];
      case 'f':
        return [0x0c, pos + 1];
      case 'e':
        return [0x1b, pos + 1];
      case 'a':
        return [0x07, pos + 1];
      case 'x': {
        if (src[pos + 1] === '{') {
          const { body, end } = braced(pos + 1, '\\x');
          const h = body.replace(/_/g, '');
          if (!/^[0-9A-Fa-f]{1,6}$/.test(h)) refuse(`bad hex escape \\x{${body}}`);
          return [parseInt(h, 16), end];
        }
        const m = /^[0-9A-Fa-f]{0,2}/.exec(src.slice(pos + 1))![0];
        return [m === '' ? 0 : parseInt(m, 16), pos + 1 + m.length];
      }
      case 'o': {
        const { body, end } = braced(pos + 1, '\\o');
        if (!/^[0-7]{1,8}$/.test(body)) refuse(`bad octal escape \\o{${body}}`);
        return [parseInt(body, 8), end];
      }
      case 'c': {
        const t = src[pos + 1];
        if (t === undefined) refuse('\\c at the end of the pattern');
        const code = t.toUpperCase().charCodeAt(0);
        if (code > 0x7f) refuse(`bad control escape \\c${t}`);
        return [code ^ 0x40, pos + 2];
      }
      case 'N': {
        if (src[pos + 1] !== '{') return null;
        const { body, end } = braced(pos + 1, '\\N');
        const m = /^U\+([0-9A-Fa-f]{1,6})$/.exec(body);
        if (!m) refuse(`named characters like \\N{${body}} are not supported; use \\N{U+XXXX} or \\x{XXXX}`);
        return [parseInt(m[1], 16), end];
      }
      case '0': {
        const m = /^[0-7]{1,3}/.exec(src.slice(pos))![0];
        return [parseInt(m, 8), pos + m.length];
      }
      default:
        if (inClass && c >= '1' && c <= '7') {
          const m = /^[0-7]{1,3}/.exec(src.slice(pos))![0];
          return [parseInt(m, 8), pos + m.length];
        }
        return null;
    }
  };

  const unsupportedEscape = (c: string): never => {
    switch (c) {
      case 'Q':
      case 'E':
        return refuse(
          `\\${c}: \\Q...\\E quoting is not applied to patterns read from a file; escape the characters instead`,
        );
      case 'l':
      case 'u':
      case 'L':
      case 'U':
        return refuse(`\\${c}: case-changing escapes are not applied to patterns read from a file`);
      case 'p':
      case 'P':
        return refuse(`\\${c}: Unicode properties are not supported; use a character class such as [a-z]`);
      case 'K':
        return refuse('\\K (keep) is not supported');
      case 'G':
        return refuse('\\G is not supported; use ^');
      case 'X':
      case 'C':
        return refuse(`\\${c} is not supported`);
      default:
        return refuse(`unknown escape \\${c}`);
    }
  };

  const readClass = (start: number): number => {
    // src[start] === '['
    let j = start + 1;
    let body = '';
    let negated = false;
    if (src[j] === '^') {
      negated = true;
      j++;
    }
    // In Perl a `]` first in a class is a literal; in JS `[]` is an empty class.
    if (src[j] === ']') {
      body += '\\]';
      j++;
    }
    for (;;) {
      if (j >= src.length) refuse('unmatched [ in character class');
      const c = src[j];
      if (c === ']') {
        j++;
        break;
      }
      if (c === '[') {
        const posix = /^\[([:=.])(\^?)([a-z]*)\1\]/.exec(src.slice(j));
        if (posix) {
          if (posix[1] !== ':') refuse(`POSIX syntax [${posix[1]} ${posix[1]}] is reserved`);
          const cls = POSIX[posix[3]];
          if (!cls) refuse(`unknown POSIX class [:${posix[3]}:]`);
          if (posix[2] === '^') {
            if (cls.neg === null) refuse(`negated POSIX class [:^${posix[3]}:] is not supported`);
            body += cls.neg;
          } else {
            body += cls.pos;
          }
          j += posix[0].length;
          continue;
        }
        body += '\\[';
        j++;
        continue;
      }
      if (c === '\\') {
        const e = src[j + 1];
        if (e === undefined) refuse('trailing backslash');
        if ('dDwWsS'.includes(e)) {
          body += '\\' + e;
          j += 2;
          continue;
        }
        if (e === 'b') {
          body += '\\x08';
          j += 2;
          continue;
        }
        if (e === 'h') {
          body += H_SET;
          j += 2;
          continue;
        }
        if (e === 'v') {
          body += V_SET;
          j += 2;
          continue;
        }
        if ('HVRN'.includes(e) && !(e === 'N' && src[j + 2] === '{')) {
          refuse(`\\${e} is not supported inside a character class`);
        }
        const ce = charEscapeAt(j + 1, true);
        if (ce) {
          body += charEscape(ce[0]);
          j = ce[1];
          continue;
        }
        if (/[A-Za-z0-9]/.test(e)) unsupportedEscape(e);
        body += e === '_' ? '_' : literalInClass(e);
        j += 2;
        continue;
      }
      body += c;
      j++;
    }
    out += (negated ? '[^' : '[') + body + ']';
    return j;
  };

  const quantifierAt = (pos: number): number => {
    // Returns the length of a quantifier at pos (0 if none).
    const c = src[pos];
    if (c === '*' || c === '+' || c === '?') return 1;
    if (c === '{') {
      const m = /^\{\d+(?:,\d*)?\}/.exec(src.slice(pos));
      if (m) return m[0].length;
    }
    return 0;
  };

  while (i < src.length) {
    const c = src[i];

    if (mode.x && /\s/.test(c)) {
      i++;
      continue;
    }
    if (mode.x && c === '#') {
      const nl = src.indexOf('\n', i);
      i = nl < 0 ? src.length : nl + 1;
      continue;
    }

    const q = quantifierAt(i);
    if (q > 0) {
      out += src.slice(i, i + q);
      i += q;
      if (src[i] === '?') {
        out += '?';
        i++;
      } else if (src[i] === '+') {
        refuse('possessive quantifiers (*+, ++, ?+, {n,m}+) are not supported');
      }
      continue;
    }

    switch (c) {
      case '\\': {
        const e = src[i + 1];
        if (e === undefined) refuse('trailing backslash');
        if ('dDwWsSbB'.includes(e)) {
          if ((e === 'b' || e === 'B') && src[i + 2] === '{') refuse(`\\${e}{...} boundaries are not supported`);
          out += '\\' + e;
          i += 2;
          break;
        }
        if (e === 'A') {
          out += '^';
          i += 2;
          break;
        }
        if (e === 'z') {
          // Without the m flag, JS `$` is the absolute end.
          out += '$';
          i += 2;
          break;
        }
        if (e === 'Z') {
          out += '(?=\\n?$)';
          i += 2;
          break;
        }
        if (e === 'h' || e === 'H') {
          out += (e === 'h' ? '[' : '[^') + H_SET + ']';
          i += 2;
          break;
        }
        if (e === 'v' || e === 'V') {
          out += (e === 'v' ? '[' : '[^') + V_SET + ']';
          i += 2;
          break;
        }
        if (e === 'R') {
          out += '(?:\\r\\n|[' + V_SET + '])';
          i += 2;
          break;
        }
        if (e === 'N' && src[i + 2] !== '{') {
          out += '[^\\n]';
          i += 2;
          break;
        }
        if (e >= '1' && e <= '9') {
          // Perl: \1-\9 are always back-references; \10 and up only when that many groups exist, else octal.
          const digits = /^\d+/.exec(src.slice(i + 1))![0];
          if (digits.length === 1 || Number(digits) <= groups.count) {
            out += backref(Number(digits), '\\' + digits);
            i += 1 + digits.length;
            break;
          }
          const oct = /^[0-7]{1,3}/.exec(digits)?.[0];
          if (oct === undefined) refuse(`\\${digits} refers to a group that does not exist`);
          out += charEscape(parseInt(oct, 8));
          i += 1 + oct.length;
          break;
        }
        if (e === 'g') {
          const m = /^g(?:\{(-?\d+|[A-Za-z_]\w*)\}|(-?\d+))/.exec(src.slice(i + 1));
          if (!m) refuse('bad \\g back-reference');
          const ref = m[1] ?? m[2];
          if (/^-?\d+$/.test(ref)) {
            const n = Number(ref);
            out += backref(n < 0 ? opened + 1 + n : n, '\\' + m[0]);
          } else {
            out += namedRef(ref, '\\' + m[0]);
          }
          i += 1 + m[0].length;
          break;
        }
        if (e === 'k') {
          const m = /^k(?:<([A-Za-z_]\w*)>|'([A-Za-z_]\w*)'|\{([A-Za-z_]\w*)\})/.exec(src.slice(i + 1));
          if (!m) refuse('bad \\k named back-reference');
          out += namedRef(m[1] ?? m[2] ?? m[3], '\\' + m[0]);
          i += 1 + m[0].length;
          break;
        }
        const ce = charEscapeAt(i + 1, false);
        if (ce) {
          out += charEscape(ce[0]);
          i = ce[1];
          break;
        }
        if (e === '_') {
          out += '_';
          i += 2;
          break;
        }
        if (/[A-Za-z0-9]/.test(e)) unsupportedEscape(e);
        // Perl: a backslash before any other character (`\@`, `\.`, `\-`) is that character.
        out += literalChar(e);
        i += 2;
        break;
      }
      case '.':
        out += mode.s ? '[\\s\\S]' : '[^\\n]';
        i++;
        break;
      case '^':
        out += mode.m ? '(?<=^|\\n)' : '^';
        i++;
        break;
      case '$':
        // Perl `$` also matches before a final newline; under /m before any newline.
        out += mode.m ? '(?=\\n|$)' : '(?=\\n?$)';
        i++;
        break;
      case '[':
        i = readClass(i);
        break;
      case '{':
        // Not a quantifier (checked above): a literal, as in Perl.
        out += '\\{';
        i++;
        break;
      case '}':
        out += '\\}';
        i++;
        break;
      case ']':
        out += '\\]';
        i++;
        break;
      case '/':
        out += '\\/';
        i++;
        break;
      case ')':
        if (stack.length > 0) mode = stack.pop()!;
        out += ')';
        i++;
        break;
      case '(': {
        if (src[i + 1] === '*') refuse('backtracking control verbs (*...) are not supported');
        if (src[i + 1] !== '?') {
          opened++;
          stack.push({ ...mode });
          out += '(';
          i++;
          break;
        }
        const rest = src.slice(i + 2);
        if (rest.startsWith('#')) {
          const close = src.indexOf(')', i);
          if (close < 0) refuse('unterminated (?# comment');
          i = close + 1;
          break;
        }
        if (rest.startsWith(':') || rest.startsWith('=') || rest.startsWith('!')) {
          stack.push({ ...mode });
          out += '(?' + rest[0];
          i += 3;
          break;
        }
        if (rest.startsWith('<=') || rest.startsWith('<!')) {
          stack.push({ ...mode });
          out += '(?' + rest.slice(0, 2);
          i += 4;
          break;
        }
        const named = /^(?:<|P<|')([A-Za-z_][A-Za-z0-9_]*)[>']/.exec(rest);
        if (named) {
          opened++;
          stack.push({ ...mode });
          out += `(?<${named[1]}>`;
          i += 2 + named[0].length;
          break;
        }
        const pref = /^P=([A-Za-z_][A-Za-z0-9_]*)\)/.exec(rest);
        if (pref) {
          out += namedRef(pref[1], `(?P=${pref[1]})`);
          i += 2 + pref[0].length;
          break;
        }
        if (rest.startsWith('>')) refuse('atomic groups (?>...) are not supported');
        if (rest.startsWith('|')) refuse('branch reset groups (?|...) are not supported');
        if (rest.startsWith('(')) refuse('conditional groups (?(...)...) are not supported');
        if (rest.startsWith('{') || rest.startsWith('?{')) refuse('code blocks are not allowed in patterns');
        if (/^(?:R|[+-]?\d|&|P>)/.test(rest)) refuse('recursion (?R), (?N), (?&name) is not supported');
        const mods = /^(\^?)([a-zA-Z]*)(?:-([a-zA-Z]*))?([:)])/.exec(rest);
        if (!mods) refuse(`unknown group construct (?${rest.slice(0, 3)}`);
        const [whole, caret, on, off = '', end] = mods;
        const next: Mode = caret ? { m: false, s: false, x: false } : { ...mode };
        if (caret && !on.includes('i')) refuse('(?^...) turns case-insensitivity off, which is not supported');
        for (const f of on) {
          if (f === 'i') continue;
          if (f === 'm' || f === 's' || f === 'x') next[f] = true;
          else refuse(`inline modifier ${f} is not supported`);
        }
        for (const f of off) {
          if (f === 'i') refuse('(?-i) is not supported: rules are always case-insensitive');
          if (f === 'm' || f === 's' || f === 'x') next[f] = false;
          else refuse(`inline modifier ${f} is not supported`);
        }
        i += 2 + whole.length;
        if (end === ')') {
          // `(?s)` applies up to the end of the enclosing group.
          mode = next;
        } else {
          stack.push(mode);
          mode = next;
          out += '(?:';
        }
        break;
      }
      default:
        out += c;
        i++;
    }
  }
  return out;
}

function literalInClass(ch: string): string {
  return ch === ']' || ch === '\\' || ch === '^' || ch === '-' || ch === '[' ? '\\' + ch : ch;
}
