/**
 * The settings table is the one place a setting is declared: the loader reads exactly it, and `.env.example` and the
 * README's table are what it renders (run `npm run settings:docs` after changing it).
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';
import { loadSettings } from '../src/config/env';
import { renderEnvExample, renderReadmeTable } from '../src/config/settings-docs';
import { SETTINGS } from '../src/config/settings';
import { repoRoot } from './helpers/paths';

describe('the settings table', () => {
  test('.env.example is what the table renders', () => {
    const file = fs.readFileSync(path.join(repoRoot(), '.env.example'), 'utf8');
    assert.equal(file, renderEnvExample(), '.env.example differs from src/config/settings.ts: run npm run settings:docs');
  });

  test("the README's settings table is what the table renders", () => {
    const readme = fs.readFileSync(path.join(repoRoot(), 'README.md'), 'utf8');
    assert.ok(readme.includes(renderReadmeTable()), "README.md's settings table differs from src/config/settings.ts: run npm run settings:docs");
  });

  test('names and keys are unique, every meaning is one line, the loader sets every key', () => {
    assert.equal(new Set(SETTINGS.map((s) => s.name)).size, SETTINGS.length);
    assert.equal(new Set(SETTINGS.map((s) => s.key)).size, SETTINGS.length);
    for (const s of SETTINGS) {
      assert.match(s.name, /^[A-Z][A-Z0-9_]*$/);
      assert.doesNotMatch(s.meaning, /\n/, s.name);
      assert.ok(s.meaning.length > 10, `${s.name} has a meaning`);
    }
    const cfg = loadSettings({}, { cwd: repoRoot(), envFile: '/nonexistent/.env' }) as unknown as Record<string, unknown>;
    for (const s of SETTINGS) assert.ok(s.key in cfg, `${s.name} -> ${s.key}`);
  });

  test("each setting's documented default is the value the loader uses when it is unset", () => {
    const cwd = repoRoot();
    const unset = loadSettings({}, { cwd, envFile: '/nonexistent/.env' }) as unknown as Record<string, unknown>;
    for (const s of SETTINGS) {
      if (s.parser.example === '') continue; // computed at start (host name, CPUs, ...)
      const given = loadSettings({ [s.name]: s.parser.example }, { cwd, envFile: '/nonexistent/.env' }) as unknown as Record<string, unknown>;
      assert.deepEqual(given[s.key], unset[s.key], s.name);
    }
  });
});
