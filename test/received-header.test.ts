/**
 * The spamtrap Received header, byte for byte: golden strings for short and folded headers, the 78/998 octet rules,
 * injection attempts through every client-controlled value, and a parser of the old format that must recover every
 * recipient, even 5000 of them.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  buildReceivedHeader,
  formatRfc5322Date,
  TRUNCATED_MARKER,
  type ReceivedInput,
} from '../src/smtp/received';

const DATE = new Date(Date.UTC(2026, 10, 25, 14, 14, 0));

const BASE: ReceivedInput = {
  helo: 'bot.example',
  rdns: 'host.example.net',
  ip: '192.0.2.1',
  me: 'trap.example.org',
  version: '0.1.0',
  proto: 'ESMTP',
  mailFrom: 'a@b.c',
  recipients: ['x@y.z'],
  date: DATE,
};

function build(over: Partial<ReceivedInput> = {}): string {
  const buf = buildReceivedHeader({ ...BASE, ...over });
  assert.ok(Buffer.isBuffer(buf));
  return buf.toString('utf8');
}

/** Checks RFC 5322 shape; returns the physical lines (without CRLF). */
function checkShape(header: string): string[] {
  assert.ok(header.startsWith('Received: '), 'starts with the field name');
  assert.ok(header.endsWith('\r\n'), 'ends with CRLF');
  assert.doesNotMatch(header.replace(/\r\n/g, ''), /[\r\n]/, 'no bare CR or LF');
  const lines = header.slice(0, -2).split('\r\n');
  for (const [i, line] of lines.entries()) {
    assert.ok(Buffer.byteLength(line) <= 998, `line ${i} has ${Buffer.byteLength(line)} octets`);
    if (i > 0) {
      assert.match(line, /^[ \t]/, `line ${i} is a continuation`);
      assert.match(line, /\S/, `line ${i} is not white space only`);
    }
  }
  return lines;
}

/** What a consumer of the old format does: unfold, then take the fields. */
function parseReceivedHeader(header: string): {
  helo: string;
  rdns: string;
  ip: string;
  me: string;
  proto: string;
  mailFrom: string;
  recipients: string[];
  date: string;
} {
  const unfolded = header.replace(/\r\n(?=[ \t])/g, '').replace(/\r\n$/, '');
  assert.doesNotMatch(unfolded, /[\r\n]/);
  const m = /^Received: from (.*) \((\S+) \[([^\]]+)\]\)\s+by (\S+) \(spamtrapd\/[^)]+\)\s+with (\S+) ident=unknown\s+MAIL_FROM=<(\S*)>[\s\S]*;\s*([^;]+)$/.exec(
    unfolded,
  );
  assert.ok(m, `parsable: ${unfolded.slice(0, 300)}`);
  const recipients: string[] = [];
  // The old format glues the list to the `;` before the date.
  for (const r of unfolded.matchAll(/RCPT_TO=(\S+)/g)) {
    for (const item of r[1].replace(/;$/, '').split(',')) {
      const a = /^<(.*)>$/.exec(item);
      assert.ok(a, `recipient item ${item}`);
      recipients.push(a[1]);
    }
  }
  return { helo: m[1], rdns: m[2], ip: m[3], me: m[4], proto: m[5], mailFrom: m[6], recipients, date: m[7] };
}

describe('formatRfc5322Date', () => {
  test('UTC, two-digit day, +0000', () => {
    assert.equal(formatRfc5322Date(DATE), 'Wed, 25 Nov 2026 14:14:00 +0000');
    assert.equal(formatRfc5322Date(new Date(Date.UTC(2027, 0, 3, 4, 5, 6))), 'Sun, 03 Jan 2027 04:05:06 +0000');
    assert.equal(formatRfc5322Date(new Date('2026-02-28T23:59:59.999-01:00')), 'Sun, 01 Mar 2026 00:59:59 +0000');
  });

  test('an invalid date is a programming error', () => {
    assert.throws(() => formatRfc5322Date(new Date(NaN)), RangeError);
  });
});

