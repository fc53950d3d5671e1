/**
 * The listing's settings (docs/listing.md) in the one settings table: their defaults, durations with units, strict
 * CIDRs, the zone file's default under the spool, and which of them a SIGHUP applies.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { loadSettings } from '../src/config/env';
import { reloadRunningConfig, readRunningConfig } from '../src/config/read-running-config';
import { parseDuration } from '../src/config/settings';
import { ConfigError } from '../src/errors';

const DAY = 86_400_000;
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'spamtrapd-listingcfg-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

const load = (env: Record<string, string>) => loadSettings(env, { cwd: tmp, envFile: '/nonexistent/.env' });

describe('listing settings', () => {
  test("the issue's defaults; the files live under the spool", () => {
    const s = load({ SPOOL_DIR: '/var/spool/spamtrapd' });
    assert.equal(s.listingMinHits, 1);
    assert.equal(s.listingTtlMs, 7 * DAY);
    assert.deepEqual(s.listingExclude, []);
    assert.equal(s.listingMaxEntries, 1_000_000);
    assert.equal(s.listingWriteIntervalMs, 60_000);
    assert.equal(s.listingZoneFile, '/var/spool/spamtrapd/.listing/listing.ip4set');
    assert.equal(s.listingStateFile, '/var/spool/spamtrapd/.listing/listing.jsonl');
    assert.equal(s.fingerprintMetricTop, 50);
    assert.equal(s.tailBuffer, 1000);
  });

  test('durations take a unit; digits alone are seconds', () => {
    assert.equal(parseDuration('7d'), 7 * DAY);
    assert.equal(parseDuration('12h'), 12 * 3_600_000);
    assert.equal(parseDuration('90m'), 90 * 60_000);
    assert.equal(parseDuration('2w'), 14 * DAY);
    assert.equal(parseDuration('30'), 30_000);
    assert.equal(parseDuration('3 S'), 3000);
    assert.equal(parseDuration('1.5h'), null);
    assert.equal(parseDuration('9'.repeat(40)), null);
    assert.equal(load({ LISTING_TTL: '2s' }).listingTtlMs, 2000);
  });

  test('a bad value names the variable and what is allowed', () => {
    const cases: Array<[string, string, RegExp]> = [
      ['LISTING_MIN_HITS', '0', /from 1 to 1000000/],
      ['LISTING_TTL', '0s', /duration from 1s to 365d/],
      ['LISTING_TTL', '366d', /duration from 1s to 365d/],
      ['LISTING_TTL', 'soon', /duration/],
      ['LISTING_EXCLUDE', '10.0.0.1/8', /invalid entry "10\.0\.0\.1\/8": host bits are set/],
      ['LISTING_MAX_ENTRIES', '-1', /whole number/],
      ['LISTING_WRITE_INTERVAL_MS', '10', /from 1000 to 3600000/],
      ['FINGERPRINT_METRIC_TOP', '1001', /from 0 to 1000/],
      ['TAIL_BUFFER', '5', /from 10 to 100000/],
    ];
    for (const [name, value, reason] of cases) {
      assert.throws(
        () => load({ [name]: value }),
        (e: unknown) => e instanceof ConfigError && e.where === name && reason.test(e.reason),
        `${name}=${value}`,
      );
    }
  });

  test('LISTING_ZONE_FILE is made absolute against the working directory; LISTING_EXCLUDE is canonical', () => {
    const s = load({ LISTING_ZONE_FILE: 'rbldnsd/trap.ip4set', LISTING_EXCLUDE: '192.0.2.0/24, ::1' });
    assert.equal(s.listingZoneFile, path.join(tmp, 'rbldnsd', 'trap.ip4set'));
    assert.deepEqual(s.listingExclude, ['192.0.2.0/24', '::1/128']);
    assert.equal(load({ LISTING_ZONE_FILE: '/srv/bl/trap.ip4set' }).listingZoneFile, '/srv/bl/trap.ip4set');
  });

  test('SIGHUP applies the threshold, the TTL and the exclusions; the rest waits for a restart', () => {
    const config = path.join(tmp, 'config');
    fs.mkdirSync(config, { recursive: true });
    const base = { CONFIG_DIR: config, SPOOL_DIR: path.join(tmp, 'spool') };
    const opts = { cwd: tmp, envFile: '/nonexistent/.env' };
    const start = readRunningConfig(base, opts);
    const next = reloadRunningConfig(
      start.config,
      { ...base, LISTING_MIN_HITS: '3', LISTING_TTL: '1h', LISTING_EXCLUDE: '192.0.2.0/24', LISTING_MAX_ENTRIES: '10', TAIL_BUFFER: '20' },
      opts,
    );
    const s = next.config.settings;
    assert.deepEqual([s.listingMinHits, s.listingTtlMs, s.listingExclude], [3, 3_600_000, ['192.0.2.0/24']]);
    assert.deepEqual([s.listingMaxEntries, s.tailBuffer], [1_000_000, 1000]);
    assert.deepEqual([...next.deferred].sort(), ['LISTING_MAX_ENTRIES', 'TAIL_BUFFER']);
  });
});
