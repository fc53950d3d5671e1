/**
 * The live tail: the primary publishes one event per filed message and every subscriber (an HTTP stream behind
 * `spamtrapd tail`) takes them from a queue of its own. A queue holds at most `queueLimit` events: when a subscriber
 * falls behind, its oldest events are dropped and counted, and the count is handed to it with its next events, so a
 * slow reader sees that it missed some and never slows the primary, the acceptors or the other readers. Publishing
 * with no subscriber costs nothing.
 */
import { formatValue } from '../log';
import type { FiledMessageEvent } from './events';

export interface TailEvent {
  /** Increases by one per published event, so a reader can also see where it missed some. */
  readonly seq: number;
  readonly at: number;
  readonly ip: string;
  readonly helo: string | null;
  readonly mailFrom: string;
  readonly recipients: readonly string[];
  readonly queues: readonly string[];
  readonly size: number;
  readonly fingerprint: string;
}

export function tailEventOf(e: FiledMessageEvent, seq: number): TailEvent {
  return {
    seq,
    at: e.at,
    ip: e.ip,
    helo: e.helo,
    mailFrom: e.mailFrom,
    recipients: e.copies.flatMap((c) => c.recipients),
    // A queue can hold two copies of the list (recipients that count for the listing and those that do not).
    queues: [...new Set(e.copies.map((c) => c.queue))],
    size: e.size,
    fingerprint: e.fingerprint,
  };
}

export interface TailBatch {
  readonly events: TailEvent[];
  /** Events this subscriber lost since its previous take. */
  readonly dropped: number;
}

export class TailSubscription {
  private readonly ring: Array<TailEvent | undefined>;
  private head = 0;
  private length = 0;
  private droppedSinceTake = 0;
  private droppedTotal = 0;
  private closed = false;

  constructor(
    limit: number,
    private readonly onReady: () => void,
    private readonly onClose: (s: TailSubscription) => void,
    private readonly onFull: () => void = () => undefined,
  ) {
    this.ring = new Array(limit);
  }

  get dropped(): number {
    return this.droppedTotal;
  }

  get queued(): number {
    return this.length;
  }

  /**
   * Called by the hub. Wakes the reader when its queue stops being empty, and gives it a last chance to take its
   * events when the queue is full (a burst published in one go), so only a reader that cannot take them loses some.
   */
  push(e: TailEvent): void {
    if (this.closed) return;
    const cap = this.ring.length;
    if (this.length === cap) this.onFull();
    if (this.length === cap) {
      this.head = (this.head + 1) % cap;
      this.length--;
      this.droppedSinceTake++;
      this.droppedTotal++;
    }
    this.ring[(this.head + this.length) % cap] = e;
    this.length++;
    if (this.length === 1) this.onReady();
  }

  /** Up to `max` queued events, oldest first, with the number dropped since the previous take. */
  take(max = Infinity): TailBatch {
    const n = Math.min(max, this.length);
    const events: TailEvent[] = [];
    for (let i = 0; i < n; i++) {
      const at = (this.head + i) % this.ring.length;
      events.push(this.ring[at]!);
      this.ring[at] = undefined;
    }
    this.head = (this.head + n) % this.ring.length;
    this.length -= n;
    const dropped = this.droppedSinceTake;
    this.droppedSinceTake = 0;
    return { events, dropped };
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.ring.fill(undefined);
    this.length = 0;
    this.onClose(this);
  }
}

export class TailHub {
  private readonly subs = new Set<TailSubscription>();
  private seq = 0;
  private droppedByClosed = 0;

  constructor(private readonly opts: { queueLimit: number; maxSubscribers: number }) {}

  get subscribers(): number {
    return this.subs.size;
  }

  /** Events dropped for slow readers, over all readers ever (for a counter). */
  get dropped(): number {
    let n = this.droppedByClosed;
    for (const s of this.subs) n += s.dropped;
    return n;
  }

  /**
   * A new reader, or null when maxSubscribers are already reading. `onReady` runs when its queue gets an event;
   * `onFull`, when an event arrives at a full queue: a reader that takes its events there and then loses none.
   */
  subscribe(onReady: () => void, onFull?: () => void): TailSubscription | null {
    if (this.subs.size >= this.opts.maxSubscribers) return null;
    const s = new TailSubscription(
      this.opts.queueLimit,
      onReady,
      (closed) => {
        this.subs.delete(closed);
        this.droppedByClosed += closed.dropped;
      },
      onFull,
    );
    this.subs.add(s);
    return s;
  }

