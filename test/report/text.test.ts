import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  dec,
  htmlTable,
  interval,
  markdownTable,
  pct,
  pValue,
  shareText,
  textTable,
} from '../../src/report/text/index.js';

test('number formats: percentages, decimals, intervals, p-values; missing values as an en dash', () => {
  assert.equal(pct(0.915), '91.5%');
  assert.equal(pct(0.5, 0), '50%');
  assert.equal(dec(0.5712), '0.57');
  assert.equal(dec(0.5712, 3), '0.571');
  for (const x of [null, undefined, Number.NaN, Number.POSITIVE_INFINITY]) {
    assert.equal(pct(x), '–');
    assert.equal(dec(x), '–');
  }
  assert.equal(interval(0.1, null), '[0.10, –]');
  assert.equal(
    interval(0.1, 0.2, (x) => pct(x)),
    '[10.0%, 20.0%]',
  );
  assert.equal(shareText({ p: 0.485, lower: 0.417, upper: 0.554 }), '48.5% [41.7%, 55.4%]');
  assert.equal(shareText({ share: 0.5, lower: 0.4, upper: 0.6 }), '50.0% [40.0%, 60.0%]');
  assert.equal(shareText({ p: null, lower: 0, upper: 1 }), '–');
  assert.equal(shareText(null), '–');
  assert.equal(pValue(0.0004), '<0.001');
  assert.equal(pValue(0.0412), '0.041');
});

test('textTable: padded columns two spaces apart, first left and the others right by default, a rule', () => {
  const lines = textTable({
    header: ['name', 'n'],
    rows: [
      ['nurse', '200'],
      ['a', '7'],
    ],
    rule: '─',
  });
  assert.deepEqual(lines, ['name     n', '─────  ───', 'nurse  200', 'a        7']);
  const left = textTable({ header: ['a', 'b'], rows: [['xx', 'y']], align: ['left', 'left'] });
  assert.deepEqual(left, ['a   b', '--  -', 'xx  y']); // no trailing spaces
});

test('markdownTable and htmlTable: alignment, escaping', () => {
  assert.deepEqual(markdownTable({ header: ['p', 'share'], rows: [['a|b', '1%']] }), [
    '| p | share |',
    '|---|---:|',
    '| a\\|b | 1% |',
  ]);
  const html = htmlTable({ header: ['p', 'v'], rows: [['<b>', '1']], rowClass: () => 'held' });
  assert.match(html, /<tr class="held"><td class="l">&lt;b&gt;<\/td><td>1<\/td><\/tr>/);
  assert.match(html, /<th class="l">p<\/th><th>v<\/th>/);
});