describe('golden headers', () => {
  test('short header: folded before by and MAIL_FROM= at 78 octets', () => {
    assert.equal(
      build(),
      'Received: from bot.example (host.example.net [192.0.2.1])\r\n' +
        '\tby trap.example.org (spamtrapd/0.1.0) with ESMTP ident=unknown\r\n' +
        '\tMAIL_FROM=<a@b.c> RCPT_TO=<x@y.z>; Wed, 25 Nov 2026 14:14:00 +0000\r\n',
    );
  });

  test('tiny values fit on one line', () => {
    assert.equal(
      build({ helo: 'h', rdns: null, ip: '::1', me: 'm', version: '1', proto: 'SMTP', mailFrom: '', recipients: ['a@b'] }),
      'Received: from h (unknown [::1]) by m (spamtrapd/1) with SMTP ident=unknown\r\n' +
        '\tMAIL_FROM=<> RCPT_TO=<a@b>; Wed, 25 Nov 2026 14:14:00 +0000\r\n',
    );
  });

  test('null sender, no rDNS, ESMTPS, two recipients in order, no spaces in the list', () => {
    assert.equal(
      build({ rdns: null, proto: 'ESMTPS', mailFrom: '', recipients: ['one@bait.test', 'Two@Bait.Test'] }),
      'Received: from bot.example (unknown [192.0.2.1])\r\n' +
        '\tby trap.example.org (spamtrapd/0.1.0) with ESMTPS ident=unknown MAIL_FROM=<>\r\n' +
        '\tRCPT_TO=<one@bait.test>,<Two@Bait.Test>; Wed, 25 Nov 2026 14:14:00 +0000\r\n',
    );
  });

  test('folded before with and RCPT_TO= when long', () => {
    const h = build({
      helo: 'a-rather-long-helo-name.dynamic.customers.example-isp.net',
      rdns: 'ptr-198-51-100-7.dynamic.customers.example-isp.net',
      ip: '198.51.100.7',
      mailFrom: 'some.long.sender.address@sender.example.com',
      recipients: ['recipient-one@bait.example.org', 'recipient-two@bait.example.org'],
    });
    assert.equal(
      h,
      'Received: from a-rather-long-helo-name.dynamic.customers.example-isp.net (ptr-198-51-100-7.dynamic.customers.example-isp.net [198.51.100.7])\r\n' +
        '\tby trap.example.org (spamtrapd/0.1.0) with ESMTP ident=unknown\r\n' +
        '\tMAIL_FROM=<some.long.sender.address@sender.example.com>\r\n' +
        '\tRCPT_TO=<recipient-one@bait.example.org>,<recipient-two@bait.example.org>\r\n' +
        '\t; Wed, 25 Nov 2026 14:14:00 +0000\r\n',
    );
    checkShape(h);
  });

  test('HELO kept as given: case and inner spaces; missing HELO is unknown; empty HELO stays empty', () => {
    assert.match(build({ helo: 'MiXeD Case  [1.2.3.4]' }), /^Received: from MiXeD Case {2}\[1\.2\.3\.4\] \(host/);
    assert.match(build({ helo: null }), /^Received: from unknown \(host\.example\.net \[192\.0\.2\.1\]\)/);
    assert.match(build({ helo: '' }), /^Received: from {2}\(host\.example\.net \[192\.0\.2\.1\]\)/);
  });

  test('IPv4-mapped IPv6 is written as IPv4; IPv6 as is', () => {
    assert.match(build({ ip: '::ffff:203.0.113.9' }), /\[203\.0\.113\.9\]/);
    assert.match(build({ ip: '2001:db8::1' }), /\[2001:db8::1\]/);
  });

  test('at least one recipient is required', () => {
    assert.throws(() => build({ recipients: [] }), RangeError);
  });
});

describe('injection: client values can never add a header line', () => {
  const attacks = [
    'x\r\nX-Injected: yes',
    'x\nX-Injected: yes',
    'x\rX-Injected: yes',
    'x\u0000y',
    'x\ty',
    'x\u007fy',
    'x\u0085X-Injected: yes',
    'x\u2028X-Injected: yes',
    'x\u2029y',
    'x\ud800y',
    'x\r\n\r\nbody',
    '\r\n',
  ];

  for (const field of ['helo', 'rdns', 'ip', 'mailFrom', 'recipient', 'me', 'version'] as const) {
    test(`via ${field}`, () => {
      for (const a of attacks) {
        const over: Partial<ReceivedInput> =
          field === 'recipient' ? { recipients: ['ok@x', a, 'ok2@x'] } : { [field]: a };
        const h = build(over);
        const lines = checkShape(h);
        for (const l of lines.slice(1)) assert.doesNotMatch(l, /^X-Injected/);
        assert.doesNotMatch(h, /[\x00\x7f\x85\u2028\u2029]/);
        assert.ok(!/\r\n\r\n/.test(h), 'no empty line (end of header block)');
        assert.doesNotMatch(h.replace(/\r\n\t/g, ' ').replace(/\r\n$/, ''), /[\x00-\x1f\x7f-\x9f\u2028\u2029]/);
        if (field === 'recipient') assert.equal(parseReceivedHeader(h).recipients.length, 3);
      }
    });
  }

  test('a recipient cannot forge list entries or fields with < > , ; or spaces', () => {
    const h = build({ recipients: ['a>,<evil@x', 'b@x> RCPT_TO=<c@x', 'd@x; Mon, 01 Jan 2001'] });
    const p = parseReceivedHeader(h);
    assert.deepEqual(p.recipients, ['a???evil@x', 'b@x??RCPT_TO??c@x', 'd@x??Mon??01?Jan?2001']);
    assert.equal(p.date, 'Wed, 25 Nov 2026 14:14:00 +0000');
  });

  test('no value can forge a MAIL_FROM= or RCPT_TO= field, even for a naive first/every-match parser', () => {
    const h = build({
      helo: 'x MAIL_FROM=<forged@x> rcpt_to=<evil@x>',
      rdns: 'RCPT_TO=<evil@x>',
      mailFrom: 'a@b> RCPT_TO=<evil@x',
      recipients: ['ok@x', 'y@xRCPT_TO=<evil@x'],
    });
    const unfolded = h.replace(/\r\n[ \t]/g, ' ');
    assert.equal(/MAIL_FROM=<(\S*)>/.exec(unfolded)![1], 'a@b??RCPT_TO??evil@x');
    assert.deepEqual(
      [...unfolded.matchAll(/RCPT_TO=(\S+)/gi)].map((m) => m[1].replace(/;$/, '')),
      ['<ok@x>,<y@xRCPT_TO??evil@x>'],
    );
    assert.equal(parseReceivedHeader(h).helo, 'x MAIL_FROM?<forged@x> rcpt_to?<evil@x>');
  });

  test('control characters become ?; printable UTF-8 is kept', () => {
    const p = parseReceivedHeader(build({ helo: 'h\r\nX: y', recipients: ['ü@bäit.test'] }));
    assert.equal(p.helo, 'h??X: y');
    assert.deepEqual(p.recipients, ['ü@bäit.test']);
  });
});

describe('long values', () => {
  test('a 5000-octet HELO without spaces is cut with a marker and stays on the first line', () => {
    const h = build({ helo: 'a'.repeat(5000) });
    const lines = checkShape(h);
    assert.equal(Buffer.byteLength(lines[0]), 998);
    assert.ok(lines[0].startsWith('Received: from aaaa'));
    assert.ok(lines[0].endsWith(TRUNCATED_MARKER));
    const p = parseReceivedHeader(h);
    assert.equal(p.rdns, 'host.example.net');
    assert.equal(p.ip, '192.0.2.1');
    assert.deepEqual(p.recipients, ['x@y.z']);
  });

  test('a 5000-octet HELO with spaces is folded at its spaces, not cut, and unfolds to itself', () => {
    const helo = Array.from({ length: 500 }, (_, i) => `w${String(i).padStart(3, '0')}xxxx`).join(' ');
    const h = build({ helo });
    const lines = checkShape(h);
    assert.ok(lines.length > 5);
    assert.ok(!h.includes(TRUNCATED_MARKER));
    assert.equal(parseReceivedHeader(h).helo, helo);
  });

  test('a HELO of spaces only never makes a white-space-only line', () => {
    checkShape(build({ helo: ' '.repeat(3000) }));
    checkShape(build({ helo: 'a' + ' '.repeat(3000) + 'b' }));
    checkShape(build({ helo: ('x' + ' '.repeat(700)).repeat(6) }));
  });

  test('multi-byte characters are counted in octets and never split', () => {
    const h = build({ helo: '€'.repeat(2000), recipients: ['é'.repeat(3000) + '@x'] });
    const lines = checkShape(h);
    assert.ok(!h.includes('\ufffd'));
    assert.ok(lines.some((l) => l.includes(TRUNCATED_MARKER)));
  });

  test('a huge sender and a huge recipient are cut to fit, the other recipients survive', () => {
    const h = build({ mailFrom: 's'.repeat(3000) + '@x', recipients: ['a@x', 'r'.repeat(3000) + '@x', 'b@x'] });
    checkShape(h);
    const p = parseReceivedHeader(h);
    assert.ok(p.mailFrom.endsWith(TRUNCATED_MARKER));
    assert.equal(p.recipients.length, 3);
    assert.equal(p.recipients[0], 'a@x');
    assert.ok(p.recipients[1].startsWith('rrrr') && p.recipients[1].endsWith(TRUNCATED_MARKER));
    assert.equal(p.recipients[2], 'b@x');
  });

  test('a huge ME still gives valid lines', () => {
    checkShape(build({ me: 'm'.repeat(3000) }));
  });

  test('5000 recipients: every one survives, in order, in RCPT_TO fields of at most 998-octet lines', () => {
    const recipients = Array.from({ length: 5000 }, (_, i) => `user${i}@bait${i % 7}.example.org`);
    const h = build({ recipients });
    const lines = checkShape(h);
    const p = parseReceivedHeader(h);
    assert.deepEqual(p.recipients, recipients);
    const rcptLines = lines.filter((l) => l.startsWith('\tRCPT_TO='));
    assert.ok(rcptLines.length > 100);
    for (const l of rcptLines) assert.doesNotMatch(l.slice(1), /\s/, 'no white space inside a RCPT_TO field');
    // Packed: each field is full except the last.
    for (const l of rcptLines.slice(0, -1)) assert.ok(Buffer.byteLength(l) > 998 - 40);
    assert.ok(lines[lines.length - 1].startsWith('\t; '));
  });

  test('the recipient list continues exactly when the next entry would pass 998 octets', () => {
    // "\tRCPT_TO=" is 9 octets; each "<...>" here is 99 octets plus a comma: 9 + 10*99 + 9 = 1008 > 998.
    const r = Array.from({ length: 10 }, (_, i) => `${String(i).repeat(90)}@bait.t`);
    const lines = checkShape(build({ recipients: r }));
    const fields = lines.filter((l) => l.includes('RCPT_TO='));
    assert.equal(fields.length, 2);
    assert.equal(Buffer.byteLength(fields[0]), 9 + 9 * 99 + 8);
    assert.equal(fields[1], `\tRCPT_TO=<${r[9]}>`);
  });
});
