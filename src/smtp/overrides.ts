/**
 * Longer than ~400 lines on purpose: one module holds every change to smtp-server, so an upgrade is checked in one
 * place (each override is pinned by a test).
 *
 * Every place where spamtrapd bends smtp-server's behaviour, in one module, against the pinned version
 * (3.21.6; test/smtp-overrides.test.ts fails if an upgrade moves the internals relied on here).
 *
 * smtp-server is a submission-grade server; a trap must instead record bots as they are:
 *  - no 100 ms greeting hold, and a client that talks before the greeting is captured, not refused;
 *  - `MAIL FROM:user@host` without angle brackets is accepted (qpsmtpd's dont_require_anglebrackets), and so is a
 *    recipient without a user or host part, which the rules then leave to the default decision;
 *  - any HELO/EHLO argument is accepted and kept raw (not lower-cased) for the Received header;
 *  - the RCPT reply text comes from the rcpt_regexp rule, and some rules close the connection after it;
 *  - a DATA phase has an absolute deadline, and so has each command, so a slow-drip client cannot hold a session;
 *  - every reply passes one tap, so rejections are counted where they are sent;
 *  - a balancer in PROXY_FROM must begin with a PROXY header, v1 or v2 (smtp-server reads v1 only), whose client
 *    address becomes the session's; a bad header closes the connection without a reply;
 *  - the DATA phase is un-stuffed in one pass per socket chunk (dot-unstuff.ts), not one write and one
 *    event-loop turn per dot-stuffed line, so a message costs time linear in its bytes whatever its lines are.
 *  - every command line is shown to the session's DialectRecorder as sent, with whether it was pipelined, for the
 *    client's fingerprint (docs/fingerprints.md).
 */
import crypto from 'node:crypto';
import type net from 'node:net';
import type tls from 'node:tls';
import { SMTPServer, type SMTPServerOptions, type SMTPServerSession } from 'smtp-server';
import { SMTPConnection, type SMTPConnectionOptions } from 'smtp-server/lib/smtp-connection.js';
import { SMTPStream } from 'smtp-server/lib/smtp-stream.js';
import { DialectRecorder } from '../intel/fingerprint';
import type { ProxyRejectionReason } from '../metrics/definitions';
import { DotUnstuffer } from './dot-unstuff';
import { readProxyHeader } from './proxy-reader';

/** The pinned smtp-server version these overrides were written against. */
export const SMTP_SERVER_VERSION = '3.21.6';

/** Trap state kept on smtp-server's session object (which smtp-server reuses across transactions). */
export interface TrapSessionState {
  /** HELO/EHLO argument exactly as the client sent it; null before any HELO/EHLO. */
  trapHelo?: string | null;
  /** Reply text for the RCPT being answered with 250, set by onRcptTo. */
  trapRcptReply?: string | null;
  /** Set by onRcptTo when the rule says to close the connection after the reply. */
  trapDisconnect?: boolean;
  /** True when the client sent a command before the greeting. */
  trapEarlyTalker?: boolean;
  /** Set for a connection that came through a PROXY_FROM balancer. */
  trapProxy?: ProxiedVia;
  /** The client's SMTP dialect so far; one per connection, made with it. */
  trapDialect?: DialectRecorder;
}

/** How a connection reached the trap through a balancer that sent a PROXY header. */
export interface ProxiedVia {
  /** The balancer's own address (the socket's peer); session.remoteAddress is the client's from the header. */
  readonly balancer: string;
  /** The header named no client (v2 LOCAL such as a health check, v2 UNSPEC/UNIX, v1 UNKNOWN): not a client. */
  readonly local: boolean;
  readonly version: 1 | 2;
}
export type TrapSession = SMTPServerSession & TrapSessionState;

export interface TrapHooks {
  /** Delay before the greeting. 0 (the default) greets at once; early talkers are only visible with a delay. */
  greetingDelayMs: number;
  /** Absolute limit on one DATA phase, from the 354 to the final dot. */
  dataTimeoutMs: number;
  /**
   * Limit on the time from one complete command (or the greeting) to the next. smtp-server's idle timeout restarts
   * on every byte, so a client dripping a command one byte at a time would hold the session forever.
   */
  commandTimeoutMs: number;
  /** Called once per connection whose client spoke before the greeting. */
  onEarlyTalker(session: TrapSession): void;
  /** Called for every reply sent; `context` is smtp-server's reply context (e.g. 'TOO_MANY_RECIPIENTS'). */
  onReply(session: TrapSession, code: number, text: string, context: string | false | undefined): void;
}

