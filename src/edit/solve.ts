/**
 * TIME's closed-form edit (Orgad, Kawar, Belinkov, arXiv 2303.08084, §4), generalised to the joint
 * objective of mission.md §2 (per-pair strengths, preservation rows), solved without an explicit
 * inverse.
 *
 * Notation (ours ↔ the paper / the official code `train_funcs.py`):
 *
 *   symbol          here                                   paper / reference code
 *   ─────────────   ────────────────────────────────────   ─────────────────────────────────────
 *   d               text width (768 SD 1.x, 1024 SD 2.x)    dim of c_i
 *   W ∈ R^{out×d}   original to_k / to_v weight (torch)     W^old (ONNX stores Wᵀ, [d, out])
 *   W'              edited weight                          the minimiser W
 *   c_i ∈ R^d       source row i (last_hidden_state)        c_i (all 77 positions)
 *   c*_i            aligned destination row                c*_i (embedding of the destination token)
 *   v*_i = W c*_i   target, from the ORIGINAL W            v*_i
 *   λ_p             strength of pair p (default 0.1)        λ (one pair)
 *   w_i             1/λ_p for rows of pair p, μ for         (1/λ for every row)
 *                   preservation rows (c*_q = c_q)
 *   n               number of rows                         77 · pairs (· 4 with augmentations)
 *   C, C* (d×n)     columns c_i, c*_i; stored as R = Cᵀ,    (stacked c_i / c*_i)
 *                   R* = C*ᵀ (n×d, row-major)
 *   D               diag(w_i)                               –
 *   M (d×d)         W' = W·M, the same for every site       –
 *   Δ               M − I                                   –
 *
 * Equations:
 *   (1) objective      Σ_i w_i ‖W'c_i − W c*_i‖² + ‖W' − W‖²_F.
 *                      One pair, w_i = 1/λ: (1/λ)·(TIME's Σ‖W'c_i − v*_i‖² + λ‖W' − W‖²_F), same minimiser.
 *   (2) normal eqs.    W'(I + C D Cᵀ) = W(I + C* D Cᵀ)  ⇒  W' = W·M,
 *                      M = (I + C* D Cᵀ)(I + C D Cᵀ)⁻¹ = (I + C* D Cᵀ)·A⁻¹,  A = I + C D Cᵀ (SPD).
 *                      With D = I/λ and ×λ: W' = (λW + Σ v*_i c_iᵀ)(λI + Σ c_i c_iᵀ)⁻¹ — TIME's closed form.
 *   (3) Cholesky       (n ≥ d) A = L Lᵀ; Mᵀ = A⁻¹(I + C D C*ᵀ) = I + A⁻¹·C D (C* − C)ᵀ, so
 *                      Δᵀ = A⁻¹ E, E = Rᵀ D R* − Rᵀ D R: one d×d factorization, d right-hand sides.
 *   (4) Woodbury       (n < d) A⁻¹ = I − C K⁻¹ Cᵀ, K = D⁻¹ + CᵀC (n×n SPD) gives
 *                      Δ = (C* − C) K⁻¹ Cᵀ = Uᵀ Z,  U = R* − R,  Z = K⁻¹ R  (rank ≤ n; K = L Lᵀ).
 *                      Rows with c*_i = c_i (preservation rows, identical prefixes) have a zero row in U
 *                      and drop out of the factors: the update has rank r = #(rows with c*_i ≠ c_i).
 *   (5) every site     W'_s = W_s·M: the targets are W_s c*_i, so M does not depend on W_s. Equivalently
 *                      W'_s c = W_s (M c): editing all sites = mapping the text rows c ↦ M c.
 *
 * Numerics: all the small systems (A, K, their factors and solves) are float64; the Grams are float64
 * products of the float32 rows (through onnxruntime); M and Δ are rounded to float32 at the end. The
 * float32 weight products are apply.ts's.
 */
import { Cholesky } from '../linalg/cholesky.js';
import { GemmEngine, matrix } from '../linalg/gemm.js';
import { EditError, show } from '../util/errors.js';
import type { RowSet } from './rows.js';

/** TIME's default λ. */
export const DEFAULT_LAMBDA = 0.1;
/** Default weight μ of preservation rows. */
export const DEFAULT_PRESERVE_WEIGHT = 1;

export interface EditStrengths {
  /** λ > 0: one value for every pair, or one per pair (length `rows.pairCount`). Default 0.1. */
  lambda?: number | readonly number[];
  /** μ > 0, the weight of preservation rows. Default 1. */
  mu?: number;
  /** μ_q > 0 for the preservation rows of particular prompts (the others have `mu`). */
  muByPrompt?: ReadonlyMap<string, number>;
}

