/**
 * Longer than ~400 lines on purpose: the data path is meant to read top to bottom in one place.
 *
 * The trap's data path, top to bottom: a connection arrives (onConnect), a sender is recorded (onMailFrom),
 * each recipient is judged by the rcpt_regexp rules (onRcptTo), and the message is streamed into one queue
 * job per destination with its own Received header (onData). A 250 is sent only after every copy is committed,
 * each job's metadata carrying the client's fingerprint; then the primary hears of the message (for the listing and
 * the tail), and of the session when it closes.
 */
import type { Readable } from 'node:stream';
import type { SMTPServerAddress, SMTPServerDataStream, SMTPServerOptions } from 'smtp-server';
import { evaluateRecipient, rcptReply, type RcptRule } from '../config/rcpt-regexp';
import { splitByDestination, type Route } from '../config/routes';
import type { CommittedJob, LastWrite, PendingJob } from '../dirqueue';
import { filedEvent, type FiledMessageEvent, type SessionEndedEvent } from '../intel/events';
import { DialectRecorder, fingerprint } from '../intel/fingerprint';
import { listingCopies } from '../intel/trap-recipients';
import type { Logger } from '../log';
import type { ProxyRejectionReason } from '../metrics/definitions';
import type { TrapHooks, TrapSession } from './overrides';
import { Coalescer } from './coalescer';
import { buildReceivedHeader, cleanAddress } from './received';
import { classifyReply, type TrapRejection } from './replies';
import type { ReverseLookup } from './rdns';
import type { Spool } from '../spool';

/** What the session reports, for metrics; kept abstract so session logic tests need no registry. */
export interface TrapObserver {
  /** Every client connection that reached the session layer, refused ones included. */
  connectionSeen(): void;
  /** A balancer's own connection (its PROXY header named no client), e.g. a health check: answered, not a client. */
  proxyLocal(): void;
  /** A PROXY_FROM connection closed because of its header, before any session. */
  proxyRejected(reason: ProxyRejectionReason): void;
  /** A connection that was let in (and will be reported closed). */
  connectionOpened(): void;
  connectionClosed(seconds: number): void;
  earlyTalker(): void;
  tlsSession(): void;
  recipient(code: number): void;
  rejection(reason: TrapRejection): void;
  accepted(queue: string, bytes: number, writeSeconds: number): void;
}

/** Where filed messages and ended sessions are reported (the acceptor's IntelEventBatcher); never waits. */
export interface IntelSink {
  filed(e: FiledMessageEvent, features: string): void;
  ended(e: Omit<SessionEndedEvent, 'kind'>): void;
}

/** The rules in force; replaced as a whole on SIGHUP, so a session sees one consistent set per decision. */
export interface RuleSet {
  rules: RcptRule[];
  routes: Route[];
  defaultCode: 'OK' | 'DENY' | 'DENYSOFT';
}

export interface SessionSettings {
  me: string;
  version: string;
  maxConnectionsPerIp: number;
}

export interface SessionDeps {
  settings: SessionSettings;
  ruleSet: () => RuleSet;
  spool: Spool;
  reverseLookup: ReverseLookup;
  observer: TrapObserver;
  intel: IntelSink;
  log: Logger;
  /** False once shutdown began: new connections are refused with 421. */
  accepting: () => boolean;
}

interface AcceptedRecipient {
  address: string;
  note: string | null;
}

/** Per-connection trap state, beside smtp-server's session object. */
interface ConnectionState {
  openedAt: number;
  /** False for a balancer's own connection: it is kept out of the client counts and the per-IP limit. */
  client: boolean;
  rdns: Promise<string | null>;
  /** Lower-cased address -> note, for the recipients accepted in the current transaction. */
  notes: Map<string, string | null>;
  transactions: number;
}

const states = new WeakMap<object, ConnectionState>();

function smtpError(code: number, message: string): Error & { responseCode: number } {
  return Object.assign(new Error(message), { responseCode: code });
}

/** Values bound for queue metadata: the control-file format forbids NUL and newline, and CR would confuse readers. */
function metaValue(s: string): string {
  return s.replace(/[\x00-\x1f\x7f]/g, '?');
}

/** The balancer a proxied connection came through, for log lines; nothing for a direct one. */
function via(session: TrapSession): { proxy?: string } {
  return session.trapProxy ? { proxy: session.trapProxy.balancer } : {};
}

export function createSessionHandlers(deps: SessionDeps): Pick<
  SMTPServerOptions,
  'onConnect' | 'onSecure' | 'onMailFrom' | 'onRcptTo' | 'onData' | 'onClose'