/** The PROXY protocol on the SMTP port (PROXY_FROM); absent = every connection is direct. */
export interface TrapProxyOptions {
  /** Whether a connection from this peer address must begin with a PROXY header. */
  expectsHeader(peerAddress: string | undefined): boolean;
  /** Deadline for the whole header, from accept. */
  timeoutMs: number;
  /** Called once per connection closed because of its header. */
  onRejected(peerAddress: string, sessionId: string, reason: ProxyRejectionReason, detail: string): void;
}

export type TrapServerOptions = SMTPServerOptions & { trap: TrapHooks; proxy?: TrapProxyOptions };

/** What _handleProxy hands to connect(): smtp-server's socket options plus how the connection came in. */
type TrapSocketOptions = SMTPConnectionOptions & { trapProxy?: ProxiedVia };

type Callback = () => void;

/** The argument of HELO/EHLO as given: everything after the verb and its separating white space. */
export function heloArgument(command: Buffer | string): string {
  return command
    .toString()
    .replace(/^\s*\S+[ \t]*/, '')
    .replace(/[ \t\r\n]+$/, '');
}

/**
 * Adds the angle brackets a bracketless `MAIL FROM:`/`RCPT TO:` address lacks, leaving parameters as they are.
 * An empty address stays empty, so smtp-server still answers it with a syntax error.
 */
export function bracketAddressCommand(command: string): string {
  const colon = command.indexOf(':');
  if (colon < 0) return command;
  const rest = command.slice(colon + 1).trim();
  if (rest === '' || rest.startsWith('<')) return command;
  const space = rest.search(/\s/);
  const address = space < 0 ? rest : rest.slice(0, space);
  const params = space < 0 ? '' : rest.slice(space);
  return `${command.slice(0, colon + 1)}<${address}>${params}`;
}

/**
 * The address of a bracketed `MAIL FROM:`/`RCPT TO:` command exactly as sent (a source route, which RFC 5321 says to
 * ignore, left out as smtp-server does); null when the command has no `<...>` address.
 */
export function addressAsSent(command: string): string | null {
  const colon = command.indexOf(':');
  if (colon < 0) return null;
  const m = /^<([^<>]*)>/.exec(command.slice(colon + 1).trim());
  return m ? m[1].replace(/^@[^\s,:@]+(?:,@[^\s,:@]+)*:/, '') : null;
}

/** Reply text as printable ASCII: anything else (8-bit, U+FFFD from undecodable client bytes) becomes `?`. */
export function asciiReply(text: string): string {
  return text.replace(/[^\x20-\x7e]/g, '?');
}

/** An address with no user part or no host part: what qpsmtpd's rcpt_regexp leaves undecided. */
export function partless(address: string): boolean {
  const at = address.lastIndexOf('@');
  return at <= 0 || at === address.length - 1;
}

/** 40 random bits per process: with the counter below, ids differ across acceptors and restarts. */
const SESSION_ID_PREFIX = BigInt('0x' + crypto.randomBytes(5).toString('hex')).toString(32).padStart(8, '0');
let sessionCounter = 0;

/**
 * A session id of the form smtp-server gives (16 characters of base 32), made without a random draw per connection:
 * smtp-server's crypto.randomBytes per connection cost more than the rest of the id's use.
 */
export function newSessionId(): string {
  sessionCounter = (sessionCounter + 1) % 2 ** 40;
  return SESSION_ID_PREFIX + sessionCounter.toString(32).padStart(8, '0');
}

/** A peer address as smtp-server keeps it: an IPv4-mapped IPv6 address in its IPv4 form. */
function plainAddress(address: string | undefined): string {
  return (address ?? '').replace(/^::ffff:(?=\d+\.\d+\.\d+\.\d+$)/i, '');
}

