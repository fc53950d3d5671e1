import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  canonicalFeatures,
  caseSummary,
  containsBareLf,
  DialectRecorder,
  FEATURE_SPACE_SIZE,
  FEATURES,
  fingerprint,
  FINGERPRINT_ID,
  fingerprintId,
  heloForm,
  mailFromForm,
  rdnsRelation,
  type Dialect,
} from '../src/intel/fingerprint';

/** A typical bot: EHLO with a name, upper case, plain MAIL FROM, nothing else. */
const BASE: Dialect = Object.freeze<Dialect>({
  earlyTalk: false,
  greeting: 'ehlo',
  heloArgument: 'mx.example.net',
  rdns: 'host.isp.example',
  verbCase: { EHLO: 'upper', MAIL: 'upper', RCPT: 'upper', DATA: 'upper' },
  pipelined: false,
  mailFrom: { angle: true, spaceAfterColon: false, parameters: false },
  usedRset: false,
  usedNoop: false,
  usedVrfy: false,
  bareLfInData: false,
  startTls: false,
  end: null,
});

const feature = (features: string, key: string): string => {
  const m = new RegExp(`(?:^|;)${key}=([^;]*)`).exec(features);
  assert.ok(m, `${key} missing from ${features}`);
  return m[1];
};

/** Replays a session's commands into a recorder, as the SMTP layer would. */
function session(lines: string[], opts: { rdns?: string | null; data?: Buffer[]; pipelinedFrom?: number } = {}): DialectRecorder {
  const r = new DialectRecorder();
  r.noteRdns(opts.rdns ?? null);
  lines.forEach((line, i) => {
    r.noteCommand(line, opts.pipelinedFrom !== undefined && i >= opts.pipelinedFrom);
    if (/^data$/i.test(line)) for (const c of opts.data ?? [Buffer.from('Subject: x\r\n\r\nhi\r\n')]) r.noteDataChunk(c);
  });
  return r;
}

describe('fingerprint: canonical feature string', () => {
  it('lists every feature once, in the documented order', () => {
    const s = canonicalFeatures(BASE);
    assert.equal(
      s,
      'talk=0;greet=ehlo;helo=fqdn;rdns=differ;case=upper;pipe=0;from=angle;from_sp=0;from_par=0;rset=0;noop=0;vrfy=0;lf=0;tls=0',
    );
    assert.deepEqual(
      s.split(';').map((kv) => kv.split('=')[0]),
      FEATURES.map((f) => f.key),
    );
  });

  // One change per feature, away from BASE; every one must change exactly its own token and the id.
  const changes: Record<string, Partial<Dialect>> = {
    talk: { earlyTalk: true },
    greet: { greeting: 'helo' },
    helo: { heloArgument: '[192.0.2.7]' },
    rdns: { rdns: 'MX.example.net.' },
    case: { verbCase: { EHLO: 'upper', MAIL: 'lower', RCPT: 'upper', DATA: 'upper' } },
    pipe: { pipelined: true },
    from: { mailFrom: { angle: false, spaceAfterColon: false, parameters: false } },
    from_sp: { mailFrom: { angle: true, spaceAfterColon: true, parameters: false } },
    from_par: { mailFrom: { angle: true, spaceAfterColon: false, parameters: true } },
    rset: { usedRset: true },
    noop: { usedNoop: true },
    vrfy: { usedVrfy: true },
    lf: { bareLfInData: true },
    tls: { startTls: true },
  };

  it('has a test change for every feature', () => {
    assert.deepEqual(Object.keys(changes).sort(), FEATURES.map((f) => f.key).sort());
  });

  for (const [key, change] of Object.entries(changes)) {
    it(`a change of ${key} changes that token alone, and the id`, () => {
      const before = fingerprint(BASE);
      const after = fingerprint({ ...BASE, ...change });
      const a = before.features.split(';');
      const b = after.features.split(';');
      const differing = a.filter((t, i) => t !== b[i]).map((t) => t.split('=')[0]);
      assert.deepEqual(differing, [key], `${before.features}\n${after.features}`);
      assert.notEqual(before.id, after.id);
    });
  }

  it('leaves the session end out of the id: it is only known after the message is filed', () => {
    assert.equal(fingerprint({ ...BASE, end: 'quit' }).id, fingerprint({ ...BASE, end: 'drop' }).id);
    assert.equal(fingerprint({ ...BASE, end: 'quit' }).id, fingerprint(BASE).id);
  });
});

