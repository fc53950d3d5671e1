/**
 * Pins every smtp-server override (src/smtp/overrides.ts) to the internals it relies on. If an upgrade of
 * smtp-server changes one of those methods, the fingerprint test fails and names the method to re-read;
 * the behaviour tests then prove each override still does its job over a real socket.
 */
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import net from 'node:net';
import { after, before, describe, test } from 'node:test';
import { SMTPServer } from 'smtp-server';
import { SMTPConnection } from 'smtp-server/lib/smtp-connection.js';
import { SMTPStream } from 'smtp-server/lib/smtp-stream.js';
import {
  bracketAddressCommand,
  heloArgument,
  newSessionId,
  SMTP_SERVER_VERSION,
  TrapConnection,
  TrapServer,
  type TrapServerOptions,
  TrapSMTPStream,
  type TrapSession,
} from '../src/smtp/overrides';
import { connectRaw } from './helpers/proxy-client';
import { v1, v2, v2Local } from './helpers/proxy-headers';
import { RawSmtp } from './helpers/smtp-client';
import { repoRoot } from './helpers/paths';

/**
 * sha256 of the source of each upstream method an override replaces or wraps, as of smtp-server 3.21.6.
 * A mismatch means: read the new upstream method, adapt the override, then update the fingerprint.
 */
const FINGERPRINTS: Record<string, string> = {
  init: '1265a7d7ca8f5510b4ce94ce4c52bdc127a13b6ef912ec7f9dec69be7a662918',
  _onCommand: '41c8a1b7a32aa314c86c485179116270ccf19b33619b6f12efd708011391bd85',
  _sendGreeting: 'dc5cd4bb4b93013f5a3caa20980befda401851195f2c940a310095e347d5349a',
  _parseAddressCommand: '6c12334d014173e8806c0e05fd22532a3b674bb43b3206a2b734ea89dbfd0281',
  handler_EHLO: '42394b3ad94f3debdc14fc08f5e017635b00c85799bb3a8fa68b4a8aa5b0642a',
  handler_HELO: 'b95050ffd35b5d29cad03e31f3b061d635329c85dba2b1dd69567762ad88fdd4',
  handler_RCPT: 'ef2acd7214eaa466005564206adf3bb4a158ae3f5ac39af9a1e5aa5d88bc7435',
  handler_DATA: '9eceecf35f56cecd54edca16d7d74edb8bf601d5d818f1e7b3c0cfc5acb8533e',
  send: 'c33568c0111a58b2d16786c2ffebbeef6f040c6914742bbcae1c3b3b2507efcb',
  _onClose: '097b8d221da5c5adf21bc20ebc4667a201005881d69e276868fab3452af76b9e',
  _createParser: '64259b0d868642eaabea74e807ca1e929c3dcf2297b84816643be69725e656e7',
};

/** The same for the SMTPServer methods TrapServer replaces (the PROXY protocol) or relies on around them. */
const SERVER_FINGERPRINTS: Record<string, string> = {
  _expectsProxyHeader: '6d9ae02b1564e60540dee9d851d8f7c4e78d6f3cbd6790b61dd318a7fbcaa98b',
  _handleProxy: '4a645d5a086de6dd9cb9c6c30f7f3bca28384b0c7822b1afcf74914df03ed031',
  // Not replaced: it guards a socket while its PROXY header is read (maxClients, release on close).
  _acceptSocket: 'd872198bd8410031caf7bfa46224896b4532d76db00a35ba14c88e2e6635ecaf',
  connect: '93b1653205c941e98813995a57bd35a15b6310ce4e6e49886484575067be4a7d',
};

/**
 * The same for SMTPStream: TrapSMTPStream replaces _feedDataStream (whose rules dot-unstuff.ts reproduces) and
 * relies on how _write hands data-mode chunks to it, and on startDataMode, _countDataBytes, _endDataMode, continue.
 */
