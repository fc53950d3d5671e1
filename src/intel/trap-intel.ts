/**
 * The primary's trap intelligence: what acceptors report (events.ts batches) goes to the listing (listing-keeper.ts),
 * the most-hit trap recipients, the fingerprint metric and the live tail. The primary creates one at start, routes
 * every `intel:batch` to apply(), passes reloads to reload(), serves its httpRoutes() and closes it before releasing
 * the spool lock.
 */
import type { Registry } from 'prom-client';
import type { TrapConfig } from '../config/env';
import { toCidrs } from '../ip-address';
import type { Logger } from '../log';
import { createIntelMetrics, type IntelMetrics } from '../metrics/intel';
import type { HttpRoute } from '../metrics/http-server';
import { isIntelEvent, type FiledMessageEvent, type IntelBatchMessage } from './events';
import { FINGERPRINT_ID } from './fingerprint';
import { FingerprintCatalog } from './fingerprint-catalog';
import { INTEL_LIMITS } from './limits';
import { listingRoute } from './listing-http';
import { ListingKeeper } from './listing-keeper';
import type { ListingPolicy } from './listing-policy';
import { OTHER_LABEL, StableTopLabels } from './stable-labels';
import { TailHub } from './tail';
import { tailRoute } from './tail-http';
import { TopCounts } from './top-counts';

export type IntelSettings = Pick<
  TrapConfig,
  | 'listingMinHits'
  | 'listingTtlMs'
  | 'listingExclude'
  | 'listingMaxEntries'
  | 'listingWriteIntervalMs'
  | 'listingZoneFile'
  | 'listingStateFile'
  | 'fingerprintMetricTop'
  | 'tailBuffer'
>;

type PolicySettings = Pick<IntelSettings, 'listingMinHits' | 'listingTtlMs' | 'listingExclude'>;

export function listingPolicyOf(s: PolicySettings): ListingPolicy {
  return { minHits: s.listingMinHits, ttlMs: s.listingTtlMs, exclude: toCidrs(s.listingExclude) };
}

export class TrapIntel {
  readonly tail: TailHub;
  /** Trap recipients by messages received, since this start (they are not persisted). */
  readonly topRecipients = new TopCounts(INTEL_LIMITS.topRecipients.tracked);
  readonly fingerprints = new FingerprintCatalog();
  private readonly fingerprintLabels: StableTopLabels;
  private readonly metrics: IntelMetrics;
  private malformed = 0;
  private policySettings: PolicySettings;

  private constructor(
    readonly keeper: ListingKeeper,
    settings: IntelSettings,
    registry: Registry,
    private readonly log: Logger,
  ) {
    this.policySettings = settings;
    this.tail = new TailHub({ queueLimit: settings.tailBuffer, maxSubscribers: INTEL_LIMITS.tail.maxSubscribers });
    this.fingerprintLabels = new StableTopLabels({
      maxLabels: settings.fingerprintMetricTop,
      promoteAfter: INTEL_LIMITS.fingerprintMetric.promoteAfter,
      tracked: INTEL_LIMITS.fingerprintMetric.tracked,
    });
    const listing = keeper.listing;
    this.metrics = createIntelMetrics(registry, {
      entries: () => listing.size,
      listed: () => keeper.lastWriteReport?.listed ?? 0,
      evictions: () => listing.stats().evictions,
      expirations: () => listing.stats().expirations,
      writeFailures: () => keeper.writeFailures,
      lastWriteAt: () => keeper.lastWriteReport?.at ?? 0,
      tailSubscribers: () => this.tail.subscribers,
      tailDropped: () => this.tail.dropped,
    });
  }

  /** Loads the persisted listing and starts its periodic writes. Call before any acceptor is forked. */
  static async start(settings: IntelSettings, registry: Registry, log: Logger): Promise<TrapIntel> {
    const keeper = await ListingKeeper.open({
      stateFile: settings.listingStateFile,
      zoneFile: settings.listingZoneFile,
      maxEntries: settings.listingMaxEntries,
      policy: listingPolicyOf(settings),
      writeIntervalMs: settings.listingWriteIntervalMs,
      log,
    });
    log.info('listing', { state: settings.listingStateFile, zone: settings.listingZoneFile, entries: keeper.listing.size });
    keeper.start();
    // The rbldnsd files exist from the start, even before the first message.
    await keeper.write();
    return new TrapIntel(keeper, settings, registry, log);
  }

  /** What it serves on the metrics port: GET /listing and GET /tail. */
  httpRoutes(): Record<string, HttpRoute> {
    const source = { listing: this.keeper.listing, fingerprints: this.fingerprints, topRecipients: this.topRecipients };
    return { '/listing': listingRoute(source), '/tail': tailRoute(this.tail) };
  }

  /** One acceptor batch, in order (a session's messages come before its end). */
  apply(batch: IntelBatchMessage): void {
    if (batch.dropped > 0) this.metrics.eventsDropped.inc(batch.dropped);
    for (const e of batch.events) {
      if (!isIntelEvent(e)) {
        // Counted and logged once in a while: a flood of them would say the same thing every time.
        if (this.malformed++ % 1000 === 0) this.log.warn('intel_event_malformed', { slot: batch.slot, pid: batch.pid, seen: this.malformed });
        continue;
      }
      if (e.kind === 'ended') this.keeper.connection(e.ip, e.at, e.end);
      else this.filed(e);
    }
  }

  /** SIGHUP: threshold, TTL and exclusions, when they changed (the other settings wait for a restart). */
  reload(settings: PolicySettings): void {
    const same =
      settings.listingMinHits === this.policySettings.listingMinHits &&
      settings.listingTtlMs === this.policySettings.listingTtlMs &&
      settings.listingExclude.join() === this.policySettings.listingExclude.join();
    if (!same) this.setPolicy(settings);
  }

  private setPolicy(settings: PolicySettings): void {
    this.policySettings = settings;
    const dropped = this.keeper.setPolicy(listingPolicyOf(settings));
    this.log.info('listing_policy', {
      min_hits: settings.listingMinHits,
      ttl_s: settings.listingTtlMs / 1000,
      exclude: settings.listingExclude.join(',') || '-',
      dropped_excluded: dropped,
    });
  }

  /** The final write, before the spool lock goes. */
  close(): Promise<void> {
    return this.keeper.close();
  }

  private filed(e: FiledMessageEvent): void {
    if (e.features !== undefined) this.fingerprints.remember(e.fingerprint, e.features);
    const fingerprint = FINGERPRINT_ID.test(e.fingerprint) ? e.fingerprint : null;
    this.metrics.fingerprintMessages.inc({ fingerprint: fingerprint === null ? OTHER_LABEL : this.fingerprintLabels.label(fingerprint) });
    const counted: string[] = [];
    for (const c of e.copies) if (c.trap) counted.push(...c.recipients);
    // An excluded sender's recipients are no evidence either: they stay out of the top recipients.
    if (counted.length > 0 && this.keeper.message(e.ip, e.at, { recipients: counted, helo: e.helo, fingerprint })) {
      const max = INTEL_LIMITS.topRecipients.addressMaxChars;
      for (const r of counted) this.topRecipients.add(r.slice(0, max).toLowerCase());
    }
    this.tail.publish(e);
  }
}
