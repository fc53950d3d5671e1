/**
 * What an acceptor tells the primary about filed messages and ended sessions, for the listing, the live tail, the
 * top recipients and the fingerprint metric. Events are batched (one IPC message per `batchMaxEvents` events or
 * `batchMaxDelayMs`, whichever comes first), so a message costs one small object on the acceptor, not a channel
 * write; while a batch is in flight further events wait, up to `pendingMaxEvents`, then are dropped and counted:
 * an acceptor never waits for the primary.
 */
import type { SessionEnd } from './fingerprint';
import { INTEL_LIMITS } from './limits';

export interface FiledCopy {
  readonly queue: string;
  readonly recipients: readonly string[];
  /** The copy's queue counts for the listing (a trap queue; never a hamtrap note, never a forward). */
  readonly trap: boolean;
}

export interface FiledMessageEvent {
  readonly kind: 'filed';
  /** When the last copy was committed, ms since the epoch. */
  readonly at: number;
  readonly ip: string;
  readonly helo: string | null;
  readonly mailFrom: string;
  /** Message bytes as received. */
  readonly size: number;
  readonly fingerprint: string;
  /** The canonical feature string, sent with the first event of each id from an acceptor, then left out. */
  readonly features?: string;
  readonly copies: readonly FiledCopy[];
  /** Recipients beyond INTEL_LIMITS.events.recipientsPerMessage, left out of `copies`. */
  readonly recipientsOmitted: number;
}

export interface SessionEndedEvent {
  readonly kind: 'ended';
  readonly at: number;
  readonly ip: string;
  readonly end: SessionEnd;
}

export type IntelEvent = FiledMessageEvent | SessionEndedEvent;

export interface IntelBatchMessage {
  readonly type: 'intel:batch';
  readonly slot: string;
  readonly pid: number;
  /** Increases by one per batch of a process. */
  readonly seq: number;
  /** Events this process dropped since its previous batch (channel busy and its buffer full). */
  readonly dropped: number;
  /** In the order they happened: a session's messages come before its end. */
  readonly events: readonly IntelEvent[];
}

export function isIntelBatch(msg: unknown): msg is IntelBatchMessage {
  if (typeof msg !== 'object' || msg === null) return false;
  const m = msg as Record<string, unknown>;
  return (
    m.type === 'intel:batch' &&
    typeof m.slot === 'string' &&
    typeof m.pid === 'number' &&
    typeof m.seq === 'number' &&
    typeof m.dropped === 'number' &&
    Array.isArray(m.events)
  );
}

const isStringArray = (v: unknown): v is string[] => Array.isArray(v) && v.every((x) => typeof x === 'string');

/**
 * One event of a batch, checked field by field before the primary applies it: acceptors are ours, but a malformed
 * event (a version mismatch during an upgrade) must be skipped, not crash the primary.
 */
export function isIntelEvent(e: unknown): e is IntelEvent {
  if (typeof e !== 'object' || e === null) return false;
  const o = e as Record<string, unknown>;
  if (typeof o.at !== 'number' || !Number.isFinite(o.at) || typeof o.ip !== 'string') return false;
  if (o.kind === 'ended') return o.end === 'quit' || o.end === 'drop';
  if (o.kind !== 'filed') return false;
  return (
    (o.helo === null || typeof o.helo === 'string') &&
    typeof o.mailFrom === 'string' &&
    typeof o.size === 'number' &&
    typeof o.fingerprint === 'string' &&
    (o.features === undefined || typeof o.features === 'string') &&
    typeof o.recipientsOmitted === 'number' &&
    Array.isArray(o.copies) &&
    o.copies.every((c: unknown) => {
      const copy = c as Record<string, unknown> | null;
      return typeof copy === 'object' && copy !== null && typeof copy.queue === 'string' && typeof copy.trap === 'boolean' && isStringArray(copy.recipients);
    })
  );
}

const clip = (s: string): string => {
  const max = INTEL_LIMITS.events.fieldMaxChars;
  return s.length <= max ? s : s.slice(0, max);
};

/** A filed-message event with every field bounded; `copies` are the message's destinations in routing order. */
export function filedEvent(f: {
  at: number;
  ip: string;
  helo: string | null;
  mailFrom: string;
  size: number;
  fingerprint: string;
  copies: readonly FiledCopy[];
}): FiledMessageEvent {
  let room = INTEL_LIMITS.events.recipientsPerMessage;
  let omitted = 0;
  const copies = f.copies.map((c) => {
    const kept = c.recipients.slice(0, room).map(clip);
    omitted += c.recipients.length - kept.length;
    room -= kept.length;
    return { queue: clip(c.queue), recipients: kept, trap: c.trap };
  });
  return {
    kind: 'filed',
    at: f.at,
    ip: clip(f.ip),
    helo: f.helo === null ? null : clip(f.helo),
    mailFrom: clip(f.mailFrom),
    size: f.size,
    fingerprint: f.fingerprint,
    copies,
    recipientsOmitted: omitted,
  };
}

