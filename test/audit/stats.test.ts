import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  binomialHalfCdf,
  delta,
  deltaInterval,
  expectedDeltaAtTarget,
  lnGamma,
  meanDelta,
  meanDeltaChange,
  meanStd,
  normalCdf,
  pairedPhi,
  shareChange,
  wilson,
} from '../../src/audit/stats.js';

const close = (a: number, b: number, tol: number, what = '') =>
  assert.ok(Math.abs(a - b) <= tol, `${what}: ${a} vs ${b}`);

test('Wilson interval matches hand-computed values', () => {
  // 7/10: centre (0.7 + z²/20)/(1 + z²/10) = 0.644491, half 0.247714
  const a = wilson(7, 10);
  close(a.lower, 0.396778, 2e-6, 'lower 7/10');
  close(a.upper, 0.892209, 2e-6, 'upper 7/10');
  // 0/10: [0, z²/(n + z²)] = [0, 0.277533]
  const b = wilson(0, 10);
  assert.equal(b.lower, 0);
  close(b.upper, 3.841459 / 13.841459, 1e-6, 'upper 0/10');
  // 50/100 symmetric around 0.5
  const c = wilson(50, 100);
  close(c.lower, 0.403832, 2e-6);
  close(c.upper + c.lower, 1, 1e-12);
  // n = 0: no information
  const d = wilson(0, 0);
  assert.ok(Number.isNaN(d.p));
  assert.deepEqual([d.lower, d.upper], [0, 1]);
  assert.throws(() => wilson(3, 2), /exceeds/);
  assert.throws(() => wilson(-1, 2), /non-negative integer/);
});

test('Δ = |p − 0.5|/0.5 and the general target share', () => {
  close(delta(0.7), 0.4, 1e-15);
  close(delta(0.2), 0.6, 1e-15);
  assert.equal(delta(0.5), 0);
  assert.equal(delta(0), 1);
  assert.equal(delta(1), 1);
  // four classes, t = 1/4: Δ = |p − 1/4| / (3/4)
  close(delta(0.5, 0.25), 1 / 3, 1e-15);
  close(delta(1, 0.25), 1, 1e-15);
  close(delta(0, 0.25), 1 / 3, 1e-15);
  assert.throws(() => delta(0.5, 1), /target share/);
  // interval through the V: contains parity → lower 0
  const i = deltaInterval(wilson(7, 10));
  assert.equal(i.lower, 0);
  close(i.upper, 2 * 0.892209 - 1, 4e-6);
  const j = deltaInterval({ lower: 0.1, upper: 0.3 });
  close(j.lower, 0.4, 1e-15);
  close(j.upper, 0.8, 1e-15);
});

test('mean ± std', () => {
  const m = meanStd([1, 2, 3, 4]);
  assert.equal(m.mean, 2.5);
  close(m.std, Math.sqrt(5 / 3), 1e-15);
  assert.ok(Number.isNaN(meanStd([1]).std));
});

test('normal CDF, ln Γ and the binomial(½) CDF', () => {
  close(normalCdf(1.959963984540054), 0.975, 2e-7);
  close(normalCdf(0), 0.5, 2e-7);
  close(normalCdf(-1), 0.158655254, 2e-7);
  close(lnGamma(5), Math.log(24), 1e-12);
  close(lnGamma(0.5), Math.log(Math.sqrt(Math.PI)), 1e-12);
  // P[X ≤ 2], X ~ Bin(12, ½) = (1 + 12 + 66) / 4096
  close(binomialHalfCdf(2, 12), 79 / 4096, 1e-12);
});

test('before/after change: Newcombe interval, z test, McNemar', () => {
  // Newcombe (1998) example: 56/70 vs 48/80, difference 0.2, method 10 interval 0.0524 to 0.3339
  const c = shareChange({ k: 48, n: 80 }, { k: 56, n: 70 });
  close(c.difference, 0.2, 1e-12);
  close(c.lower, 0.0524, 5e-5, 'Newcombe lower');
  close(c.upper, 0.3339, 5e-5, 'Newcombe upper');
  // pooled z: 0.2 / sqrt(104/150 · 46/150 · (1/70 + 1/80)) = 2.65018
  close(c.z, 2.65018, 1e-4);
  close(c.pValue, 0.008045, 2e-5);
  assert.equal(c.significant, true);
  // McNemar exact: b = 2, c = 10 → p = 2 · 79/4096
  const p = shareChange({ k: 40, n: 50 }, { k: 48, n: 50 }, { b: 2, c: 10 });
  close(p.paired!.pValue, (2 * 79) / 4096, 1e-12);
  assert.equal(p.significant, true);
  const q = shareChange({ k: 40, n: 50 }, { k: 41, n: 50 }, { b: 3, c: 4 });
  assert.equal(q.paired!.pValue, 1);
  assert.equal(q.significant, false);
});

