/**
 * The primary's series for the trap intelligence (docs/metrics.md): the listing's size and churn, filed messages by
 * fingerprint id (at most FINGERPRINT_METRIC_TOP ids plus `other`, stable-labels.ts), the live tail and the events
 * acceptors had to drop. Values the intel core already counts are read at scrape time; the per-address data never
 * becomes a label.
 */
import client, { type Registry } from 'prom-client';
import { OTHER_LABEL } from '../intel/stable-labels';
import { SERIES } from './definitions';

/** What the scrape reads; each function is O(1). */
export interface IntelMetricsSource {
  /** Addresses held in memory. */
  entries(): number;
  /** Listed addresses at the last write, when the gauge was refreshed (counting them is a walk of the listing). */
  listed(): number;
  evictions(): number;
  expirations(): number;
  writeFailures(): number;
  /** Unix ms of the last completed write; 0 before the first. */
  lastWriteAt(): number;
  tailSubscribers(): number;
  tailDropped(): number;
}

export interface IntelMetrics {
  fingerprintMessages: client.Counter<'fingerprint'>;
  eventsDropped: client.Counter<never>;
}

/** A counter whose value lives elsewhere and only grows: set from the source on every scrape. */
function mirroredCounter(registry: Registry, name: string, help: string, value: () => number): void {
  new client.Counter({
    name,
    help,
    registers: [registry],
    collect() {
      this.reset();
      this.inc(value());
    },
  });
}

function mirroredGauge(registry: Registry, name: string, help: string, value: () => number): void {
  new client.Gauge({
    name,
    help,
    registers: [registry],
    collect() {
      this.set(value());
    },
  });
}

export function createIntelMetrics(registry: Registry, source: IntelMetricsSource): IntelMetrics {
  mirroredGauge(registry, SERIES.listingListed, 'Client addresses listed (threshold, TTL and exclusions applied) at the last listing write.', source.listed);
  mirroredGauge(registry, SERIES.listingEntries, 'Client addresses the listing holds in memory, listed or not yet.', source.entries);
  mirroredCounter(registry, SERIES.listingEvictions, 'Listing entries dropped because LISTING_MAX_ENTRIES was reached (least recently seen first).', source.evictions);
  mirroredCounter(registry, SERIES.listingExpirations, 'Listing entries dropped because their LISTING_TTL ran out.', source.expirations);
  mirroredCounter(registry, SERIES.listingWriteFailures, 'Listing writes (state file or rbldnsd files) that failed; the next interval tries again.', source.writeFailures);
  mirroredGauge(registry, SERIES.listingLastWrite, 'Unix time of the last completed listing write; 0 before the first.', () => source.lastWriteAt() / 1000);
  mirroredGauge(registry, SERIES.tailSubscribers, 'Readers of the live tail (GET /tail, spamtrapd tail) connected now.', source.tailSubscribers);
  mirroredCounter(registry, SERIES.tailDropped, 'Tail events not delivered because their reader fell more than TAIL_BUFFER behind (each reader is told).', source.tailDropped);
  const fingerprintMessages = new client.Counter({
    name: SERIES.fingerprintMessages,
    help: 'Filed messages by the fingerprint id of their sender\'s SMTP dialect: FINGERPRINT_METRIC_TOP ids at most, the rest as "other".',
    labelNames: ['fingerprint'],
    registers: [registry],
  });
  fingerprintMessages.inc({ fingerprint: OTHER_LABEL }, 0);
  const eventsDropped = new client.Counter({
    name: SERIES.intelEventsDropped,
    help: 'Filed-message and session events acceptors dropped because the channel to the primary was busy (listing and tail miss them).',
    registers: [registry],
  });
  return { fingerprintMessages, eventsDropped };
}