> & { hooks: Pick<TrapHooks, 'onEarlyTalker' | 'onReply'>; openSessions(): number } {
  const { settings, observer, log } = deps;
  const perIp = new Map<string, number>();
  // Sessions whose onClose has not run yet: a stopping acceptor waits for them, so their ends are reported.
  let open = 0;

  return {
    openSessions: () => open,

    hooks: {
      onEarlyTalker(session) {
        observer.earlyTalker();
        log.info('early_talker', { cid: session.id, ip: session.remoteAddress, ...via(session) });
      },
      onReply(_session, code, text, context) {
        const reason = classifyReply(code, text, context);
        if (reason) observer.rejection(reason);
        // RCPT commands smtp-server answers itself never reach onRcptTo; count them by the code sent all the same.
        if (context === 'TOO_MANY_RECIPIENTS' || context === 'MAILBOX_SYNTAX_ERROR') observer.recipient(code);
      },
    },

    onConnect(session, callback) {
      const proxied = (session as TrapSession).trapProxy;
      const client = !proxied?.local;
      if (client) observer.connectionSeen();
      else {
        observer.proxyLocal();
        log.debug('proxy_local', { cid: session.id, proxy: proxied.balancer, version: proxied.version });
      }
      if (!deps.accepting()) return callback(smtpError(421, `${settings.me} Service shutting down, try again later`));
      const ip = session.remoteAddress;
      if (client && settings.maxConnectionsPerIp > 0) {
        const n = (perIp.get(ip) ?? 0) + 1;
        if (n > settings.maxConnectionsPerIp) {
          observer.rejection('connection_limit_ip');
          return callback(smtpError(421, `${settings.me} too many connections from your address, try again later`));
        }
        perIp.set(ip, n);
      }
      states.set(session, {
        openedAt: performance.now(),
        client,
        // Started now, awaited only when a message needs its Received header: the greeting never waits on DNS.
        // A balancer's health checks would cost a PTR query each and never carry mail worth one.
        rdns: client ? deps.reverseLookup(ip) : Promise.resolve(null),
        notes: new Map(),
        transactions: 0,
      });
      open++;
      if (client) observer.connectionOpened();
      callback();
    },

    onSecure(_socket, session, callback) {
      observer.tlsSession();
      (session as TrapSession).trapDialect?.noteTls();
      callback();
    },

    onMailFrom(_address, session, callback) {
      states.get(session)?.notes.clear();
      callback();
    },

    onRcptTo(address: SMTPServerAddress, session, callback) {
      const trap = session as TrapSession;
      const state = states.get(session);
      const { rules, defaultCode } = deps.ruleSet();
      const verdict = evaluateRecipient(rules, address.address);
      const reply = rcptReply(verdict, address.address, defaultCode);
      observer.recipient(reply.code);
      if (!reply.accepted) {
        log.info('rcpt_refused', {
          cid: session.id,
          ip: session.remoteAddress,
          ...via(trap),
          rcpt: address.address,
          reply: `${reply.code} ${reply.message}`,
          rule: reply.decidedBy === 'default' ? 'default' : `${reply.decidedBy.file}:${reply.decidedBy.line}`,
        });
        trap.trapDisconnect = reply.disconnect;
        return callback(smtpError(reply.code, reply.message));
      }
      state?.notes.set(address.address.toLowerCase(), reply.note);
      trap.trapRcptReply = reply.message;
      callback();
    },

    onData(stream: SMTPServerDataStream, session, callback) {
      fileMessage(deps, stream, session as TrapSession).then(
        (reply) => callback(null, reply),
        (err: Error & { responseCode?: number }) => callback(err),
      );
    },

    onClose(session) {
      const state = states.get(session);
      if (!state) return;
      states.delete(session);
      open--;
      if (!state.client) return;
      const ip = session.remoteAddress;
      if (settings.maxConnectionsPerIp > 0) {
        const n = (perIp.get(ip) ?? 1) - 1;
        if (n <= 0) perIp.delete(ip);
        else perIp.set(ip, n);
      }
      observer.connectionClosed((performance.now() - state.openedAt) / 1000);
      const end = (session as TrapSession).trapDialect?.noteClosed() ?? 'drop';
      deps.intel.ended({ at: Date.now(), ip, end });
    },
  };
}

/** The recipients accepted in this transaction, in the order given, each with the note its rule set. */
function acceptedRecipients(session: TrapSession, state: ConnectionState | undefined): AcceptedRecipient[] {
  return session.envelope.rcptTo.map((r) => ({
    address: r.address,
    note: state?.notes.get(r.address.toLowerCase()) ?? null,
  }));
}