/**
 * smtp-server's parser with the DATA phase replaced: each chunk is un-stuffed in one pass and written to the data
 * stream as one buffer. Counting (dataBytes, sizeExceeded), drain waits and the end of DATA (upstream's
 * _endDataMode: continue(), then the bytes after the final dot are parsed as commands) stay upstream's.
 */
export class TrapSMTPStream extends SMTPStream {
  private unstuffer: DotUnstuffer | null = null;

  override startDataMode(maxBytes?: number | string | null) {
    this.unstuffer = new DotUnstuffer();
    return super.startDataMode(maxBytes);
  }

  override _feedDataStream(chunk: Buffer, done: (err?: Error | null) => void): void {
    const dataStream = this._dataStream!;
    const step = (this.unstuffer as DotUnstuffer).feed(chunk);
    this._countDataBytes(step.payload.length);
    if (step.ended) {
      this.unstuffer = null;
      this._endDataMode(step.payload.length > 0 ? step.payload : false, step.rest, done);
      return;
    }
    if (step.payload.length === 0 || !dataStream.writable) return done();
    // A stream the application destroys never drains, it only closes.
    if (dataStream.write(step.payload) || dataStream.destroyed) return done();
    const onDrain = () => {
      dataStream.removeListener('drain', onDrain);
      dataStream.removeListener('close', onDrain);
      done();
    };
    dataStream.once('drain', onDrain);
    dataStream.once('close', onDrain);
  }
}

export class TrapConnection extends SMTPConnection {
  private earlyCommand: [Buffer, Callback | undefined] | null = null;
  private dataDeadline: NodeJS.Timeout | null = null;
  private commandDeadline: NodeJS.Timeout | null = null;
  /**
   * True from a reply until the current run of synchronous work ends. smtp-server's parser hands over a buffered
   * command synchronously once the previous one is answered; one that is not yet buffered comes in a later 'data'
   * event, after the microtask below. So a command that arrives while this is true was sent before our reply.
   */
  private replyJustSent = false;
  private readonly replyNoLongerFresh = (): void => {
    this.replyJustSent = false;
  };

  constructor(server: SMTPServer, socket: net.Socket | tls.TLSSocket, options?: TrapSocketOptions | null) {
    super(server, socket, options);
    // smtp-server reuses this object as the session for the whole connection.
    if (options?.trapProxy) (this.session as TrapSession).trapProxy = options.trapProxy;
    (this.session as TrapSession).trapDialect = new DialectRecorder();
  }

  private get hooks(): TrapHooks {
    return (this._server.options as TrapServerOptions).trap;
  }

  private get trapSession(): TrapSession {
    return this.session as TrapSession;
  }

  /** Replaces smtp-server's init(): same connection-limit check, but no fixed 100 ms hold before the greeting. */
  override init(): void {
    this._setListeners(() => {
      const max = this._server.options.maxClients;
      if (max && this._server.connections.size > max) {
        this.send(421, `${this.name} Too many connected clients, try again in a moment`, false);
        return;
      }
      const delay = this.hooks.greetingDelayMs;
      if (delay > 0) setTimeout(() => this.connectionReady(), delay).unref();
      else this.connectionReady();
    });
  }

  /** Upstream's _createParser with the trap's parser class. */
  override _createParser(): SMTPStream {
    const parser = new TrapSMTPStream({ maxCommandLength: this._server.options.maxCommandLength });
    parser.oncommand = (command: Buffer, callback?: Callback) => this._onCommand(command, callback);
    parser.on('error', (err: Error) => this.send(421, 'Error: ' + err.message));
    return parser;
  }

  /** A command before the greeting is held until the greeting is out, then answered: the bot is captured. */
  override _onCommand(command: Buffer, callback?: Callback): void {
    this.armCommandDeadline();
    // latin1: one character per byte, so any bytes a bot sends become a line, never a decoding error.
    if (command) this.trapSession.trapDialect?.noteCommand(command.toString('latin1'), this.replyJustSent);
    if (!this._ready && !this._upgrading && !this._closing && this.earlyCommand === null) {
      if (!this.trapSession.trapEarlyTalker) {
        this.trapSession.trapEarlyTalker = true;
        this.trapSession.trapDialect?.noteEarlyTalk();
        this.hooks.onEarlyTalker(this.trapSession);
      }
      this.earlyCommand = [command, callback];
      return;
    }
    super._onCommand(command, callback);
  }

