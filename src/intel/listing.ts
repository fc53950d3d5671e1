/**
 * Longer than ~400 lines on purpose: the slab layout, its index and its recency list are one data structure whose
 * invariants (slot reuse, LRU order, eviction) hold only together.
 *
 * The listing in memory: per client address, what it did to the trap's counting queues. Fed by the primary from
 * acceptor events; read by the exports (zone.ts, GET /listing) and persisted by listing-store.ts.
 *
 * Layout, for bytes per entry at a million addresses (bench/listing-memory.ts measures it): each entry is a slot
 * number, and every field is a typed-array slab indexed by slot, so an entry has no object of its own. Addresses map
 * to slots through two Maps: IPv4 keyed by the address as a 32-bit integer (a small integer to V8: no key string,
 * about 30 bytes less per entry than a Map keyed by the dotted string), IPv6 by its canonical string.
 * Recency is a doubly linked list through two Int32Array slabs: an event moves its slot to the tail, eviction takes
 * the head, both O(1). (Moving keys to the end of a Map instead, delete + set, leaves deleted entries at its front
 * that every look for the oldest must step over until V8 rehashes: 200 us per eviction at 100,000 entries.)
 * Times are whole Unix seconds (first seen rounded down, last seen up, so TTLs never end early).
 */
import type ipaddr from 'ipaddr.js';
import { parseAddress, type ParsedAddress } from '../ip-address';
import { FINGERPRINT_ID, type SessionEnd } from './fingerprint';
import { INTEL_LIMITS } from './limits';
import { excluded, expired, qualifies, type ListingPolicy } from './listing-policy';
import { addRecipientHash, distinctRecipients, recipientHash } from './recipient-sketch';

const K = INTEL_LIMITS.listing.recipientHashesPerEntry;
const U32_MAX = 0xffff_ffff;

/** One address as the exports and the HTTP API show it. Times in ms since the epoch. */
export interface ListingEntry {
  readonly ip: string;
  /** Messages filed to counting queues. */
  readonly messages: number;
  /** Sessions from the address that ended while it was in the listing. */
  readonly connections: number;
  /** Distinct trap recipients: exact unless `recipientsEstimated`. */
  readonly recipients: number;
  readonly recipientsEstimated: boolean;
  readonly firstSeen: number;
  readonly lastSeen: number;
  readonly helo: string | null;
  readonly fingerprint: string | null;
  /** How its latest session ended; null before one ended. */
  readonly lastEnd: SessionEnd | null;
}

/** Everything needed to restore an entry exactly (the persisted form). Times in whole seconds since the epoch. */
export interface ListingRecord {
  readonly ip: string;
  readonly messages: number;
  readonly connections: number;
  readonly firstSeenSec: number;
  readonly lastSeenSec: number;
  readonly helo: string | null;
  readonly fingerprint: string | null;
  readonly lastEnd: SessionEnd | null;
  /** Sketch state byte (recipient-sketch.ts) and its stored hashes, ascending. */
  readonly recipientState: number;
  readonly recipientHashes: readonly number[];
}

export interface MessageFacts {
  /** The message's recipients in counting queues. */
  readonly recipients: readonly string[];
  readonly helo: string | null;
  readonly fingerprint: string | null;
}

export interface ListingStats {
  readonly entries: number;
  /** Entries dropped because the listing was full (least recently seen first). */
  readonly evictions: number;
  /** Entries dropped because their TTL ran out. */
  readonly expirations: number;
}

const END_CODE: Record<SessionEnd, number> = { quit: 1, drop: 2 };
const END_OF: Array<SessionEnd | null> = [null, 'quit', 'drop'];

const secFloor = (ms: number) => Math.min(U32_MAX, Math.max(0, Math.floor(ms / 1000)));
const secCeil = (ms: number) => Math.min(U32_MAX, Math.max(0, Math.ceil(ms / 1000)));

export class Listing {
  private readonly index4 = new Map<number, number>();
  private readonly index6 = new Map<string, number>();
  private capacity = 0;
  private messages = new Uint32Array(0);
  private connections = new Uint32Array(0);
  private firstSeen = new Uint32Array(0);
  private lastSeen = new Uint32Array(0);
  private hashes = new Uint32Array(0);
  private hashState = new Uint8Array(0);
  private fpRef = new Uint16Array(0);
  private endCode = new Uint8Array(0);
  private prev = new Int32Array(0);
  private next = new Int32Array(0);
  /** Least and most recently seen slots; -1 when empty. */
  private head = -1;
  private tail = -1;
  /** Slot -> its key (int32 IPv4 or IPv6 string), for eviction and walks. */
  private readonly keyOf: Array<number | string | null> = [];
  private readonly helo: Array<string | null> = [];
  private readonly freeSlots: number[] = [];
  private used = 0;
  /** Interned fingerprint ids: index 0 means none. Bounded by INTEL_LIMITS.listing.fingerprintsInterned. */
  private readonly fpIds: string[] = [''];
  private readonly fpIndex = new Map<string, number>();
  private evictions = 0;
  private expirations = 0;
  private policy: ListingPolicy;

