/**
 * A client's SMTP dialect, reduced to documented features and a short stable id (docs/fingerprints.md).
 *
 * Bot software speaks SMTP in recognisable ways (command case, HELO form, pipelining, line endings); a session layer
 * observes them as facts (`Dialect`), and this module turns facts into a canonical feature string with a fixed key
 * order and an id hashed from it. Nothing here depends on the client's address, so one dialect gives one id from any
 * address. Only facts known when a message is filed enter the id: how the session ends (QUIT or drop) is only
 * known after the message's job is committed, so it is kept beside the id (`SessionEnd`), never in it.
 */
import { createHash } from 'node:crypto';
import net from 'node:net';

export type VerbCase = 'upper' | 'lower' | 'mixed';
export type Greeting = 'ehlo' | 'helo' | 'none';
export type SessionEnd = 'quit' | 'drop';

export interface MailFromForm {
  /** `MAIL FROM:<a@b>` rather than `MAIL FROM:a@b`. */
  readonly angle: boolean;
  /** `MAIL FROM: <a@b>`: white space between the colon and the address. */
  readonly spaceAfterColon: boolean;
  /** ESMTP parameters after the address (`SIZE=`, `BODY=8BITMIME`, ...). */
  readonly parameters: boolean;
}

/** What a session layer observed, up to the moment a fingerprint is taken. */
export interface Dialect {
  /** The client sent a command before the greeting (only observable with a greeting delay). */
  readonly earlyTalk: boolean;
  /** Verb of the first HELO/EHLO; `none` when the client sent neither. */
  readonly greeting: Greeting;
  /** Argument of the first HELO/EHLO exactly as sent; null without one. */
  readonly heloArgument: string | null;
  /** The client's reverse DNS name; null when unknown (lookups off, no PTR, timeout). */
  readonly rdns: string | null;
  /** Case of each command keyword at its first use, by upper-cased verb (`MAIL` for `mail From:`). */
  readonly verbCase: Readonly<Record<string, VerbCase>>;
  /** At least one command arrived before the reply to the previous one was sent. */
  readonly pipelined: boolean;
  /** Form of the latest MAIL FROM; null without one. */
  readonly mailFrom: MailFromForm | null;
  readonly usedRset: boolean;
  readonly usedNoop: boolean;
  readonly usedVrfy: boolean;
  /** A LF without CR before it in message content; null before any DATA. */
  readonly bareLfInData: boolean | null;
  /** The session runs over TLS (STARTTLS succeeded). */
  readonly startTls: boolean;
  /** How the session ended; null while it is open. Not part of the id (see the module comment). */
  readonly end: SessionEnd | null;
}

export type HeloForm = 'none' | 'empty' | 'literal' | 'ip' | 'word' | 'fqdn' | 'other';
export type RdnsRelation = 'match' | 'differ' | 'unknown' | 'na';
export type CaseSummary = 'upper' | 'lower' | 'mixed' | 'varied' | 'na';

export interface Fingerprint {
  /** `v1-` and 12 base32 characters: 60 bits of SHA-256 over the version and the feature string. */
  readonly id: string;
  /** The canonical feature string, e.g. `talk=0;greet=ehlo;helo=fqdn;...`. */
  readonly features: string;
}

/** Bumped when a feature is added, removed or redefined: ids of the new version never equal the old ones. */
export const FINGERPRINT_VERSION = 1;
/** 60 bits: about 1e-7 chance of any collision over the whole feature space (FEATURE_SPACE_SIZE), see the docs. */
export const FINGERPRINT_ID_CHARS = 12;
export const FINGERPRINT_ID = /^v[0-9]+-[a-z2-7]{12}$/;