  override _sendGreeting(): void {
    super._sendGreeting();
    this.armCommandDeadline();
    const held = this.earlyCommand;
    if (held) {
      this.earlyCommand = null;
      setImmediate(() => super._onCommand(held[0], held[1]));
    }
  }

  override _parseAddressCommand(rawName: string, rawCommand: Buffer | string) {
    const command = bracketAddressCommand(rawCommand.toString());
    const parsed = super._parseAddressCommand(rawName, command);
    // smtp-server turns an `xn--` domain into Unicode; qpsmtpd's rules matched the address as sent.
    if (parsed) return { ...parsed, address: addressAsSent(command) ?? parsed.address };
    if (rawName.trim().toUpperCase() !== 'RCPT TO') return parsed;
    // qpsmtpd takes a recipient without a user or host part (`<foo>`, `<@host>`) and lets the rules decline it;
    // smtp-server calls it a syntax error. Its parameters are still parsed by smtp-server, with a stand-in address.
    const m = /^([^:]*:\s*)<([^<>\s\x00-\x1f\x7f]+)>(.*)$/s.exec(command);
    if (!m || !partless(m[2])) return parsed;
    const standIn = super._parseAddressCommand(rawName, `${m[1]}<postmaster@invalid>${m[3]}`);
    return standIn ? { ...standIn, address: m[2] } : parsed;
  }

  override handler_EHLO(command: Buffer, callback: Callback): void {
    this.helo('EHLO', command, callback);
  }

  override handler_HELO(command: Buffer, callback: Callback): void {
    this.helo('HELO', command, callback);
  }

  /**
   * smtp-server answers 501 to an empty, multi-word or control-character HELO and lower-cases the rest.
   * The trap accepts all of them: smtp-server gets a stand-in it accepts, and the raw argument is kept.
   */
  private helo(verb: 'HELO' | 'EHLO', command: Buffer, callback: Callback): void {
    const raw = heloArgument(command);
    const standIn = /^[\x21-\x7e]{1,255}$/.test(raw) ? raw : `[${this.remoteAddress}]`;
    const handler = verb === 'EHLO' ? super.handler_EHLO : super.handler_HELO;
    handler.call(this, Buffer.from(`${verb} ${standIn}`), callback);
    this.trapSession.trapHelo = raw;
  }

  /** RCPT: the rule decides the reply text, and DENY_DISCONNECT closes the connection after a 550. */
  override handler_RCPT(command: Buffer, callback: Callback): void {
    super.handler_RCPT(command, () => {
      const session = this.trapSession;
      session.trapRcptReply = null;
      if (session.trapDisconnect) {
        session.trapDisconnect = false;
        this.close();
      }
      callback();
    });
  }

  override handler_DATA(command: Buffer, callback: Callback): void {
    super.handler_DATA(command, callback);
    if (!this._dataStream) return;
    const stream = this._dataStream;
    this.clearDataDeadline();
    this.dataDeadline = setTimeout(() => {
      this.dataDeadline = null;
      if (this._dataStream === stream && this._parser && this._parser._dataMode) {
        this.send(421, 'Timeout: message not received in time - closing connection', 'DATA_TIMEOUT');
      }
    }, this.hooks.dataTimeoutMs);
    this.dataDeadline.unref();
    stream.once('end', () => this.clearDataDeadline());
    stream.once('close', () => this.clearDataDeadline());
  }

  /** Restarted by every complete command; while DATA runs or our handler works, the client owes us nothing. */
  private armCommandDeadline(): void {
    if (this.commandDeadline) clearTimeout(this.commandDeadline);
    this.commandDeadline = setTimeout(() => {
      this.commandDeadline = null;
      if (this._closing || this._closed) return;
      if (this._dataStream || this._handlerPending) return this.armCommandDeadline();
      this.send(421, 'Timeout: no complete command in time - closing connection', 'COMMAND_TIMEOUT');
    }, this.hooks.commandTimeoutMs);
    this.commandDeadline.unref();
  }