export interface SolveOptions extends EditStrengths {
  /** 'auto' (default): Woodbury when n < d, Cholesky otherwise. */
  method?: 'auto' | 'woodbury' | 'cholesky';
  /** Engine for the products (reuse one across solves); a temporary one is made and disposed when absent. */
  gemm?: GemmEngine;
}

interface SolutionBase {
  /** Number of rows in the objective. */
  n: number;
  d: number;
  /** d×d row-major, W' = W·M for every site. */
  M: Float32Array;
  /** M − I, computed in float64 and rounded (keeps the precision of a small edit). */
  delta: Float32Array;
}

export type EditSolution =
  | (SolutionBase & {
      kind: 'woodbury';
      /** Rank r of the update Δ = Uᵀ·Z. */
      rank: number;
      /** U (r×d) and Z (r×d), row-major float32: Δ = Uᵀ Z, so W' = W + (W Uᵀ) Z. */
      factors: { u: Float32Array; z: Float32Array };
    })
  | (SolutionBase & { kind: 'cholesky' });

/** Validate λ (per pair) and μ and return the row weights w_i (1/λ_p or μ). */
export function rowWeights(rows: RowSet, strengths: EditStrengths = {}): Float64Array {
  const lambda = strengths.lambda ?? DEFAULT_LAMBDA;
  const perPair = Array.isArray(lambda);
  const lambdas: unknown[] = perPair ? [...lambda] : new Array<unknown>(Math.max(1, rows.pairCount)).fill(lambda);
  if (perPair && lambdas.length !== rows.pairCount) {
    throw new EditError(`${lambdas.length} values for ${rows.pairCount} pairs; give one λ per pair or one for all`, {
      field: 'lambda',
    });
  }
  lambdas.forEach((l, p) => {
    if (typeof l !== 'number' || !Number.isFinite(l) || l <= 0) {
      const which = perPair ? ` (pair ${p}: ${describePair(rows, p)})` : '';
      throw new EditError(`${show(l)} is not a valid λ${which}; λ must be a finite number > 0`, { field: 'lambda' });
    }
  });
  const mu = strengths.mu ?? DEFAULT_PRESERVE_WEIGHT;
  const hasPreserve = rows.groups.some((g) => g.kind === 'preserve');
  if (hasPreserve && (typeof mu !== 'number' || !Number.isFinite(mu) || mu <= 0)) {
    throw new EditError(`${show(mu)} is not valid; the preservation weight μ must be a finite number > 0`, {
      field: 'mu',
    });
  }
  for (const [prompt, m] of strengths.muByPrompt ?? []) {
    if (typeof m !== 'number' || !Number.isFinite(m) || m <= 0) {
      throw new EditError(
        `preservation weight of ${show(prompt)}: ${show(m)} is not valid; μ must be a finite number > 0`,
        { field: 'muByPrompt' },
      );
    }
  }
  const w = new Float64Array(rows.n);
  for (const g of rows.groups) {
    const weight = g.kind === 'pair' ? 1 / (lambdas[g.pair] as number) : (strengths.muByPrompt?.get(g.prompt) ?? mu);
    w.fill(weight, g.start, g.start + g.count);
  }
  return w;
}

/** Solve the joint objective (1) for M (2), by (3) or (4). */
export async function solveEdit(rows: RowSet, options: SolveOptions = {}): Promise<EditSolution> {
  const { n, d } = rows;
  if (n === 0) throw new EditError('edit: the row set is empty; an edit needs at least one (source, destination) pair');
  if (rows.sources.length !== n * d || rows.targets.length !== n * d) {
    throw new EditError(
      `edit: row arrays hold ${rows.sources.length} and ${rows.targets.length} values; n·d = ${n}·${d} = ${n * d}`,
    );
  }
  const w = rowWeights(rows, options);
  const method = options.method ?? 'auto';
  if (!['auto', 'woodbury', 'cholesky'].includes(method)) {
    throw new EditError(`${show(method)} is not one of auto, woodbury, cholesky`, { field: 'method' });
  }
  const useWoodbury = method === 'woodbury' || (method === 'auto' && n < d);
  const gemm = options.gemm ?? new GemmEngine();
  try {
    return useWoodbury ? await solveWoodbury(rows, w, gemm) : await solveCholesky(rows, w, gemm);
  } finally {
    if (!options.gemm) await gemm.dispose();
  }
}

