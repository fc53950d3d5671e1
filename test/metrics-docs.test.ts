/**
 * docs/metrics.md is what operators write alerts from: it names every series the trap defines, and exactly the
 * rejection reasons the code can count (a documented reason nothing emits makes an alert that never fires).
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { SERIES } from '../src/metrics/definitions';
import { REPLY_REJECTIONS } from '../src/smtp/replies';
import { repoRoot } from './helpers/paths';

const doc = fs.readFileSync(path.join(repoRoot(), 'docs', 'metrics.md'), 'utf8');

test('every series the trap defines has a row in docs/metrics.md', () => {
  for (const name of Object.values(SERIES)) assert.match(doc, new RegExp(`^\\| \`${name}\` \\|`, 'm'), name);
});

test('the rejection reasons documented are exactly those the code can count', () => {
  const row = doc.split('\n').find((l) => l.startsWith('| `spamtrapd_rejections_total` |'));
  assert.ok(row, 'a row for spamtrapd_rejections_total');
  const documented = [...row.split('|')[4].matchAll(/`([a-z_]+)`/g)].map((m) => m[1]).sort();
  // The session decides these two itself; the rest come from the reply tap (src/smtp/replies.ts).
  const emitted = [...REPLY_REJECTIONS, 'queue_error', 'connection_limit_ip'].sort();
  assert.deepEqual(documented, emitted);
});
