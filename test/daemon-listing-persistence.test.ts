/**
 * The listing's life across time and restarts on the real daemon: an entry expires after LISTING_TTL and leaves the
 * zone; a SIGTERM stop writes everything the acceptors reported, even between two intervals; a SIGKILL of the
 * primary loses nothing that the last periodic write had (the test waits for that write by reading the state file,
 * which is only ever replaced whole).
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';
import { startDaemon, type Daemon } from './helpers/daemon';
import { listingEntry, waitForEntry } from './helpers/listing-http';
import { RawSmtp } from './helpers/smtp-client';
import { httpRequest } from './helpers/http';
import { parseExposition, sampleValue } from './helpers/prometheus';

/** One session from `local`: a message per recipient list, then QUIT. */
async function session(port: number, local: string, messages: string[][]): Promise<void> {
  const c = await RawSmtp.connect(port, '127.0.0.1', 5000, local);
  try {
    assert.equal((await c.read()).code, 220);
    assert.equal((await c.cmd('HELO persist.example')).code, 250);
    for (const rcpts of messages) {
      assert.equal((await c.cmd('MAIL FROM:<s@spam.example>')).code, 250);
      for (const r of rcpts) assert.equal((await c.cmd(`RCPT TO:<${r}>`)).code, 250);
      assert.equal((await c.cmd('DATA')).code, 354);
      c.write('Subject: persist\r\n\r\nhello\r\n.\r\n');
      assert.equal((await c.read(15_000)).code, 250);
    }
    assert.equal((await c.cmd('QUIT')).code, 221);
  } finally {
    c.close();
  }
}

const stateFile = (d: Daemon) => path.join(d.spoolDir, '.listing', 'listing.jsonl');
const zoneFile = (d: Daemon) => path.join(d.spoolDir, '.listing', 'listing.ip4set');

