/**
 * A raw SMTP client for tests: sends exactly the bytes a test gives it (bots do not follow RFCs either) and
 * parses replies, multi-line included. Every wait is bounded.
 */
import net from 'node:net';
import tls from 'node:tls';

export interface Reply {
  code: number;
  lines: string[];
  /** The text of the last line, without the code. */
  text: string;
  raw: string;
}

export class RawSmtp {
  private buf = '';
  private waiters: Array<() => void> = [];
  closed = false;
  socket: net.Socket;

  private constructor(socket: net.Socket) {
    this.socket = socket;
    this.listen(socket);
  }

  private listen(socket: net.Socket): void {
    socket.setEncoding('latin1');
    socket.on('data', (d: string) => {
      this.buf += d;
      this.wake();
    });
    socket.on('close', () => {
      this.closed = true;
      this.wake();
    });
    socket.on('error', () => undefined);
  }

  /** `localAddress` binds the client end, e.g. 127.0.5.7 (all of 127.0.0.0/8 is on lo) to look like another host. */
  static connect(port: number, host = '127.0.0.1', timeoutMs = 5000, localAddress?: string): Promise<RawSmtp> {
    return new Promise((resolve, reject) => {
      const s = net.connect({ port, host, localAddress });
      const t = setTimeout(() => {
        s.destroy();
        reject(new Error(`connect to ${host}:${port} timed out`));
      }, timeoutMs);
      s.once('connect', () => {
        clearTimeout(t);
        resolve(new RawSmtp(s));
      });
      s.once('error', (e) => {
        clearTimeout(t);
        reject(e);
      });
    });
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    w.forEach((f) => f());
  }

  /** Reads one complete reply (all continuation lines). Rejects on timeout or when the server closes first. */
  async read(timeoutMs = 5000): Promise<Reply> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const reply = this.take();
      if (reply) return reply;
      if (this.closed) throw new Error(`connection closed while waiting for a reply (buffer: ${JSON.stringify(this.buf)})`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no reply within ${timeoutMs} ms (buffer: ${JSON.stringify(this.buf)})`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  private take(): Reply | null {
    const lines: string[] = [];
    let pos = 0;
    for (;;) {
      const nl = this.buf.indexOf('\r\n', pos);
      if (nl < 0) return null;
      const line = this.buf.slice(pos, nl);
      lines.push(line);
      pos = nl + 2;
      if (!/^\d{3}-/.test(line)) {
        const raw = this.buf.slice(0, pos);
        this.buf = this.buf.slice(pos);
        return { code: Number(line.slice(0, 3)), lines, text: line.slice(4), raw };
      }
    }
  }

  /** STARTTLS: sends the command, then runs the TLS handshake on the same connection (any certificate). */
  async startTls(): Promise<Reply> {
    const r = await this.cmd('STARTTLS');
    if (r.code !== 220) return r;
    const plain = this.socket;
    plain.removeAllListeners('data');
    plain.removeAllListeners('close');
    const secure = tls.connect({ socket: plain, rejectUnauthorized: false });
    await new Promise<void>((resolve, reject) => {
      secure.once('secureConnect', resolve);
      secure.once('error', reject);
    });
    this.socket = secure;
    this.listen(secure);
    return r;
  }

  write(data: string | Buffer): void {
    this.socket.write(data);
  }

  async cmd(line: string, timeoutMs?: number): Promise<Reply> {
    this.write(line + '\r\n');
    return this.read(timeoutMs);
  }

  /** Resolves when the server has closed the connection (or rejects after timeoutMs). */
  async waitClosed(timeoutMs = 5000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!this.closed) {
      if (Date.now() > deadline) throw new Error('server did not close the connection');
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  close(): void {
    this.socket.destroy();
  }
}

/**
 * One whole transaction; returns the reply to the final dot. `data` is sent as is, then CRLF.CRLF. `localAddress`
 * binds the client end (e.g. 127.0.5.7) so the trap sees another sender.
 */
export async function sendMail(
  port: number,
  opts: { helo?: string; from: string; to: string[]; data: string | Buffer; ehlo?: boolean; localAddress?: string },
): Promise<{ rcptReplies: Reply[]; dataReply: Reply | null }> {
  const c = await RawSmtp.connect(port, '127.0.0.1', 5000, opts.localAddress);
  try {
    const greeting = await c.read();
    if (greeting.code !== 220) throw new Error(`greeting ${greeting.raw}`);
    await c.cmd(`${opts.ehlo === false ? 'HELO' : 'EHLO'} ${opts.helo ?? 'client.example'}`);
    const mail = await c.cmd(`MAIL FROM:${opts.from}`);
    if (mail.code !== 250) throw new Error(`MAIL FROM: ${mail.raw}`);
    const rcptReplies: Reply[] = [];
    for (const r of opts.to) rcptReplies.push(await c.cmd(`RCPT TO:${r}`));
    if (!rcptReplies.some((r) => r.code === 250)) return { rcptReplies, dataReply: null };
    const go = await c.cmd('DATA');
    if (go.code !== 354) throw new Error(`DATA: ${go.raw}`);
    c.write(opts.data);
    // The terminator's leading CRLF ends the last line; data that already ends a line gets only ".CRLF".
    c.write(opts.data.slice(-2).toString() === '\r\n' ? '.\r\n' : '\r\n.\r\n');
    const dataReply = await c.read(15000);
    await c.cmd('QUIT').catch(() => undefined);
    return { rcptReplies, dataReply };
  } finally {
    c.close();
  }
}
