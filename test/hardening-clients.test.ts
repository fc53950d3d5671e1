/**
 * Slow and greedy clients against the real daemon: an idle session and a slow-drip DATA are cut with 421 and
 * counted as timeouts, nothing filed; a connection over the per-worker or per-IP cap gets 421, never a refused or
 * silent TCP connection.
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, describe, test } from 'node:test';
import { startDaemon, type Daemon } from './helpers/daemon';
import { RawSmtp } from './helpers/smtp-client';
import { rejections, waitRejections } from './helpers/prometheus';
import { inspectSpool, tmpLeftovers } from './helpers/queues';
import { sleep } from './helpers/waiting';

/** Connects from `localAddress` and returns the first reply line, and whether the server then closed. */
async function firstLine(port: number, localAddress: string): Promise<{ line: string; socket: net.Socket; closed: () => boolean }> {
  const socket = net.connect({ port, host: '127.0.0.1', localAddress });
  let buf = '';
  let closed = false;
  socket.setEncoding('latin1');
  socket.on('data', (d: string) => (buf += d));
  socket.on('close', () => (closed = true));
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  const deadline = Date.now() + 5000;
  while (!buf.includes('\r\n')) {
    if (closed || Date.now() > deadline) throw new Error(`no greeting from ${localAddress} (got ${JSON.stringify(buf)})`);
    await sleep(10);
  }
  return { line: buf.slice(0, buf.indexOf('\r\n')), socket, closed: () => closed };
}

async function waitClosed(c: { closed: () => boolean }, what: string): Promise<void> {
  const deadline = Date.now() + 5000;
  while (!c.closed()) {
    if (Date.now() > deadline) throw new Error(`${what}: the server did not close`);
    await sleep(10);
  }
}

describe('slow clients', () => {
  let d: Daemon;
  before(async () => {
    d = await startDaemon({ workers: 1, env: { IDLE_TIMEOUT_MS: '1000', DATA_TIMEOUT_MS: '1500' } });
  });
  after(async () => {
    await d?.destroy();
    d?.cleanup();
  });

  test('idle in the command phase: 421 and close after IDLE_TIMEOUT_MS, counted as timeout', async () => {
    const before = (await rejections(d.metricsPort)).timeout ?? 0;
    const c = await RawSmtp.connect(d.port);
    try {
      await c.read();
      await c.cmd('EHLO idle.example');
      const started = Date.now();
      const r = await c.read(5000);
      const waited = Date.now() - started;
      assert.equal(r.code, 421, r.raw);
      assert.match(r.text, /^Timeout/);
      assert.ok(waited >= 900 && waited < 4000, `cut after ${waited} ms`);
      await c.waitClosed(2000);
    } finally {
      c.close();
    }
    await waitRejections(d.metricsPort, 'timeout', before + 1);
  });

  test('slow-drip DATA (one byte per 100 ms): 421 at DATA_TIMEOUT_MS although never idle, nothing filed', async () => {
    const before = (await rejections(d.metricsPort)).timeout ?? 0;
    const c = await RawSmtp.connect(d.port);
    let drip: NodeJS.Timeout | undefined;
    try {
      await c.read();
      await c.cmd('EHLO drip.example');
      await c.cmd('MAIL FROM:<drip@spam.example>');
      await c.cmd('RCPT TO:<trap@bait.example>');
      assert.equal((await c.cmd('DATA')).code, 354);
      const started = Date.now();
      // Faster than the idle timeout, so only the DATA deadline can end it.
      drip = setInterval(() => !c.closed && c.write('x'), 100);
      const r = await c.read(6000);
      const waited = Date.now() - started;
      assert.equal(r.code, 421, r.raw);
      assert.match(r.text, /message not received in time/);
      assert.ok(waited >= 1400 && waited < 5000, `cut after ${waited} ms`);
      await c.waitClosed(2000);
    } finally {
      clearInterval(drip);
      c.close();
    }
    await waitRejections(d.metricsPort, 'timeout', before + 1);
    await sleep(200);
    assert.deepEqual(await inspectSpool(d.spoolDir), [], 'nothing filed');
    assert.deepEqual(await tmpLeftovers(d.spoolDir), [], 'no tmp file left');
  });
});

describe('greedy clients', () => {
  let d: Daemon;
  const open: net.Socket[] = [];
  before(async () => {
    d = await startDaemon({ workers: 1, env: { MAX_CONNECTIONS_PER_WORKER: '5', MAX_CONNECTIONS_PER_IP: '3' } });
  });
  after(async () => {
    for (const s of open) s.destroy();
    await d?.destroy();
    d?.cleanup();
  });

  test('per-IP cap, then the per-worker cap: 421 and close, never a refused connection; other addresses unaffected', async () => {
    const held = [];
    for (let i = 0; i < 3; i++) {
      const c = await firstLine(d.port, '127.0.0.1');
      open.push(c.socket);
      assert.match(c.line, /^220 /, `connection ${i + 1} from 127.0.0.1`);
      held.push(c);
    }
    const overIp = await firstLine(d.port, '127.0.0.1');
    open.push(overIp.socket);
    assert.match(overIp.line, /^421 .*too many connections from your address/);
    await waitClosed(overIp, 'over the per-IP cap');

    // Another client address is counted on its own: two more fill the worker's five.
    for (let i = 0; i < 2; i++) {
      const c = await firstLine(d.port, '127.0.0.2');
      open.push(c.socket);
      assert.match(c.line, /^220 /, `connection ${i + 1} from 127.0.0.2`);
      held.push(c);
    }
    const overWorker = await firstLine(d.port, '127.0.0.3');
    open.push(overWorker.socket);
    assert.match(overWorker.line, /^421 .*Too many connected clients/);
    await waitClosed(overWorker, 'over the per-worker cap');

    // A freed slot is usable again at once.
    held[0].socket.destroy();
    await waitClosed(held[0], 'client-side close');
    await sleep(100);
    const again = await firstLine(d.port, '127.0.0.3');
    open.push(again.socket);
    assert.match(again.line, /^220 /);

    await waitRejections(d.metricsPort, 'connection_limit_ip', 1);
    await waitRejections(d.metricsPort, 'connection_limit', 1);
  });
});
