import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import dgram from 'node:dgram';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import ipaddr from 'ipaddr.js';
import { parseCidrList, toCidrs } from '../src/ip-address';
import { Listing } from '../src/intel/listing';
import type { ListingPolicy } from '../src/intel/listing-policy';
import { ipv6ZonePath, txtText, writeZoneFiles } from '../src/intel/zone';
import { findRepoRoot } from './helpers/metrics-cluster';

const T0 = Date.UTC(2026, 10, 25, 12, 0, 0);
const DAY = 86_400_000;
const ZONE = 'bl.spamtrapd.test';

function trapListing(): Listing {
  const policy: ListingPolicy = { minHits: 2, ttlMs: 7 * DAY, exclude: toCidrs(parseCidrList('LISTING_EXCLUDE', '203.0.113.0/24')) };
  const l = new Listing(100, policy);
  const hit = (ip: string, n: number, at: number) => {
    for (let i = 0; i < n; i++) l.message(ip, at, { recipients: ['t@trap.example'], helo: 'bot', fingerprint: null });
  };
  hit('192.0.2.7', 3, T0);
  hit('::ffff:198.51.100.9', 2, T0 + 60_000);
  hit('2001:db8::7', 5, T0 + 120_000);
  hit('192.0.2.8', 1, T0); // below the threshold: stored, not listed
  hit('203.0.113.5', 9, T0); // excluded: not even stored
  hit('192.0.2.9', 4, T0 - 8 * DAY); // past its TTL
  return l;
}

describe('rbldnsd zone files: content', () => {
  let dir: string;
  before(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'zone-'));
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('puts the IPv6 dataset beside the IPv4 one', () => {
    assert.equal(ipv6ZonePath('/srv/bl/trap.ip4set'), '/srv/bl/trap.ip6trie');
    assert.equal(ipv6ZonePath('/srv/bl/trap'), '/srv/bl/trap.ip6trie');
  });

  it('says why in the TXT text, with the address in place of $', () => {
    assert.equal(txtText({ messages: 3, lastSeen: T0 }), '$ sent 3 messages to spamtraps, last seen 2026-11-25T12:00:00Z');
    assert.equal(txtText({ messages: 1, lastSeen: T0 + 1500 }), '$ sent 1 message to spamtraps, last seen 2026-11-25T12:00:01Z');
  });

  it('writes only listed addresses, IPv4 and IPv6 apart, readable by rbldnsd\'s user', async () => {
    const file = path.join(dir, 'listing.ip4set');
    const r = await writeZoneFiles(file, trapListing(), T0 + DAY);
    assert.deepEqual({ v4: r.ipv4, v6: r.ipv6 }, { v4: 2, v6: 1 });
    const v4 = fs.readFileSync(file, 'utf8').split('\n');
    const v6 = fs.readFileSync(ipv6ZonePath(file), 'utf8').split('\n');
    assert.match(v4[0], /^# spamtrapd listing, ip4set dataset/);
    assert.equal(v4[1], ':127.0.0.2:');
    assert.deepEqual(v4.slice(2, 4), [
      '192.0.2.7 $ sent 3 messages to spamtraps, last seen 2026-11-25T12:00:00Z',
      '198.51.100.9 $ sent 2 messages to spamtraps, last seen 2026-11-25T12:01:00Z',
    ]);
    assert.equal(v6[1], ':127.0.0.2:');
    assert.equal(v6[2], '2001:db8::7/128 $ sent 5 messages to spamtraps, last seen 2026-11-25T12:02:00Z');
    assert.equal(fs.statSync(file).mode & 0o777, 0o644);
  });
});

/** rbldnsd and dig from .tools/bin or the usual places; Debian puts rbldnsd in /usr/sbin. */
function findTool(name: string): string | undefined {
  const dirs = [path.join(findRepoRoot(), '.tools', 'bin'), ...(process.env.PATH ?? '').split(':'), '/usr/sbin', '/sbin'];
  for (const d of dirs) {
    const p = path.join(d, name);
    try {
      fs.accessSync(p, fs.constants.X_OK);
      return p;
    } catch {
      // not here
    }
  }
  return undefined;
}

async function freeUdpPort(): Promise<number> {
  const s = dgram.createSocket('udp4');
  await new Promise<void>((resolve) => s.bind(0, '127.0.0.1', resolve));
  const port = s.address().port;
  await new Promise<void>((resolve) => s.close(() => resolve()));
  return port;
}

