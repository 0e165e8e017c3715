/**
 * Apply a solved edit to the weights of every site: W'_s = W_s·M (solve.ts eq. 5), all sites in one
 * onnxruntime run (one graph with one product chain per site, so no concatenation copy), either
 *   dense:    W' = W·M                   out·d·d multiply-adds per site, or
 *   low rank: W' = W + (W·Uᵀ)·Z          2·out·d·r, faster when r < 0.375·d (Woodbury solutions)
 * and, on request, ‖W' − W‖_F / ‖W‖_F per site from the same run (then the change W·Δ is formed
 * explicitly, W' = W + W·Δ, so that the norm of a tiny change is exact; this costs extra passes over
 * the weights).
 *
 * Weights are torch layout [out, d] (row-major). An ONNX export stores Wᵀ [d, out]; the model layer
 * transposes when it reads and writes.
 */
import { type BatchedUpdate, GemmEngine, matrix } from '../linalg/gemm.js';
import { EditError, show } from '../util/errors.js';
import type { EditSolution } from './solve.js';

export interface SiteWeight {
  /** The site's name (e.g. `down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k`). */
  name: string;
  /** [out, d] row-major float32 (torch layout), or [d, out] when `transposed`. */
  W: Float32Array;
  /** W holds Wᵀ [d, out], as ONNX exporters store MatMul weights: W'ᵀ = Mᵀ·Wᵀ is computed as such. */
  transposed?: boolean;
}

export interface EditedSite {
  name: string;
  /** W' [out, d] row-major float32, or W'ᵀ [d, out] when the input was `transposed`. */
  W: Float32Array;
  out: number;
  /** ‖W' − W‖_F / ‖W‖_F, when `norms` was asked for. */
  relativeChange?: number;
}

export interface ApplyOptions {
  /** 'auto' (default): low rank when the solution has factors of rank r < 0.375·d. */
  form?: 'auto' | 'dense' | 'lowRank';
  gemm?: GemmEngine;
  /** Arrays to write W'_s into (same order and lengths as `weights`), e.g. reused between edits. */
  outputs?: readonly Float32Array[];
  /** Also report ‖W' − W‖_F / ‖W‖_F per site (default false: it costs extra passes over the weights). */
  norms?: boolean;
}

export interface ApplyResult {
  form: 'dense' | 'lowRank';
  sites: EditedSite[];
}

export async function applyEdit(
  weights: readonly SiteWeight[],
  solution: EditSolution,
  options: ApplyOptions = {},
): Promise<ApplyResult> {
  const { d } = solution;
  if (weights.length === 0) throw new EditError('apply edit: no sites were given; there is nothing to edit');
  const shapes = weights.map((s, i) => {
    if (!(s.W instanceof Float32Array)) {
      throw new EditError(`apply edit: site ${show(s.name)} (#${i}) weight is not a Float32Array`);
    }
    const out = s.W.length / d;
    if (!Number.isInteger(out) || out < 1) {
      throw new EditError(
        `apply edit: site ${show(s.name)} has ${s.W.length} values, not a whole number of rows of width d = ${d} ` +
          '(the text width of the edit); a site weight is [out, d] in torch layout',
      );
    }
    return out;
  });
  if (options.outputs && options.outputs.length !== weights.length) {
    throw new EditError(`apply edit: ${options.outputs.length} output arrays for ${weights.length} sites`);
  }
  const form = chooseForm(solution, options.form ?? 'auto');
  const norms = options.norms ?? false;
  const update: BatchedUpdate =
    form === 'lowRank' && solution.kind === 'woodbury'
      ? {
          kind: 'lowRank',
          u: matrix(solution.factors.u, solution.rank, d),
          v: matrix(solution.factors.z, solution.rank, d),
        }
      : norms
        ? { kind: 'dense', delta: matrix(solution.delta, d, d) }
        : { kind: 'product', m: matrix(solution.M, d, d) };
  const gemm = options.gemm ?? new GemmEngine();
  try {
    const sites = new Array<EditedSite>(weights.length);
    // One onnxruntime run per layout present (exports use one layout throughout).
    for (const columns of [false, true]) {
      const idx = weights.flatMap((s, i) => ((s.transposed ?? false) === columns ? [i] : []));
      if (idx.length === 0) continue;
      const res = await gemm.updateEach(
        idx.map((i) => {
          const out = shapes[i] as number;
          return columns ? matrix((weights[i] as SiteWeight).W, d, out) : matrix((weights[i] as SiteWeight).W, out, d);
        }),
        update,
        { outputs: options.outputs && idx.map((i) => options.outputs?.[i] as Float32Array), norms, columns },
      );
      idx.forEach((i, j) => {
        const site: EditedSite = {
          name: (weights[i] as SiteWeight).name,
          W: res.outputs[j] as Float32Array,
          out: shapes[i] as number,
        };
        if (res.changeSquared && res.normSquared) {
          site.relativeChange = relative(res.changeSquared[j] as number, res.normSquared[j] as number);
        }
        sites[i] = site;
      });
    }
    return { form, sites };
  } finally {
    if (!options.gemm) await gemm.dispose();
  }
}

/**
 * The text-side view of the same edit (solve.ts eq. 5): rows c ↦ M·c for rows [L, d] row-major.
 * When every to_k and to_v is edited (the default), the original UNet fed these rows computes the
 * same as the edited UNet fed the original rows: the K/V projections are the only consumers of the
 * text rows. (Not so for a to_v-only or partial-layer edit.)
 */
export async function transformRows(
  rows: Float32Array,
  solution: Pick<EditSolution, 'M' | 'd'>,
  gemm?: GemmEngine,
): Promise<Float32Array> {
  const { d } = solution;
  const count = rows.length / d;
  if (!Number.isInteger(count)) {
    throw new EditError(`transform rows: ${rows.length} values are not whole rows of width d = ${d}`);
  }
  const engine = gemm ?? new GemmEngine();
  try {
    // (M·c)ᵀ = cᵀ·Mᵀ for each row.
    const y = await engine.gemm(matrix(rows, count, d), matrix(solution.M, d, d), { transB: true });
    return y.data as Float32Array;
  } finally {
    if (!gemm) await engine.dispose();
  }
}

function chooseForm(solution: EditSolution, form: 'auto' | 'dense' | 'lowRank'): 'dense' | 'lowRank' {
  if (form === 'lowRank' && solution.kind !== 'woodbury') {
    throw new EditError(
      `apply edit: form "lowRank" needs a Woodbury solution (rank-n factors); this one is ${show(solution.kind)}`,
    );
  }
  if (form !== 'auto') return form;
  // Flops favour rank r when 2r < d, but the two skinny products per site run slower than one square
  // one: measured on 2 cores, r = 308 of d = 768 (0.4 d) takes as long as the dense form (~140 ms
  // for SD 1.4's 32 projections), r = 77 half as long. So: low rank below r = 0.375 d.
  return solution.kind === 'woodbury' && 8 * solution.rank < 3 * solution.d ? 'lowRank' : 'dense';
}

function relative(changeSquared: number, normSquared: number): number {
  if (normSquared > 0) return Math.sqrt(changeSquared / normSquared);
  return changeSquared > 0 ? Number.POSITIVE_INFINITY : 0;
}
