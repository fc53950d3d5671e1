/**
 * Bytes per listing entry at a million addresses, and the cost of persisting and exporting that listing.
 *
 *   npx tsc -p . && node --expose-gc dist/bench/listing-memory.js [--entries 1000000] [--dir /tmp] [--json]
 *
 * Builds a listing of N distinct client addresses (90% IPv4, 10% IPv6; 1-4 recipients each from a pool with some
 * unique ones; HELOs as bots send them: host names, words, address literals, a few common ones, none), then
 * reports heap used plus typed-array memory after a full GC, minus the empty baseline, divided by N (the number the
 * issue asks for), and the RSS delta; then the time to write the persisted file, to load it back into an empty listing, and to write the
 * rbldnsd files, with their sizes (wall clock and this process's CPU time, which a loaded machine distorts less). Finally the cost of an event once the listing is full and every new address
 * evicts one.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Listing } from '../src/intel/listing';
import { loadListing, saveListing } from '../src/intel/listing-store';
import { writeZoneFiles } from '../src/intel/zone';

const DAY = 86_400_000;

function arg(name: string, def: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] !== undefined ? process.argv[i + 1] : def;
}

const gc = (globalThis as { gc?: () => void }).gc;
if (!gc) {
  console.error('run with node --expose-gc');
  process.exit(2);
}

/** Heap used plus ArrayBuffer memory: the listing's slabs are typed arrays, which V8 keeps outside its heap. */
function settle(): { heap: number; rss: number } {
  for (let i = 0; i < 4; i++) gc!();
  const m = process.memoryUsage();
  return { heap: m.heapUsed + m.arrayBuffers, rss: m.rss };
}

/** Deterministic pseudo-random numbers, so two runs build the same listing. */
let seed = 12345;
const rand = (n: number): number => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) % n);

function address(i: number): string {
  if (i % 10 === 9) return `2001:db8:${(i >>> 16).toString(16)}:${(i & 0xffff).toString(16)}::${(1 + rand(0xfffe)).toString(16)}`;
  // Distinct IPv4 addresses spread over the whole space (i * an odd constant is a bijection mod 2^32).
  const v = Math.imul(i, 2654435761) >>> 0;
  return `${v >>> 24}.${(v >>> 16) & 255}.${(v >>> 8) & 255}.${v & 255}`;
}

const COMMON_HELOS = ['localhost', 'User', 'ylmf-pc', 'WIN-7QK2L0P', 'mail.example.com'];
const WORDS = 'abcdefghijklmnopqrstuvwxyz0123456789';
const word = (n: number) => Array.from({ length: n }, () => WORDS[rand(WORDS.length)]).join('');

function helo(ip: string): string | null {
  const r = rand(100);
  if (r < 35) return `${word(4 + rand(6))}.${word(3 + rand(8))}.${['com', 'net', 'ru', 'cn', 'br'][rand(5)]}`;
  if (r < 55) return word(6 + rand(6));
  if (r < 70) return `[${ip}]`;
  if (r < 90) return COMMON_HELOS[rand(COMMON_HELOS.length)];
  return null;
}

const FINGERPRINTS = Array.from({ length: 200 }, (_, i) => `v1-${word(12).replace(/[0189]/g, 'a')}${i}`.slice(0, 15));

function recipients(i: number): string[] {
  const n = 1 + rand(4);
  return Array.from({ length: n }, (_, j) => (rand(10) === 0 ? `u${i}.${j}@trap.example` : `user${rand(5000)}@trap${rand(20)}.example`));
}

/** CPU time of this process in ms: on a shared machine it says more than the wall clock. */
const cpuMs = (): number => {
  const c = process.cpuUsage();
  return (c.user + c.system) / 1000;
};

function mb(bytes: number): string {
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}