  constructor(
    private readonly maxEntries: number,
    policy: ListingPolicy,
  ) {
    if (!Number.isInteger(maxEntries) || maxEntries < 1) throw new RangeError(`maxEntries must be >= 1, got ${maxEntries}`);
    this.policy = policy;
  }

  get size(): number {
    return this.index4.size + this.index6.size;
  }

  stats(): ListingStats {
    return { entries: this.size, evictions: this.evictions, expirations: this.expirations };
  }

  currentPolicy(): ListingPolicy {
    return this.policy;
  }

  /** A message filed to a counting queue. Returns false when the address is not stored (invalid or excluded). */
  message(ip: string, atMs: number, facts: MessageFacts): boolean {
    const slot = this.touch(ip, atMs, true);
    if (slot < 0) return false;
    if (this.messages[slot] < U32_MAX) this.messages[slot]++;
    let state = this.hashState[slot];
    for (const r of facts.recipients) state = addRecipientHash(this.hashes, slot * K, state, K, recipientHash(r));
    this.hashState[slot] = state;
    if (facts.helo !== null) this.helo[slot] = boundedHelo(facts.helo);
    if (facts.fingerprint !== null) this.fpRef[slot] = this.intern(facts.fingerprint);
    return true;
  }

  /**
   * A session from `ip` ended. Counted only for an address already stored: a connection alone is no trap evidence,
   * and entries made for every scanner would evict the ones that matter. The session's own messages arrive first.
   */
  connection(ip: string, atMs: number, end: SessionEnd | null = null): boolean {
    const slot = this.touch(ip, atMs, false);
    if (slot < 0) return false;
    if (this.connections[slot] < U32_MAX) this.connections[slot]++;
    if (end !== null) this.endCode[slot] = END_CODE[end];
    return true;
  }

  /** The entry of `ip` (any spelling), or undefined when it is not stored or expired at `nowMs`. */
  get(ip: string, nowMs: number): ListingEntry | undefined {
    const parsed = parseAddress(ip);
    const slot = parsed === null ? undefined : this.slotOf(keyOfAddress(parsed));
    if (slot === undefined || this.isExpired(slot, nowMs)) return undefined;
    return this.entryAt(slot);
  }

  /** Drops every entry whose TTL ran out by `nowMs`; returns how many. */
  sweep(nowMs: number): number {
    let dropped = 0;
    // Recency order: the first live entry ends the sweep (events from different acceptors may arrive up to one
    // batch out of order, so an entry can outlive its TTL by that much here; reads still judge it exactly).
    while (this.head >= 0 && this.isExpired(this.head, nowMs)) {
      this.remove(this.head);
      dropped++;
    }
    this.expirations += dropped;
    return dropped;
  }

  /**
   * Entries alive at `nowMs`, least recently seen first, of one address family when given. The keys are taken up
   * front, so events arriving while a caller awaits between items neither repeat nor hide entries; each entry is read
   * when it is reached.
   */
  *entries(nowMs: number, family?: 4 | 6): Generator<ListingEntry> {
    for (const key of this.keysInOrder()) {
      if (family !== undefined && (typeof key === 'number') !== (family === 4)) continue;
      const slot = this.slotOf(key);
      if (slot !== undefined && !this.isExpired(slot, nowMs)) yield this.entryAt(slot);
    }
  }

  /**
   * The listed entries at `nowMs` (threshold and TTL; excluded addresses are never stored), oldest first; of one
   * address family when given.
   */
  *listed(nowMs: number, family?: 4 | 6): Generator<ListingEntry> {
    for (const e of this.entries(nowMs, family)) if (qualifies(e, nowMs, this.policy)) yield e;
  }

  /** How many entries are listed at `nowMs`: one pass, for a gauge refreshed with each export, not per scrape. */
  countListed(nowMs: number): number {
    let n = 0;
    for (let s = this.head; s >= 0; s = this.next[s]) {
      if (this.messages[s] >= this.policy.minHits && !this.isExpired(s, nowMs)) n++;
    }
    return n;
  }

  /** Same walk as entries(), in the persisted form. */
  *records(nowMs: number): Generator<ListingRecord> {
    for (const key of this.keysInOrder()) {
      const slot = this.slotOf(key);
      if (slot !== undefined && !this.isExpired(slot, nowMs)) yield this.recordAt(slot);
    }
  }