const HOST_LABELS = /^[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*\.?$/;

/** The form of a HELO/EHLO argument. */
export function heloForm(arg: string | null): HeloForm {
  if (arg === null) return 'none';
  if (arg === '') return 'empty';
  if (arg.startsWith('[') && arg.endsWith(']')) {
    const inner = arg.slice(1, -1);
    const v6 = /^ipv6:/i.test(inner) ? inner.slice(5) : null;
    if (v6 !== null ? net.isIPv6(v6) : net.isIPv4(inner)) return 'literal';
    return 'other';
  }
  if (net.isIP(arg) !== 0) return 'ip';
  if (!HOST_LABELS.test(arg)) return 'other';
  return arg.replace(/\.$/, '').includes('.') ? 'fqdn' : 'word';
}

/** Whether the HELO name is the client's reverse DNS name (case-insensitive, trailing dot ignored). */
export function rdnsRelation(arg: string | null, rdns: string | null): RdnsRelation {
  if (arg === null || arg === '') return 'na';
  if (rdns === null || rdns === '') return 'unknown';
  const norm = (s: string) => s.replace(/\.$/, '').toLowerCase();
  return norm(arg) === norm(rdns) ? 'match' : 'differ';
}

/** Case of a command keyword; null when it has no letters. */
export function caseOf(keyword: string): VerbCase | null {
  const hasUpper = keyword !== keyword.toLowerCase();
  const hasLower = keyword !== keyword.toUpperCase();
  if (hasUpper && hasLower) return 'mixed';
  if (hasUpper) return 'upper';
  if (hasLower) return 'lower';
  return null;
}

/** One value for a session: a keyword in mixed case wins, then keywords that disagree (`varied`). */
export function caseSummary(verbCase: Readonly<Record<string, VerbCase>>): CaseSummary {
  let upper = false;
  let lower = false;
  for (const c of Object.values(verbCase)) {
    if (c === 'mixed') return 'mixed';
    if (c === 'upper') upper = true;
    else lower = true;
  }
  if (upper && lower) return 'varied';
  return upper ? 'upper' : lower ? 'lower' : 'na';
}

/** The form of a raw `MAIL FROM:...` command line. */
export function mailFromForm(line: string): MailFromForm {
  const colon = line.indexOf(':');
  const rest = colon < 0 ? '' : line.slice(colon + 1);
  const spaceAfterColon = rest.length > 0 && (rest[0] === ' ' || rest[0] === '\t');
  const addr = rest.trimStart();
  const angle = addr.startsWith('<');
  let after: string;
  if (angle) {
    const close = addr.indexOf('>');
    after = close < 0 ? '' : addr.slice(close + 1);
  } else {
    const space = addr.search(/[ \t]/);
    after = space < 0 ? '' : addr.slice(space);
  }
  return { angle, spaceAfterColon, parameters: after.trim() !== '' };
}

const bit = (b: boolean): string => (b ? '1' : '0');

export interface Feature {
  readonly key: string;
  /** Every value the feature can take, in documentation order. */
  readonly values: readonly string[];
  readonly of: (d: Dialect) => string;
}

/** The features in canonical order. Changing this list is a new FINGERPRINT_VERSION. */
export const FEATURES: readonly Feature[] = Object.freeze([
  { key: 'talk', values: ['0', '1'], of: (d: Dialect) => bit(d.earlyTalk) },
  { key: 'greet', values: ['ehlo', 'helo', 'none'], of: (d: Dialect) => d.greeting },
  { key: 'helo', values: ['none', 'empty', 'literal', 'ip', 'word', 'fqdn', 'other'], of: (d: Dialect) => heloForm(d.heloArgument) },
  { key: 'rdns', values: ['match', 'differ', 'unknown', 'na'], of: (d: Dialect) => rdnsRelation(d.heloArgument, d.rdns) },
  { key: 'case', values: ['upper', 'lower', 'mixed', 'varied', 'na'], of: (d: Dialect) => caseSummary(d.verbCase) },
  { key: 'pipe', values: ['0', '1'], of: (d: Dialect) => bit(d.pipelined) },
  { key: 'from', values: ['angle', 'bare', 'none'], of: (d: Dialect) => (d.mailFrom === null ? 'none' : d.mailFrom.angle ? 'angle' : 'bare') },
  { key: 'from_sp', values: ['0', '1', 'na'], of: (d: Dialect) => (d.mailFrom === null ? 'na' : bit(d.mailFrom.spaceAfterColon)) },
  { key: 'from_par', values: ['0', '1', 'na'], of: (d: Dialect) => (d.mailFrom === null ? 'na' : bit(d.mailFrom.parameters)) },
  { key: 'rset', values: ['0', '1'], of: (d: Dialect) => bit(d.usedRset) },
  { key: 'noop', values: ['0', '1'], of: (d: Dialect) => bit(d.usedNoop) },
  { key: 'vrfy', values: ['0', '1'], of: (d: Dialect) => bit(d.usedVrfy) },
  { key: 'lf', values: ['0', '1', 'na'], of: (d: Dialect) => (d.bareLfInData === null ? 'na' : bit(d.bareLfInData)) },
  { key: 'tls', values: ['0', '1'], of: (d: Dialect) => bit(d.startTls) },
]);

/** How many feature strings exist: the product of every feature's values. */
export const FEATURE_SPACE_SIZE = FEATURES.reduce((n, f) => n * f.values.length, 1);

export function canonicalFeatures(d: Dialect): string {
  return FEATURES.map((f) => `${f.key}=${f.of(d)}`).join(';');
}

const BASE32 = 'abcdefghijklmnopqrstuvwxyz234567';

/** The id of a canonical feature string; the version is hashed too, so a redefined token cannot keep an old id. */
export function fingerprintId(features: string, version = FINGERPRINT_VERSION): string {
  const digest = createHash('sha256').update(`spamtrapd-fingerprint-v${version}\n${features}`).digest();
  let out = '';
  let acc = 0;
  let bits = 0;
  for (let i = 0; out.length < FINGERPRINT_ID_CHARS; i++) {
    acc = ((acc << 8) | digest[i]) & 0xffff;
    bits += 8;
    while (bits >= 5 && out.length < FINGERPRINT_ID_CHARS) {
      bits -= 5;
      out += BASE32[(acc >> bits) & 31];
    }
  }
  return `v${version}-${out}`;
}

/** Ids already computed, by feature string: bots repeat a handful of dialects, so a message rarely hashes. */
const memo = new Map<string, string>();
const MEMO_MAX = 4096;

export function fingerprint(d: Dialect): Fingerprint {
  const features = canonicalFeatures(d);
  let id = memo.get(features);
  if (id === undefined) {
    if (memo.size >= MEMO_MAX) memo.clear();
    id = fingerprintId(features);
    memo.set(features, id);
  }
  return { id, features };
}

/** The verbs whose case is recorded: the commands SMTP clients send. Others are ignored, so the record stays small. */
const KNOWN_VERBS = new Set(['HELO', 'EHLO', 'MAIL', 'RCPT', 'DATA', 'RSET', 'NOOP', 'VRFY', 'EXPN', 'HELP', 'QUIT', 'STARTTLS', 'AUTH', 'BDAT']);

/**
 * Turns what a session layer sees into a Dialect. One per connection; every method is O(length of the command) or,
 * for message content, one native LF search per line and nothing once a bare LF was found.
 */
export class DialectRecorder {
  private earlyTalk = false;
  private greeting: Greeting = 'none';
  private heloArgument: string | null = null;
  private rdnsName: string | null = null;
  private readonly verbCase: Record<string, VerbCase> = {};
  private pipelined = false;
  private mailFrom: MailFromForm | null = null;
  private usedRset = false;
  private usedNoop = false;
  private usedVrfy = false;
  private bareLf: boolean | null = null;
  private lastDataByte = 0x0a;
  private startTls = false;
  private end: SessionEnd | null = null;

  /** The client spoke before the greeting. */
  noteEarlyTalk(): void {
    this.earlyTalk = true;
  }

  /**
   * A command line as the client sent it (without CRLF); `pipelined` when it arrived before the reply to the
   * previous command was sent.
   */
  noteCommand(line: string, pipelined: boolean): void {
    if (pipelined) this.pipelined = true;
    const m = /^\s*([A-Za-z]+)/.exec(line);
    if (!m) return;
    const word = m[1];
    const verb = word.toUpperCase();
    if (!KNOWN_VERBS.has(verb)) return;
    if (this.verbCase[verb] === undefined) {
      // MAIL FROM / RCPT TO: the whole keyword, so `MAIL From:` reads as mixed.
      const colon = verb === 'MAIL' || verb === 'RCPT' ? line.indexOf(':') : -1;
      const c = caseOf(colon > 0 ? line.slice(0, colon) : word);
      if (c !== null) this.verbCase[verb] = c;
    }
    switch (verb) {
      case 'HELO':
      case 'EHLO':
        if (this.greeting === 'none') {
          this.greeting = verb === 'EHLO' ? 'ehlo' : 'helo';
          this.heloArgument = line.replace(/^\s*\S+[ \t]*/, '').replace(/[ \t\r\n]+$/, '');
        }
        break;
      case 'MAIL':
        this.mailFrom = mailFromForm(line);
        break;
      case 'RSET':
        this.usedRset = true;
        break;
      case 'NOOP':
        this.usedNoop = true;
        break;
      case 'VRFY':
        this.usedVrfy = true;
        break;
      case 'DATA':
        if (this.bareLf === null) this.bareLf = false;
        this.lastDataByte = 0x0a;
        break;
      case 'QUIT':
        this.end = 'quit';
        break;
    }
  }

  /** A chunk of message content, in order. */
  noteDataChunk(chunk: Buffer): void {
    if (this.bareLf === true || chunk.length === 0) return;
    if (this.bareLf === null) this.bareLf = false;
    if (containsBareLf(chunk, this.lastDataByte)) this.bareLf = true;
    this.lastDataByte = chunk[chunk.length - 1];
  }

  noteRdns(name: string | null): void {
    this.rdnsName = name;
  }

  noteTls(): void {
    this.startTls = true;
  }

  /** The connection closed; a QUIT seen before makes it `quit`, anything else `drop`. Returns which. */
  noteClosed(): SessionEnd {
    if (this.end === null) this.end = 'drop';
    return this.end;
  }

  dialect(): Dialect {
    return {
      earlyTalk: this.earlyTalk,
      greeting: this.greeting,
      heloArgument: this.heloArgument,
      rdns: this.rdnsName,
      verbCase: { ...this.verbCase },
      pipelined: this.pipelined,
      mailFrom: this.mailFrom,
      usedRset: this.usedRset,
      usedNoop: this.usedNoop,
      usedVrfy: this.usedVrfy,
      bareLfInData: this.bareLf,
      startTls: this.startTls,
      end: this.end,
    };
  }
}

/** Whether `chunk` holds a LF not preceded by CR; `prevByte` is the last byte of the previous chunk. */
export function containsBareLf(chunk: Buffer, prevByte: number): boolean {
  let i = chunk.indexOf(0x0a);
  while (i !== -1) {
    if ((i === 0 ? prevByte : chunk[i - 1]) !== 0x0d) return true;
    i = chunk.indexOf(0x0a, i + 1);
  }
  return false;
}