/** (3): Δᵀ = A⁻¹ E with A = I + RᵀDR, E = RᵀDR* − RᵀDR. */
async function solveCholesky(rows: RowSet, w: Float64Array, gemm: GemmEngine): Promise<EditSolution> {
  const { n, d } = rows;
  const { xx, xy } = await gemm.weightedGram(matrix(rows.sources, n, d), matrix(rows.targets, n, d), w);
  const A = xx.data;
  const E = xy.data;
  for (let i = 0; i < d * d; i++) E[i] = (E[i] as number) - (A[i] as number);
  for (let i = 0; i < d; i++) A[i * d + i] = (A[i * d + i] as number) + 1;
  const chol = await Cholesky.factor(A, d, { gemm, label: 'A = I + C·D·Cᵀ' });
  if (!chol.isPositiveDefinite()) throw notSpd('A = I + C·D·Cᵀ', rows, chol.failedPivot);
  await chol.solveInPlace(E, d); // E ← Δᵀ
  const M = new Float32Array(d * d);
  const delta = new Float32Array(d * d);
  for (let i = 0; i < d; i++) {
    for (let j = 0; j < d; j++) {
      const v = E[j * d + i] as number; // Δ[i, j] = Δᵀ[j, i]
      delta[i * d + j] = v;
      M[i * d + j] = (i === j ? 1 : 0) + v;
    }
  }
  return { kind: 'cholesky', n, d, M, delta };
}

/** (4): Δ = Uᵀ Z with U = R* − R, Z = K⁻¹ R, K = D⁻¹ + R Rᵀ; zero rows of U dropped. */
async function solveWoodbury(rows: RowSet, w: Float64Array, gemm: GemmEngine): Promise<EditSolution> {
  const { n, d, sources, targets } = rows;
  const R = matrix(sources, n, d);
  const K = (await gemm.gemm(R, R, { transB: true, compute: 'float64' })).data as Float64Array;
  for (let i = 0; i < n; i++) K[i * n + i] = (K[i * n + i] as number) + 1 / (w[i] as number);
  const chol = await Cholesky.factor(K, n, { gemm, label: 'K = D⁻¹ + Cᵀ·C' });
  if (!chol.isPositiveDefinite()) throw notSpd('K = D⁻¹ + Cᵀ·C', rows, chol.failedPivot);
  const Z = Float64Array.from(sources);
  await chol.solveInPlace(Z, d);

  // Keep the rows whose target differs from the source; the others add nothing to Δ.
  const keep: number[] = [];
  for (let i = 0; i < n; i++) {
    const o = i * d;
    for (let j = 0; j < d; j++) {
      if (targets[o + j] !== sources[o + j]) {
        keep.push(i);
        break;
      }
    }
  }
  const r = keep.length;
  const U64 = new Float64Array(r * d);
  const Z64 = new Float64Array(r * d);
  const u = new Float32Array(r * d);
  const z = new Float32Array(r * d);
  keep.forEach((i, k) => {
    for (let j = 0; j < d; j++) {
      const diff = (targets[i * d + j] as number) - (sources[i * d + j] as number);
      U64[k * d + j] = diff;
      u[k * d + j] = diff;
    }
    Z64.set(Z.subarray(i * d, (i + 1) * d), k * d);
    z.set(Z.subarray(i * d, (i + 1) * d), k * d);
  });
  const delta64 =
    r === 0
      ? new Float64Array(d * d)
      : ((await gemm.gemm(matrix(U64, r, d), matrix(Z64, r, d), { transA: true, compute: 'float64' }))
          .data as Float64Array);
  const M = new Float32Array(d * d);
  const delta = Float32Array.from(delta64);
  for (let i = 0; i < d * d; i++) M[i] = delta64[i] as number;
  for (let i = 0; i < d; i++) M[i * d + i] = 1 + (delta64[i * d + i] as number);
  return { kind: 'woodbury', n, d, M, delta, rank: r, factors: { u, z } };
}

function describePair(rows: RowSet, p: number): string {
  const g = rows.groups.find((x) => x.kind === 'pair' && x.pair === p);
  return g && g.kind === 'pair' ? `${show(g.source)} → ${show(g.destination)}` : `#${p}`;
}

function notSpd(what: string, rows: RowSet, pivot: number): EditError {
  return new EditError(
    `edit: ${what} is not positive definite (pivot ${pivot} of the ${rows.n}-row system); the rows must be finite ` +
      '(a text encoder that returned NaN or Infinity, or a λ so small that the system overflows)',
  );
}
