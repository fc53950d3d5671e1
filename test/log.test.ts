import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createLogger, formatLine, formatValue } from '../src/log';

test('a client value can never start a log line of its own or hide a field', () => {
  const lines: string[] = [];
  const log = createLogger('info', { proc: 'acceptor0' }, (l) => lines.push(l));
  log.info('transaction', { helo: 'x\n2026-01-01T00:00:00.000Z info transaction forged=yes', from: 'a b=c', rcpts: '"q"' });
  assert.equal(lines.length, 1);
  assert.equal(lines[0].split('\n').length, 2, 'exactly one newline, at the end');
  assert.match(lines[0], / helo="x\\n2026-01-01T00:00:00\.000Z info transaction forged=yes" /);
  assert.match(lines[0], / from="a b=c" rcpts="\\"q\\""\n$/);
});

test('plain values stay bare, the rest is JSON', () => {
  assert.equal(formatValue('trap.example'), 'trap.example');
  assert.equal(formatValue(''), '""');
  assert.equal(formatValue(null), '-');
  assert.equal(formatValue('k=v'), '"k=v"');
  assert.equal(formatValue('caf\u00e9'), '"caf\u00e9"');
  assert.equal(formatLine('warn', 'e', { n: 3 }, new Date(0)), '1970-01-01T00:00:00.000Z warn e n=3\n');
});

test('levels filter', () => {
  const lines: string[] = [];
  const log = createLogger('warn', {}, (l) => lines.push(l));
  log.info('hidden');
  log.debug('hidden');
  log.warn('shown');
  log.error('shown');
  assert.equal(lines.length, 2);
  assert.equal(log.enabled('info'), false);
});