  publish(e: FiledMessageEvent): void {
    this.seq++;
    if (this.subs.size === 0) return;
    const t = tailEventOf(e, this.seq);
    for (const s of this.subs) s.push(t);
  }
}

/** `address` as a token of a comma-separated list: quoted when it holds a comma, a space or anything unusual. */
function listItem(s: string): string {
  const v = formatValue(s);
  return v.includes(',') && !v.startsWith('"') ? JSON.stringify(s) : v;
}

/** One line for people: time, address, HELO, MAIL FROM, recipients, queues, size, fingerprint. */
export function formatTailLine(e: TailEvent): string {
  return (
    `${new Date(e.at).toISOString()} ${e.ip} helo=${formatValue(e.helo)} from=${formatValue(e.mailFrom === '' ? '<>' : e.mailFrom)}` +
    ` to=${e.recipients.map(listItem).join(',') || '-'} queue=${e.queues.map(listItem).join(',')} size=${e.size}` +
    ` fp=${e.fingerprint}`
  );
}

export function formatTailJson(e: TailEvent): string {
  return JSON.stringify({
    seq: e.seq,
    time: new Date(e.at).toISOString(),
    ip: e.ip,
    helo: e.helo,
    mail_from: e.mailFrom,
    recipients: e.recipients,
    queues: e.queues,
    size: e.size,
    fingerprint: e.fingerprint,
  });
}

/** formatTailJson's line back into an event, for the `spamtrapd tail` client; null when it is not one. */
export function parseTailJson(line: string): TailEvent | null {
  let o: Record<string, unknown>;
  try {
    o = JSON.parse(line) as Record<string, unknown>;
  } catch {
    return null;
  }
  const strings = (v: unknown): v is string[] => Array.isArray(v) && v.every((x) => typeof x === 'string');
  const at = typeof o?.time === 'string' ? Date.parse(o.time) : NaN;
  if (
    typeof o !== 'object' || o === null || Number.isNaN(at) ||
    typeof o.seq !== 'number' || typeof o.ip !== 'string' || (o.helo !== null && typeof o.helo !== 'string') ||
    typeof o.mail_from !== 'string' || !strings(o.recipients) || !strings(o.queues) ||
    typeof o.size !== 'number' || typeof o.fingerprint !== 'string'
  ) {
    return null;
  }
  return {
    seq: o.seq,
    at,
    ip: o.ip,
    helo: o.helo as string | null,
    mailFrom: o.mail_from,
    recipients: o.recipients,
    queues: o.queues,
    size: o.size,
    fingerprint: o.fingerprint,
  };
}

export function formatDroppedLine(n: number): string {
  return `# ${n} message${n === 1 ? '' : 's'} not shown: this reader fell behind`;
}

export function formatDroppedJson(n: number): string {
  return JSON.stringify({ dropped: n });
}

/** Server-sent events framing: one event, every line of `data` kept. */
export function sseEvent(event: string, data: string): string {
  return `event: ${event}\n${data.split(/\r\n|\r|\n/).map((l) => `data: ${l}`).join('\n')}\n\n`;
}

/** A comment line: keeps idle proxies from closing the stream, ignored by readers. */
export function sseComment(text: string): string {
  return `: ${text.replace(/[\r\n]/g, ' ')}\n\n`;
}

export interface SseMessage {
  readonly event: string;
  readonly data: string;
}

/** Incremental reader of an SSE stream, for the `spamtrapd tail` client: feed text as it arrives. */
export class SseParser {
  private buffer = '';
  private event = '';
  private data: string[] = [];

  push(text: string): SseMessage[] {
    this.buffer += text;
    const out: SseMessage[] = [];
    let nl: number;
    while ((nl = this.buffer.search(/\r\n|\r|\n/)) >= 0) {
      // A CR at the very end may be the first half of a CRLF split across two reads.
      if (nl === this.buffer.length - 1 && this.buffer[nl] === '\r') break;
      const line = this.buffer.slice(0, nl);
      this.buffer = this.buffer.slice(nl + (this.buffer.startsWith('\r\n', nl) ? 2 : 1));
      if (line === '') {
        if (this.data.length > 0) out.push({ event: this.event || 'message', data: this.data.join('\n') });
        this.event = '';
        this.data = [];
        continue;
      }
      if (line.startsWith(':')) continue;
      const colon = line.indexOf(':');
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? '' : line.slice(colon + 1);
      if (value.startsWith(' ')) value = value.slice(1);
      if (field === 'event') this.event = value;
      else if (field === 'data') this.data.push(value);
    }
    return out;
  }
}
