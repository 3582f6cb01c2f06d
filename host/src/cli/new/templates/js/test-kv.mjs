// `npm test`: the logic's tests, in node (platform calls only work in the host).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { keyOf } from './logic.js';

test('routes name keys', () => {
  assert.equal(keyOf('/visits'), 'visits');
  assert.equal(keyOf('/'), undefined);
});
