/**
 * The qpsmtpd `rcpt_regexp` file (docs/compat.md#the-rcpt_regexp-file), parsed and evaluated the way the old trap's
 * plugin did, so an operator's file can be copied over unchanged and give the same SMTP answers.
 *
 * Patterns are Perl regexes, translated by perl-regex.ts (which says why they are not handed to `new RegExp` as is).
 */
import { translatePerlRegex } from './perl-regex';

export type RcptCode =
  | 'OK'
  | 'DENY'
  | 'DENYSOFT'
  | 'DENY_DISCONNECT'
  | 'DENYHARD'
  | 'DENYSOFT_DISCONNECT'
  | 'DECLINED'
  | 'DONE';

export const RCPT_CODES: readonly RcptCode[] = Object.freeze([
  'OK',
  'DENY',
  'DENYSOFT',
  'DENY_DISCONNECT',
  'DENYHARD',
  'DENYSOFT_DISCONNECT',
  'DECLINED',
  'DONE',
]);

/** The trap's decision for a recipient that no rule decided (DECLINED or no match). */
export type RcptDefaultCode = 'OK' | 'DENY' | 'DENYSOFT';

export interface RcptRule {
  readonly file: string;
  readonly line: number;
  /** PATTERN as written in the file. */
  readonly pattern: string;
  readonly kind: 'regex' | 'literal';
  /** Compiled translation (kind regex), case-insensitive; never has the g or y flag, so `test` is stateless. */
  readonly regex: RegExp | null;
  /** Lower-cased address (kind literal). */
  readonly literal: string | null;
  /** CODE as written (DENYHARD is kept, so `check` shows what the file says). */
  readonly code: RcptCode;
  /** COMMENT as written (may be empty). */
  readonly comment: string;
  /** COMMENT with the `[note=NAME]` tag removed and made safe for an SMTP reply; empty means "use the default". */
  readonly text: string;
  readonly note: string | null;
}

export interface ConfigProblem {
  readonly file: string;
  readonly line: number;
  readonly reason: string;
  /** The offending line as written. */
  readonly text: string;
}

export interface RcptVerdict {
  /** DECLINED when no rule matched or the address was not checked. */
  readonly code: RcptCode;
  /** The first matching rule, or null. */
  readonly rule: RcptRule | null;
  readonly reason: 'matched' | 'no-match' | 'not-checked';
}

export interface RcptReply {
  readonly accepted: boolean;
  readonly code: 250 | 450 | 550 | 421;
  /** Reply text without the code: printable ASCII only, at most MAX_REPLY_TEXT octets. */
  readonly message: string;
  readonly disconnect: boolean;
  readonly note: string | null;
  readonly decidedBy: { readonly file: string; readonly line: number } | 'default';
}

// The white space around a tag goes with it, so `Sure [note=ham] now` reads `Sure now`.
const NOTE_TAG = /[\t ]*\[note=([^\s\]]+)\][\t ]*/g;

/** SMTP reply lines are limited to 512 octets (RFC 5321 4.5.3.1.5): code, space, text, CRLF. */
export const MAX_REPLY_TEXT = 512 - 4 - 2;

/**
 * Text for an SMTP reply: printable ASCII only (a reply is not SMTPUTF8, and CR/LF would end it early or forge a
 * second reply), whitespace runs as one space, at most MAX_REPLY_TEXT octets.
 */
export function safeReplyText(text: string, max: number = MAX_REPLY_TEXT): string {
  let s = text.replace(/\t/g, ' ').replace(/[^\x20-\x7e]/g, '?');
  if (s.length > max) s = s.slice(0, max - 3) + '...';
  return s;
}

function extractNote(comment: string): { text: string; note: string | null } {
  let note: string | null = null;
  // The last tag wins, like qpsmtpd's one note per transaction where the last setter won.
  const text = comment
    .replace(NOTE_TAG, (_m, name: string) => {
      note = name;
      return ' ';
    })
    .trim();
  return { text, note };
}

function isCode(s: string): s is RcptCode {
  return (RCPT_CODES as readonly string[]).includes(s);
}

/**
 * Parse the file. Never throws for content: a bad line is reported in `problems` and skipped, as qpsmtpd did, so a
 * typo in one rule cannot stop the trap.
 */