function protocolOf(session: TrapSession): 'SMTP' | 'ESMTP' | 'ESMTPS' {
  if (session.secure) return 'ESMTPS';
  return session.openingCommand === 'EHLO' ? 'ESMTP' : 'SMTP';
}

async function fileMessage(deps: SessionDeps, stream: SMTPServerDataStream, session: TrapSession): Promise<string> {
  const { settings, spool, observer, log } = deps;
  const state = states.get(session);
  const mailFrom = session.envelope.mailFrom ? session.envelope.mailFrom.address : '';
  const recipients = acceptedRecipients(session, state);
  const groups = splitByDestination(recipients, deps.ruleSet().routes);
  const rdns = state ? await state.rdns : null;
  const dialect = session.trapDialect ?? new DialectRecorder();
  dialect.noteRdns(rdns);
  const date = new Date();
  const helo = session.trapHelo ?? null;
  const proto = protocolOf(session);
  const tls = session.secure ? (session.tlsOptions && session.tlsOptions.name) || 'yes' : 'no';

  const jobs: Array<{ queue: string; job: PendingJob; committed: boolean; metadata: Record<string, string> }> = [];
  const headers: Buffer[] = [];
  const logFields = {
    cid: session.id,
    ip: session.remoteAddress,
    ...via(session),
    helo,
    from: mailFrom,
    rcpts: recipients.map((r) => r.address).join(','),
  };
  try {
    for (const group of groups) {
      const rcpts = group.recipients.map((r) => r.address);
      const notes = [...new Set(group.recipients.map((r) => r.note).filter((n): n is string => n !== null))];
      const metadata: Record<string, string> = {
        mail_from: metaValue(mailFrom),
        // The same tokens as the Received header's RCPT_TO=: an address with a comma must not read as two.
        rcpt_to: rcpts.map(cleanAddress).join(','),
        remote_ip: metaValue(session.remoteAddress),
        remote_host: metaValue(rdns ?? 'unknown'),
        helo: metaValue(helo ?? ''),
        note: metaValue(notes.join(',')),
        tls: metaValue(tls),
        proto,
      };
      const job = await spool.writer(group.destination.queue).begin({ metadata });
      jobs.push({ queue: group.destination.queue, job, committed: false, metadata });
      headers.push(
        buildReceivedHeader({
          helo,
          rdns,
          ip: session.remoteAddress,
          me: settings.me,
          version: settings.version,
          proto,
          mailFrom,
          recipients: rcpts,
          date,
        }),
      );
    }
    // The message goes to the queue in blocks of WRITE_BLOCK bytes, whatever the pieces smtp-server hands over;
    // each copy's header goes out with the first block (one write, not two); an empty message gets it alone.
    const blocks = new Coalescer(WRITE_BLOCK);
    let first = true;
    for await (const chunk of stream as Readable) {
      // Over the limit: stop writing but keep reading to the final dot, so the 552 answers the whole DATA and the
      // session stays in step (leaving the loop would destroy the stream under smtp-server mid-message).
      if (stream.sizeExceeded) continue;
      dialect.noteDataChunk(chunk as Buffer);
      for (const block of blocks.push(chunk as Buffer)) {
        await writeBlock(jobs, first ? headers : null, block);
        first = false;
      }
    }
    // The last block travels with the commit: a message of one block reaches the writer thread in one hop.
    let finals: Array<LastWrite | undefined> = [];
    if (!stream.sizeExceeded) {
      const last = blocks.flush();
      if (last || first) finals = lastWrites(jobs.length, first ? headers : null, last ?? NOTHING);
    }
    if (stream.sizeExceeded) {
      await abortAll(jobs); // smtp-server itself answers 552 (rejectOversized)
      log.info('transaction', { ...logFields, size: stream.byteLength, reply: '552 message too big' });
      return 'not queued';
    }
    // Taken now that the whole message is in: its line endings are part of the dialect.
    const fp = fingerprint(dialect.dialect());
    // From the final dot: the client's upload and the reverse-DNS wait are not the spool's time.
    const commitStarted = performance.now();
    const committed: Array<{ queue: string; job: CommittedJob }> = [];
    // Copies commit one by one: if a later one fails the client gets 451 and retries, so an earlier copy may be
    // filed twice. Duplicates are preferred to loss, and removing a visible job could race a consumer.
    for (const [i, j] of jobs.entries()) {
      const metadata = { ...j.metadata, fingerprint: fp.id, fingerprint_features: fp.features };
      committed.push({ queue: j.queue, job: await j.job.commit(metadata, finals[i]) });
      j.committed = true;
    }
    const seconds = (performance.now() - commitStarted) / 1000;
    for (const c of committed) observer.accepted(c.queue, c.job.size, seconds);
    // Only a committed message is evidence; the primary hears of it after the fact, never in the way of the 250.
    if (state?.client) {
      const copies = listingCopies(groups);
      const event = { at: Date.now(), ip: session.remoteAddress, helo, mailFrom, size: stream.byteLength, fingerprint: fp.id, copies };
      deps.intel.filed(filedEvent(event), fp.features);
    }
    const ids = committed.map((c) => c.job.jobId).join(',');
    log.info('transaction', {
      ...logFields,
      size: stream.byteLength,
      dest: committed.map((c) => c.queue).join(','),
      id: ids,
      reply: '250',
    });
    return `Ok: queued as ${ids}`;
  } catch (err) {
    await abortAll(jobs);
    if (!stream.readableEnded) stream.resume();
    const e = err as NodeJS.ErrnoException;
    // Only these mean the client went away; `for await` also destroys the stream when a queue write throws,
    // so stream.destroyed cannot tell a full disk from a vanished client.
    if (e.code === 'ECONNECTION' || e.code === 'ERR_STREAM_PREMATURE_CLOSE') {
      log.info('transaction', { ...logFields, reply: 'none: client went away during DATA' });
      throw err;
    }
    observer.rejection('queue_error');
    const full = e.code === 'ENOSPC' || e.code === 'EDQUOT';
    const reply = full
      ? smtpError(452, 'Insufficient system storage, try again later')
      : smtpError(451, 'Local error in processing, try again later');
    // A copy already visible in its queue (only its directory fsync failed) stays there: a retry may file it twice.
    const visible = (err as { jobVisible?: string }).jobVisible;
    log.error('transaction', { ...logFields, error: e.code ?? e.message, reply: `${reply.responseCode} ${reply.message}`, kept_unsynced: visible });
    throw reply;
  }
}

