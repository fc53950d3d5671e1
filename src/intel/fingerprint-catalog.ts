/**
 * What each fingerprint id stands for: its canonical feature string, as acceptors send it with the first message of
 * each id (events.ts), so the primary can show it beside the id without hashing anything back. Bounded: once full,
 * new ids are shown without their features (the jobs' metadata always has both).
 */
import { FINGERPRINT_ID } from './fingerprint';
import { INTEL_LIMITS } from './limits';

/** Longest feature string kept: the canonical one is about 120 characters. */
const FEATURES_MAX_CHARS = 256;

export class FingerprintCatalog {
  private readonly features = new Map<string, string>();

  constructor(private readonly capacity = INTEL_LIMITS.listing.fingerprintsInterned) {}

  get size(): number {
    return this.features.size;
  }

  remember(id: string, features: string): void {
    if (this.features.has(id) || this.features.size >= this.capacity) return;
    if (!FINGERPRINT_ID.test(id) || features.length > FEATURES_MAX_CHARS) return;
    this.features.set(id, features);
  }

  featuresOf(id: string | null): string | null {
    return id === null ? null : (this.features.get(id) ?? null);
  }
}
