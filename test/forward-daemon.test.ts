/**
 * The forward relay inside the real daemon: it runs only while a route forwards (or a forward queue holds jobs), and
 * when the primary dies it finishes the delivery in flight, records it and exits 0 instead of leaving the job to be
 * sent again by the next start.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { SMTPServer } from 'smtp-server';
import { forwardQueueName } from '../src/spool-layout';
import { startDaemon, type Daemon } from './helpers/daemon';
import { sendMail } from './helpers/smtp-client';
import { processExists } from '../src/pid';
import { sleep, waitFor } from './helpers/waiting';

/** The internal MTA: counts the messages it was sent (DATA complete) and answers the final dot after `replyDelayMs`. */
class Mta {
  server!: SMTPServer;
  port = 0;
  /** Messages whose DATA the MTA has read, whatever it answered. */
  readonly received: Buffer[] = [];
  /** Messages it answered 250 to. */
  accepted = 0;

  constructor(private readonly replyDelayMs: number) {}

  async listen(): Promise<void> {
    this.server = new SMTPServer({
      authOptional: true,
      disabledCommands: ['AUTH', 'STARTTLS'],
      logger: false,
      onData: (stream, _session, cb) => {
        const parts: Buffer[] = [];
        stream.on('data', (c: Buffer) => parts.push(c));
        stream.on('end', () => {
          this.received.push(Buffer.concat(parts));
          setTimeout(() => {
            this.accepted++;
            cb(null, 'Ok: queued');
          }, this.replyDelayMs);
        });
      },
    });
    this.server.on('error', () => undefined);
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', () => resolve()));
    this.port = (this.server.server.address() as net.AddressInfo).port;
  }