/**
 * Bytes per queue write: what one socket read brings at most (libuv reads 64 KiB), so a fast client costs about
 * one write per read, and a session holds at most this much while gathering.
 */
const WRITE_BLOCK = 64 * 1024;
const HAND_OVER = { handOver: true } as const;

/**
 * One block to every copy of the message. The first block carries each copy's Received header and the unfold
 * guard in front. A writer may take the buffer it is handed (the writer thread moves it), so with several copies
 * every copy but the last is handed the block without giving it away, and is copied.
 */
async function writeBlock(jobs: Array<{ job: PendingJob }>, headers: Buffer[] | null, block: Buffer): Promise<void> {
  if (headers) {
    const guard = unfoldGuard(block);
    await Promise.all(jobs.map((j, i) => j.job.write(joined(headers[i], guard, block), HAND_OVER)));
  } else if (jobs.length === 1) await jobs[0].job.write(block, HAND_OVER);
  else await Promise.all(jobs.map((j, i) => j.job.write(block, i === jobs.length - 1 ? HAND_OVER : undefined)));
}

/**
 * The last block for each copy, as writeBlock would write it: with the headers when it is also the first; handed
 * over only by the last copy, since copies commit one after the other and earlier ones must find the block intact.
 */
function lastWrites(copies: number, headers: Buffer[] | null, block: Buffer): LastWrite[] {
  if (headers) {
    const guard = unfoldGuard(block);
    return headers.map((h) => ({ chunk: joined(h, guard, block), handOver: true }));
  }
  return Array.from({ length: copies }, (_, i) => ({ chunk: block, handOver: i === copies - 1 }));
}

/** a + b + c in a buffer of its own. */
function joined(a: Buffer, b: Buffer, c: Buffer): Buffer {
  const out = Buffer.allocUnsafeSlow(a.length + b.length + c.length);
  a.copy(out, 0);
  b.copy(out, a.length);
  c.copy(out, a.length + b.length);
  return out;
}

const UNFOLD_GUARD = Buffer.from('X-Spamtrapd-Note: message began with white space\r\n');
const NOTHING = Buffer.alloc(0);

/**
 * A message whose first byte is SP or TAB would be unfolded into our Received header by every reader (a client
 * could append `RCPT_TO=<forged>` to it). One line of ours in between takes the continuation instead; the message
 * bytes stay as received.
 */
function unfoldGuard(firstChunk: Buffer): Buffer {
  return firstChunk[0] === 0x20 || firstChunk[0] === 0x09 ? UNFOLD_GUARD : NOTHING;
}

async function abortAll(jobs: Array<{ job: PendingJob; committed: boolean }>): Promise<void> {
  await Promise.all(jobs.filter((j) => !j.committed).map((j) => j.job.abort().catch(() => undefined)));
}
