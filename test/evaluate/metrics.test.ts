import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { wilson } from '../../src/audit/stats.js';
import {
  aggregateMetrics,
  type ClassifiedImage,
  meanOverRows,
  pairedChange,
  rowMetrics,
} from '../../src/evaluate/metrics.js';

const imgs = (role: ClassifiedImage['role'], edited: number, plain: number): ClassifiedImage[] => [
  ...Array.from({ length: edited }, () => ({ role, edited: true })),
  ...Array.from({ length: plain }, () => ({ role, edited: false })),
];

describe('TIMED metrics on hand-made classifications', () => {
  test('efficacy = source images classified new; generality = positives as gt; specificity = negatives NOT as gn', () => {
    // 10 source images: 7 classified as `new`; 50 positive images: 40 as their gt; 50 negative images: 5 as their gn
    const m = rowMetrics([...imgs('source', 7, 3), ...imgs('positive', 40, 10), ...imgs('negative', 5, 45)]);
    assert.deepEqual([m.efficacy.k, m.efficacy.n, m.efficacy.value], [7, 10, 0.7]);
    assert.deepEqual([m.generality.k, m.generality.n, m.generality.value], [40, 50, 0.8]);
    assert.deepEqual([m.specificity.k, m.specificity.n, m.specificity.value], [45, 50, 0.9]);
    const w = wilson(45, 50);
    assert.equal(m.specificity.lower, w.lower);
    assert.equal(m.specificity.upper, w.upper);
  });

  test('an unedited model that keeps every assumption: efficacy 0, generality 0, specificity 1', () => {
    const m = rowMetrics([...imgs('source', 0, 4), ...imgs('positive', 0, 20), ...imgs('negative', 0, 20)]);
    assert.equal(m.efficacy.value, 0);
    assert.equal(m.generality.value, 0);
    assert.equal(m.specificity.value, 1);
  });

  test('a role without images has no value (null), with the uninformative interval', () => {
    const m = rowMetrics(imgs('source', 1, 1));
    assert.equal(m.generality.value, null);
    assert.deepEqual([m.generality.lower, m.generality.upper], [0, 1]);
  });

  test('aggregate: mean over rows (each row weighs the same), bootstrap interval brackets it', () => {
    const rows = [
      rowMetrics([...imgs('source', 10, 0), ...imgs('positive', 50, 0), ...imgs('negative', 0, 50)]),
      rowMetrics([...imgs('source', 0, 10), ...imgs('positive', 25, 25), ...imgs('negative', 50, 0)]),
    ];
    const a = aggregateMetrics(rows, { samples: 500, seed: 3 });
    assert.equal(a.efficacy.value, 0.5);
    assert.equal(a.generality.value, 0.75);
    assert.equal(a.specificity.value, 0.5);
    assert.equal(a.efficacy.rows, 2);
    for (const m of ['efficacy', 'generality', 'specificity'] as const) {
      const v = a[m];
      assert.ok((v.lower as number) <= (v.value as number) && (v.value as number) <= (v.upper as number), m);
    }
    // resampling two rows {1, 0}: the bootstrap means are 0, 0.5 or 1
    assert.deepEqual([a.efficacy.lower, a.efficacy.upper], [0, 1]);
    // reproducible
    assert.deepEqual(aggregateMetrics(rows, { samples: 500, seed: 3 }), a);
  });

  test('mean over rows: identical rows give a zero-width interval; no rows give nulls', () => {
    const m = meanOverRows([0.9, 0.9, 0.9], { samples: 200 });
    assert.ok(Math.abs((m.value as number) - 0.9) < 1e-12);
    assert.ok(Math.abs((m.lower as number) - 0.9) < 1e-12 && Math.abs((m.upper as number) - 0.9) < 1e-12);
    assert.deepEqual(meanOverRows([]), { value: null, lower: null, upper: null, rows: 0 });
  });

  test('paired change over rows skips rows missing on either side', () => {
    const c = pairedChange([0, 0.2, null], [0.9, 1, 0.5], { samples: 200 });
    assert.equal(c.rows, 2);
    assert.ok(Math.abs((c.value as number) - 0.85) < 1e-12);
  });
});
