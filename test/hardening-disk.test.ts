/**
 * Full disks and I/O errors. A real full file system (a 256 KiB tmpfs as the spool) must give 452 and leave nothing
 * partial, and the trap must accept again by itself once space returns. EIO and EACCES cannot be produced on demand
 * (root ignores permission bits), so they are injected at the queue writer's file-system boundary, under the
 * session data path that turns them into 451.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { after, describe, test } from 'node:test';
import { DEFAULT_ROUTES } from '../src/config/routes';
import { DirQueueWriter, parseControl, type DirQueueFs } from '../src/dirqueue';
import { createLogger } from '../src/log';
import { Spool } from '../src/spool';
import { createSessionHandlers, type TrapObserver } from '../src/smtp/session';
import { startDaemon, type Daemon } from './helpers/daemon';
import { RawSmtp, sendMail } from './helpers/smtp-client';
import { rejections, waitRejections } from './helpers/prometheus';
import { inspectSpool, tmpLeftovers } from './helpers/queues';

function body(n: number, size: number): string {
  const line = `${'d'.repeat(76)}\r\n`;
  return `Subject: disk ${n}\r\n\r\n${line.repeat(Math.ceil(size / line.length))}`;
}

describe('full disk (tmpfs spool)', () => {
  let mountPoint: string | null = null;
  let workDir: string | null = null;
  let d: Daemon | null = null;
  after(async () => {
    await d?.destroy();
    d?.cleanup();
    if (mountPoint) execFileSync('umount', ['-l', mountPoint]);
    if (workDir) fs.rmSync(workDir, { recursive: true, force: true });
  });

  test('a full spool gives 452, leaves nothing partial, is counted, and the trap accepts again once space returns', async (t) => {
    workDir = fs.mkdtempSync(path.join(os.tmpdir(), 'spamtrapd-disk-'));
    const dir = path.join(workDir, 'spool');
    fs.mkdirSync(dir);
    try {
      execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=256k', 'tmpfs', dir], { stdio: 'pipe' });
      mountPoint = dir;
    } catch (err) {
      const why = `cannot mount a tmpfs (needs root or CAP_SYS_ADMIN): ${(err as Error).message.split('\n')[0]}`;
      if (process.env.CI) assert.fail(why);
      t.skip(why);
      return;
    }
    d = await startDaemon({ workers: 1, spoolDir: dir });
    const [acceptorPid] = /listening proc=acceptor0 pid=(\d+)/.exec(d.logs())!.slice(1);

    const codes: number[] = [];
    let full: { code: number; text: string } | null = null;
    // 16 KiB each: the 256 KiB file system fills after about fifteen; the bound only stops a trap that never says 452.
    for (let n = 0; n < 100 && !full; n++) {
      const { dataReply } = await sendMail(d.port, { from: '<a@spam.example>', to: ['<trap@bait.example>'], data: body(n, 16 * 1024) });
      assert.ok(dataReply, 'the recipient was accepted');
      codes.push(dataReply.code);
      if (dataReply.code !== 250) full = { code: dataReply.code, text: dataReply.text };
    }
    assert.ok(full, `the disk never filled: ${codes.join(',')}`);
    assert.equal(full.code, 452, `the first refusal: ${full.code} ${full.text}`);
    assert.match(full.text, /Insufficient system storage/);
    assert.ok(codes.filter((c) => c === 250).length >= 5, 'some messages were filed before the disk filled');

    const storedWhenFull = await inspectSpool(dir);
    assert.equal(storedWhenFull.length, codes.filter((c) => c === 250).length, 'exactly the acknowledged messages are queued');
    assert.deepEqual(await tmpLeftovers(dir), [], 'the refused message left nothing in tmp/');
    await waitRejections(d.metricsPort, 'queue_error', 1);

    // Still full: a second try is refused the same way, counted again, and the session goes on in step (the
    // refusal came after the final dot, so no byte of the message is read as a command).
    const c = await RawSmtp.connect(d.port);
    try {
      await c.read();
      await c.cmd('EHLO full.example');
      await c.cmd('MAIL FROM:<a@spam.example>');
      await c.cmd('RCPT TO:<trap@bait.example>');
      assert.equal((await c.cmd('DATA')).code, 354);
      // Lines that would end the session if the trap ever read the body as commands.
      c.write(`Subject: full\r\n\r\n${'QUIT\r\n'.repeat(3000)}.\r\n`);
      const refused = await c.read(10_000);
      assert.equal(refused.code, 452, refused.raw);
      assert.equal((await c.cmd('NOOP')).code, 250, 'the next reply answers the next command');
      assert.equal((await c.cmd('QUIT')).code, 221);
    } finally {
      c.close();
    }
    await waitRejections(d.metricsPort, 'queue_error', 2);

    // A consumer takes the jobs (finish() unlinks the control file, then the data file). Done by hand here: a
    // consumer's pickup needs a lock file in tmp/, which a full tmpfs may refuse.
    for (const j of storedWhenFull) {
      const q = path.join(dir, j.queue);
      const ctrl = path.join(q, 'queue', j.jobId);
      const qdfn = parseControl(fs.readFileSync(ctrl)).fields['QDFN']!;
      fs.unlinkSync(ctrl);
      fs.unlinkSync(qdfn);
    }
    const after = await sendMail(d.port, { from: '<a@spam.example>', to: ['<trap@bait.example>'], data: body(1000, 16 * 1024) });
    assert.equal(after.dataReply?.code, 250, 'accepting again without a restart');
    assert.equal((await inspectSpool(dir)).length, 1);
    assert.doesNotMatch(d.logs(), /worker_died/);
    assert.match(d.logs(), new RegExp(`listening proc=acceptor0 pid=${acceptorPid} `));
    assert.equal((d.logs().match(/ info listening /g) ?? []).length, 1, 'the same acceptor served throughout');
    assert.ok(((await rejections(d.metricsPort)).queue_error ?? 0) >= 2);
  });
});

/**
 * Wraps the real fs so that one operation fails with `code`. Writes fail through the returned file handle: `write`
 * at the first write of the data file (the Received header), `body` at the second (inside the message stream).
 */
