// `npm test`: the logic's tests, in node (WASI calls only work in the host).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { answer } from './logic.js';

test('says what was asked', () => {
  assert.equal(answer('web', 'GET', '/x'), 'hello from web! you asked for GET /x\n');
});