  private clearDataDeadline(): void {
    if (this.dataDeadline) clearTimeout(this.dataDeadline);
    this.dataDeadline = null;
  }

  override send(code: number, data?: string | string[] | null, context?: string | false): void {
    let text = data;
    if (context === 'RCPT_TO_OK' && this.trapSession.trapRcptReply) text = this.trapSession.trapRcptReply;
    // smtp-server echoes client bytes in some replies (e.g. "duplicate X parameter"); a reply is ASCII text.
    if (typeof text === 'string') text = asciiReply(text);
    else if (Array.isArray(text)) text = text.map(asciiReply);
    this.hooks.onReply(this.trapSession, code, (Array.isArray(text) ? text[0] : text) ?? '', context);
    this.replyJustSent = true;
    queueMicrotask(this.replyNoLongerFresh);
    super.send(code, text, context);
  }

  override _onClose(): void {
    this.clearDataDeadline();
    if (this.commandDeadline) clearTimeout(this.commandDeadline);
    this.commandDeadline = null;
    super._onClose();
  }
}

export class TrapServer extends SMTPServer {
  constructor(options: TrapServerOptions) {
    super(options);
  }

  private get proxy(): TrapProxyOptions | undefined {
    return (this.options as TrapServerOptions).proxy;
  }

  /** Replaces smtp-server's useProxy list of exact addresses with PROXY_FROM's networks. */
  override _expectsProxyHeader(socket: net.Socket): boolean {
    return this.proxy?.expectsHeader(socket.remoteAddress) ?? false;
  }

  /**
   * Replaces smtp-server's v1-only reader: v1 or v2 from a PROXY_FROM peer, within the deadline, and a bad header
   * closes the connection silently (smtp-server would write `* BAD`). An error passed to the callback makes
   * smtp-server drop the socket without a session; the socket is already destroyed by then.
   */
  override _handleProxy(socket: net.Socket, callback: (err: Error | null, socketOptions?: TrapSocketOptions & { id: string }) => void): void {
    // Upstream also sets `ignore` from ignoredHosts here; the trap sets no ignoredHosts.
    const socketOptions: TrapSocketOptions & { id: string } = { id: newSessionId() };
    const proxy = this.proxy;
    if (proxy && socket.remoteAddress === undefined) {
      // Reset before accept() could read the peer address: whether it owed a header cannot be known, and it can
      // carry no session. Without this it would go on as a direct client with no address.
      socket.on('error', () => undefined);
      socket.destroy();
      proxy.onRejected('', socketOptions.id, 'reset', 'connection reset before its peer address could be read');
      setImmediate(() => callback(new Error('PROXY header reset: peer address unknown')));
      return;
    }
    if (!proxy || !this._expectsProxyHeader(socket)) {
      // Upstream defers this by a setImmediate; nothing waits in between, so a direct client connects at once.
      callback(null, socketOptions);
      return;
    }
    const balancer = plainAddress(socket.remoteAddress);
    // PROXY_TIMEOUT_MS governs the header: smtp-server's pre-connect idle timer (IDLE_TIMEOUT_MS) could otherwise
    // close the socket first and the rejection would be counted as `closed` instead of `timeout`.
    socket.setTimeout(0);
    readProxyHeader(socket, proxy.timeoutMs, (outcome) => {
      if (!outcome.ok) {
        proxy.onRejected(balancer, socketOptions.id, outcome.reason, outcome.detail);
        callback(new Error(`PROXY header ${outcome.reason}: ${outcome.detail}`));
        return;
      }
      const { source, version } = outcome.header;
      socketOptions.trapProxy = { balancer, local: source === null, version };
      if (source) {
        socketOptions.remoteAddress = source.address;
        socketOptions.remotePort = source.port;
      }
      callback(null, socketOptions);
    });
  }

  /** Same as smtp-server's connect(), with the trap's connection class. */
  override connect(socket: net.Socket | tls.TLSSocket, socketOptions?: TrapSocketOptions | null): void {
    const connection = new TrapConnection(this, socket, socketOptions);
    this.connections.add(connection);
    connection.on('error', (err: Error) => this._onError(err));
    connection.on('connect', (data: unknown) => this._onClientConnect(data as never));
    connection.init();
  }
}