  /**
   * Puts back a persisted entry as the most recently seen one (feed records oldest first). Skips invalid, excluded
   * and expired ones; a full listing evicts as usual. Returns whether it was stored.
   */
  restore(r: ListingRecord, nowMs: number): boolean {
    const parsed = parseAddress(r.ip);
    if (parsed === null || excluded(this.policy, parsed)) return false;
    if (expired(r.lastSeenSec * 1000, nowMs, this.policy)) return false;
    const key = keyOfAddress(parsed);
    const old = this.slotOf(key);
    if (old !== undefined) this.remove(old);
    const slot = this.allocate(key);
    this.messages[slot] = r.messages;
    this.connections[slot] = r.connections;
    this.firstSeen[slot] = r.firstSeenSec;
    this.lastSeen[slot] = r.lastSeenSec;
    this.helo[slot] = r.helo === null ? null : boundedHelo(r.helo);
    this.fpRef[slot] = r.fingerprint === null ? 0 : this.intern(r.fingerprint);
    this.endCode[slot] = r.lastEnd === null ? 0 : END_CODE[r.lastEnd];
    const n = Math.min(K, r.recipientHashes.length);
    for (let i = 0; i < n; i++) this.hashes[slot * K + i] = r.recipientHashes[i];
    this.hashState[slot] = r.recipientState > K && n === K ? K + 1 : n;
    return true;
  }

  /**
   * New policy (e.g. after a reload): entries now excluded are dropped at once, TTL and threshold apply from the
   * next read. Returns how many were dropped.
   */
  setPolicy(policy: ListingPolicy): number {
    this.policy = policy;
    if (policy.exclude.length === 0) return 0;
    let dropped = 0;
    for (const key of this.keysInOrder()) {
      if (excluded(policy, keyText(key))) {
        this.remove(this.slotOf(key)!);
        dropped++;
      }
    }
    return dropped;
  }

  private isExpired(slot: number, nowMs: number): boolean {
    return expired(this.lastSeen[slot] * 1000, nowMs, this.policy);
  }

  private slotOf(key: number | string): number | undefined {
    return typeof key === 'number' ? this.index4.get(key) : this.index6.get(key);
  }

  /** Every key, least recently seen first: a copy, so callers may await between items. */
  private keysInOrder(): Array<number | string> {
    const keys: Array<number | string> = [];
    for (let s = this.head; s >= 0; s = this.next[s]) keys.push(this.keyOf[s]!);
    return keys;
  }

  /** The slot of `ip` after an event at `atMs`, moved to the recent end; -1 when it is not (to be) stored. */
  private touch(ip: string, atMs: number, create: boolean): number {
    const parsed = parseAddress(ip);
    if (parsed === null) return -1;
    const key = keyOfAddress(parsed);
    let slot = this.slotOf(key);
    if (slot === undefined && (!create || excluded(this.policy, parsed))) return -1;
    if (slot !== undefined && expired(this.lastSeen[slot] * 1000, atMs, this.policy)) {
      // Its TTL ran out before this event: it starts over rather than resume old counts.
      this.remove(slot);
      this.expirations++;
      if (!create) return -1;
      slot = undefined;
    }
    const last = secCeil(atMs);
    if (slot === undefined) {
      slot = this.allocate(key);
      this.firstSeen[slot] = secFloor(atMs);
      this.lastSeen[slot] = last;
      return slot;
    }
    if (slot !== this.tail) {
      this.unlink(slot);
      this.linkTail(slot);
    }
    if (last > this.lastSeen[slot]) this.lastSeen[slot] = last;
    return slot;
  }

  /** A cleared slot for `key`, at the recent end; evicts the least recently seen entry when full. */
  private allocate(key: number | string): number {
    if (this.size >= this.maxEntries) {
      this.remove(this.head);
      this.evictions++;
    }
    let slot = this.freeSlots.pop();
    if (slot === undefined) {
      if (this.used === this.capacity) this.grow();
      slot = this.used++;
    }
    this.messages[slot] = 0;
    this.connections[slot] = 0;
    this.hashState[slot] = 0;
    this.fpRef[slot] = 0;
    this.endCode[slot] = 0;
    this.helo[slot] = null;
    this.keyOf[slot] = key;
    if (typeof key === 'number') this.index4.set(key, slot);
    else this.index6.set(key, slot);
    this.linkTail(slot);
    return slot;
  }

  private remove(slot: number): void {
    const key = this.keyOf[slot]!;
    if (typeof key === 'number') this.index4.delete(key);
    else this.index6.delete(key);
    this.unlink(slot);
    this.keyOf[slot] = null;
    this.helo[slot] = null;
    this.freeSlots.push(slot);
  }