describe('fingerprint: feature values', () => {
  it('classifies HELO arguments by form', () => {
    const cases: Array<[string | null, string]> = [
      [null, 'none'],
      ['', 'empty'],
      ['[192.0.2.7]', 'literal'],
      ['[IPv6:2001:db8::7]', 'literal'],
      ['[ipv6:2001:db8::7]', 'literal'],
      ['[mail.example]', 'other'],
      ['192.0.2.7', 'ip'],
      ['2001:db8::7', 'ip'],
      ['localhost', 'word'],
      ['WIN-7QK2L0P', 'word'],
      ['ylmf_pc', 'word'],
      ['mail.example.com', 'fqdn'],
      ['mail.example.com.', 'fqdn'],
      ['word.', 'word'],
      ['two words', 'other'],
      ['bad..dots', 'other'],
      ['é.example', 'other'],
    ];
    for (const [arg, form] of cases) assert.equal(heloForm(arg), form, JSON.stringify(arg));
  });

  it('compares the HELO name with the rDNS name without case or trailing dot, and knows when it cannot', () => {
    assert.equal(rdnsRelation('Mail.Example.COM', 'mail.example.com.'), 'match');
    assert.equal(rdnsRelation('mail.example.com', 'other.example.com'), 'differ');
    assert.equal(rdnsRelation('[192.0.2.7]', 'host.example'), 'differ');
    assert.equal(rdnsRelation('mail.example.com', null), 'unknown');
    assert.equal(rdnsRelation(null, 'host.example'), 'na');
    assert.equal(rdnsRelation('', 'host.example'), 'na');
  });

  it('sums up command case: one case, mixed keywords, or keywords that disagree', () => {
    assert.equal(caseSummary({ HELO: 'upper', MAIL: 'upper' }), 'upper');
    assert.equal(caseSummary({ HELO: 'lower', MAIL: 'lower' }), 'lower');
    assert.equal(caseSummary({ HELO: 'upper', MAIL: 'mixed' }), 'mixed');
    assert.equal(caseSummary({ HELO: 'upper', MAIL: 'lower' }), 'varied');
    assert.equal(caseSummary({}), 'na');
  });

  it('reads the MAIL FROM form: brackets, space after the colon, parameters', () => {
    assert.deepEqual(mailFromForm('MAIL FROM:<a@b.example>'), { angle: true, spaceAfterColon: false, parameters: false });
    assert.deepEqual(mailFromForm('MAIL FROM: <a@b.example> SIZE=1000'), { angle: true, spaceAfterColon: true, parameters: true });
    assert.deepEqual(mailFromForm('MAIL FROM:a@b.example'), { angle: false, spaceAfterColon: false, parameters: false });
    assert.deepEqual(mailFromForm('MAIL FROM:a@b.example BODY=8BITMIME'), { angle: false, spaceAfterColon: false, parameters: true });
    assert.deepEqual(mailFromForm('MAIL FROM:<>'), { angle: true, spaceAfterColon: false, parameters: false });
    assert.deepEqual(mailFromForm('MAIL FROM:<a@b.example>   '), { angle: true, spaceAfterColon: false, parameters: false });
  });

  it('finds a bare LF in message content, also across chunk boundaries, and not in CRLF', () => {
    assert.equal(containsBareLf(Buffer.from('a\r\nb\r\n'), 0x0a), false);
    assert.equal(containsBareLf(Buffer.from('a\r\nb\nc\r\n'), 0x0a), true);
    assert.equal(containsBareLf(Buffer.from('\nrest'), 0x0d), false, 'CR ended the previous chunk');
    assert.equal(containsBareLf(Buffer.from('\nrest'), 0x61), true);
    assert.equal(containsBareLf(Buffer.from('no newline'), 0x0a), false);
  });

  it('can produce every value the documentation lists', () => {
    // The lists the docs are checked against; a value no dialect can produce would be a documentation lie.
    const samples: Dialect[] = [
      BASE,
      { ...BASE, earlyTalk: true, greeting: 'helo', heloArgument: '', pipelined: true, startTls: true },
      { ...BASE, greeting: 'none', heloArgument: null, mailFrom: null, bareLfInData: null, verbCase: {} },
      { ...BASE, heloArgument: '[192.0.2.7]', rdns: null, verbCase: { HELO: 'lower' }, usedRset: true },
      { ...BASE, heloArgument: '192.0.2.7', verbCase: { HELO: 'mixed' }, usedNoop: true, usedVrfy: true },
      { ...BASE, heloArgument: 'word', rdns: 'word', verbCase: { HELO: 'upper', MAIL: 'lower' }, bareLfInData: true },
      { ...BASE, heloArgument: 'a b', mailFrom: { angle: false, spaceAfterColon: true, parameters: true } },
    ];
    for (const f of FEATURES) {
      const produced = new Set(samples.map((d) => f.of(d)));
      assert.deepEqual([...produced].sort(), [...f.values].sort(), f.key);
    }
  });
});