test("paired images: Newcombe's paired interval (method 10 for paired data), narrower, agreeing with McNemar", () => {
  // Armitage & Berry's paired table (two culture media, 50 specimens): a 20 both, b 12 first only,
  // c 2 second only, d 16 neither; difference second − first = −0.2. Method 10 for paired data,
  // computed independently (Python, the formula of Newcombe 1998b): −0.32921 to −0.05616, φ̂ = 0.45495.
  const ab = shareChange({ k: 32, n: 50 }, { k: 22, n: 50 }, { a: 20, b: 12, c: 2, d: 16 });
  assert.equal(ab.interval, 'paired');
  close(ab.difference, -0.2, 1e-12);
  close(ab.lower, -0.3292069954001405, 1e-12, 'paired lower');
  close(ab.upper, -0.056156424841748265, 1e-12, 'paired upper');
  close(pairedPhi(20, 12, 2, 16), 0.45495421510599593, 1e-12);
  // the same counts without the table: the unpaired interval, wider on both sides
  const unpaired = shareChange({ k: 32, n: 50 }, { k: 22, n: 50 }, { b: 12, c: 2 });
  assert.equal(unpaired.interval, 'unpaired');
  assert.ok(unpaired.lower < ab.lower && unpaired.upper > ab.upper);
  // a debias-like change: 5 of 200 before, 22 after, every change one way. McNemar finds it; the
  // unpaired interval reaches down to about 0.03 while the paired one is 0.0475 to 0.1320.
  const debias = shareChange({ k: 5, n: 200 }, { k: 22, n: 200 }, { a: 5, b: 0, c: 17, d: 178 });
  close(debias.lower, 0.04751316848230196, 1e-12);
  close(debias.upper, 0.13200516243098734, 1e-12);
  assert.ok(debias.paired!.pValue < 0.001 && debias.significant);
  // φ̂ = 0 (ad − bc within n/2, or an empty margin): the paired interval is the unpaired one
  close(pairedPhi(1, 1, 1, 1), 0, 0);
  close(pairedPhi(0, 3, 4, 5), (0 - 12) / Math.sqrt(3 * 9 * 4 * 8), 1e-15);
  const flat = shareChange({ k: 2, n: 4 }, { k: 2, n: 4 }, { a: 1, b: 1, c: 1, d: 1 });
  const flatUnpaired = shareChange({ k: 2, n: 4 }, { k: 2, n: 4 });
  close(flat.lower, flatUnpaired.lower, 1e-15);
  close(flat.upper, flatUnpaired.upper, 1e-15);
  // a table that does not describe these shares (unclear images left out of the pairs): unpaired
  assert.equal(shareChange({ k: 32, n: 51 }, { k: 22, n: 50 }, { a: 20, b: 12, c: 2, d: 16 }).interval, 'unpaired');
});

test('mean Δ bootstrap is reproducible with a seed and brackets the estimate', () => {
  const counts = [
    { k: 2, n: 20 },
    { k: 15, n: 20 },
    { k: 10, n: 20 },
    { k: 19, n: 20 },
  ];
  const a = meanDelta(counts, { seed: 42, samples: 1000 });
  const b = meanDelta(counts, { seed: 42, samples: 1000 });
  const c = meanDelta(counts, { seed: 43, samples: 1000 });
  // hand: Δ = 0.8, 0.5, 0, 0.9 → mean 0.55
  close(a.value, 0.55, 1e-12);
  assert.deepEqual(a, b);
  assert.notDeepEqual([a.lower, a.upper], [c.lower, c.upper]);
  assert.ok(a.lower < a.value && a.value < a.upper, `${a.lower} < ${a.value} < ${a.upper}`);
  assert.ok(a.upper - a.lower < 0.4 && a.upper - a.lower > 0.05);
  // all-or-nothing professions have no sampling spread
  const d = meanDelta(
    [
      { k: 10, n: 10 },
      { k: 0, n: 10 },
    ],
    { seed: 1, samples: 200 },
  );
  assert.deepEqual([d.value, d.lower, d.upper], [1, 1, 1]);
  // the change of mean Δ
  const ch = meanDeltaChange(
    counts.map((x) => ({ before: x, after: { k: 10, n: 20 } })),
    { seed: 5, samples: 500 },
  );
  close(ch.difference, -0.55, 1e-12);
  assert.ok(ch.upper < 0, 'a clear reduction has an interval below 0');
});

test('expected Δ at exact parity (eq. 4): hand values, the half-normal limit, and meanDelta.parityFloor', () => {
  close(expectedDeltaAtTarget(1), 1, 1e-12, 'n=1');
  close(expectedDeltaAtTarget(2), 0.5, 1e-12, 'n=2'); // k=0,2: Δ=1 (¼ each); k=1: 0
  // t = 0.3, n = 1: 0.7·(0.3/0.7) + 0.3·(0.7/0.7) = 0.6
  close(expectedDeltaAtTarget(1, 0.3), 0.6, 1e-12, 'n=1, t=0.3');
  close(expectedDeltaAtTarget(2000), Math.sqrt(2 / (Math.PI * 2000)), 2e-4, 'half-normal limit');
  close(expectedDeltaAtTarget(200), 0.0564, 2e-3, 'n=200');
  const md = meanDelta([
    { k: 100, n: 200 },
    { k: 1, n: 2 },
  ]);
  close(md.parityFloor, (expectedDeltaAtTarget(200) + 0.5) / 2, 1e-12, 'mean over professions');
  assert.ok(Number.isNaN(meanDelta([]).parityFloor));
});
