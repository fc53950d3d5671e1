/**
 * bench/floor-receiver.ts is the bench's yardstick, so it must never be the reason a flood errors: pipelined
 * commands answered in order, a message and its terminator split anywhere across TCP segments, several messages per
 * connection, and in write mode one file per message holding exactly the bytes between DATA and the final dot.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { endOfDataIn } from '../bench/floor-receiver';
import { RawSmtp } from './helpers/smtp-client';
import { builtRoot } from './helpers/paths';
import { freePort } from './helpers/sockets';

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

async function startFloor(mode: 'discard' | 'write', dir: string): Promise<{ child: ChildProcess; port: number }> {
  const port = await freePort();
  const child = spawn(process.execPath, [path.join(builtRoot(), 'bench', 'floor-receiver.js'), mode, '127.0.0.1', String(port), '1', dir], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let out = '';
  child.stdout?.setEncoding('utf8').on('data', (d: string) => (out += d));
  const deadline = Date.now() + 15_000;
  while (!/ listening proc=acceptor0 pid=\d+/.test(out)) {
    if (Date.now() > deadline || child.exitCode !== null) throw new Error(`floor did not listen:\n${out}`);
    await sleep(20);
  }
  return { child, port };
}

let dir = '';
let writer: { child: ChildProcess; port: number };
let discarder: { child: ChildProcess; port: number };

before(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'floor-test-'));
  [writer, discarder] = await Promise.all([startFloor('write', dir), startFloor('discard', os.tmpdir())]);
});

after(() => {
  writer?.child.kill('SIGTERM');
  discarder?.child.kill('SIGTERM');
  fs.rmSync(dir, { recursive: true, force: true });
});

const stored = () => fs.readdirSync(dir).sort((a, b) => Number(a.split('.')[1]) - Number(b.split('.')[1])).map((n) => fs.readFileSync(path.join(dir, n), 'latin1'));

test('endOfDataIn finds CRLF.CRLF wherever it falls between the kept tail and the chunk', () => {
  const data = Buffer.from('ab\r\n..x\r\n.\r\nQUIT\r\n');
  const end = data.indexOf('\r\n.\r\n', 0, 'latin1') + 5;
  for (let cut = 0; cut <= data.length; cut++) {
    const first = data.subarray(0, cut);
    const second = data.subarray(cut);
    const tail = Buffer.concat([Buffer.from('\r\n'), first]).subarray(-4);
    const inFirst = endOfDataIn(Buffer.from('\r\n'), first);
    if (cut >= end) assert.equal(inFirst, end, `cut ${cut}: found in the first chunk`);
    else assert.equal(endOfDataIn(tail, second), end - cut, `cut ${cut}: found in the second chunk`);
  }
  assert.equal(endOfDataIn(Buffer.from('\r\n'), Buffer.from('.\r\n')), 3, 'an empty message ends at once');
  assert.equal(endOfDataIn(Buffer.from('\r\n'), Buffer.from('..\r\n')), -1, 'a stuffed dot line is data');
});

test('write mode: pipelined commands, split terminators, several messages per connection, one file each', async () => {
  const c = await RawSmtp.connect(writer.port);
  try {
    assert.equal((await c.read()).code, 220);
    c.write('EHLO bench\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<t@trap.example>\r\nDATA\r\n');
    const ehlo = await c.read();
    assert.equal(ehlo.code, 250);
    assert.ok(ehlo.lines.includes('250-PIPELINING'), ehlo.raw);
    assert.equal((await c.read()).code, 250);
    assert.equal((await c.read()).code, 250);
    assert.equal((await c.read()).code, 354);
    // The message, its terminator and the next command cut into pieces that arrive one by one.
    for (const piece of ['Subject: one\r\n', '\r\nbody\r', '\n..dot line', '\r', '\n.', '\r', '\nMAIL FROM:<a@b.example>\r\n']) {
      c.write(piece);
      await sleep(15);
    }
    assert.equal((await c.read()).code, 250, 'end of the first message');
    assert.equal((await c.read()).code, 250, 'MAIL of the second, sent in the same segment as the dot');
    assert.equal((await c.cmd('RCPT TO:<t@trap.example>')).code, 250);
    assert.equal((await c.cmd('DATA')).code, 354);
    c.write('.\r\nRSET\r\nNOOP\r\n');
    assert.equal((await c.read()).code, 250, 'an empty message');
    assert.equal((await c.read()).code, 250, 'RSET');
    assert.equal((await c.read()).code, 250, 'NOOP');
    assert.equal((await c.cmd('HELO again')).code, 250);
    assert.equal((await c.cmd('MAIL FROM:<>')).code, 250);
    assert.equal((await c.cmd('RCPT TO:<t@trap.example>')).code, 250);
    assert.equal((await c.cmd('DATA')).code, 354);
    const big = 'x'.repeat(78) + '\r\n';
    c.write(big.repeat(5000) + '.\r\n');
    assert.equal((await c.read()).code, 250, 'a 400 KB message');
    assert.equal((await c.cmd('QUIT')).code, 221);
    await c.waitClosed();
  } finally {
    c.close();
  }
  assert.deepEqual(stored(), ['Subject: one\r\n\r\nbody\r\n..dot line\r\n', '', ('x'.repeat(78) + '\r\n').repeat(5000)]);
});

test('discard mode answers a whole transaction and closes on QUIT', async () => {
  const c = await RawSmtp.connect(discarder.port);
  try {
    assert.equal((await c.read()).code, 220);
    for (const [cmd, code] of [['HELO bench', 250], ['MAIL FROM:<a@b.example>', 250], ['RCPT TO:<t@trap.example>', 250], ['DATA', 354]] as const) {
      assert.equal((await c.cmd(cmd)).code, code, cmd);
    }
    c.write('hello\r\n.\r\nBDAT 1\r\n');
    assert.equal((await c.read()).code, 250);
    assert.equal((await c.read()).code, 502, 'unknown commands are refused, not fatal');
    assert.equal((await c.cmd('QUIT')).code, 221);
    await c.waitClosed();
  } finally {
    c.close();
  }
});
