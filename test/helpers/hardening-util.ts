/**
 * Shared checks for the hardening tests: what a Perl consumer would find in the spool, the daemon's rejection
 * counters, and process/port liveness after kills. Every wait is bounded.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { DirQueueReader, findQueueDirs, parseControl } from '../../src/dirqueue';

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export async function waitFor(what: string, cond: () => boolean | Promise<boolean>, timeoutMs = 10_000, stepMs = 20): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for: ${what}`);
    await sleep(stepMs);
  }
}

export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code !== 'ESRCH';
  }
}

/** slot -> pids in the order they announced `listening` (the last one is the current acceptor of that slot). */
export function acceptorPids(logs: string): Map<number, number[]> {
  const out = new Map<number, number[]>();
  for (const m of logs.matchAll(/ info listening proc=acceptor(\d+) pid=(\d+)/g)) {
    const slot = Number(m[1]);
    out.set(slot, [...(out.get(slot) ?? []), Number(m[2])]);
  }
  return out;
}

/** The pid each acceptor slot runs now (the last `listening` line of the slot). */
export function currentAcceptorPids(logs: string): number[] {
  return [...acceptorPids(logs).values()].map((pids) => pids[pids.length - 1]);
}

/** Resolves 'connected' or the connect error's code ('ECONNREFUSED' once nothing listens). */
export function tryConnect(port: number, host = '127.0.0.1', timeoutMs = 2000): Promise<string> {
  return new Promise((resolve) => {
    const s = net.connect({ port, host });
    const t = setTimeout(() => {
      s.destroy();
      resolve('timeout');
    }, timeoutMs);
    s.once('connect', () => {
      clearTimeout(t);
      s.destroy();
      resolve('connected');
    });
    s.once('error', (e: NodeJS.ErrnoException) => {
      clearTimeout(t);
      resolve(e.code ?? e.message);
    });
  });
}

export function httpGet(port: number, pathname = '/metrics'): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path: pathname, timeout: 5000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => resolve(body));
    });
    req.on('timeout', () => req.destroy(new Error('metrics scrape timed out')));
    req.on('error', reject);
  });
}