function faultyFs(op: 'open' | 'write' | 'body' | 'link', code: string): DirQueueFs {
  const fail = (what: string) => Object.assign(new Error(`${code}: injected at ${what}`), { code });
  return {
    open: (async (p: fs.PathLike, flags?: string | number, mode?: fs.Mode) => {
      if (op === 'open' && String(p).endsWith('.data')) throw fail(`open ${p}`);
      const h = await fsp.open(p, flags, mode);
      if ((op !== 'write' && op !== 'body') || !String(p).endsWith('.data')) return h;
      let writes = 0;
      return new Proxy(h, {
        get(target, prop, receiver) {
          if (prop === 'write') {
            return (...args: unknown[]) =>
              ++writes === (op === 'write' ? 1 : 2) ? Promise.reject(fail(`write #${writes}`)) : (target.write as (...a: unknown[]) => unknown)(...args);
          }
          const v = Reflect.get(target, prop, receiver);
          return typeof v === 'function' ? v.bind(target) : v;
        },
      });
    }) as DirQueueFs['open'],
    link: (async (a: fs.PathLike, b: fs.PathLike) => {
      if (op === 'link') throw fail(`link ${b}`);
      return fsp.link(a, b);
    }) as DirQueueFs['link'],
    unlink: fsp.unlink,
    mkdir: fsp.mkdir,
    lstat: fsp.lstat,
  };
}

class FaultySpool extends Spool {
  constructor(dir: string, private readonly faulty: DirQueueFs) {
    super(dir, { fsync: false });
  }
  override writer(queue: string): DirQueueWriter {
    return new DirQueueWriter(this.queueDir(queue), { fs: this.faulty });
  }
}

function filesUnder(dir: string): string[] {
  if (!fs.existsSync(dir)) return [];
  return fs.readdirSync(dir, { recursive: true, withFileTypes: true }).filter((e) => e.isFile()).map((e) => path.join(e.parentPath, e.name));
}

