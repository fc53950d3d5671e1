/**
 * The `spamtrapd` command line as an operator meets it: `check` explains an address and fails on skipped rule
 * lines; a bad setting stops `start` with the variable's name; a bad routes line names file:line; a second
 * trap on the same spool is refused with a clear message.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { startDaemon } from './helpers/daemon';
import { builtRoot } from './helpers/paths';

const cli = () => path.join(builtRoot(), 'workers', 'cli.js');

describe('spamtrapd CLI', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'spamtrapd-cli-'));
  const config = path.join(dir, 'config');
  fs.mkdirSync(config);
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  const run = (args: string[], env: Record<string, string> = {}) =>
    spawnSync(process.execPath, [cli(), ...args], {
      cwd: dir,
      encoding: 'utf8',
      timeout: 20_000,
      env: { PATH: process.env.PATH, CONFIG_DIR: config, SPOOL_DIR: path.join(dir, 'spool'), ...env },
    });

  test('check tells which rule line and route an address gets', () => {
    fs.writeFileSync(path.join(config, 'rcpt_regexp'), '/^ham\\@trap\\.test$/ OK Sure [note=ham]\n/^x\\@/ DENY Go\n');
    const r = run(['check', 'ham@trap.test', '<x@y.example>']);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /rcpt_regexp: 2 rules/);
    assert.match(r.stdout, /ham@trap\.test[\s\S]*rcpt_regexp:1[\s\S]*250[\s\S]*ham[\s\S]*hamincoming/);
    assert.match(r.stdout, /x@y\.example[\s\S]*rcpt_regexp:2[\s\S]*550 Go/);
  });

  test('check fails and names file:line for a line the trap would skip', () => {
    fs.writeFileSync(path.join(config, 'rcpt_regexp'), '/^ok\\@/ OK\n/^broken(/ OK\n');
    const r = run(['check']);
    assert.equal(r.status, 1);
    assert.match(r.stdout, new RegExp(`${path.join(config, 'rcpt_regexp').replace(/[.]/g, '\\.')}:2: invalid regex`));
  });

  test('a bad setting stops start-up naming the variable', () => {
    const r = run(['start'], { SMTP_PORT: 'twenty-five' });
    assert.equal(r.status, 2);
    assert.match(r.stderr, /configuration error: SMTP_PORT/);
  });

  test('a bad routes line stops start-up naming file:line', () => {
    fs.writeFileSync(path.join(config, 'rcpt_regexp'), '');
    fs.writeFileSync(path.join(config, 'routes'), 'note=ham queue hamincoming\nbogus line here\n* queue incoming\n');
    try {
      const r = run(['start'], { SMTP_PORT: '0', METRICS_PORT: '0', SMTP_HOST: '127.0.0.1' });
      assert.equal(r.status, 2, r.stderr);
      assert.match(r.stderr, new RegExp(`${path.join(config, 'routes').replace(/[.]/g, '\\.')}:2: `));
    } finally {
      fs.rmSync(path.join(config, 'routes'));
    }
  });

  test('a second trap on the same spool is refused with a clear message', async () => {
    const d = await startDaemon({ workers: 1 });
    try {
      const r = run(['start'], { SPOOL_DIR: d.spoolDir, SMTP_PORT: '0', METRICS_PORT: '0', SMTP_HOST: '127.0.0.1' });
      assert.notEqual(r.status, 0);
      assert.match(r.stderr, new RegExp(`${d.spoolDir.replace(/[.]/g, '\\.')}.*(in use|locked|already)`, 'i'));
      assert.match(r.stderr, new RegExp(String(d.proc.pid)), 'names the holder pid');
    } finally {
      await d.destroy();
      d.cleanup();
    }
  });

  test('a CONFIG_DIR that does not exist is an error, not an empty rule set', () => {
    const r = run(['check', 'a@b.example'], { CONFIG_DIR: path.join(dir, 'no-such-config') });
    assert.equal(r.status, 2, r.stdout);
    assert.match(r.stderr, /configuration error: CONFIG_DIR: .*no-such-config: no such directory/);
  });

  test('unknown commands print usage and exit 2', () => {
    const r = run(['frobnicate']);
    assert.equal(r.status, 2);
    assert.match(r.stderr, /usage: spamtrapd/);
  });
});
