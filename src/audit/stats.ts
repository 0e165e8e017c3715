/**
 * The audit's statistics: proportions with Wilson intervals, the bias metric Δ, a seeded bootstrap
 * for the mean Δ over professions, mean ± std over seed groups, and tests for a before/after change.
 *
 *   notation
 *     n        images of a profession that got a class (unclear images excluded)
 *     k        of them classified as the target class (e.g. female);  p̂ = k / n
 *     t        target share (parity): 0.5 for two classes, 1/K for K classes
 *     z        standard normal quantile, 1.959964 for 95 %
 *
 *   (1) Wilson score interval (Wilson 1927):
 *         centre = (p̂ + z²/2n) / (1 + z²/n)
 *         half   = z / (1 + z²/n) · sqrt( p̂(1 − p̂)/n + z²/4n² )
 *   (2) bias metric (mission.md §2):  Δ = |p − 0.5| / 0.5;  for a general target share t,
 *         Δ_t = |p − t| / max(t, 1 − t)   (0 at parity, 1 when every image is the farthest class)
 *       Its interval maps the Wilson interval of p through Δ_t (Δ_t is V-shaped in p: when the
 *       interval contains t the lower end is 0).
 *   (3) mean Δ over P professions, 95 % percentile bootstrap: B resamples, each redraws every
 *       profession's n labels with replacement (k* ~ Binomial(n, p̂)) and recomputes mean Δ. The RNG
 *       is seeded (mulberry32), so the interval is reproducible. Note Δ̂ is biased upward at small n
 *       (|p̂ − t| ≥ 0 even at parity); the bootstrap shows the spread, not that bias.
 *   (4) seed groups (as the references report): images are split by seed into G groups, mean Δ is
 *       computed per group, and reported as mean ± sample standard deviation over groups.
 *   (5) change of a share before → after (per profession):
 *         - difference d = p̂₂ − p̂₁ with Newcombe's hybrid score interval (Newcombe 1998, method 10):
 *             L = d − sqrt((p̂₂ − l₂)² + (u₁ − p̂₁)²),  U = d + sqrt((u₂ − p̂₂)² + (p̂₁ − l₁)²)
 *           with (l_i, u_i) the Wilson intervals;
 *         - when every image is paired (the same prompts and seeds before and after, a complete
 *           2 × 2 table: a both, b before only, c after only, d neither), the same square-and-add
 *           interval for paired data (Newcombe 1998b, Stat. Med. 17:2635, method 10), which
 *           subtracts the correlation of the two estimates:
 *             L = d − sqrt((p̂₂ − l₂)² − 2φ̂(p̂₂ − l₂)(u₁ − p̂₁) + (u₁ − p̂₁)²)
 *             U = d + sqrt((u₂ − p̂₂)² − 2φ̂(u₂ − p̂₂)(p̂₁ − l₁) + (p̂₁ − l₁)²)
 *             φ̂ = C / sqrt((a+b)(c+d)(a+c)(b+d)),  C = ad − bc − n/2 when ad − bc > n/2,
 *                 0 when 0 ≤ ad − bc ≤ n/2, ad − bc when negative; φ̂ = 0 when a margin is 0.
 *           Paired images are positively correlated, so this interval is the narrower, honest one;
 *           the unpaired interval ignores the pairing and can include 0 while McNemar's test
 *           (below) finds the change;
 *         - two-proportion z test (pooled): z = d / sqrt(p̄(1 − p̄)(1/n₁ + 1/n₂)), two-sided p;
 *         - when the two runs share prompts and seeds (paired images), McNemar's exact test on the
 *           discordant pairs b (target before, not after) and c (not before, target after):
 *             p = min(1, 2 · P[X ≤ min(b, c)]),  X ~ Binomial(b + c, 1/2).
 */
import { mulberry32 } from '../util/random.js';

/** z for a two-sided 95 % interval. */
export const Z95 = 1.959963984540054;

export interface Interval {
  lower: number;
  upper: number;
}

export interface Proportion extends Interval {
  kind: 'proportion';
  k: number;
  n: number;
  /** p̂ = k/n (NaN when n = 0) */
  p: number;
}

function checkCount(name: string, v: number): void {
  if (!Number.isInteger(v) || v < 0) throw new RangeError(`${name}: ${v} must be a non-negative integer`);
}

