/**
 * A reader of the trap's live tail (GET /tail, server-sent events) for tests: keeps the raw text and the parsed
 * events, can stop reading (a slow reader) and start again. Every wait is bounded.
 */
import http from 'node:http';
import { SseParser, type SseMessage } from '../../src/intel/tail';

export class TailReader {
  raw = '';
  readonly events: SseMessage[] = [];
  status = 0;
  ended = false;
  private readonly parser = new SseParser();

  private constructor(
    private readonly req: http.ClientRequest,
    private readonly res: http.IncomingMessage,
  ) {
    this.status = res.statusCode ?? 0;
    res.setEncoding('utf8');
    res.on('data', (text: string) => {
      this.raw += text;
      this.events.push(...this.parser.push(text));
    });
    res.on('end', () => (this.ended = true));
    res.on('error', () => (this.ended = true));
  }

  /** Connects and resolves once the answer's headers are in (any status). */
  static open(port: number, path = '/tail', timeoutMs = 5000): Promise<TailReader> {
    return new Promise((resolve, reject) => {
      const req = http.get({ host: '127.0.0.1', port, path });
      const t = setTimeout(() => req.destroy(new Error(`no answer from ${path} within ${timeoutMs} ms`)), timeoutMs);
      req.once('response', (res) => {
        clearTimeout(t);
        resolve(new TailReader(req, res));
      });
      req.once('error', (err) => {
        clearTimeout(t);
        reject(err);
      });
    });
  }

  /** The data of every `message` event so far, parsed. */
  messages<T = Record<string, unknown>>(): T[] {
    return this.events.filter((e) => e.event === 'message').map((e) => JSON.parse(e.data) as T);
  }

  /** The sum of the `dropped` events so far. */
  dropped(): number {
    return this.events.filter((e) => e.event === 'dropped').reduce((n, e) => n + (JSON.parse(e.data) as { dropped: number }).dropped, 0);
  }

  /** Stops taking data: the socket's buffers fill up, as with a reader on a slow link. */
  pause(): void {
    this.res.pause();
  }

  resume(): void {
    this.res.resume();
  }

  async waitFor(what: string, cond: () => boolean, timeoutMs = 10_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!cond()) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; got:\n${this.raw.slice(-2000)}`);
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  close(): void {
    this.req.destroy();
  }
}