export interface BatcherOptions {
  readonly slot: string;
  /** Resolves once the batch is written to the channel; default process.send. */
  readonly send?: (msg: IntelBatchMessage) => void | Promise<void>;
  readonly maxEvents?: number;
  readonly maxDelayMs?: number;
  readonly pendingMax?: number;
}

function processSend(msg: IntelBatchMessage): Promise<void> {
  return new Promise((resolve, reject) => {
    if (typeof process.send !== 'function' || !process.connected) return reject(new Error('no IPC channel to the primary'));
    process.send(msg, undefined, undefined, (err: Error | null) => (err ? reject(err) : resolve()));
  });
}

export class IntelEventBatcher {
  private pending: IntelEvent[] = [];
  private inFlight: Promise<void> | null = null;
  private timer: NodeJS.Timeout | null = null;
  private seq = 0;
  private droppedSinceLast = 0;
  private droppedTotal = 0;
  private readonly featuresSent = new Set<string>();
  private readonly send: (msg: IntelBatchMessage) => void | Promise<void>;
  private readonly maxEvents: number;
  private readonly maxDelayMs: number;
  private readonly pendingMax: number;

  constructor(private readonly opts: BatcherOptions) {
    this.send = opts.send ?? processSend;
    this.maxEvents = opts.maxEvents ?? INTEL_LIMITS.events.batchMaxEvents;
    this.maxDelayMs = opts.maxDelayMs ?? INTEL_LIMITS.events.batchMaxDelayMs;
    this.pendingMax = opts.pendingMax ?? INTEL_LIMITS.events.pendingMaxEvents;
  }

  /** Events dropped by this process so far. */
  get dropped(): number {
    return this.droppedTotal;
  }

  /** `features` goes out only with the first event of its id: the primary keeps the id -> features table. */
  filed(e: FiledMessageEvent, features: string): void {
    const first = !this.featuresSent.has(e.fingerprint);
    if (this.add(first ? { ...e, features } : e) && first) this.featuresSent.add(e.fingerprint);
  }

  ended(e: Omit<SessionEndedEvent, 'kind'>): void {
    this.add({ kind: 'ended', at: e.at, ip: clip(e.ip), end: e.end });
  }

  /** Sends what is pending now (awaits a batch in flight first). Await it before a graceful exit. */
  async flush(): Promise<void> {
    for (;;) {
      while (this.inFlight) await this.inFlight;
      if (this.pending.length === 0 && this.droppedSinceLast === 0) return;
      this.kick();
    }
  }

  stop(): void {
    this.clearTimer();
  }

  private add(e: IntelEvent): boolean {
    if (this.pending.length >= this.pendingMax) {
      this.droppedSinceLast++;
      this.droppedTotal++;
      return false;
    }
    this.pending.push(e);
    if (this.pending.length >= this.maxEvents) this.kick();
    else if (this.timer === null && this.inFlight === null) {
      this.timer = setTimeout(() => {
        this.timer = null;
        this.kick();
      }, this.maxDelayMs);
      this.timer.unref();
    }
    return true;
  }

  private kick(): void {
    if (this.inFlight) return;
    this.clearTimer();
    this.inFlight = this.sendPending()
      .catch(() => {
        // The primary is gone or the channel is closing: this acceptor is on its way out.
      })
      .finally(() => {
        this.inFlight = null;
        // What arrived meanwhile goes out at once if a batch is full, else after the usual delay.
        if (this.pending.length >= this.maxEvents) this.kick();
        else if (this.pending.length > 0 && this.timer === null) {
          this.timer = setTimeout(() => {
            this.timer = null;
            this.kick();
          }, this.maxDelayMs);
          this.timer.unref();
        }
      });
  }

  private async sendPending(): Promise<void> {
    const events = this.pending.splice(0, this.maxEvents);
    const dropped = this.droppedSinceLast;
    this.droppedSinceLast = 0;
    await this.send({ type: 'intel:batch', slot: this.opts.slot, pid: process.pid, seq: ++this.seq, dropped, events });
  }

  private clearTimer(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }
}