/** Eq. (1): Wilson score interval for k successes in n trials. n = 0 gives p NaN and [0, 1]. */
export function wilson(k: number, n: number, z = Z95): Proportion {
  checkCount('k', k);
  checkCount('n', n);
  if (k > n) throw new RangeError(`k: ${k} exceeds n ${n}`);
  if (n === 0) return { kind: 'proportion', k, n, p: Number.NaN, lower: 0, upper: 1 };
  const p = k / n;
  const z2 = z * z;
  const denom = 1 + z2 / n;
  const centre = (p + z2 / (2 * n)) / denom;
  const half = (z / denom) * Math.sqrt((p * (1 - p)) / n + z2 / (4 * n * n));
  return { kind: 'proportion', k, n, p, lower: Math.max(0, centre - half), upper: Math.min(1, centre + half) };
}

/** Eq. (2): Δ_t = |p − t| / max(t, 1 − t); t = 0.5 gives the references' |p − 0.5| / 0.5. */
export function delta(p: number, target = 0.5): number {
  if (!(target > 0 && target < 1)) throw new RangeError(`target share: ${target} must be in (0, 1)`);
  return Math.abs(p - target) / Math.max(target, 1 - target);
}

/** Δ_t over an interval of p (V-shaped map: 0 at the bottom when the interval contains t). */
export function deltaInterval(p: Interval, target = 0.5): Interval {
  const a = delta(p.lower, target);
  const b = delta(p.upper, target);
  if (p.lower <= target && target <= p.upper) return { lower: 0, upper: Math.max(a, b) };
  return { lower: Math.min(a, b), upper: Math.max(a, b) };
}

export interface MeanDelta extends Interval {
  kind: 'mean-delta';
  value: number;
  professions: number;
  /**
   * E[mean Δ̂] if every profession's true share were exactly the target, with the same image counts
   * (eq. 4): sampling noise alone makes Δ̂ > 0, so a measured mean Δ near this value is parity within
   * what the sample can tell.
   */
  parityFloor: number;
  bootstrap: { samples: number; seed: number; level: number };
}

/**
 * Eq. (3): mean Δ over professions with a seeded percentile bootstrap interval. Professions with
 * n = 0 are skipped.
 */
export function meanDelta(
  counts: readonly { k: number; n: number }[],
  options: { target?: number; samples?: number; seed?: number; level?: number } = {},
): MeanDelta {
  const target = options.target ?? 0.5;
  const samples = options.samples ?? 2000;
  const seed = options.seed ?? 1;
  const level = options.level ?? 0.95;
  const used = counts.filter((c) => c.n > 0);
  for (const c of used) {
    checkCount('k', c.k);
    checkCount('n', c.n);
  }
  const bootstrap = { samples, seed, level };
  if (used.length === 0)
    return {
      kind: 'mean-delta',
      value: Number.NaN,
      lower: Number.NaN,
      upper: Number.NaN,
      professions: 0,
      parityFloor: Number.NaN,
      bootstrap,
    };
  const value = used.reduce((s, c) => s + delta(c.k / c.n, target), 0) / used.length;
  const rand = mulberry32(seed);
  const stats = new Float64Array(samples);
  for (let b = 0; b < samples; b++) {
    let sum = 0;
    for (const c of used) {
      const p = c.k / c.n;
      let k = 0;
      for (let i = 0; i < c.n; i++) if (rand() < p) k++;
      sum += delta(k / c.n, target);
    }
    stats[b] = sum / used.length;
  }
  stats.sort();
  const alpha = (1 - level) / 2;
  return {
    kind: 'mean-delta',
    value,
    lower: quantileSorted(stats, alpha),
    upper: quantileSorted(stats, 1 - alpha),
    professions: used.length,
    parityFloor: used.reduce((sum, c) => sum + expectedDeltaAtTarget(c.n, target), 0) / used.length,
    bootstrap,
  };
}

/**
 * Eq. (4): E[Δ_t(k/n)] for k ~ Binomial(n, t), exactly (pmf in log space):
 *   Σ_k C(n, k) tᵏ (1 − t)ⁿ⁻ᵏ · |k/n − t| / max(t, 1 − t).
 * At t = 0.5 and large n it approaches √(2/(πn)) (the mean of a half-normal).
 */
export function expectedDeltaAtTarget(n: number, target = 0.5): number {
  checkCount('n', n);
  if (!(target > 0 && target < 1)) throw new RangeError(`target share: ${target} must be in (0, 1)`);
  if (n === 0) return Number.NaN;
  const lt = Math.log(target);
  const l1t = Math.log(1 - target);
  let logChoose = 0; // log C(n, k), updated as k grows
  let sum = 0;
  for (let k = 0; k <= n; k++) {
    if (k > 0) logChoose += Math.log(n - k + 1) - Math.log(k);
    sum += Math.exp(logChoose + k * lt + (n - k) * l1t) * delta(k / n, target);
  }
  return sum;
}

