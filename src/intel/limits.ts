/**
 * Every bound of the trap's intelligence core (listing, fingerprints, tail, the acceptor -> primary event channel) in
 * one place. The operator's settings (LISTING_*, FINGERPRINT_METRIC_TOP, TAIL_BUFFER) are declared with their ranges
 * in src/config/settings.ts; the fixed bounds below are what keeps memory and wire size finite whatever a client sends.
 */
export const INTEL_LIMITS = Object.freeze({
  listing: Object.freeze({
    /**
     * Distinct-recipient sketch size per address: the K smallest recipient hashes are kept, so the count is exact up
     * to K and an estimate above it (recipient-sketch.ts). 8 costs 32 bytes per entry.
     */
    recipientHashesPerEntry: 8,
    /** Characters of the last HELO kept per address: enough for any real host name a bot shows. */
    heloMaxChars: 64,
    /** Distinct fingerprint ids the listing remembers (2 bytes per entry); later ones are stored as unknown. */
    fingerprintsInterned: 65_535,
    /** Slabs start this small and double, so an idle trap does not pay for LISTING_MAX_ENTRIES up front. */
    initialCapacity: 1024,
    /** Persisted-file and zone writes hand the event loop back after this many entries. */
    writeBatchEntries: 2048,
  }),
  topRecipients: Object.freeze({
    /** Space-Saving counters kept for trap recipients: the top `shown` are reliable while this is >> `shown`. */
    tracked: 10_000,
    /** Most recipients `GET /listing?by=rcpt` returns. */
    shown: 1000,
    /** Longest recipient address counted; longer ones are cut (they come from bots). */
    addressMaxChars: 256,
  }),
  fingerprintMetric: Object.freeze({
    /** Hits an id needs before it gets its own series (until then it counts as `other`): keeps one-off ids out. */
    promoteAfter: 5,
    /** Space-Saving counters behind that decision. */
    tracked: 1000,
  }),
  tail: Object.freeze({
    /** Tail readers at once (each queues TAIL_BUFFER events); one more is refused instead of slowing the primary. */
    maxSubscribers: 32,
  }),
  events: Object.freeze({
    /** An acceptor sends its batch once it holds this many events ... */
    batchMaxEvents: 256,
    /** ... or this long after its first event, so the tail stays live. */
    batchMaxDelayMs: 200,
    /** Events an acceptor holds while the channel is busy; beyond it they are dropped and counted, never waited on. */
    pendingMaxEvents: 20_000,
    /** Longest string field of an event (address, HELO, MAIL FROM) sent to the primary. */
    fieldMaxChars: 256,
    /** Recipients of one message sent to the primary (MAX_RECIPIENTS can be 1000s). */
    recipientsPerMessage: 100,
  }),
});
