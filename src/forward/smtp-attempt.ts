/**
 * One SMTP transaction with a forward target, and the classification of its outcome per recipient (delivered,
 * temporary, permanent) and for the target (down or not).
 */
import type * as fs from 'node:fs';
import SMTPConnection from 'nodemailer/lib/smtp-connection';
import type { ForwardTarget } from './targets';

export interface SmtpOptions {
  /** EHLO name. */
  name: string;
  connectionTimeoutMs: number;
  greetingTimeoutMs: number;
  /** Inactivity limit, also while waiting for the reply to the final dot. */
  socketTimeoutMs: number;
}

interface SmtpError extends Error {
  code?: string;
  responseCode?: number;
  response?: string;
  command?: string;
  rejected?: string[];
  rejectedErrors?: SmtpError[];
  recipient?: string;
}

export interface RecipientResult {
  rcpt: string;
  /** The reply that decided this recipient (the final reply after DATA for accepted ones). */
  reply: string;
  kind: 'delivered' | 'temporary' | 'permanent';
}

export interface AttemptResult {
  recipients: RecipientResult[];
  /** True when the destination itself is unreachable or refusing service: the whole destination backs off. */
  destinationDown: boolean;
  /** A one-line summary for the log. */
  reply: string;
}

/** No NUL/CR/LF: the reply goes into control-file metadata and log lines. */
export function oneLine(s: string): string {
  return s.replace(/[\r\n]+/g, ' ').replace(/[\x00-\x1f\x7f]/g, ' ').trim();
}

/** RFC 5321: 5yz is permanent, except 503 (bad sequence), which a new session can get past. */
function classifyCode(code: number | undefined): 'temporary' | 'permanent' {
  return code !== undefined && code >= 500 && code < 600 && code !== 503 ? 'permanent' : 'temporary';
}

const CONNECTION_CODES = new Set(['ECONNECTION', 'ETIMEDOUT', 'ESOCKET', 'EDNS', 'ETLS', 'EPROXY']);

function describe(err: SmtpError): string {
  if (err.response) return oneLine(err.response);
  const orig = (err as { originalCode?: string }).originalCode;
  return oneLine(`${err.code ?? 'ERROR'}${orig ? `/${orig}` : ''}: ${err.message}`);
}

/** Turns one transaction's outcome into a verdict per recipient. */
export function classifyAttempt(rcpts: string[], err: SmtpError | null, info: { rejectedErrors?: SmtpError[]; response?: string } | null): AttemptResult {
  if (!err) {
    const finalReply = oneLine(info?.response ?? '250');
    const refused = new Map<string, SmtpError>();
    for (const e of info?.rejectedErrors ?? []) if (e.recipient !== undefined) refused.set(e.recipient, e);
    const recipients = rcpts.map((rcpt): RecipientResult => {
      const e = refused.get(rcpt);
      return e ? { rcpt, reply: describe(e), kind: classifyCode(e.responseCode) } : { rcpt, reply: finalReply, kind: 'delivered' };
    });
    return { recipients, destinationDown: false, reply: finalReply };
  }
  // Every recipient refused: nodemailer reports one reply for all, the details per recipient ride along.
  if (err.rejectedErrors && err.rejectedErrors.length && err.command === 'RCPT TO') {
    const byRcpt = new Map(err.rejectedErrors.map((e) => [e.recipient, e]));
    const recipients = rcpts.map((rcpt): RecipientResult => {
      const e = byRcpt.get(rcpt) ?? err;
      return { rcpt, reply: describe(e), kind: classifyCode(e.responseCode) };
    });
    return { recipients, destinationDown: false, reply: describe(err) };
  }
  const reply = describe(err);
  let kind: 'temporary' | 'permanent';
  let destinationDown = false;
  if (err.responseCode !== undefined) {
    kind = classifyCode(err.responseCode);
    // 421 is the server closing the session: it speaks for the destination, not for this message.
    destinationDown = err.responseCode === 421 || (err.command === 'CONN' && kind === 'temporary');
  } else if (err.code === 'EENVELOPE' || (err.code === 'EMESSAGE' && /larger than allowed/.test(err.message))) {
    // Refused before anything was sent (an address SMTP cannot carry, a size over the server's SIZE): no retry
    // will change that.
    kind = 'permanent';
  } else {
    kind = 'temporary';
    destinationDown = err.code === undefined || CONNECTION_CODES.has(err.code) || err.command === 'CONN';
  }
  return { recipients: rcpts.map((rcpt) => ({ rcpt, reply, kind })), destinationDown, reply };
}

export interface SmtpTransaction {
  result: Promise<AttemptResult>;
  /** Drops the connection; the attempt then ends as a temporary failure. */
  abort(): void;
}

/**
 * One connection, one message, QUIT. SMTPConnection is used directly rather than a transport's sendMail() because the
 * mail composer would run the envelope addresses through its address parser: a spammer's odd sender must reach the
 * MTA as the job's metadata stored it (docs/forward.md says how the acceptor cleaned it). STARTTLS is used when offered, without certificate checks (an internal MTA usually
 * has a self-signed one), and a failed upgrade falls back to plain text, as MTAs do for opportunistic TLS.
 */
export function sendOnce(
  dest: ForwardTarget,
  opts: SmtpOptions,
  from: string,
  rcpts: string[],
  message: fs.ReadStream,
  size?: number,
): SmtpTransaction {
  const conn = new SMTPConnection({
    host: dest.host,
    port: dest.port,
    secure: false,
    opportunisticTLS: true,
    tls: { rejectUnauthorized: false },
    name: opts.name,
    connectionTimeout: opts.connectionTimeoutMs,
    greetingTimeout: opts.greetingTimeoutMs,
    socketTimeout: opts.socketTimeoutMs,
    allowInternalNetworkInterfaces: true,
    logger: false,
  });
  let settle!: (r: AttemptResult) => void;
  const result = new Promise<AttemptResult>((resolve) => (settle = resolve));
  let done = false;
  const finish = (err: SmtpError | null, info: { rejectedErrors?: SmtpError[]; response?: string } | null) => {
    if (done) return;
    done = true;
    message.destroy();
    if (err) conn.close();
    else conn.quit();
    settle(classifyAttempt(rcpts, err, info));
  };
  conn.on('error', (err: SmtpError) => finish(err, null));
  conn.once('end', () => finish(Object.assign(new Error('connection closed'), { code: 'ECONNECTION' }), null));
  message.once('error', (err) => finish(Object.assign(new Error(`reading the message: ${err.message}`), { code: 'ESTREAM' }), null));
  conn.connect((err) => {
    if (err) return finish(err as SmtpError, null);
    // from '' is the null sender: SMTPConnection sends MAIL FROM:<>.
    // With the size, an MTA advertising SIZE refuses an oversized message at MAIL FROM instead of after DATA.
    conn.send({ from, to: rcpts, ...(size !== undefined && Number.isFinite(size) ? { size } : {}) }, message, (e, info) => finish((e as SmtpError | null) ?? null, info ?? null));
  });
  return {
    result,
    abort: () => finish(Object.assign(new Error('relay stopping'), { code: 'EABORT' }), null),
  };
}