describe('fingerprint: id', () => {
  it('is v1- and 12 base32 characters, pinned for a known feature string', () => {
    const fp = fingerprint(BASE);
    assert.match(fp.id, FINGERPRINT_ID);
    // Pinned: if this changes, every id in operators' queues and dashboards changed with it.
    assert.equal(fp.id, fingerprintId(fp.features));
    assert.equal(fp.id, 'v1-7up3oe6nvpyy', 'the example in docs/fingerprints.md');
    // base32(sha256("spamtrapd-fingerprint-v1\ntalk=0"))[0..12], computed independently of this code.
    assert.equal(fingerprintId('talk=0'), 'v1-7wp4zo3em75b');
  });

  it('changes with the version even for the same features', () => {
    const f = canonicalFeatures(BASE);
    assert.notEqual(fingerprintId(f, 1), fingerprintId(f, 2));
    assert.match(fingerprintId(f, 2), /^v2-/);
  });

  it('is the same for the same dialect from different addresses and sessions, and differs between dialects', () => {
    const botA = ['EHLO mx.example.net', 'MAIL FROM:<a@spam.example>', 'RCPT TO:<x@trap.example>', 'DATA'];
    const botB = ['helo [192.0.2.7]', 'mail from: <b@spam.example> BODY=8BITMIME', 'rcpt to: <y@trap.example>', 'data'];
    // Different addresses, recipients and senders; no rDNS anywhere (the common case for bots).
    const a1 = fingerprint(session(botA).dialect());
    const a2 = fingerprint(session(botA.map((l) => l.replace('a@spam', 'zz@other'))).dialect());
    const b1 = fingerprint(session(botB).dialect());
    const b2 = fingerprint(session(botB.map((l) => l.replace('192.0.2.7', '198.51.100.9'))).dialect());
    assert.equal(a1.id, a2.id);
    assert.equal(b1.id, b2.id);
    assert.notEqual(a1.id, b1.id);
    assert.equal(b1.features, 'talk=0;greet=helo;helo=literal;rdns=unknown;case=lower;pipe=0;from=angle;from_sp=1;from_par=1;rset=0;noop=0;vrfy=0;lf=0;tls=0');
  });

  it('gives distinct ids to every combination of the many-valued features', () => {
    // The whole space (FEATURE_SPACE_SIZE strings) is too many hashes for a unit test on a shared machine; these
    // 34,020 vary every feature with more than two values, where a truncated hash would show its weakness first.
    const wide = FEATURES.filter((f) => f.values.length > 2);
    const values = FEATURES.map((f) => (wide.includes(f) ? f.values : f.values.slice(0, 1)).map((v) => `${f.key}=${v}`));
    const total = values.reduce((n, v) => n * v.length, 1);
    const ids = new Set<string>();
    const digits = new Array<number>(values.length).fill(0);
    for (let n = 0; n < total; n++) {
      ids.add(fingerprintId(digits.map((d, i) => values[i][d]).join(';')));
      for (let i = digits.length - 1; i >= 0; i--) {
        if (++digits[i] < values[i].length) break;
        digits[i] = 0;
      }
    }
    assert.equal(total, 34_020);
    assert.equal(ids.size, total);
    assert.equal(FEATURE_SPACE_SIZE, 2_177_280, 'the size docs/fingerprints.md computes collision odds for');
  });
});