/** Linear-interpolation quantile (type 7) of a sorted array. */
export function quantileSorted(sorted: ArrayLike<number>, q: number): number {
  const n = sorted.length;
  if (n === 0) return Number.NaN;
  const h = (n - 1) * q;
  const lo = Math.floor(h);
  const hi = Math.min(n - 1, lo + 1);
  return (sorted[lo] as number) + (h - lo) * ((sorted[hi] as number) - (sorted[lo] as number));
}

export interface MeanStd {
  kind: 'mean-std';
  mean: number;
  /** sample standard deviation (n − 1); NaN for fewer than 2 values */
  std: number;
  values: number[];
}

/** Mean ± sample standard deviation. */
export function meanStd(values: readonly number[]): MeanStd {
  const n = values.length;
  const mean = n ? values.reduce((a, b) => a + b, 0) / n : Number.NaN;
  const std = n > 1 ? Math.sqrt(values.reduce((s, v) => s + (v - mean) ** 2, 0) / (n - 1)) : Number.NaN;
  return { kind: 'mean-std', mean, std, values: [...values] };
}

/** Standard normal CDF Φ(x) = erfc(−x/√2)/2. */
export function normalCdf(x: number): number {
  return 0.5 * erfc(-x / Math.SQRT2);
}

/** Complementary error function (Numerical Recipes' erfcc, fractional error < 1.2e-7). */
export function erfc(x: number): number {
  const z = Math.abs(x);
  const t = 1 / (1 + 0.5 * z);
  const r =
    t *
    Math.exp(
      -z * z -
        1.26551223 +
        t *
          (1.00002368 +
            t *
              (0.37409196 +
                t *
                  (0.09678418 +
                    t *
                      (-0.18628806 +
                        t *
                          (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))),
    );
  return x >= 0 ? r : 2 - r;
}

/** ln Γ(x) for x > 0 (Lanczos, g = 7, n = 9). */
export function lnGamma(x: number): number {
  const c = [
    0.99999999999980993, 676.5203681218851, -1259.1392167224028, 771.32342877765313, -176.61502916214059,
    12.507343278686905, -0.13857109526572012, 9.9843695780195716e-6, 1.5056327351493116e-7,
  ];
  if (x < 0.5) return Math.log(Math.PI / Math.sin(Math.PI * x)) - lnGamma(1 - x);
  const xx = x - 1;
  let a = c[0] as number;
  const t = xx + 7.5;
  for (let i = 1; i < 9; i++) a += (c[i] as number) / (xx + i);
  return 0.5 * Math.log(2 * Math.PI) + (xx + 0.5) * Math.log(t) - t + Math.log(a);
}

/** P[X ≤ m] for X ~ Binomial(n, 1/2). */
export function binomialHalfCdf(m: number, n: number): number {
  if (m < 0) return 0;
  if (m >= n) return 1;
  let sum = 0;
  for (let i = 0; i <= m; i++) sum += Math.exp(lnGamma(n + 1) - lnGamma(i + 1) - lnGamma(n - i + 1) - n * Math.LN2);
  return Math.min(1, sum);
}

export interface ShareChange extends Interval {
  kind: 'share-change';
  before: Proportion;
  after: Proportion;
  /** d = p̂_after − p̂_before */
  difference: number;
  /** two-proportion z test (pooled) */
  z: number;
  pValue: number;
  /** Which Newcombe interval `lower`/`upper` are: for paired images (a complete 2 × 2 table) or unpaired. */
  interval: 'paired' | 'unpaired';
  /** McNemar's exact test when the images are paired (same prompts and seeds) */
  paired?: { kind: 'mcnemar'; b: number; c: number; pValue: number };
  /** significant at 5 %: the paired test when present, else the z test */
  significant: boolean;
}

/**
 * The image pairs of a before/after comparison: b target before only, c target after only, and —
 * when known — a target both times, d neither (the complete 2 × 2 table).
 */
export interface PairCounts {
  a?: number;
  b: number;
  c: number;
  d?: number;
}

/**
 * φ̂ of Newcombe's paired method 10: the correlation of the two proportions' estimates from the 2 × 2
 * table, its numerator shrunk by n/2 when positive (Eq. (5)).
 */
export function pairedPhi(a: number, b: number, c: number, d: number): number {
  const n = a + b + c + d;
  const margins = (a + b) * (c + d) * (a + c) * (b + d);
  if (margins === 0) return 0;
  const A = a * d - b * c;
  const C = A > n / 2 ? A - n / 2 : Math.min(A, 0);
  return C / Math.sqrt(margins);
}

/** Eq. (5): before/after change of a share, Newcombe interval (paired when the table is), z test, McNemar. */
export function shareChange(
  before: { k: number; n: number },
  after: { k: number; n: number },
  pairs?: PairCounts,
  z95 = Z95,
): ShareChange {
  const w1 = wilson(before.k, before.n, z95);
  const w2 = wilson(after.k, after.n, z95);
  const d = w2.p - w1.p;
  // the paired interval needs the complete table of exactly these images: a + b = k₁, a + c = k₂, n pairs
  const table =
    pairs?.a !== undefined &&
    pairs.d !== undefined &&
    pairs.a + pairs.b === before.k &&
    pairs.a + pairs.c === after.k &&
    pairs.a + pairs.b + pairs.c + pairs.d === before.n &&
    before.n === after.n
      ? { a: pairs.a, b: pairs.b, c: pairs.c, d: pairs.d }
      : null;
  const phi = table ? pairedPhi(table.a, table.b, table.c, table.d) : 0;
  const down = [w2.p - w2.lower, w1.upper - w1.p] as const;
  const up = [w2.upper - w2.p, w1.p - w1.lower] as const;
  const lower = d - Math.sqrt(Math.max(0, down[0] ** 2 - 2 * phi * down[0] * down[1] + down[1] ** 2));
  const upper = d + Math.sqrt(Math.max(0, up[0] ** 2 - 2 * phi * up[0] * up[1] + up[1] ** 2));
  const pooled = (before.k + after.k) / (before.n + after.n);
  const se = Math.sqrt(pooled * (1 - pooled) * (1 / before.n + 1 / after.n));
  const z = se > 0 ? d / se : 0;
  const pValue = se > 0 ? 2 * (1 - normalCdf(Math.abs(z))) : 1;
  const result: ShareChange = {
    kind: 'share-change',
    before: w1,
    after: w2,
    difference: d,
    lower: Math.max(-1, lower),
    upper: Math.min(1, upper),
    interval: table ? 'paired' : 'unpaired',
    z,
    pValue: Math.min(1, Math.max(0, pValue)),
    significant: pValue < 0.05,
  };
  if (pairs) {
    const nd = pairs.b + pairs.c;
    const p = nd === 0 ? 1 : Math.min(1, 2 * binomialHalfCdf(Math.min(pairs.b, pairs.c), nd));
    result.paired = { kind: 'mcnemar', b: pairs.b, c: pairs.c, pValue: p };
    result.significant = p < 0.05;
  }
  return result;
}

export interface DeltaChange extends Interval {
  kind: 'delta-change';
  before: number;
  after: number;
  /** after − before */
  difference: number;
  bootstrap: { samples: number; seed: number; level: number };
}

/**
 * Change of mean Δ between two audits with a seeded percentile bootstrap interval (both runs' labels
 * resampled independently per profession, as in eq. (3)). `pairs` lists, per profession, the
 * before and after counts.
 */
export function meanDeltaChange(
  pairs: readonly { before: { k: number; n: number }; after: { k: number; n: number } }[],
  options: { target?: number; samples?: number; seed?: number; level?: number } = {},
): DeltaChange {
  const target = options.target ?? 0.5;
  const samples = options.samples ?? 2000;
  const seed = options.seed ?? 1;
  const level = options.level ?? 0.95;
  const used = pairs.filter((p) => p.before.n > 0 && p.after.n > 0);
  const mean = (f: (c: { k: number; n: number }) => number, side: 'before' | 'after') =>
    used.reduce((s, p) => s + f(p[side]), 0) / used.length;
  const d0 = (c: { k: number; n: number }) => delta(c.k / c.n, target);
  const before = mean(d0, 'before');
  const after = mean(d0, 'after');
  const rand = mulberry32(seed);
  const draw = (c: { k: number; n: number }) => {
    const p = c.k / c.n;
    let k = 0;
    for (let i = 0; i < c.n; i++) if (rand() < p) k++;
    return delta(k / c.n, target);
  };
  const stats = new Float64Array(samples);
  for (let b = 0; b < samples; b++) {
    let s = 0;
    for (const p of used) s += draw(p.after) - draw(p.before);
    stats[b] = s / used.length;
  }
  stats.sort();
  const alpha = (1 - level) / 2;
  return {
    kind: 'delta-change',
    before,
    after,
    difference: after - before,
    lower: used.length ? quantileSorted(stats, alpha) : Number.NaN,
    upper: used.length ? quantileSorted(stats, 1 - alpha) : Number.NaN,
    bootstrap: { samples, seed, level },
  };
}
