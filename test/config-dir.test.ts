/**
 * The config directory: rcpt_regexp and routes read from CONFIG_DIR, missing files meaning no rules and the default
 * routes, unreadable files and bad routes lines named by file and line.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { ConfigError } from '../src/errors';
import { configFiles, loadConfigDir } from '../src/config/config-dir';
import { DEFAULT_ROUTES } from '../src/config/routes';
import { repoRoot } from './helpers/paths';

const tmpRoot = fs.mkdtempSync(path.join(os.tmpdir(), 'spamtrapd-configdir-'));
after(() => fs.rmSync(tmpRoot, { recursive: true, force: true }));
let n = 0;

function workdir(): string {
  const dir = path.join(tmpRoot, String(n++));
  fs.mkdirSync(dir);
  return dir;
}

describe('the config directory', () => {
  test('configFiles names config/rcpt_regexp and config/routes', () => {
    assert.deepEqual(configFiles({ configDir: '/etc/trap' }), {
      rcptRegexp: '/etc/trap/rcpt_regexp',
      routes: '/etc/trap/routes',
    });
  });

  test('no files: no rules, the default routes', () => {
    const dir = workdir();
    const loaded = loadConfigDir(dir);
    assert.deepEqual(loaded.rules, []);
    assert.deepEqual(loaded.problems, []);
    assert.deepEqual(loaded.routes, [...DEFAULT_ROUTES]);
    assert.deepEqual(loaded.sources, { rcptRegexp: null, routes: null });
  });

  test('files are read and parsed; rcpt_regexp problems are returned with the full file path', () => {
    const dir = workdir();
    fs.writeFileSync(path.join(dir, 'rcpt_regexp'), '/^a\\@b$/ DENY no\nbad@line NOPE\n');
    fs.writeFileSync(path.join(dir, 'routes'), 'note=x queue xq\n* queue all\n');
    const loaded = loadConfigDir(dir);
    assert.equal(loaded.rules.length, 1);
    assert.deepEqual(
      loaded.problems.map((p) => `${p.file}:${p.line}`),
      [`${path.join(dir, 'rcpt_regexp')}:2`],
    );
    assert.deepEqual(
      loaded.routes.map((r) => r.destination.queue),
      ['xq', 'all'],
    );
    assert.equal(loaded.sources.routes, path.join(dir, 'routes'));
  });

  test('a bad routes file is a ConfigError with file:line', () => {
    const dir = workdir();
    fs.writeFileSync(path.join(dir, 'routes'), '* queue a\nnote=x queue b\n');
    assert.throws(
      () => loadConfigDir(dir),
      (err: unknown) => err instanceof ConfigError && err.where === `${path.join(dir, 'routes')}:2`,
    );
  });

  test('an unreadable file is a ConfigError naming it', () => {
    for (const name of ['rcpt_regexp', 'routes']) {
      const dir = workdir();
      fs.mkdirSync(path.join(dir, name));
      assert.throws(
        () => loadConfigDir(dir),
        (err: unknown) => err instanceof ConfigError && err.where === path.join(dir, name) && /cannot read/.test(err.reason),
      );
    }
  });

  test('the shipped config/ loads: the old trap rules, default routes; the routes example is valid', () => {
    const root = repoRoot();
    const loaded = loadConfigDir(path.join(root, 'config'));
    assert.equal(loaded.rules.length, 3);
    assert.deepEqual(loaded.problems, []);
    const example = path.join(root, 'config', 'routes.example');
    const dir = workdir();
    fs.copyFileSync(example, path.join(dir, 'routes'));
    const routes = loadConfigDir(dir).routes;
    assert.deepEqual(
      routes.map((r) => r.destination.queue),
      ['hamincoming', 'forward-127.0.0.1-10025', 'incoming'],
    );
  });
});