export function parseRcptRegexp(text: string, file: string): { rules: RcptRule[]; problems: ConfigProblem[] } {
  const rules: RcptRule[] = [];
  const problems: ConfigProblem[] = [];
  const lines = text.split('\n');
  for (let n = 0; n < lines.length; n++) {
    const raw = lines[n].replace(/\r$/, '');
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const lineNo = n + 1;
    const problem = (reason: string): void => {
      problems.push(Object.freeze({ file, line: lineNo, reason, text: raw }));
    };
    const m = /^(\S+)(?:\s+(\S+)(?:\s+([\s\S]*))?)?$/.exec(line)!;
    const pattern = m[1];
    const codeText = m[2];
    const comment = m[3] ?? '';
    if (pattern.startsWith('$include')) {
      problem('$include is not supported; copy the included rules into this file');
      continue;
    }

    let regex: RegExp | null = null;
    let literal: string | null = null;
    const isRegex = pattern.length >= 2 && pattern.startsWith('/') && pattern.endsWith('/');
    if (isRegex) {
      const t = translatePerlRegex(pattern.slice(1, -1));
      if (!t.ok) {
        problem(t.reason);
        continue;
      }
      regex = t.regex;
    } else {
      literal = pattern.toLowerCase();
    }

    if (codeText === undefined) {
      problem('missing CODE (expected PATTERN CODE [COMMENT])');
      continue;
    }
    if (!isCode(codeText)) {
      const hint = isCode(codeText.toUpperCase()) ? ` (codes are upper case: ${codeText.toUpperCase()})` : '';
      problem(`unknown CODE ${JSON.stringify(codeText)}${hint}; expected one of ${RCPT_CODES.join(', ')}`);
      continue;
    }

    const { text: noteless, note } = extractNote(comment);
    rules.push(
      Object.freeze({
        file,
        line: lineNo,
        pattern,
        kind: isRegex ? ('regex' as const) : ('literal' as const),
        regex,
        literal,
        code: codeText,
        comment,
        text: safeReplyText(noteless),
        note,
      }),
    );
  }
  return { rules, problems };
}

/** Whether a rule's pattern matches an already lower-cased address. */
export function ruleMatches(rule: RcptRule, lowered: string): boolean {
  return rule.regex !== null ? rule.regex.test(lowered) : rule.literal === lowered;
}

/** `address` is `user@host` without angle brackets. */
export function evaluateRecipient(rules: readonly RcptRule[], address: string): RcptVerdict {
  const at = address.lastIndexOf('@');
  if (at <= 0 || at === address.length - 1) {
    return { code: 'DECLINED', rule: null, reason: 'not-checked' };
  }
  const lowered = address.toLowerCase();
  for (const rule of rules) {
    if (ruleMatches(rule, lowered)) return { code: rule.code, rule, reason: 'matched' };
  }
  return { code: 'DECLINED', rule: null, reason: 'no-match' };
}

function acceptReply(address: string): string {
  const suffix = '>, recipient ok';
  return '<' + safeReplyText(address, MAX_REPLY_TEXT - 1 - suffix.length) + suffix;
}

/** The SMTP reply for a verdict, per the table in docs/compat.md#replies. */
export function rcptReply(verdict: RcptVerdict, address: string, defaultCode: RcptDefaultCode): RcptReply {
  const rule = verdict.rule;
  // A DECLINED rule ends the file's say: the default decides, and the rule's note and text do not apply.
  const code: Exclude<RcptCode, 'DECLINED'> =
    rule !== null && verdict.code !== 'DECLINED' ? verdict.code : defaultCode;
  const decided = rule !== null && verdict.code !== 'DECLINED';
  const decidedBy = decided ? Object.freeze({ file: rule.file, line: rule.line }) : ('default' as const);
  const note = decided ? rule.note : null;
  const text = decided ? rule.text : '';
  const reply = (
    accepted: boolean,
    smtpCode: RcptReply['code'],
    message: string,
    disconnect: boolean,
  ): RcptReply => Object.freeze({ accepted, code: smtpCode, message, disconnect, note, decidedBy });
  switch (code) {
    case 'OK':
    case 'DONE':
      return reply(true, 250, acceptReply(address), false);
    case 'DENY':
      return reply(false, 550, text || 'relaying denied', false);
    case 'DENYSOFT':
      return reply(false, 450, text || 'relaying denied', false);
    case 'DENY_DISCONNECT':
    case 'DENYHARD':
      return reply(false, 550, text || 'delivery denied', true);
    case 'DENYSOFT_DISCONNECT':
      return reply(false, 421, text || 'relaying denied', true);
  }
}