  close(): Promise<void> {
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}

const forwardRoutes = (mta: Mta) => `rcpt=/^root@/ forward smtp://127.0.0.1:${mta.port}\n* queue incoming\n`;
const plainRoutes = '* queue incoming\n';

/** Pids of the relay processes the primary `primaryPid` forked (their command line runs workers/relay.js). */
function relayChildren(primaryPid: number): number[] {
  const out: number[] = [];
  for (const name of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${name}/stat`, 'utf8');
      // Field 4 (ppid) follows the command name, which is in parentheses and may itself hold spaces.
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === primaryPid && fs.readFileSync(`/proc/${name}/cmdline`, 'utf8').includes(`workers${path.sep}relay.js`)) out.push(Number(name));
    } catch {
      // the process ended while we looked
    }
  }
  return out;
}

function relayPidOf(logs: string): number {
  const m = / relay_started proc=relay pid=(\d+)/.exec(logs);
  assert.ok(m, `no relay_started line in:\n${logs}`);
  return Number(m[1]);
}

/** Files in the forward queue's queue/ (jobs) and in the relay's state dir for it. */
function leftovers(spool: string, queue: string): string[] {
  const ls = (d: string) => (fs.existsSync(d) ? fs.readdirSync(d).map((f) => path.relative(spool, path.join(d, f))) : []);
  return [...ls(path.join(spool, queue, 'queue')), ...ls(path.join(spool, '.relay-state', queue))];
}

const daemons: Daemon[] = [];
const mtas: Mta[] = [];
after(async () => {
  for (const d of daemons) await d.destroy();
  for (const d of daemons) d.cleanup();
  for (const m of mtas) await m.close();
});

async function mta(replyDelayMs = 0): Promise<Mta> {
  const m = new Mta(replyDelayMs);
  await m.listen();
  mtas.push(m);
  return m;
}

describe('the relay process in the daemon', () => {
  test('runs only while a route forwards: none by default, forked on a reload that forwards, retired (exit 0) on one that does not', async () => {
    const m = await mta();
    const d = await startDaemon({ workers: 1 });
    daemons.push(d);
    const primary = d.proc.pid!;
    assert.deepEqual(relayChildren(primary), [], 'no relay with the default routes');

    fs.writeFileSync(path.join(d.configDir, 'routes'), forwardRoutes(m));
    process.kill(primary, 'SIGHUP');
    await d.waitForLog(/ relay_started proc=relay /);
    const relay = relayPidOf(d.logs());
    assert.deepEqual(relayChildren(primary), [relay]);
    // The only relay_starting is the reload's: none was forked at the start.
    assert.deepEqual(d.logs().match(/ relay_starting .*/g)?.map((l) => / why=(\S+)/.exec(l)?.[1]), ['reload']);

    // It forwards, and its queue is empty again afterwards.
    const q = forwardQueueName('127.0.0.1', m.port);
    const r = await sendMail(d.port, { from: '<spam@bad.example>', to: ['<root@trap.test>'], data: 'Subject: while forwarding\r\n\r\nhi\r\n' });
    assert.equal(r.dataReply?.code, 250, r.dataReply?.raw);
    await waitFor('the forwarded copy delivered and its job finished', () => m.accepted === 1 && leftovers(d.spoolDir, q).length === 0, 20_000);

    fs.writeFileSync(path.join(d.configDir, 'routes'), plainRoutes);
    process.kill(primary, 'SIGHUP');
    await d.waitForLog(/ relay_retiring proc=primary /);
    await d.waitForLog(new RegExp(` relay_stopped proc=primary pid=${relay} code=0`));
    assert.match(d.logs(), new RegExp(` relay_exit proc=relay pid=${relay} code=0`));
    assert.deepEqual(relayChildren(primary), []);
    assert.doesNotMatch(d.logs(), /worker_died/);
    assert.equal(m.received.length, 1);

    await d.stop('SIGTERM');
    assert.equal(d.exitCode, 0, d.logs());
  });

  test('primary SIGKILLed while the MTA holds the DATA: the relay finishes that delivery, records it, exits 0; sent once, also after a restart', async () => {
    const m = await mta(1500);
    const d = await startDaemon({ workers: 1, routes: forwardRoutes(m), env: { SHUTDOWN_GRACE_MS: '10000' } });
    daemons.push(d);
    await d.waitForLog(/ relay_started proc=relay /);
    const relay = relayPidOf(d.logs());
    const q = forwardQueueName('127.0.0.1', m.port);

    const r = await sendMail(d.port, { from: '<spam@bad.example>', to: ['<root@trap.test>'], data: 'Subject: in flight\r\n\r\nhi\r\n' });
    assert.equal(r.dataReply?.code, 250, r.dataReply?.raw);
    // The relay finds the new queue at its next spool listing (every 5 s), then sends.
    await waitFor('the MTA has the DATA', () => m.received.length === 1, 20_000);
    assert.equal(m.accepted, 0, 'the MTA has not answered yet');

    process.kill(d.proc.pid!, 'SIGKILL');
    await d.waitExit(5000);
    const killedAt = Date.now();
    // The relay's stderr is still the pipe this test reads, so its lines keep coming after the primary is gone.
    await waitFor('relay_stopping', () => new RegExp(` relay_stopping proc=relay pid=${relay} why="primary gone"`).test(d.logs()), 5000);
    await waitFor('the relay to exit', () => !processExists(relay), 15_000);
    assert.ok(Date.now() - killedAt < 10_000, 'within SHUTDOWN_GRACE_MS');
    await waitFor('its last lines', () => / relay_exit proc=relay /.test(d.logs()), 2000);
    const after = d.logs().slice(d.logs().indexOf(' relay_stopping '));
    assert.match(after, new RegExp(` forward_attempt proc=relay pid=${relay} queue=${q} .*result=delivered`), 'the delivery in flight finished');
    assert.match(after, new RegExp(` relay_exit proc=relay pid=${relay} code=0`));
    assert.equal(m.accepted, 1);
    assert.deepEqual(leftovers(d.spoolDir, q), [], 'the job finished and its state removed');

    // A new trap on the same spool: nothing is left to send again.
    const d2 = await startDaemon({ workers: 1, spoolDir: d.spoolDir, configDir: d.configDir });
    daemons.push(d2);
    await d2.waitForLog(new RegExp(` relay_destination proc=relay pid=\\d+ queue=${q} `), 15_000);
    // A job left behind would be due at once: the relay's first pickups (every second) would have sent it by now.
    await sleep(3000);
    assert.equal(m.received.length, 1, 'the MTA got the message exactly once');
    assert.doesNotMatch(d2.logs(), /forward_attempt|forward_ambiguous/);
    await d2.stop('SIGTERM');
    assert.equal(d2.exitCode, 0, d2.logs());
  });
});
