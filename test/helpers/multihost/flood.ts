/**
 * The flood through HAProxy: several loops, each from its own loopback address, one message per connection, every
 * session recorded (when, which host greeted, whether the message got its 250). It keeps going through a host's
 * death: a refused, reset or silent session is simply not acknowledged.
 */
import { RawSmtp } from '../smtp-client';
import { messageFor } from './messages';
import { sleep } from '../waiting';

export interface Session {
  loop: number;
  id: string;
  startedAt: number;
  endedAt: number;
  /** The host name in the greeting (the part of ME before the first dot); null without a greeting. */
  host: string | null;
  /** The whole message and its terminating dot were written. */
  sent: boolean;
  acked: boolean;
  error?: string;
}

export interface Flood {
  sessions: Session[];
  acked: Map<string, { host: string; at: number }>;
  ackedBy(host: string, since?: number): number;
  stop(): Promise<void>;
}

/** Which host a greeting came from: `220 trapa.multihost.test ESMTP ...` -> trapa. */
export function greetingHost(text: string): string | null {
  return /^220[ -]([^.\s]+)/.exec(text)?.[1] ?? null;
}

async function oneSession(port: number, localAddress: string, s: Session): Promise<void> {
  const c = await RawSmtp.connect(port, '127.0.0.1', 5000, localAddress);
  try {
    const greeting = await c.read();
    s.host = greetingHost(greeting.raw);
    if (greeting.code !== 220) throw new Error(`greeting ${greeting.raw.trim()}`);
    for (const [cmd, want] of [
      ['EHLO flood.multihost.test', 250],
      ['MAIL FROM:<flood@spam.example>', 250],
      ['RCPT TO:<trap@bait.example>', 250],
      ['DATA', 354],
    ] as const) {
      const r = await c.cmd(cmd);
      if (r.code !== want) throw new Error(`${cmd}: ${r.raw.trim()}`);
    }
    c.write(messageFor(s.id));
    c.write('.\r\n');
    s.sent = true;
    const r = await c.read(15_000);
    if (r.code !== 250) throw new Error(`end of data: ${r.raw.trim()}`);
    s.acked = true;
    await c.cmd('QUIT', 2000).catch(() => undefined);
  } finally {
    c.close();
  }
}

/** Starts `loops` loops against HAProxy's frontend, loop n from 127.0.20.(n+1). */
export function startFlood(port: number, loops: number): Flood {
  const sessions: Session[] = [];
  const acked = new Map<string, { host: string; at: number }>();
  let stopped = false;
  const run = async (loop: number) => {
    for (let i = 0; !stopped; i++) {
      const s: Session = { loop, id: `${loop}-${i}-${process.hrtime.bigint()}`, startedAt: Date.now(), endedAt: 0, host: null, sent: false, acked: false };
      sessions.push(s);
      try {
        await oneSession(port, `127.0.20.${loop + 1}`, s);
      } catch (err) {
        s.error = (err as Error).message;
      }
      s.endedAt = Date.now();
      if (s.acked) acked.set(s.id, { host: s.host!, at: s.endedAt });
      else await sleep(20);
    }
  };
  const running = Array.from({ length: loops }, (_, n) => run(n));
  return {
    sessions,
    acked,
    ackedBy: (host, since = 0) => [...acked.values()].filter((a) => a.host === host && a.at >= since).length,
    stop: async () => {
      stopped = true;
      await Promise.all(running);
    },
  };
}

/** A session left inside DATA with part of a message written, so its host holds a tmp file for it. */
export interface HangingSession {
  host: string;
  marker: string;
  close(): void;
}

/**
 * Opens sessions through HAProxy until one is greeted by `host`, then leaves it inside DATA with more than a
 * write buffer of a message marked `marker` sent. Round robin sends every other new connection to each host, so a
 * few attempts suffice; the others are closed at once.
 */
export async function hangOn(port: number, host: string, marker: string, attempts = 20): Promise<HangingSession> {
  for (let i = 0; i < attempts; i++) {
    const c = await RawSmtp.connect(port, '127.0.0.1', 5000, '127.0.21.1');
    let keep = false;
    try {
      const greeting = await c.read();
      if (greetingHost(greeting.raw) !== host) continue;
      for (const [cmd, want] of [
        ['EHLO hanging.multihost.test', 250],
        ['MAIL FROM:<hanging@spam.example>', 250],
        ['RCPT TO:<trap@bait.example>', 250],
        ['DATA', 354],
      ] as const) {
        const r = await c.cmd(cmd);
        if (r.code !== want) throw new Error(`hanging session on ${host}: ${cmd}: ${r.raw.trim()}`);
      }
      c.write(`Subject: ${marker}\r\n\r\n${`${'h'.repeat(998)}\r\n`.repeat(200)}`);
      keep = true;
      return { host, marker, close: () => c.close() };
    } finally {
      if (!keep) c.close();
    }
  }
  throw new Error(`no session through HAProxy reached ${host} in ${attempts} attempts`);
}
