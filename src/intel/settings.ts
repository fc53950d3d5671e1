/**
 * The operator's settings for the listing, its exports, the fingerprint metric and the tail: one table of name,
 * default, range and meaning (INTEL_SETTINGS), and one reader that validates them the way src/config/env.ts does
 * (unset or empty takes the default; a bad value is a ConfigError naming the variable). env.ts calls
 * readIntelSettings() with its environment and spool directory when the feature is wired in.
 */
import path from 'node:path';
import { ConfigError } from '../errors';
import { parseCidrList, toCidrs, type Cidr } from '../ip-address';

const SECOND = 1000;
const DAY = 86_400 * SECOND;

interface IntSetting {
  readonly kind: 'int';
  readonly default: number;
  readonly min: number;
  readonly max: number;
  readonly meaning: string;
}
interface DurationSetting {
  readonly kind: 'duration';
  readonly default: string;
  readonly minMs: number;
  readonly maxMs: number;
  readonly meaning: string;
}
interface TextSetting {
  readonly kind: 'cidrs' | 'path';
  readonly default: string;
  readonly meaning: string;
}
type Setting = IntSetting | DurationSetting | TextSetting;

export const INTEL_SETTINGS = Object.freeze({
  LISTING_MIN_HITS: { kind: 'int', default: 1, min: 1, max: 1_000_000, meaning: 'trap messages an address needs to be listed' },
  LISTING_TTL: {
    kind: 'duration',
    default: '7d',
    minMs: SECOND,
    maxMs: 365 * DAY,
    meaning: 'an address stays listed this long after it was last seen (s, m, h, d or w suffix; digits alone are seconds)',
  },
  LISTING_EXCLUDE: { kind: 'cidrs', default: '', meaning: 'comma-separated CIDRs never listed nor stored' },
  LISTING_MAX_ENTRIES: {
    kind: 'int',
    default: 1_000_000,
    min: 1,
    max: 20_000_000,
    meaning: 'addresses kept in memory; the least recently seen is evicted beyond it',
  },
  LISTING_WRITE_INTERVAL_MS: {
    kind: 'int',
    default: 60_000,
    min: 1000,
    max: 3_600_000,
    meaning: 'how often the persisted listing and the rbldnsd files are rewritten',
  },
  LISTING_ZONE_FILE: {
    kind: 'path',
    default: 'SPOOL_DIR/.listing/listing.ip4set',
    meaning: 'rbldnsd ip4set file; the ip6trie file goes beside it (.ip6trie)',
  },
  FINGERPRINT_METRIC_TOP: {
    kind: 'int',
    default: 50,
    min: 0,
    max: 1000,
    meaning: 'fingerprint ids with a series of their own in spamtrapd_fingerprint_messages_total; the rest are other',
  },
  TAIL_BUFFER: { kind: 'int', default: 1000, min: 10, max: 100_000, meaning: 'events queued per tail reader before it loses some' },
} satisfies Record<string, Setting>);

export type IntelSettingName = keyof typeof INTEL_SETTINGS;

export interface IntelSettings {
  readonly listingMinHits: number;
  readonly listingTtlMs: number;
  readonly listingExclude: readonly Cidr[];
  readonly listingMaxEntries: number;
  readonly listingWriteIntervalMs: number;
  /** Absolute. */
  readonly listingZoneFile: string;
  /** SPOOL_DIR/.listing/listing.jsonl: not a setting, the listing belongs to the spool it was built from. */
  readonly listingStateFile: string;
  readonly fingerprintMetricTop: number;
  readonly tailBuffer: number;
}

/** The listing's own directory; its dot keeps it apart from the queue directories beside it. */
export function listingDir(spoolDir: string): string {
  return path.join(spoolDir, '.listing');
}

const UNIT_MS: Record<string, number> = { s: SECOND, m: 60 * SECOND, h: 3600 * SECOND, d: DAY, w: 7 * DAY };

/** `7d`, `12h`, `90m`, `30s`, `2w`, or digits alone (seconds); null when it is none of these. */
export function parseDuration(text: string): number | null {
  const m = /^(\d+)\s*([smhdw]?)$/i.exec(text.trim());
  if (!m) return null;
  const ms = Number(m[1]) * UNIT_MS[(m[2] || 's').toLowerCase()];
  return Number.isSafeInteger(ms) ? ms : null;
}

export function readIntelSettings(env: Record<string, string | undefined>, spoolDir: string): IntelSettings {
  const raw = (name: IntelSettingName): string | null => {
    const v = env[name]?.trim();
    return v === undefined || v === '' ? null : v;
  };
  const bad = (name: IntelSettingName, value: string, allowed: string): never => {
    throw new ConfigError(name, `invalid value ${JSON.stringify(value.length > 200 ? value.slice(0, 200) + '...' : value)}: ${allowed}`);
  };
  const int = (name: IntelSettingName): number => {
    const s = INTEL_SETTINGS[name] as IntSetting;
    const v = raw(name);
    if (v === null) return s.default;
    const n = Number(v);
    if (!/^\d+$/.test(v) || !Number.isSafeInteger(n) || n < s.min || n > s.max) {
      bad(name, v, `expected a whole number from ${s.min} to ${s.max}`);
    }
    return n;
  };
  const duration = (name: IntelSettingName): number => {
    const s = INTEL_SETTINGS[name] as DurationSetting;
    const v = raw(name) ?? s.default;
    const ms = parseDuration(v);
    if (ms === null || ms < s.minMs || ms > s.maxMs) {
      bad(name, v, `expected a duration from 1s to 365d, e.g. 7d, 12h, 90m or 30s`);
    }
    return ms!;
  };
  const excludeText = raw('LISTING_EXCLUDE') ?? '';
  let listingExclude: Cidr[] = [];
  try {
    listingExclude = toCidrs(parseCidrList('LISTING_EXCLUDE', excludeText));
  } catch (err) {
    bad('LISTING_EXCLUDE', excludeText, (err as Error).message);
  }
  const zone = raw('LISTING_ZONE_FILE');
  return Object.freeze({
    listingMinHits: int('LISTING_MIN_HITS'),
    listingTtlMs: duration('LISTING_TTL'),
    listingExclude: Object.freeze(listingExclude),
    listingMaxEntries: int('LISTING_MAX_ENTRIES'),
    listingWriteIntervalMs: int('LISTING_WRITE_INTERVAL_MS'),
    listingZoneFile: zone === null ? path.join(listingDir(spoolDir), 'listing.ip4set') : path.resolve(zone),
    listingStateFile: path.join(listingDir(spoolDir), 'listing.jsonl'),
    fingerprintMetricTop: int('FINGERPRINT_METRIC_TOP'),
    tailBuffer: int('TAIL_BUFFER'),
  });
}
