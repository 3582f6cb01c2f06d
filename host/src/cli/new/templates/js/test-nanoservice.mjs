// `npm test`: the logic's tests, in node (platform calls only work in the host).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { greet } from './logic.js';

test('greets by name', () => {
  assert.equal(greet('hello', 'Ada', '/x'), 'hello, Ada! you asked for /x\n');
});
