import assert from 'node:assert/strict';
import { test } from 'node:test';
import { classifyReply } from '../src/smtp/replies';

test('smtp-server own refusals map to their rejection reason', () => {
  assert.equal(classifyReply(552, 'Error: message exceeds fixed maximum message size 10', 'MESSAGE_TOO_BIG'), 'size');
  assert.equal(classifyReply(452, 'Error: too many recipients', 'TOO_MANY_RECIPIENTS'), 'too_many_recipients');
  assert.equal(classifyReply(421, 'Timeout - closing connection', undefined), 'timeout');
  assert.equal(classifyReply(421, 'Timeout: no complete command in time', 'COMMAND_TIMEOUT'), 'timeout');
  assert.equal(classifyReply(421, 'trap.test Too many connected clients, try again in a moment', false), 'connection_limit');
  assert.equal(classifyReply(501, 'Error: Bad recipient address syntax', 'MAILBOX_SYNTAX_ERROR'), 'syntax');
  assert.equal(classifyReply(503, 'Error: need MAIL command', undefined), 'sequence');
});

test('replies the trap decides itself are counted where they are decided, not again here', () => {
  // The per-IP refusal is counted as connection_limit_ip by the session; counting it here too doubled it.
  assert.equal(classifyReply(421, 'trap.test too many connections from your address, try again later', false), null);
  assert.equal(classifyReply(550, 'No thanks', undefined), null);
  assert.equal(classifyReply(451, 'Local error in processing, try again later', undefined), null);
  assert.equal(classifyReply(250, 'Ok: queued as x', 'DATA_OK'), null);
});