/** spamtrapd_rejections_total by reason, as scraped now. */
export async function rejections(metricsPort: number): Promise<Record<string, number>> {
  const text = await httpGet(metricsPort);
  const out: Record<string, number> = {};
  for (const m of text.matchAll(/^spamtrapd_rejections_total\{reason="([^"]*)"\} (\S+)$/gm)) out[m[1]] = Number(m[2]);
  return out;
}

/** Waits until the scraped counter for `reason` reaches `atLeast` (workers push once per interval). */
export async function waitRejections(metricsPort: number, reason: string, atLeast: number, timeoutMs = 5000): Promise<number> {
  let last = 0;
  await waitFor(
    `spamtrapd_rejections_total{reason="${reason}"} >= ${atLeast} (last ${last})`,
    async () => (last = (await rejections(metricsPort))[reason] ?? 0) >= atLeast,
    timeoutMs,
    100,
  );
  return last;
}

export interface StoredJob {
  queue: string;
  jobId: string;
  data: Buffer;
  metadata: Record<string, string>;
}

/**
 * Reads every job of every queue under the spool the way a consumer sees it, without taking any, and asserts that
 * each is complete: the control file parses, names an existing data file under this queue, and QDSB is its size.
 */
export async function inspectSpool(spoolDir: string): Promise<StoredJob[]> {
  const out: StoredJob[] = [];
  for (const dir of await findQueueDirs(spoolDir)) {
    const queue = path.relative(spoolDir, dir);
    const qdir = path.join(dir, 'queue');
    if (!fs.existsSync(qdir)) continue;
    for (const name of fs.readdirSync(qdir).sort()) {
      const ctrl = parseControl(fs.readFileSync(path.join(qdir, name)));
      const qdfn = ctrl.fields['QDFN'];
      assert.ok(qdfn, `${queue}/${name}: control file has QDFN`);
      assert.ok(qdfn.startsWith(path.join(dir, 'data') + path.sep), `${queue}/${name}: QDFN ${qdfn} inside the queue's data/`);
      assert.ok(fs.existsSync(qdfn), `${queue}/${name}: data file ${qdfn} exists`);
      const data = fs.readFileSync(qdfn);
      assert.equal(Number(ctrl.fields['QDSB']), data.length, `${queue}/${name}: QDSB equals the data file's size`);
      out.push({ queue, jobId: name, data, metadata: ctrl.metadata });
    }
  }
  return out;
}

/** Files left in any queue's tmp/ (consumers' `.active` locks excluded: they are not ours). */
export async function tmpLeftovers(spoolDir: string): Promise<string[]> {
  const out: string[] = [];
  for (const dir of await findQueueDirs(spoolDir)) {
    const tmp = path.join(dir, 'tmp');
    if (!fs.existsSync(tmp)) continue;
    for (const n of fs.readdirSync(tmp)) if (!n.endsWith('.active')) out.push(path.join(tmp, n));
  }
  return out;
}

/** Takes and finishes every job in one queue, the way a consumer empties it. */
export async function consume(queueDir: string): Promise<Buffer[]> {
  if (!fs.existsSync(queueDir)) return [];
  const reader = new DirQueueReader(queueDir, { warn: () => undefined });
  const out: Buffer[] = [];
  for (let job = await reader.pickup(); job; job = await reader.pickup()) {
    out.push(await job.readData());
    await job.finish();
  }
  return out;
}


/**
 * Our Received header (the first line and every continuation line, which starts with SP or HTAB) and the rest.
 * A client's message that began with white space would be unfolded into our header by every reader, so it shows
 * up here as a `rest` that lost its first line.
 */
export function splitReceived(data: Buffer): { received: string; unfolded: string; rest: Buffer } {
  const text = data.toString('latin1');
  assert.ok(text.startsWith('Received: from '), `stored message starts with our Received header: ${JSON.stringify(text.slice(0, 80))}`);
  let end = text.indexOf('\r\n');
  while (end >= 0 && (text[end + 2] === '\t' || text[end + 2] === ' ')) end = text.indexOf('\r\n', end + 2);
  assert.ok(end >= 0, 'the Received header ends with CRLF');
  const received = text.slice(0, end + 2);
  return { received, unfolded: received.slice(0, -2).replace(/\r\n(?=[ \t])/g, ''), rest: data.subarray(end + 2) };
}

/**
 * The shape of our header once unfolded: one field, every part in place, the date last. White space is SP or TAB,
 * the only kinds the header has: `\s` would also take the byte 0xA0 that splitReceived's latin1 decoding makes of
 * UTF-8 (U+05E0 is D7 A0), and reject a well-formed header with such a character in an address.
 */
export const RECEIVED_SHAPE =
  /^Received: from [^\r\n]* \([^ \t]+ \[[^\] \t]+\]\)[ \t]+by [^ \t]+ \(spamtrapd\/[^ \t]+\)[ \t]+with E?SMTPS? ident=unknown[ \t]+MAIL_FROM=<[^ \t<>]*>([ \t]+RCPT_TO=<[^ \t<>,;]*>(,<[^ \t<>,;]*>)*)+[ \t]*; (Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} \d\d:\d\d:\d\d \+0000$/;

/** data/ files that no control file in queue/ points at: what a crash between the two links would leave. */
export async function dataOrphans(spoolDir: string): Promise<string[]> {
  const out: string[] = [];
  for (const dir of await findQueueDirs(spoolDir)) {
    const referenced = new Set<string>();
    const qdir = path.join(dir, 'queue');
    if (fs.existsSync(qdir)) {
      for (const n of fs.readdirSync(qdir)) referenced.add(parseControl(fs.readFileSync(path.join(qdir, n))).fields['QDFN'] ?? '');
    }
    const walk = (d: string) => {
      if (!fs.existsSync(d)) return;
      for (const e of fs.readdirSync(d, { withFileTypes: true })) {
        const p = path.join(d, e.name);
        if (e.isDirectory()) walk(p);
        else if (!referenced.has(p)) out.push(p);
      }
    };
    walk(path.join(dir, 'data'));
  }
  return out;
}
