/**
 * Builds the project's unchanged Dockerfile for real and runs the image: SMTP transaction, /healthz, the image's
 * own HEALTHCHECK command, a message filed in the spool inside the container's root, and port 25 bound by the
 * non-root USER with the documented sysctl. The heavy lifting is in test/container/build-and-run.sh (runnable
 * by hand); this file drives it and judges the results.
 *
 * Skips only where podman cannot be installed (not root, no apt); under CI that is a failure instead.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { sendMail } from './helpers/smtp-client';
import { parseControl } from '../src/dirqueue';
import { repoRoot } from './helpers/paths';
import { freePort } from './helpers/sockets';
import { httpRequest } from './helpers/http';
import { NODE_FLAGS } from '../src/primary/node-flags';

const ROOT = repoRoot();
const SCRIPT = path.join(ROOT, 'test', 'container', 'build-and-run.sh');
const INSTALL = path.join(ROOT, 'scripts', 'install-container-tools.sh');
// Where scripts/install-container-tools.sh puts each tool, whether it came from PATH or from apt.
const TOOLS_BIN = path.join(ROOT, '.tools', 'bin');
const PODMAN = path.join(TOOLS_BIN, 'podman');
const TAG = `localhost/spamtrapd:test-${process.pid}`;

function toolsReady(): boolean {
  return ['podman', 'mmdebstrap', 'unshare'].every((t) => fs.existsSync(path.join(TOOLS_BIN, t)));
}

/** Why the image cannot be built here, or null when it can (installing the tools if needed). */
function unavailable(): string | null {
  if (toolsReady()) return null;
  const r = spawnSync('bash', [INSTALL], { encoding: 'utf8', timeout: 300_000 });
  if (r.status === 0 && toolsReady()) return null;
  const why = `scripts/install-container-tools.sh could not install podman (exit ${r.status ?? r.signal}): ${(r.stderr || '').trim().split('\n').slice(-3).join(' | ')}`;
  if (process.env.CI) throw new Error(`CI must build the image: ${why}`);
  return why;
}

function script(args: string[], timeoutMs: number): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync('bash', [SCRIPT, ...args], { encoding: 'utf8', timeout: timeoutMs, maxBuffer: 64 << 20 });
  return { status: r.status, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
}