  private unlink(slot: number): void {
    const p = this.prev[slot];
    const n = this.next[slot];
    if (p >= 0) this.next[p] = n;
    else this.head = n;
    if (n >= 0) this.prev[n] = p;
    else this.tail = p;
  }

  private linkTail(slot: number): void {
    this.prev[slot] = this.tail;
    this.next[slot] = -1;
    if (this.tail >= 0) this.next[this.tail] = slot;
    else this.head = slot;
    this.tail = slot;
  }

  private grow(): void {
    const cap = Math.min(this.maxEntries, Math.max(INTEL_LIMITS.listing.initialCapacity, this.capacity * 2));
    const grown = <T extends Uint32Array | Uint16Array | Uint8Array | Int32Array>(old: T, make: (n: number) => T, per = 1): T => {
      const a = make(cap * per);
      a.set(old);
      return a;
    };
    this.messages = grown(this.messages, (n) => new Uint32Array(n));
    this.connections = grown(this.connections, (n) => new Uint32Array(n));
    this.firstSeen = grown(this.firstSeen, (n) => new Uint32Array(n));
    this.lastSeen = grown(this.lastSeen, (n) => new Uint32Array(n));
    this.hashes = grown(this.hashes, (n) => new Uint32Array(n), K);
    this.hashState = grown(this.hashState, (n) => new Uint8Array(n));
    this.fpRef = grown(this.fpRef, (n) => new Uint16Array(n));
    this.endCode = grown(this.endCode, (n) => new Uint8Array(n));
    this.prev = grown(this.prev, (n) => new Int32Array(n));
    this.next = grown(this.next, (n) => new Int32Array(n));
    for (let i = this.capacity; i < cap; i++) {
      this.helo.push(null);
      this.keyOf.push(null);
    }
    this.capacity = cap;
  }

  /** Index of a fingerprint id; 0 (none) for a malformed one or once the table is full. */
  private intern(id: string): number {
    let i = this.fpIndex.get(id);
    if (i !== undefined) return i;
    if (!FINGERPRINT_ID.test(id) || this.fpIds.length > INTEL_LIMITS.listing.fingerprintsInterned) return 0;
    i = this.fpIds.length;
    this.fpIds.push(id);
    this.fpIndex.set(id, i);
    return i;
  }

  private entryAt(slot: number): ListingEntry {
    const state = this.hashState[slot];
    return {
      ip: keyText(this.keyOf[slot]!),
      messages: this.messages[slot],
      connections: this.connections[slot],
      recipients: distinctRecipients(this.hashes, slot * K, state, K),
      recipientsEstimated: state > K,
      firstSeen: this.firstSeen[slot] * 1000,
      lastSeen: this.lastSeen[slot] * 1000,
      helo: this.helo[slot],
      fingerprint: this.fpRef[slot] === 0 ? null : this.fpIds[this.fpRef[slot]],
      lastEnd: END_OF[this.endCode[slot]],
    };
  }

  private recordAt(slot: number): ListingRecord {
    const state = this.hashState[slot];
    const n = state > K ? K : state;
    const hashes: number[] = [];
    for (let i = 0; i < n; i++) hashes.push(this.hashes[slot * K + i]);
    return {
      ip: keyText(this.keyOf[slot]!),
      messages: this.messages[slot],
      connections: this.connections[slot],
      firstSeenSec: this.firstSeen[slot],
      lastSeenSec: this.lastSeen[slot],
      helo: this.helo[slot],
      fingerprint: this.fpRef[slot] === 0 ? null : this.fpIds[this.fpRef[slot]],
      lastEnd: END_OF[this.endCode[slot]],
      recipientState: state,
      recipientHashes: hashes,
    };
  }
}

/** IPv4 as a signed 32-bit integer (what V8 keeps without allocating), IPv6 as its canonical string. */
function keyOfAddress(a: ParsedAddress): number | string {
  if (a.kind() === 'ipv6') return a.toString();
  const o = (a as ipaddr.IPv4).octets;
  return ((o[0] << 24) | (o[1] << 16) | (o[2] << 8) | o[3]) | 0;
}

/** Printing a dotted quad needs no parser; this runs for every entry of every export. */
function keyText(key: number | string): string {
  if (typeof key === 'string') return key;
  return `${(key >>> 24) & 255}.${(key >>> 16) & 255}.${(key >>> 8) & 255}.${key & 255}`;
}

/** HELOs come from bots: at most heloMaxChars are kept, as a string of their own (a slice could pin its parent). */
function boundedHelo(helo: string): string {
  const max = INTEL_LIMITS.listing.heloMaxChars;
  return helo.length <= max ? helo : Buffer.from(helo.slice(0, max)).toString();
}