async function waitUntil(what: string, cond: () => boolean, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

const readOr = (file: string) => (fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : '');

describe('the listing over time and restarts', () => {
  test('an entry expires LISTING_TTL after it was last seen: gone from /listing, the zone and memory', async () => {
    const d = await startDaemon({ workers: 1, env: { LISTING_TTL: '2s', LISTING_WRITE_INTERVAL_MS: '1000' } });
    try {
      await session(d.port, '127.0.7.1', [['ttl@trap.test']]);
      await waitForEntry(d.metricsPort, '127.0.7.1', (e) => e?.connections === 1);
      await waitUntil('the zone to list it', () => /^127\.0\.7\.1 /m.test(readOr(zoneFile(d))));
      // Last seen is rounded up to the second: gone 2 to 3 s after the message, at most.
      await waitForEntry(d.metricsPort, '127.0.7.1', (e) => e === undefined, 10_000);
      assert.doesNotMatch((await httpRequest(d.metricsPort, '/listing')).body, /127\.0\.7\.1/);
      await waitUntil('the zone to drop it', () => !/127\.0\.7\.1/.test(readOr(zoneFile(d))) && /^:127\.0\.0\.2:$/m.test(readOr(zoneFile(d))));
      const deadline = Date.now() + 10_000;
      for (;;) {
        const samples = parseExposition((await httpRequest(d.metricsPort, '/metrics')).body);
        if (sampleValue(samples, 'spamtrapd_listing_expirations_total') === 1 && sampleValue(samples, 'spamtrapd_listing_entries') === 0) break;
        assert.ok(Date.now() < deadline, 'the expired entry was never swept from memory');
        await new Promise((r) => setTimeout(r, 50));
      }
      // It comes back from zero.
      await session(d.port, '127.0.7.1', [['ttl@trap.test']]);
      const again = await waitForEntry(d.metricsPort, '127.0.7.1', (e) => e?.connections === 1);
      assert.equal(again!.messages, 1);
    } finally {
      await d.destroy();
      d.cleanup();
    }
  });

  test('SIGHUP applies a new threshold and new exclusions to the running listing', async () => {
    const d = await startDaemon({ workers: 1, env: { LISTING_WRITE_INTERVAL_MS: '1000' } });
    try {
      await session(d.port, '127.0.7.4', [['hup@trap.test']]);
      await session(d.port, '127.0.7.5', [['hup@trap.test']]);
      await waitForEntry(d.metricsPort, '127.0.7.5', (e) => e?.connections === 1);
      await waitUntil('the zone to list both', () => /^127\.0\.7\.4 /m.test(readOr(zoneFile(d))) && /^127\.0\.7\.5 /m.test(readOr(zoneFile(d))));
      // The daemon's environment does not set these, so its .env decides, and a SIGHUP reads it again.
      fs.writeFileSync(path.join(d.workDir, '.env'), 'LISTING_EXCLUDE=127.0.7.4\nLISTING_MIN_HITS=2\n');
      d.proc.kill('SIGHUP');
      await d.waitForLog(/ info listing_policy .*min_hits=2 .*exclude=127\.0\.7\.4\/32 dropped_excluded=1/);
      assert.equal(await listingEntry(d.metricsPort, '127.0.7.4'), undefined, 'an excluded entry goes at once');
      const kept = await listingEntry(d.metricsPort, '127.0.7.5');
      assert.deepEqual([kept?.messages, kept?.listed], [1, false], 'below the new threshold: kept, not listed');
      await waitUntil('the zone to list neither', () => /^:127\.0\.0\.2:$/m.test(readOr(zoneFile(d))) && !/^127\.0\.7\./m.test(readOr(zoneFile(d))));
      assert.doesNotMatch(d.logs(), /reload_deferred/);
    } finally {
      await d.destroy();
      d.cleanup();
    }
  });

  test('SIGTERM writes what the acceptors reported, between two intervals; the next start has it', async () => {
    // An interval longer than the test: only the writes at start and at the stop happen.
    const env = { LISTING_WRITE_INTERVAL_MS: '3600000' };
    const first = await startDaemon({ workers: 2, env });
    let second: Daemon | undefined;
    try {
      await session(first.port, '127.0.7.2', [['p1@trap.test'], ['p2@trap.test', 'p3@trap.test']]);
      await session(first.port, '127.0.7.2', [['p1@trap.test']]);
      // Stopped at once: the sessions' events may still be in the acceptors' batches.
      await first.stop('SIGTERM');
      assert.equal(first.exitCode, 0, first.logs());
      assert.match(readOr(stateFile(first)), /^\["127\.0\.7\.2",3,2,/m);
      second = await startDaemon({ workers: 1, env, spoolDir: first.spoolDir, configDir: first.configDir });
      const e = await listingEntry(second.metricsPort, '127.0.7.2');
      assert.deepEqual([e?.messages, e?.connections, e?.recipients, e?.helo, e?.last_end], [3, 2, 3, 'persist.example', 'quit']);
      assert.match(second.logs(), / info listing_loaded .*entries=1 /);
    } finally {
      await second?.destroy();
      await first.destroy();
      second?.cleanup();
      first.cleanup();
    }
  });

  test('a SIGKILL of the primary loses nothing the last periodic write had', async () => {
    const env = { LISTING_WRITE_INTERVAL_MS: '1000' };
    const first = await startDaemon({ workers: 1, env });
    let second: Daemon | undefined;
    try {
      await session(first.port, '127.0.7.3', [['k1@trap.test'], ['k2@trap.test']]);
      await waitForEntry(first.metricsPort, '127.0.7.3', (e) => e?.connections === 1);
      // The state file is replaced whole, so once it has the row, a write with it is on disk.
      await waitUntil('a write with the counts', () => /^\["127\.0\.7\.3",2,1,/m.test(readOr(stateFile(first))));
      process.kill(first.proc.pid!, 'SIGKILL');
      await first.waitExit(10_000);
      // Its acceptors leave when their channel to the primary closes; the group is killed to be sure.
      try {
        process.kill(-first.proc.pid!, 'SIGKILL');
      } catch {
        // already gone
      }
      // The next start waits for the dead primary's spool lock to go stale.
      second = await startDaemon({ workers: 1, env, spoolDir: first.spoolDir, configDir: first.configDir });
      const e = await listingEntry(second.metricsPort, '127.0.7.3');
      assert.deepEqual([e?.messages, e?.connections, e?.recipients], [2, 1, 2]);
      assert.match(readOr(zoneFile(second)), /^127\.0\.7\.3 \$ sent 2 messages to spamtraps/m);
    } finally {
      await second?.destroy();
      await first.destroy();
      second?.cleanup();
      first.cleanup();
    }
  });
});
