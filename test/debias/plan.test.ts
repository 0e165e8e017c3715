/** --dry-run's time estimate in the units a person reads (issue 15: not "≈ 223046.0 min"). */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { humanDuration } from '../../src/debias/plan.js';

test('humanDuration: seconds, minutes, hours, days', () => {
  assert.equal(humanDuration(4.25), '4.3 s');
  assert.equal(humanDuration(75), '75 s');
  assert.equal(humanDuration(600), '10.0 min');
  assert.equal(humanDuration(3 * 3600), '3.0 h');
  // the SD 1.4 config's old estimate, 223046.0 min
  assert.equal(humanDuration(223046 * 60), '154.9 days');
  assert.equal(humanDuration(Number.POSITIVE_INFINITY), 'Infinity');
});
