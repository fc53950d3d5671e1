/**
 * Clients for the PROXY protocol tests: a whole mail transaction behind a PROXY header, a connection that is
 * expected to be closed without a reply, and the PROXY counters as scraped. Every wait is bounded.
 */
import net from 'node:net';
import { v2Local } from './proxy-headers';
import { RawSmtp, type Reply } from './smtp-client';
import { httpGet } from './http';
import { sleep, waitFor } from './waiting';

/** A plain socket to the trap on loopback, connected within `timeoutMs` or rejected. */
export function connectRaw(port: number, timeoutMs = 5000): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ port, host: '127.0.0.1' });
    const t = setTimeout(() => {
      s.destroy();
      reject(new Error(`connect to 127.0.0.1:${port} timed out`));
    }, timeoutMs);
    s.once('connect', () => {
      clearTimeout(t);
      resolve(s);
    });
    s.once('error', (e) => {
      clearTimeout(t);
      reject(e);
    });
  });
}

/** Sends `header`, then a full transaction whose body carries `tag`; returns the reply to the final dot. */
export async function proxiedMail(port: number, header: Buffer, tag: string, opts: { localAddress?: string; rcpt?: string } = {}): Promise<Reply> {
  const c = await RawSmtp.connect(port, '127.0.0.1', 5000, opts.localAddress);
  try {
    c.write(header);
    const greeting = await c.read();
    if (greeting.code !== 220) throw new Error(`greeting ${greeting.raw}`);
    for (const [cmd, want] of [
      ['EHLO proxied.example', 250],
      [`MAIL FROM:<${tag}@spam.example>`, 250],
      [`RCPT TO:<${opts.rcpt ?? 'trap@trap.test'}>`, 250],
      ['DATA', 354],
    ] as const) {
      const r = await c.cmd(cmd);
      if (r.code !== want) throw new Error(`${cmd}: ${r.raw}`);
    }
    c.write(`Subject: ${tag}\r\n\r\n${tag}\r\n.\r\n`);
    const r = await c.read(10_000);
    await c.cmd('QUIT').catch(() => undefined);
    return r;
  } finally {
    c.close();
  }
}

export interface Silent {
  /** Everything the server wrote (a rejected header must get nothing). */
  out: string;
  closed: boolean;
  ms: number;
}

/**
 * Connects, sends `bytes` (a Buffer at once, or an array of pieces `gapMs` apart while the connection is open), and
 * waits up to `waitMs` for the server to close.
 */
export async function expectSilentClose(port: number, bytes: Buffer | Buffer[], opts: { gapMs?: number; waitMs?: number } = {}): Promise<Silent> {
  const t0 = performance.now();
  const s = await connectRaw(port);
  let out = '';
  let closed = false;
  s.on('data', (d: Buffer) => (out += d.toString('latin1')));
  s.on('error', () => undefined);
  s.once('close', () => (closed = true));
  const deadline = Date.now() + (opts.waitMs ?? 5000);
  if (Buffer.isBuffer(bytes)) s.write(bytes);
  else {
    for (const piece of bytes) {
      if (closed || Date.now() > deadline) break;
      s.write(piece);
      await sleep(opts.gapMs ?? 50);
    }
  }
  while (!closed && Date.now() < deadline) await sleep(10);
  s.destroy();
  return { out, closed, ms: performance.now() - t0 };
}

/** The trap's PROXY and connection counters, as scraped now. */
export async function proxyCounters(metricsPort: number): Promise<{ rejections: Record<string, number>; local: number; connections: number }> {
  const text = await httpGet(metricsPort);
  const rejections: Record<string, number> = {};
  for (const m of text.matchAll(/^spamtrapd_proxy_rejections_total\{reason="([^"]*)"\} (\S+)$/gm)) rejections[m[1]] = Number(m[2]);
  const one = (name: string) => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1] ?? NaN);
  return { rejections, local: one('spamtrapd_proxy_local_connections_total'), connections: one('spamtrapd_connections_total') };
}

/**
 * Counters that include everything done so far. Workers push snapshots periodically, so a plain scrape may miss the
 * last moments; this makes one more balancer connection (v2 LOCAL) and waits until the scrape shows `localMade`
 * of them, the caller's count of every LOCAL connection it made, this one included. A snapshot that has the last
 * one has everything before it.
 */
export async function settledCounters(port: number, metricsPort: number, localMade: number): Promise<Awaited<ReturnType<typeof proxyCounters>>> {
  const c = await RawSmtp.connect(port);
  try {
    c.write(v2Local());
    const r = await c.read();
    if (r.code !== 220) throw new Error(`barrier connection: ${r.raw}`);
  } finally {
    c.close();
  }
  return waitCounters(metricsPort, `${localMade} balancer connections counted`, (x) => x.local === localMade);
}

/**
 * The counters to measure from: the acceptor's series exist once it has pushed its first snapshot (within
 * METRICS_PUSH_INTERVAL_MS of its start), so a baseline scraped before that would have nothing to subtract.
 */
export function baselineCounters(metricsPort: number): Promise<Awaited<ReturnType<typeof proxyCounters>>> {
  return waitCounters(metricsPort, "the acceptor's counters pushed", (c) => Number.isFinite(c.local) && Number.isFinite(c.connections) && 'timeout' in c.rejections);
}

/** Waits until `check` holds for a scrape (workers push once per interval); returns that scrape. */
export async function waitCounters(
  metricsPort: number,
  what: string,
  check: (c: Awaited<ReturnType<typeof proxyCounters>>) => boolean,
  timeoutMs = 5000,
): Promise<Awaited<ReturnType<typeof proxyCounters>>> {
  let last = await proxyCounters(metricsPort);
  await waitFor(`${what} (last ${JSON.stringify(last)})`, async () => check((last = await proxyCounters(metricsPort))), timeoutMs, 50);
  return last;
}