const STREAM_FINGERPRINTS: Record<string, string> = {
  _feedDataStream: '9d8b903f9a3a63542d72e19a9e2f67009a3b1107a28d57e8e7369355454ff230',
  _write: 'a72635ce53e24b3ae76f14afc12be0e1e9e0e1a8ba5859b1cd5534ec268affb8',
  startDataMode: '2f010f22ffb8d449c4de11685abf5be28b482db395861386804cadb829389f28',
  _countDataBytes: '4b938ebe6c9971ebe0f2e0daeda4186b8dec4e6e908d477636c2c55fcea1dc76',
  _endDataMode: '7de0cf3d06716328049556af82b557e9574389d4b9e42446a39bd8353d0a3564',
  continue: 'ce5856923c797749935db9f8e291ed444dc93926a8a4c0cb354afe00fdc19eda',
};

function fingerprint(name: string, proto: object = SMTPConnection.prototype, cls = 'SMTPConnection'): string {
  const fn = (proto as Record<string, () => void>)[name];
  assert.equal(typeof fn, 'function', `${cls}.prototype.${name} is gone`);
  return crypto.createHash('sha256').update(fn.toString()).digest('hex');
}

describe('smtp-server pin', () => {
  test('the installed smtp-server is the pinned version', () => {
    const pkg = JSON.parse(fs.readFileSync(path.join(repoRoot(), 'node_modules/smtp-server/package.json'), 'utf8'));
    assert.equal(pkg.version, SMTP_SERVER_VERSION);
    const ours = JSON.parse(fs.readFileSync(path.join(repoRoot(), 'package.json'), 'utf8'));
    assert.equal(ours.dependencies['smtp-server'], SMTP_SERVER_VERSION, 'package.json must pin smtp-server exactly');
  });

  for (const name of Object.keys(FINGERPRINTS)) {
    test(`upstream SMTPConnection.${name} is the one the override was written against`, () => {
      assert.equal(fingerprint(name), FINGERPRINTS[name], `smtp-server's ${name} changed: re-check overrides.ts`);
    });
  }

  for (const name of Object.keys(SERVER_FINGERPRINTS)) {
    test(`upstream SMTPServer.${name} is the one the override was written against`, () => {
      assert.equal(fingerprint(name, SMTPServer.prototype, 'SMTPServer'), SERVER_FINGERPRINTS[name], `smtp-server's ${name} changed: re-check overrides.ts`);
    });
  }

  test('upstream still connects a socket only when _handleProxy calls back without an error, with its socket options', () => {
    // The contract TrapServer._handleProxy relies on: an error drops the socket, no session is made.
    const ctor = SMTPServer.toString();
    assert.match(ctor, /this\._handleProxy\(socket, \(err, socketOptions\) => \{[\s\S]*?if \(!err\) \{\s*this\.connect\(socket, socketOptions\);/);
    assert.match(ctor, /let release = this\._acceptSocket\(socket, handshake\);/);
  });

  test('upstream session ids have the form newSessionId() keeps', () => {
    assert.match(SMTPServer.prototype._handleProxy.toString(), /BigInt\('0x' \+ node_crypto_1\.default\.randomBytes\(10\)\.toString\('hex'\)\)\s*\.toString\(32\)\s*\.padStart\(16, '0'\)/);
    for (let i = 0; i < 50; i++) assert.match(newSessionId(), /^[0-9a-v]{16}$/);
  });

  for (const name of Object.keys(STREAM_FINGERPRINTS)) {
    test(`upstream SMTPStream.${name} is the one the trap's parser was written against`, () => {
      const got = fingerprint(name, SMTPStream.prototype, 'SMTPStream');
      assert.equal(got, STREAM_FINGERPRINTS[name], `smtp-server's SMTPStream.${name} changed: re-check TrapSMTPStream and dot-unstuff.ts`);
    });
  }

  test('connections parse with the trap\'s parser, whose data phase is the linear one', () => {
    const proto = TrapConnection.prototype as unknown as { _createParser(this: unknown): unknown };
    const fake = { _server: { options: {} }, _onCommand() {}, send() {} };
    const parser = proto._createParser.call(fake);
    assert.ok(parser instanceof TrapSMTPStream);
    assert.ok(Object.prototype.hasOwnProperty.call(TrapSMTPStream.prototype, '_feedDataStream'));
  });

  test('the 100 ms greeting hold the init() override removes is still how upstream init() works', () => {
    assert.match(SMTPConnection.prototype.init.toString(), /setTimeout\(\(\) => this\.connectionReady\(\), 100\)/);
  });

  test('upstream still answers an accepted RCPT with the RCPT_TO_OK context the reply override keys on', () => {
    assert.match(SMTPConnection.prototype.handler_RCPT.toString(), /this\.send\(250, 'Accepted', 'RCPT_TO_OK'\)/);
  });
});

describe('pure helpers', () => {
  test('heloArgument keeps the argument as given', () => {
    assert.equal(heloArgument(Buffer.from('EHLO Foo.Example')), 'Foo.Example');
    assert.equal(heloArgument(Buffer.from('HELO   two words  ')), 'two words');
    assert.equal(heloArgument(Buffer.from('EHLO')), '');
    assert.equal(heloArgument(Buffer.from('helo x\ty')), 'x\ty');
  });

  test('bracketAddressCommand adds brackets only where missing', () => {
    assert.equal(bracketAddressCommand('MAIL FROM:a@b'), 'MAIL FROM:<a@b>');
    assert.equal(bracketAddressCommand('MAIL FROM: a@b SIZE=10'), 'MAIL FROM:<a@b> SIZE=10');
    assert.equal(bracketAddressCommand('RCPT TO:<a@b>'), 'RCPT TO:<a@b>');
    assert.equal(bracketAddressCommand('MAIL FROM:<>'), 'MAIL FROM:<>');
    assert.equal(bracketAddressCommand('MAIL FROM:'), 'MAIL FROM:');
    assert.equal(bracketAddressCommand('MAIL FROM'), 'MAIL FROM');
  });
});

describe('overrides over a real socket', () => {
  let server: TrapServer;
  let port: number;
  const early: string[] = [];
  const replies: Array<[number, string | false | undefined]> = [];
  const sessions: TrapSession[] = [];
  let greetingDelayMs = 0;

  before(async () => {
    server = new TrapServer({
      name: 'trap.test',
      authOptional: true,
      disabledCommands: ['AUTH', 'STARTTLS'],
      hideENHANCEDSTATUSCODES: true,
      disableReverseLookup: true,
      lenientAddressParsing: true,
      maxRecipients: 3,
      logger: false,
      onConnect(session, cb) {
        sessions.push(session as TrapSession);
        cb();
      },
      onRcptTo(address, session, cb) {
        const s = session as TrapSession;
        if (address.address.startsWith('bye@')) {
          s.trapDisconnect = true;
          return cb(Object.assign(new Error('Go away'), { responseCode: 550 }));
        }
        s.trapRcptReply = `<${address.address}>, recipient ok`;
        cb();
      },
      onData(stream, _session, cb) {
        stream.on('end', () => cb(null, 'queued'));
        stream.resume();
      },
      trap: {
        get greetingDelayMs() {
          return greetingDelayMs;
        },
        dataTimeoutMs: 400,
        commandTimeoutMs: 600,
        onEarlyTalker: (s) => early.push(s.id),
        onReply: (_s, code, _text, context) => replies.push([code, context]),
      },
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
    port = (server.server.address() as { port: number }).port;
  });

  after(async () => {
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });

  test('greets at once: no 100 ms hold', async () => {
    // The fastest of several greetings: a loaded machine can slow one down, but with the upstream hold in place
    // none can arrive before 100 ms.
    let fastest = Infinity;
    for (let i = 0; i < 5; i++) {
      const t0 = performance.now();
      const c = await RawSmtp.connect(port);
      const g = await c.read();
      fastest = Math.min(fastest, performance.now() - t0);
      c.close();
      assert.equal(g.code, 220);
    }
    assert.ok(fastest < 80, `fastest greeting took ${fastest.toFixed(1)} ms`);
  });

  test('a client that talks before the greeting is captured and counted, not refused', async () => {
    greetingDelayMs = 200;
    try {
      const c = await RawSmtp.connect(port);
      c.write('EHLO early.example\r\n');
      const g = await c.read();
      const e = await c.read();
      c.close();
      assert.equal(g.code, 220, 'the greeting comes first');
      assert.equal(e.code, 250, `EHLO answered normally: ${e.raw}`);
      assert.equal(early.length, 1);
      assert.equal(sessions.at(-1)!.trapDialect!.dialect().earlyTalk, true, 'the dialect records it too');
    } finally {
      greetingDelayMs = 0;
    }
  });

  test("every command line reaches the session's dialect as sent; pipelined only when sent before our reply", async () => {
    const c = await RawSmtp.connect(port);
    await c.read();
    assert.equal((await c.cmd('EHLO Lock.Step')).code, 250);
    assert.equal((await c.cmd('mail from: <a@b.example> BODY=8BITMIME')).code, 250);
    const dialect = sessions.at(-1)!.trapDialect!;
    let d = dialect.dialect();
    assert.equal(d.pipelined, false, 'one command per reply, however fast, is not pipelining');
    assert.equal(d.earlyTalk, false);
    assert.deepEqual(d.verbCase, { EHLO: 'upper', MAIL: 'lower' });
    assert.equal(d.heloArgument, 'Lock.Step');
    assert.deepEqual(d.mailFrom, { angle: true, spaceAfterColon: true, parameters: true });
    // Three commands in one write: the second and third were sent before the first was answered.
    c.write('RCPT TO:<t1@bait.example>\r\nRCPT TO:<t2@bait.example>\r\nNOOP\r\n');
    for (let i = 0; i < 3; i++) assert.equal((await c.read()).code, 250);
    d = dialect.dialect();
    assert.equal(d.pipelined, true);
    assert.equal(d.usedNoop, true);
    c.close();
  });

  test('addresses without angle brackets are accepted; the null sender too', async () => {
    const c = await RawSmtp.connect(port);
    await c.read();
    assert.equal((await c.cmd('EHLO x')).code, 250);
    assert.equal((await c.cmd('MAIL FROM:bot@spam.example')).code, 250);
    const r = await c.cmd('RCPT TO:trap@bait.example');
    assert.equal(r.raw, '250 <trap@bait.example>, recipient ok\r\n');
    assert.equal((await c.cmd('RSET')).code, 250);
    assert.equal((await c.cmd('MAIL FROM:<>')).code, 250);
    assert.equal((await c.cmd('RCPT TO: <trap@bait.example>')).code, 250);
    c.close();
  });

  test('a recipient without a user or host part is accepted for the rules to decide; garbage is not', async () => {
    const c = await RawSmtp.connect(port);
    await c.read();
    await c.cmd('EHLO x');
    await c.cmd('MAIL FROM:<a@b.example>');
    assert.equal((await c.cmd('RCPT TO:<nohost>')).raw, '250 <nohost>, recipient ok\r\n');
    assert.equal((await c.cmd('RCPT TO:@host.example')).raw, '250 <@host.example>, recipient ok\r\n');
    assert.equal((await c.cmd('RCPT TO:<>')).code, 501, 'an empty recipient stays a syntax error');
    assert.equal((await c.cmd('RCPT TO:<a b>')).code, 501);
    c.close();
  });

  test('replies that echo client bytes stay printable ASCII', async () => {
    const c = await RawSmtp.connect(port);
    await c.read();
    await c.cmd('EHLO x');
    c.write(Buffer.from('MAIL FROM:<a@b.example> \xe9T=1 \xe9T=2\r\n', 'latin1'));
    const r = await c.read();
    c.close();
    assert.equal(r.code, 501);
    assert.match(r.raw, /^[\x20-\x7e]*\r\n$/, JSON.stringify(r.raw));
    assert.match(r.text, /duplicate \?T parameter/);
  });

  test('any HELO/EHLO argument is accepted and kept raw', async () => {
    for (const [cmd, raw] of [
      ['EHLO Mixed.Case.Example', 'Mixed.Case.Example'],
      ['EHLO', ''],
      ['HELO two words', 'two words'],
      ['EHLO bad\x01char', 'bad\x01char'],
    ] as const) {
      const c = await RawSmtp.connect(port);
      await c.read();
      const r = await c.cmd(cmd);
      c.close();
      assert.equal(r.code, 250, `${JSON.stringify(cmd)} -> ${r.raw}`);
      assert.equal(sessions[sessions.length - 1].trapHelo, raw);
    }
  });

  test('a rule can close the connection after its reply', async () => {
    const c = await RawSmtp.connect(port);
    await c.read();
    await c.cmd('EHLO x');
    await c.cmd('MAIL FROM:<a@b.example>');
    const r = await c.cmd('RCPT TO:<bye@bait.example>');
    assert.equal(r.raw, '550 Go away\r\n');
    await c.waitClosed(2000);
  });

  test('the reply tap sees smtp-server own rejections with their context', async () => {
    const c = await RawSmtp.connect(port);
    await c.read();
    await c.cmd('EHLO x');
    await c.cmd('MAIL FROM:<a@b.example>');
    for (const n of [1, 2, 3]) assert.equal((await c.cmd(`RCPT TO:<t${n}@bait.example>`)).code, 250);
    const r = await c.cmd('RCPT TO:<t4@bait.example>');
    c.close();
    assert.equal(r.code, 452);
    assert.ok(replies.some(([code, ctx]) => code === 452 && ctx === 'TOO_MANY_RECIPIENTS'));
  });

  test('a command dripped one byte at a time is cut off with 421 (the idle timer alone never fires)', async () => {
    const c = await RawSmtp.connect(port);
    await c.read();
    assert.equal((await c.cmd('EHLO x')).code, 250, 'a prompt command restarts the deadline');
    const t0 = performance.now();
    const drip = setInterval(() => c.write('M'), 50);
    try {
      const r = await c.read(3000);
      assert.equal(r.code, 421);
      assert.match(r.text, /^Timeout/);
      assert.ok(performance.now() - t0 < 1500, 'within about one command timeout');
      await c.waitClosed(2000);
      assert.ok(replies.some(([code, ctx]) => code === 421 && ctx === 'COMMAND_TIMEOUT'));
    } finally {
      clearInterval(drip);
      c.close();
    }
  });

  test('a DATA phase has an absolute deadline (slow drip is cut off with 421)', async () => {
    const c = await RawSmtp.connect(port);
    await c.read();
    await c.cmd('EHLO x');
    await c.cmd('MAIL FROM:<a@b.example>');
    await c.cmd('RCPT TO:<t@bait.example>');
    assert.equal((await c.cmd('DATA')).code, 354);
    const drip = setInterval(() => c.write('x'), 50);
    try {
      const r = await c.read(3000);
      assert.equal(r.code, 421);
      await c.waitClosed(2000);
    } finally {
      clearInterval(drip);
      c.close();
    }
  });
});

describe('PROXY protocol over a real socket', () => {
  let server: TrapServer;
  let port: number;
  const sessions: TrapSession[] = [];
  const rejected: Array<{ peer: string; reason: string; detail: string; cid: string }> = [];
  let trustLoopback = true;

  before(async () => {
    const options: TrapServerOptions = {
      name: 'trap.test',
      authOptional: true,
      disabledCommands: ['AUTH', 'STARTTLS'],
      disableReverseLookup: true,
      logger: false,
      onConnect(session, cb) {
        sessions.push(session as TrapSession);
        cb();
      },
      proxy: {
        expectsHeader: (peer) => trustLoopback && peer === '127.0.0.1',
        timeoutMs: 400,
        onRejected: (peer, cid, reason, detail) => rejected.push({ peer, cid, reason, detail }),
      },
      trap: { greetingDelayMs: 0, dataTimeoutMs: 5000, commandTimeoutMs: 5000, onEarlyTalker: () => undefined, onReply: () => undefined },
    };
    server = new TrapServer(options);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
    port = (server.server.address() as { port: number }).port;
  });

  after(async () => {
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });

  /** Sends `bytes` at once, then returns everything the server wrote until it closed (or the wait ran out). */
  async function exchange(bytes: Buffer, waitMs = 3000): Promise<{ out: string; closed: boolean }> {
    const s = await connectRaw(port);
    let out = '';
    let closed = false;
    s.on('data', (d: Buffer) => (out += d.toString('latin1')));
    s.on('error', () => undefined);
    const done = new Promise<void>((resolve) => s.once('close', () => ((closed = true), resolve())));
    s.write(bytes);
    await Promise.race([done, new Promise((r) => setTimeout(r, waitMs))]);
    s.destroy();
    return { out, closed };
  }

  test('v1 and v2 headers set the session address; SMTP pipelined behind the header in one write is answered', async () => {
    for (const [header, ip, port_] of [
      [v1('192.0.2.10', '198.51.100.25', 40001, 25), '192.0.2.10', 40001],
      [v2({ src: '2001:db8::7', sport: 40002 }), '2001:db8::7', 40002],
      [v2({ src: '::ffff:c000:20b', dst: '::1', sport: 40003 }), '192.0.2.11', 40003],
    ] as const) {
      const before = sessions.length;
      const { out } = await exchange(Buffer.concat([header, Buffer.from('EHLO pipelined.example\r\nQUIT\r\n')]));
      assert.match(out, /^220 [^\r]*\r\n250-trap\.test[\s\S]*\r\n221 /, JSON.stringify(out));
      const s = sessions[before];
      assert.equal(s.remoteAddress, ip);
      assert.equal(s.remotePort, port_);
      assert.equal(s.trapProxy?.balancer, '127.0.0.1');
      assert.equal(s.trapProxy?.local, false);
      assert.match(s.id, /^[0-9a-v]{16}$/);
    }
  });

  test('v2 LOCAL keeps the real endpoints and marks the session as the balancer own', async () => {
    const before = sessions.length;
    const { out } = await exchange(Buffer.concat([v2Local(), Buffer.from('HELO checker\r\nQUIT\r\n')]));
    assert.match(out, /^220 [^\r]*\r\n250 [^\r]*\r\n221 /);
    assert.equal(sessions[before].remoteAddress, '127.0.0.1');
    assert.deepEqual(sessions[before].trapProxy, { balancer: '127.0.0.1', local: true, version: 2 });
  });

  test('a bad header closes the connection without a byte written (smtp-server would write "* BAD")', async () => {
    const before = sessions.length;
    for (const [bytes, reason] of [
      [Buffer.from('EHLO no.header.example\r\n'), 'missing'],
      [Buffer.from('PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n'), 'malformed'],
      [Buffer.from(`PROXY UNKNOWN ${'x'.repeat(200)}`), 'oversized'],
    ] as const) {
      const { out, closed } = await exchange(bytes);
      assert.equal(out, '', `${reason}: nothing written`);
      assert.ok(closed, `${reason}: closed`);
      const last = rejected[rejected.length - 1];
      assert.equal(last.reason, reason);
      assert.equal(last.peer, '127.0.0.1');
      assert.match(last.cid, /^[0-9a-v]{16}$/);
    }
    assert.equal(sessions.length, before, 'no session was made');
  });

  test('a header not complete within the deadline is cut off; so is a peer that leaves halfway', async () => {
    const t0 = performance.now();
    const { out, closed } = await exchange(v1('192.0.2.10', '198.51.100.25', 1, 25).subarray(0, 20), 3000);
    assert.equal(out, '');
    assert.ok(closed && performance.now() - t0 < 2500, 'closed at about the 400 ms deadline');
    assert.equal(rejected[rejected.length - 1].reason, 'timeout');

    const s = await connectRaw(port);
    s.on('error', () => undefined);
    s.end(v2().subarray(0, 10));
    const deadline = Date.now() + 3000;
    while (rejected[rejected.length - 1].reason !== 'closed' && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    assert.equal(rejected[rejected.length - 1].reason, 'closed');
    s.destroy();
  });

  test('a connection reset before its peer address could be read makes no session and is counted as reset', async () => {
    // What the listener hands over when the peer (e.g. HAProxy's layer-4 check) reset right after connecting.
    const dead = new net.Socket();
    assert.equal(dead.remoteAddress, undefined);
    const err = await new Promise<Error | null>((resolve) => server._handleProxy(dead, (e) => resolve(e)));
    assert.match(String(err), /reset/);
    assert.ok(dead.destroyed);
    assert.deepEqual({ ...rejected[rejected.length - 1], cid: '' }, { peer: '', cid: '', reason: 'reset', detail: 'connection reset before its peer address could be read' });
  });

  test('a peer not in the list is a direct client: a PROXY line from it is just a bad command', async () => {
    trustLoopback = false;
    try {
      const before = sessions.length;
      const c = await RawSmtp.connect(port);
      assert.equal((await c.read()).code, 220);
      const r = await c.cmd('PROXY TCP4 203.0.113.66 198.51.100.25 1234 25');
      c.close();
      assert.ok(r.code >= 500 && r.code < 600, r.raw);
      assert.equal(sessions[before].remoteAddress, '127.0.0.1');
      assert.equal(sessions[before].trapProxy, undefined);
    } finally {
      trustLoopback = true;
    }
  });
});
