// `npm test`: the logic's tests, in node (platform calls only work in the host).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { transform } from './logic.js';

test('upper-cases', () => {
  assert.equal(transform('abc'), 'ABC');
});