/** One DATA phase through the session handlers; resolves with the reply code smtp-server would send. */
async function fileThrough(spool: Spool, rejected: string[]): Promise<{ code: number; message: string }> {
  const observer: TrapObserver = {
    connectionSeen() {},
    proxyLocal() {},
    proxyRejected() {},
    connectionOpened() {},
    connectionClosed() {},
    earlyTalker() {},
    tlsSession() {},
    recipient() {},
    rejection: (reason) => rejected.push(reason),
    accepted() {},
  };
  const h = createSessionHandlers({
    settings: { me: 'trap.test', version: 'test', maxConnectionsPerIp: 0 },
    ruleSet: () => ({ rules: [], routes: [...DEFAULT_ROUTES], defaultCode: 'OK' }),
    spool,
    reverseLookup: async () => null,
    observer,
    intel: { filed() {}, ended() {} },
    log: createLogger('error', {}, () => undefined),
    accepting: () => true,
  });
  const session = {
    id: 'cid1',
    remoteAddress: '192.0.2.1',
    openingCommand: 'EHLO',
    secure: false,
    trapHelo: 'bot.example',
    envelope: { mailFrom: { address: 'a@spam.example', args: false }, rcptTo: [{ address: 'trap@bait.example', args: false }] },
  } as never;
  await new Promise<void>((resolve, reject) => h.onConnect!(session, (err) => (err ? reject(err) : resolve())));
  const payload = Buffer.from(`Subject: io\r\n\r\n${'b'.repeat(100_000)}\r\n`);
  // Two chunks, as a socket delivers them: the first write carries the Received header with the first chunk,
  // so a fault at 'body' (the second write) hits the message in the middle.
  const stream = Object.assign(Readable.from([payload.subarray(0, 50_000), payload.subarray(50_000)]), {
    sizeExceeded: false,
    byteLength: payload.length,
  });
  return new Promise((resolve) => {
    h.onData!(stream as never, session, (err, reply) => {
      const e = err as (Error & { responseCode?: number }) | null;
      resolve(e ? { code: e.responseCode ?? 0, message: e.message } : { code: 250, message: String(reply) });
    });
  });
}

describe('I/O errors at the queue writer (injected)', () => {
  const dirs: string[] = [];
  after(() => {
    for (const dir of dirs) fs.rmSync(dir, { recursive: true, force: true });
  });

  for (const op of ['open', 'write', 'body', 'link'] as const) {
    for (const code of ['EIO', 'EACCES']) {
      test(`${code} at ${op}: 451, no file left, counted as queue_error`, async () => {
        const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'spamtrapd-io-'));
        dirs.push(dir);
        const rejected: string[] = [];
        const reply = await fileThrough(new FaultySpool(dir, faultyFs(op, code)), rejected);
        assert.equal(reply.code, 451, reply.message);
        assert.match(reply.message, /try again later/);
        assert.deepEqual(rejected, ['queue_error']);
        assert.deepEqual(filesUnder(dir), [], 'no tmp, data or queue file left');
      });
    }
  }

  test('ENOSPC inside the message body (injected): 452, nothing left', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'spamtrapd-io-'));
    dirs.push(dir);
    const rejected: string[] = [];
    const reply = await fileThrough(new FaultySpool(dir, faultyFs('body', 'ENOSPC')), rejected);
    assert.equal(reply.code, 452, reply.message);
    assert.deepEqual(rejected, ['queue_error']);
    assert.deepEqual(filesUnder(dir), []);
  });

  test('the same path without a fault files the message (the harness itself works)', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'spamtrapd-io-'));
    dirs.push(dir);
    const rejected: string[] = [];
    const reply = await fileThrough(new FaultySpool(dir, { open: fsp.open, link: fsp.link, unlink: fsp.unlink, mkdir: fsp.mkdir, lstat: fsp.lstat }), rejected);
    assert.equal(reply.code, 250, reply.message);
    assert.deepEqual(rejected, []);
    assert.equal(filesUnder(path.join(dir, 'incoming', 'queue')).length, 1);
  });
});