describe('fingerprint: DialectRecorder', () => {
  it('takes greeting and HELO argument from the first HELO/EHLO', () => {
    const d = session(['EHLO first.example', 'STARTTLS', 'EHLO second.example']).dialect();
    assert.equal(d.greeting, 'ehlo');
    assert.equal(d.heloArgument, 'first.example');
    assert.equal(session(['HELO  spaced.example  ']).dialect().heloArgument, 'spaced.example');
    assert.equal(session(['HELO']).dialect().heloArgument, '');
    assert.equal(session(['MAIL FROM:<a@b>']).dialect().greeting, 'none');
  });

  it('records the case of whole keywords, so `MAIL From:` is mixed', () => {
    assert.equal(session(['EHLO x', 'MAIL From:<a@b>']).dialect().verbCase.MAIL, 'mixed');
    assert.equal(session(['ehlo x', 'mail from:<a@b>']).dialect().verbCase.MAIL, 'lower');
    assert.equal(caseSummary(session(['EHLO x', 'mail from:<a@b>']).dialect().verbCase), 'varied');
    assert.deepEqual(session(['XYZZY', '???']).dialect().verbCase, {}, 'unknown verbs are not recorded');
  });

  it('records pipelining, RSET, NOOP, VRFY, TLS, early talk, rDNS', () => {
    const r = session(['EHLO x', 'RSET', 'NOOP', 'VRFY postmaster', 'MAIL FROM:<a@b>', 'RCPT TO:<c@d>'], {
      pipelinedFrom: 4,
      rdns: 'host.example',
    });
    r.noteTls();
    r.noteEarlyTalk();
    const d = r.dialect();
    assert.deepEqual(
      [d.pipelined, d.usedRset, d.usedNoop, d.usedVrfy, d.startTls, d.earlyTalk, d.rdns],
      [true, true, true, true, true, true, 'host.example'],
    );
    const quiet = session(['EHLO x', 'MAIL FROM:<a@b>']).dialect();
    assert.deepEqual([quiet.pipelined, quiet.usedRset, quiet.usedNoop, quiet.usedVrfy, quiet.startTls], [false, false, false, false, false]);
  });

  it('records line endings in DATA: none before DATA, bare LF once seen, CRLF split across chunks is not bare', () => {
    assert.equal(session(['EHLO x']).dialect().bareLfInData, null);
    assert.equal(session(['EHLO x', 'DATA'], { data: [Buffer.from('a\r'), Buffer.from('\nb\r\n')] }).dialect().bareLfInData, false);
    assert.equal(session(['EHLO x', 'DATA'], { data: [Buffer.from('a\r\n'), Buffer.from('b\nc')] }).dialect().bareLfInData, true);
    assert.equal(session(['EHLO x', 'DATA'], { data: [] }).dialect().bareLfInData, false, 'an empty message has no bare LF');
  });

  it('records how the session ended: QUIT, or a drop', () => {
    const quit = session(['EHLO x', 'QUIT']);
    quit.noteClosed();
    assert.equal(quit.dialect().end, 'quit');
    const drop = session(['EHLO x', 'DATA']);
    assert.equal(drop.dialect().end, null, 'still open');
    drop.noteClosed();
    assert.equal(drop.dialect().end, 'drop');
  });

  it('feeds the canonical string end to end', () => {
    const r = session(['ehlo bot', 'mail from:bot@spam.example', 'rcpt to:<t@trap.example>', 'data'], {
      data: [Buffer.from('Subject: x\n\nhi\n')],
    });
    const f = canonicalFeatures(r.dialect());
    assert.equal(feature(f, 'helo'), 'word');
    assert.equal(feature(f, 'case'), 'lower');
    assert.equal(feature(f, 'from'), 'bare');
    assert.equal(feature(f, 'lf'), '1');
  });
});