async function main(): Promise<void> {
  const n = Number(arg('entries', '1000000'));
  const dir = fs.mkdtempSync(path.join(arg('dir', os.tmpdir()), 'listing-bench-'));
  const json = process.argv.includes('--json');
  const now = Date.UTC(2026, 10, 25, 12);
  const policy = { minHits: 1, ttlMs: 7 * DAY, exclude: [] };
  try {
    const base = settle();
    let listing: Listing | null = new Listing(n, policy);
    let t = performance.now();
    for (let i = 0; i < n; i++) {
      const ip = address(i);
      const at = now - DAY + Math.floor((i / n) * DAY);
      listing.message(ip, at, { recipients: recipients(i), helo: helo(ip), fingerprint: FINGERPRINTS[rand(FINGERPRINTS.length)] });
      listing.connection(ip, at + 500, rand(2) ? 'quit' : 'drop');
    }
    const buildMs = performance.now() - t;
    if (listing.size !== n) throw new Error(`built ${listing.size} entries, wanted ${n}`);
    const full = settle();

    t = performance.now();
    let c = cpuMs();
    const saved = await saveListing(path.join(dir, 'listing.jsonl'), listing, now);
    const saveMs = performance.now() - t;
    const saveCpu = cpuMs() - c;

    t = performance.now();
    c = cpuMs();
    const zone = await writeZoneFiles(path.join(dir, 'listing.ip4set'), listing, now);
    const zoneMs = performance.now() - t;
    const zoneCpu = cpuMs() - c;

    // Full: every new address now evicts the least recently seen one.
    const extra = Math.min(200_000, n);
    t = performance.now();
    for (let i = 0; i < extra; i++) {
      listing.message(address(n + i), now, { recipients: ['x@trap.example'], helo: 'bot', fingerprint: FINGERPRINTS[0] });
    }
    const evictUs = ((performance.now() - t) * 1000) / extra;
    const evictions = listing.stats().evictions;

    listing = null;
    const empty = settle();
    const loaded = new Listing(n, policy);
    t = performance.now();
    c = cpuMs();
    const outcome = await loadListing(path.join(dir, 'listing.jsonl'), loaded, now);
    const loadMs = performance.now() - t;
    const loadCpu = cpuMs() - c;
    const afterLoad = settle();

    const result = {
      node: process.version,
      entries: n,
      ipv6_share: 0.1,
      heap_bytes_per_entry: Math.round((full.heap - base.heap) / n),
      rss_bytes_per_entry: Math.round((full.rss - base.rss) / n),
      heap_bytes_per_entry_after_load: Math.round((afterLoad.heap - empty.heap) / n),
      build_events_per_s: Math.round((2 * n) / (buildMs / 1000)),
      event_with_eviction_us: Number(evictUs.toFixed(2)),
      evictions,
      load_average: os.loadavg().map((l) => Number(l.toFixed(2))),
      persisted: {
        entries: saved.entries,
        bytes: saved.bytes,
        write_ms: Math.round(saveMs),
        write_cpu_ms: Math.round(saveCpu),
        load_ms: Math.round(loadMs),
        load_cpu_ms: Math.round(loadCpu),
        load: outcome,
      },
      zone: { ipv4: zone.ipv4, ipv6: zone.ipv6, bytes: zone.bytes, write_ms: Math.round(zoneMs), write_cpu_ms: Math.round(zoneCpu) },
    };
    if (json) {
      console.log(JSON.stringify(result, null, 2));
      return;
    }
    console.log(`listing of ${n} distinct addresses (10% IPv6), ${process.version}, load average ${result.load_average.join(' ')}`);
    console.log(`  heap + arrays: ${result.heap_bytes_per_entry} bytes/entry (${mb(full.heap - base.heap)} total)`);
    console.log(`  RSS delta:     ${result.rss_bytes_per_entry} bytes/entry (${mb(full.rss - base.rss)} total)`);
    console.log(`  after a load:  ${result.heap_bytes_per_entry_after_load} bytes/entry (heap + arrays)`);
    console.log(`  build:         ${result.build_events_per_s} events/s (a message and a connection per address)`);
    console.log(`  full listing:  ${result.event_with_eviction_us} us per new address (each evicts one)`);
    const p = result.persisted;
    console.log(`  persisted:     ${mb(saved.bytes)}, written in ${p.write_ms} ms (${p.write_cpu_ms} ms CPU), loaded in ${p.load_ms} ms (${p.load_cpu_ms} ms CPU)`);
    console.log(`  rbldnsd files: ${zone.ipv4} + ${zone.ipv6} addresses, ${mb(zone.bytes)}, written in ${result.zone.write_ms} ms (${result.zone.write_cpu_ms} ms CPU)`);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(2);
});
