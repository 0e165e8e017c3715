/**
 * Random edit problems and the direct normal-equation solution, computed independently of src/ in
 * float64 (test helper).
 */
import type { SiteWeight } from '../../src/edit/apply.js';
import type { RowGroup, RowSet } from '../../src/edit/rows.js';
import { gaussian32, gaussSolve, naiveMatmul, transpose } from '../linalg/reference.js';

export interface ProblemShape {
  d: number;
  /** Rows per prompt. */
  L: number;
  pairs: number;
  /** Prompt pairs per pair (4 with augmentations). */
  perPair?: number;
  preserve?: number;
  /** Scale of the destination − source difference. */
  shift?: number;
}

/** Gaussian source rows; targets = sources + shift·noise (preservation rows: targets = sources). */
export function randomRows(random: () => number, shape: ProblemShape): RowSet {
  const { d, L, pairs } = shape;
  const perPair = shape.perPair ?? 1;
  const preserve = shape.preserve ?? 0;
  const groups: RowGroup[] = [];
  let start = 0;
  for (let p = 0; p < pairs; p++) {
    for (let k = 0; k < perPair; k++) {
      groups.push({
        kind: 'pair',
        pair: p,
        source: `s${p}.${k}`,
        destination: `d${p}.${k}`,
        start,
        count: L,
        alignment: [],
      });
      start += L;
    }
  }
  for (let q = 0; q < preserve; q++) {
    groups.push({ kind: 'preserve', prompt: `keep${q}`, start, count: L });
    start += L;
  }
  const n = start;
  const sources = gaussian32(random, n * d);
  const noise = gaussian32(random, n * d, shape.shift ?? 1);
  const targets = Float32Array.from(sources, (v, i) => v + (noise[i] as number));
  for (const g of groups) {
    if (g.kind === 'preserve') targets.set(sources.subarray(g.start * d, (g.start + g.count) * d), g.start * d);
  }
  return { d, length: L, n, sources, targets, groups, pairCount: pairs };
}

export function randomSites(random: () => number, d: number, outs: number[], prefix = 'site'): SiteWeight[] {
  return outs.map((out, i) => ({ name: `${prefix}${i}.to_k`, W: gaussian32(random, out * d, 0.2) }));
}

/** Row weights w_i from per-pair λ and μ, written out here independently of solve.ts. */
export function weightsOf(rows: RowSet, lambdas: number[], mu = 1): Float64Array {
  const w = new Float64Array(rows.n);
  for (const g of rows.groups) {
    for (let i = g.start; i < g.start + g.count; i++) w[i] = g.kind === 'pair' ? 1 / (lambdas[g.pair] as number) : mu;
  }
  return w;
}

/**
 * TIME's closed form for one λ, exactly as the paper writes it:
 *   W' = (λW + Σ_i v*_i c_iᵀ)(λI + Σ_i c_i c_iᵀ)⁻¹,  v*_i = W c*_i.
 */
export function referenceTime(W: Float32Array, rows: RowSet, lambda: number): Float64Array {
  const w = new Float64Array(rows.n).fill(1);
  return referenceWeighted(W, rows, w, lambda);
}

/**
 * The weighted normal equations: W' = (s·W + Σ w_i v*_i c_iᵀ)(s·I + Σ w_i c_i c_iᵀ)⁻¹ (s = 1 for the
 * joint objective, s = λ for TIME's form). Solved as P·W'ᵀ = Nᵀ by Gaussian elimination (P symmetric).
 */
export function referenceWeighted(W: Float32Array, rows: RowSet, w: Float64Array, s = 1): Float64Array {
  const { d, n, sources, targets } = rows;
  const out = W.length / d;
  const C = transpose(sources, n, d); // d×n
  const Cs = transpose(targets, n, d);
  const V = naiveMatmul(W, Cs, out, d, n); // v*_i as columns, out×n
  const N = new Float64Array(out * d);
  for (let i = 0; i < out * d; i++) N[i] = s * (W[i] as number);
  for (let r = 0; r < out; r++) {
    for (let j = 0; j < d; j++) {
      let acc = 0;
      for (let i = 0; i < n; i++) acc += (w[i] as number) * (V[r * n + i] as number) * (C[j * n + i] as number);
      N[r * d + j] = (N[r * d + j] as number) + acc;
    }
  }
  const P = new Float64Array(d * d);
  for (let a = 0; a < d; a++) {
    for (let b = 0; b < d; b++) {
      let acc = a === b ? s : 0;
      for (let i = 0; i < n; i++) acc += (w[i] as number) * (C[a * n + i] as number) * (C[b * n + i] as number);
      P[a * d + b] = acc;
    }
  }
  const Xt = gaussSolve(P, transpose(N, out, d), d, out); // d×out = W'ᵀ
  return transpose(Xt, d, out);
}

/** y = W·x for W [out, d] and row x (float64). */
export function project(W: ArrayLike<number>, x: ArrayLike<number>, out: number, d: number): Float64Array {
  return naiveMatmul(W, x, out, d, 1);
}

export function norm(x: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < x.length; i++) s += (x[i] as number) ** 2;
  return Math.sqrt(s);
}

export function diffNorm(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += ((a[i] as number) - (b[i] as number)) ** 2;
  return Math.sqrt(s);
}
