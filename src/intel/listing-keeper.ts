/**
 * The listing's life in the primary: loaded from SPOOL_DIR/.listing/listing.jsonl at start, fed from acceptor events,
 * and every LISTING_WRITE_INTERVAL_MS (and once more at a graceful stop) swept of expired entries, saved, and
 * exported as the rbldnsd files. A write is atomic (atomic-file.ts), so a SIGKILL of the primary loses at most what
 * came in since the last one. Writes never overlap: the timer skips a turn while one runs, and the final write waits
 * for it.
 */
import fs from 'node:fs';
import type { Logger } from '../log';
import type { SessionEnd } from './fingerprint';
import { Listing, type MessageFacts } from './listing';
import type { ListingPolicy } from './listing-policy';
import { loadListing, saveListing } from './listing-store';
import { writeZoneFiles } from './zone';

export interface ListingKeeperOptions {
  /** The persisted listing. */
  readonly stateFile: string;
  /** LISTING_ZONE_FILE: the rbldnsd ip4set file; the ip6trie one goes beside it. */
  readonly zoneFile: string;
  readonly maxEntries: number;
  readonly policy: ListingPolicy;
  readonly writeIntervalMs: number;
  readonly log: Logger;
  /** Wall clock in ms; tests pin it. */
  readonly now?: () => number;
}

/** What the last write did, for the gauges and the log. */
export interface ListingWriteReport {
  readonly at: number;
  readonly entries: number;
  readonly listed: number;
  readonly expired: number;
}

export class ListingKeeper {
  private timer: NodeJS.Timeout | null = null;
  private writing: Promise<void> | null = null;
  /** Something changed since the last write: the first write after start always happens (rbldnsd needs the files). */
  private dirty = true;
  private closed = false;
  private lastWrite: ListingWriteReport | null = null;
  private failures = 0;
  private readonly now: () => number;

  private constructor(
    readonly listing: Listing,
    private readonly opts: ListingKeeperOptions,
  ) {
    this.now = opts.now ?? Date.now;
  }

  /**
   * The listing as the state file left it. A file that is refused (cut short, another format, one bad row) is set
   * aside as `<file>.refused` for a look, and the trap starts with an empty listing rather than not at all.
   */
  static async open(opts: ListingKeeperOptions): Promise<ListingKeeper> {
    const now = (opts.now ?? Date.now)();
    const started = performance.now();
    let listing = new Listing(opts.maxEntries, opts.policy);
    const outcome = await loadListing(opts.stateFile, listing, now);
    if (outcome.status === 'loaded') {
      opts.log.info('listing_loaded', {
        file: opts.stateFile,
        entries: listing.size,
        skipped: outcome.skipped,
        ms: Math.round(performance.now() - started),
      });
    } else if (outcome.status === 'refused') {
      listing = new Listing(opts.maxEntries, opts.policy);
      const aside = `${opts.stateFile}.refused`;
      const moved = await fs.promises.rename(opts.stateFile, aside).then(
        () => aside,
        () => null,
      );
      opts.log.error('listing_refused', {
        file: opts.stateFile,
        reason: outcome.reason,
        moved_to: moved,
        action: 'starting with an empty listing',
      });
    }
    return new ListingKeeper(listing, opts);
  }

  /** Starts the periodic writes. */
  start(): void {
    if (this.timer || this.closed) return;
    this.timer = setInterval(() => {
      if (!this.writing) void this.write();
    }, this.opts.writeIntervalMs);
    this.timer.unref();
  }

  /** False when the address is not stored (excluded, or not an address). */
  message(ip: string, atMs: number, facts: MessageFacts): boolean {
    if (!this.listing.message(ip, atMs, facts)) return false;
    this.dirty = true;
    return true;
  }

  connection(ip: string, atMs: number, end: SessionEnd | null): void {
    if (this.listing.connection(ip, atMs, end)) this.dirty = true;
  }

  /** A reload's threshold, TTL and exclusions; entries now excluded go at once. Returns how many went. */
  setPolicy(policy: ListingPolicy): number {
    const dropped = this.listing.setPolicy(policy);
    this.dirty = true;
    return dropped;
  }

  get lastWriteReport(): ListingWriteReport | null {
    return this.lastWrite;
  }

  get writeFailures(): number {
    return this.failures;
  }

  /**
   * Sweeps, saves and exports now, after any write in progress; skipped when nothing changed since the last one
   * (rbldnsd reloads a file whenever its modification time moves, which costs it a full parse).
   */
  async write(): Promise<void> {
    while (this.writing) await this.writing;
    this.writing = this.writeOnce().finally(() => {
      this.writing = null;
    });
    return this.writing;
  }

  /** The final write, for a graceful stop: call it before the spool lock is released. */
  async close(): Promise<void> {
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await this.write();
  }

  private async writeOnce(): Promise<void> {
    const now = this.now();
    const expired = this.listing.sweep(now);
    if (!this.dirty && expired === 0) return;
    // Events during the write are in the next one: cleared first, so none is lost between the two.
    this.dirty = false;
    const started = performance.now();
    try {
      const saved = await saveListing(this.opts.stateFile, this.listing, now);
      const zone = await writeZoneFiles(this.opts.zoneFile, this.listing, now);
      this.lastWrite = { at: now, entries: saved.entries, listed: zone.ipv4 + zone.ipv6, expired };
      this.opts.log.info('listing_written', {
        entries: saved.entries,
        listed: zone.ipv4 + zone.ipv6,
        ipv4: zone.ipv4,
        ipv6: zone.ipv6,
        expired,
        ms: Math.round(performance.now() - started),
      });
    } catch (err) {
      this.dirty = true;
      this.failures++;
      this.opts.log.error('listing_write_failed', { file: this.opts.stateFile, zone: this.opts.zoneFile, error: (err as Error).message });
    }
  }
}