/** The container as `build-and-run.sh run` reports it: name, writable root, and everything it printed. */
class Running {
  out = '';
  exit: number | null = null;
  private exited: Promise<void>;
  constructor(readonly proc: ChildProcess) {
    proc.stdout!.setEncoding('utf8').on('data', (d: string) => (this.out += d));
    proc.stderr!.setEncoding('utf8').on('data', (d: string) => (this.out += d));
    this.exited = new Promise((resolve) => proc.once('exit', (code) => ((this.exit = code ?? -1), resolve())));
  }
  field(name: string): string | null {
    return new RegExp(`^${name}: (.+)$`, 'm').exec(this.out)?.[1] ?? null;
  }
  async waitFor(re: RegExp, timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!re.test(this.out)) {
      if (this.exit !== null) throw new Error(`container exited (${this.exit}) before ${re}:\n${this.out}`);
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${re}:\n${this.out}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  async waitExit(timeoutMs: number): Promise<void> {
    let t: NodeJS.Timeout | undefined;
    await Promise.race([
      this.exited,
      new Promise((_, reject) => (t = setTimeout(() => reject(new Error(`no exit in ${timeoutMs} ms:\n${this.out}`)), timeoutMs))),
    ]).finally(() => clearTimeout(t));
  }
}

const skip = unavailable();
if (skip) console.log(`docker-image: skipped: ${skip}`);

describe('Dockerfile', { skip: skip ?? false, timeout: 300_000 }, () => {
  let running: Running | null = null;
  let smtpPort = 0;
  let metricsPort = 0;
  let testEnv: string[] = [];

  before(async () => {
    const t0 = Date.now();
    const r = script(['build', TAG], 280_000);
    assert.equal(r.status, 0, `build failed:\n${r.stderr.slice(-4000)}`);
    console.log(`image built in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    smtpPort = await freePort();
    metricsPort = await freePort();
    // The "container" shares the host's network here, so both listeners stay on loopback; everything else is the
    // image's own ENV (SPOOL_DIR is the VOLUME path, CONFIG_DIR the shipped defaults).
    testEnv = [
      `SMTP_PORT=${smtpPort}`,
      `METRICS_PORT=${metricsPort}`,
      'SMTP_HOST=127.0.0.1',
      'METRICS_HOST=127.0.0.1',
      'WORKERS=1',
      'ME=trap.container.test',
      'RDNS_TIMEOUT_MS=0',
    ];
  });

  after(async () => {
    if (running && running.exit === null) {
      running.proc.kill('SIGTERM');
      await running.waitExit(20_000).catch(() => running!.proc.kill('SIGKILL'));
    }
    const name = running?.field('container');
    // The script removes its container on exit; this catches one it could not (killed, crashed).
    if (name) script(['rm', name], 60_000);
    spawnSync(PODMAN, ['rmi', '-f', TAG], { stdio: 'ignore', timeout: 60_000 });
  });

  it('declares HEALTHCHECK, a non-root USER, the ports, the spool VOLUME and metrics on all interfaces', () => {
    const r = spawnSync(PODMAN, ['image', 'inspect', TAG], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    const image = JSON.parse(r.stdout)[0];
    const cfg = image.Config;
    // podman shows a Docker-format image's HEALTHCHECK beside Config; an OCI-format build would have none at all.
    const hc = image.Healthcheck ?? cfg.Healthcheck;
    assert.ok(hc?.Test, `no HEALTHCHECK in ${r.stdout.slice(0, 3000)}`);
    assert.equal(hc.Test[0], 'CMD');
    assert.match(hc.Test.join(' '), /\/healthz/);
    assert.ok(cfg.User && !/^(root|0)(:|$)/.test(cfg.User), `USER is ${JSON.stringify(cfg.User)}`);
    assert.ok(cfg.ExposedPorts['25/tcp'], 'EXPOSE 25');
    assert.ok(cfg.ExposedPorts['9725/tcp'], 'EXPOSE 9725');
    assert.ok(cfg.Volumes['/var/spool/spamtrapd'], 'VOLUME for the spool');
    const env = new Map((cfg.Env as string[]).map((e) => [e.slice(0, e.indexOf('=')), e.slice(e.indexOf('=') + 1)]));
    assert.equal(env.get('METRICS_HOST'), '0.0.0.0');
    assert.equal(env.get('SPOOL_DIR'), '/var/spool/spamtrapd');
    assert.deepEqual(cfg.Cmd, ['node', ...NODE_FLAGS, 'dist/workers/cli.js', 'start']);
  });

  it('ships production dependencies only', () => {
    const c = spawnSync(PODMAN, ['create', TAG], { encoding: 'utf8' });
    assert.equal(c.status, 0, c.stderr);
    const id = c.stdout.trim();
    try {
      const m = spawnSync(PODMAN, ['mount', id], { encoding: 'utf8' });
      assert.equal(m.status, 0, m.stderr);
      const nm = path.join(m.stdout.trim(), 'app', 'node_modules');
      assert.ok(fs.existsSync(path.join(nm, 'smtp-server', 'package.json')), 'smtp-server installed');
      for (const dev of ['typescript', 'kubernetes-models', 'fast-check', '@types/node']) {
        assert.ok(!fs.existsSync(path.join(nm, dev)), `dev dependency ${dev} is in the image`);
      }
      assert.ok(fs.existsSync(path.join(m.stdout.trim(), 'app', 'dist', 'workers', 'cli.js')));
    } finally {
      spawnSync(PODMAN, ['umount', id], { stdio: 'ignore' });
      spawnSync(PODMAN, ['rm', '-f', '-v', id], { stdio: 'ignore' });
    }
  });

  it('lets its non-root USER bind port 25 with net.ipv4.ip_unprivileged_port_start=25, not without', () => {
    const r = script(['port25', TAG], 60_000);
    assert.equal(r.status, 0, `${r.stdout}\n${r.stderr}`);
    assert.match(r.stdout, /^uid [1-9]\d*$/m);
    assert.match(r.stdout, /bind 25: EACCES\n[^]*bind 25: ok/);
  });

  it('runs CMD as USER: answers SMTP, /healthz and its HEALTHCHECK, files the message, stops on SIGTERM', async () => {
    running = new Running(spawn('bash', [SCRIPT, 'run', TAG, ...testEnv], { stdio: ['ignore', 'pipe', 'pipe'] }));
    await running.waitFor(/ info listening /, 60_000);
    const rootfs = running.field('rootfs');
    assert.ok(rootfs && fs.existsSync(rootfs), `no rootfs in:\n${running.out}`);
    assert.match(running.out, /^user: 1000:1000 workdir: \/app$/m);

    const subject = `container test ${process.pid} ${Date.now()}`;
    const sent = await sendMail(smtpPort, {
      helo: 'bot.example',
      from: '<spammer@example.com>',
      to: ['<victim@trap.container.test>'],
      data: `From: spammer@example.com\r\nSubject: ${subject}\r\n\r\nbuy now\r\n`,
    });
    assert.equal(sent.dataReply?.code, 250, JSON.stringify(sent));

    const health = await httpRequest(metricsPort, '/healthz');
    assert.equal(health.status, 200, health.body);
    const metrics = await httpRequest(metricsPort, '/metrics');
    assert.equal(metrics.status, 200);

    const hc = script(['health', TAG, rootfs, ...testEnv], 30_000);
    assert.equal(hc.status, 0, `HEALTHCHECK failed:\n${hc.stdout}\n${hc.stderr}`);

    // The message is a job in the incoming queue of the spool inside the container's root, written as USER. Its
    // QDFN is absolute as the trap saw it inside the container (so a host-side reader would skip the job): read
    // the control file directly and follow QDFN through the container's root.
    const queue = path.join(rootfs, 'var', 'spool', 'spamtrapd', 'incoming');
    const names = fs.readdirSync(path.join(queue, 'queue'));
    assert.equal(names.length, 1, `jobs in ${queue}/queue: ${names.join(' ')}`);
    const ctrl = parseControl(fs.readFileSync(path.join(queue, 'queue', names[0])));
    const qdfn = ctrl.fields['QDFN'] ?? '';
    assert.match(qdfn, /^\/var\/spool\/spamtrapd\/incoming\/data\//);
    const data = fs.readFileSync(path.join(rootfs, qdfn)).toString('latin1');
    assert.ok(data.includes(`Subject: ${subject}\r\n`), data);
    assert.equal(ctrl.metadata['rcpt_to'], 'victim@trap.container.test');
    assert.equal(ctrl.metadata['helo'], 'bot.example');
    assert.equal(fs.statSync(path.join(queue, 'queue', names[0])).uid, 1000);

    running.proc.kill('SIGTERM');
    await running.waitExit(30_000);
    assert.equal(running.exit, 0, running.out);
    assert.match(running.out, /info stopped proc=primary/);
    assert.match(running.out, /^exit: 0$/m);
    const name = running.field('container')!;
    assert.notEqual(spawnSync(PODMAN, ['container', 'exists', name]).status, 0, `${name} was not removed`);
  });
});