function reverseName(ip: string): string {
  const a = ipaddr.parse(ip);
  if (a.kind() === 'ipv4') return `${(a as ipaddr.IPv4).octets.slice().reverse().join('.')}.${ZONE}`;
  const hex = (a as ipaddr.IPv6).parts.map((p) => p.toString(16).padStart(4, '0')).join('');
  return `${hex.split('').reverse().join('.')}.${ZONE}`;
}

describe('rbldnsd zone files: served by the real rbldnsd, queried with dig', () => {
  const rbldnsd = findTool('rbldnsd');
  const dig = findTool('dig');
  const missing = !rbldnsd || !dig;
  const why = 'rbldnsd or dig not found: apt-get install rbldnsd bind9-dnsutils (CI installs them)';
  let dir: string;
  let child: ChildProcess | undefined;
  let port = 0;
  let output = '';

  before(async () => {
    if (missing) return;
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rbldnsd-'));
    fs.chmodSync(dir, 0o755); // started as root, rbldnsd reads its files as an unprivileged user
    await writeZoneFiles(path.join(dir, 'listing.ip4set'), trapListing(), T0 + DAY);
    port = await freeUdpPort();
    const args = ['-n', '-b', `127.0.0.1/${port}`, '-w', dir];
    if (process.getuid?.() === 0) args.push('-u', 'nobody');
    args.push(`${ZONE}:ip4set:listing.ip4set`, `${ZONE}:ip6trie:listing.ip6trie`);
    child = spawn(rbldnsd!, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    child.stdout!.on('data', (b: Buffer) => (output += b.toString()));
    child.stderr!.on('data', (b: Buffer) => (output += b.toString()));
    const deadline = Date.now() + 10_000;
    while (!/started/.test(output)) {
      if (child.exitCode !== null || Date.now() > deadline) assert.fail(`rbldnsd did not start:\n${output}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  });

  after(async () => {
    if (child && child.exitCode === null) {
      const exited = new Promise((r) => child!.once('exit', r));
      child.kill('SIGTERM');
      await exited;
    }
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  const query = (name: string, type: 'A' | 'TXT') => {
    const r = spawnSync(dig!, [`@127.0.0.1`, '-p', String(port), '+tries=1', '+time=3', name, type], {
      encoding: 'utf8',
      timeout: 15_000,
    });
    assert.equal(r.status, 0, `dig failed: ${r.stdout}${r.stderr}`);
    const status = /status: (\w+)/.exec(r.stdout)?.[1];
    const answers = r.stdout
      .split('\n')
      .filter((l) => l.startsWith(name + '.'))
      .map((l) => l.split(/\s+/).slice(4).join(' '));
    return { status, answers };
  };

  it('answers 127.0.0.2 and the TXT for a listed IPv4 address', (t) => {
    if (missing) return process.env.CI ? assert.fail(why) : t.skip(why);
    assert.deepEqual(query(reverseName('192.0.2.7'), 'A'), { status: 'NOERROR', answers: ['127.0.0.2'] });
    assert.deepEqual(query(reverseName('192.0.2.7'), 'TXT'), {
      status: 'NOERROR',
      answers: ['"192.0.2.7 sent 3 messages to spamtraps, last seen 2026-11-25T12:00:00Z"'],
    });
    assert.deepEqual(query(reverseName('198.51.100.9'), 'A'), { status: 'NOERROR', answers: ['127.0.0.2'] });
  });

  it('answers 127.0.0.2 and the TXT for a listed IPv6 address', (t) => {
    if (missing) return process.env.CI ? assert.fail(why) : t.skip(why);
    assert.deepEqual(query(reverseName('2001:db8::7'), 'A'), { status: 'NOERROR', answers: ['127.0.0.2'] });
    assert.deepEqual(query(reverseName('2001:db8::7'), 'TXT'), {
      status: 'NOERROR',
      answers: ['"2001:db8::7 sent 5 messages to spamtraps, last seen 2026-11-25T12:02:00Z"'],
    });
  });

  it('answers NXDOMAIN for every address that is not listed', (t) => {
    if (missing) return process.env.CI ? assert.fail(why) : t.skip(why);
    // Below the threshold, excluded, past its TTL, never seen (v4 and v6), a neighbour of a listed one.
    for (const ip of ['192.0.2.8', '203.0.113.5', '192.0.2.9', '192.0.2.77', '2001:db8::8', '192.0.2.6']) {
      assert.equal(query(reverseName(ip), 'A').status, 'NXDOMAIN', ip);
    }
  });
});
