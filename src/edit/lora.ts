/**
 * An edit file as a LoRA (issue 12 item 3): `time-debias export-lora --edit E --model BASE --out F
 * (--rank r | --error ε) [--format kohya|peft]`.
 *
 * Per site, with W [out, d] the base weight and Δ = M − I:
 *
 *   ΔW = W·Δ                                  (float64)
 *   ΔW = U Σ Vᵀ                               truncated SVD, from the eigendecomposition of the smaller
 *                                             Gram matrix: ΔW ΔWᵀ = U Σ² Uᵀ (out ≤ d) or ΔWᵀ ΔW = V Σ² Vᵀ
 *   up   = U_r Σ_r^½   [out, r]               balanced factors (both of the same scale, kind to fp16)
 *   down = Σ_r^½ V_rᵀ  [r, d]                 computed as Σ_r^-½ U_rᵀ ΔW  (or ΔW V_r Σ_r^-½)
 *   W + up·down·(alpha / r),  alpha = r       so the scale is 1 for kohya and peft alike
 *
 * Speed: M − I is the same at every site, and a TIME edit of n rows has rank ≤ n (a pair with its
 * augmentations: ≈ 300 of d = 768). So M − I is factored once, M − I ≈ L·Rᵀ with R [d, k] orthonormal
 * (factorEditDelta; a relative tail ≤ 1e-6 left out, below the float32 rounding of the stored M at
 * SD scale), and each site's SVD is of C = W·L [out, k] instead of ΔW [out, d]: ΔW ≈ C·Rᵀ =
 * U Σ (R V_C)ᵀ. The eigendecompositions shrink from min(out, d)³ to min(out, k)³ (SD 1.x, 32 sites:
 * 52.9 s → ≈ 9 s). The error is still measured against the exact ΔW; a site the basis cannot serve
 * (a rank above k, or ε not reached) is factored from ΔW itself, as is every site of a full-rank edit.
 *
 * Rank: `--rank r` (capped at min(out, d)), or `--error ε`: the smallest r whose relative Frobenius
 * error ‖ΔW − up·down‖_F / ‖ΔW‖_F ≤ ε at that site. The error reported is measured on the float32
 * factors as written, not predicted from the spectrum. A TIME edit of n rows has rank ≤ n, so a
 * single edit is exactly low rank; a joint debias edit with preservation rows is full rank, and ε
 * decides how much of it the LoRA keeps.
 *
 * Keys: kohya (A1111, ComfyUI)  lora_unet_<module path with _>.lora_down.weight [r, d], .lora_up.weight
 * [out, r], .alpha []; peft/diffusers  unet.<module path>.lora_A.weight [r, d], .lora_B.weight [out, r].
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { type TensorToWrite, writeSafetensors } from '../formats/safetensors.js';
import { symmetricEigen } from '../linalg/eigen.js';
import { GemmEngine, matrix } from '../linalg/gemm.js';
import { checkExportTarget, toolVersion } from '../model/export.js';
import { show, UsageError } from '../util/errors.js';
import { readEditFile } from './edit-file.js';
import { checkCompatibility, editSummary, openPortableModel, portableSites, readPortableWeight } from './portable.js';

export type LoraFormat = 'kohya' | 'peft';

export interface LoraRequest {
  editFile: string;
  /** The base model the LoRA is for (any format apply reads). */
  modelPath: string;
  /** The LoRA file (*.safetensors). */
  outPath: string;
  rank?: number;
  error?: number;
  format?: LoraFormat;
  force?: boolean;
  threads?: number;
}

export interface LoraSite {
  name: string;
  out: number;
  d: number;
  rank: number;
  /** ‖ΔW − up·down‖_F / ‖ΔW‖_F with the factors as written (float32). */
  error: number;
  /** ‖ΔW‖_F / ‖W‖_F: how large the edit is at this site. */
  relativeChange: number;
}

export interface LoraResult {
  kind: 'time-edit-lora';
  editFile: string;
  modelPath: string;
  outPath: string;
  format: LoraFormat;
  selection: { kind: 'rank'; rank: number } | { kind: 'error'; error: number };
  sites: LoraSite[];
  /** Largest per-site error. */
  maxError: number;
  parameters: number;
  bytes: number;
  notes: string[];
  /**
   * k when the sites were factored in the k-column basis of M − I (factorEditDelta: k < d, a
   * relative tail ≤ 1e-6 of M − I left out; errors still measured against the exact ΔW), else null.
   */
  basisRank: number | null;
  timings: { total: number };
}

/** A site's LoRA factors. */
export interface LoraFactors {
  rank: number;
  /** [out, r] row-major */
  up: Float32Array;
  /** [r, d] row-major */
  down: Float32Array;
  error: number;
  /** ‖ΔW‖_F */
  norm: number;
}

/**
 * Δ = M − I as L·Rᵀ: R [d, k] the right singular vectors of Δ (orthonormal columns; from the
 * eigendecomposition of ΔᵀΔ, float64) that carry all of Δ but a relative Frobenius tail ≤ τ, and
 * L = Δ·R [d, k]. A TIME edit of n rows has rank ≤ n (plus the float32 rounding of the stored M,
 * ≈ 1e-7 of it), so k ≪ d for a pair edit and every site's SVD shrinks from min(out, d) to min(out, k).
 * Null when that gains nothing (k = d) or Δ = 0.
 */
export async function factorEditDelta(
  delta: Float64Array,
  d: number,
  gemm: GemmEngine,
  tau = EDIT_BASIS_TAIL,
): Promise<EditBasis | null> {
  const D = matrix(delta, d, d);
  const G = (await gemm.gemm(D, D, { transA: true, compute: 'float64' })).data as Float64Array;
  const eig = symmetricEigen(G, d);
  const total = eig.values.reduce((a, v) => a + Math.max(0, v), 0);
  if (total === 0) return null;
  let k = 0;
  let tail = total;
  while (k < d && Math.sqrt(Math.max(0, tail) / total) > tau) {
    tail -= Math.max(0, eig.values[k] as number);
    k++;
  }
  if (k >= d) return null;
  const R = new Float64Array(d * k);
  for (let i = 0; i < k; i++) for (let j = 0; j < d; j++) R[j * k + i] = eig.vectors[i * d + j] as number;
  const L = (await gemm.gemm(D, matrix(R, d, k), { compute: 'float64' })).data as Float64Array;
  return { k, L, R, tail: Math.sqrt(Math.max(0, tail) / total) };
}

/** Relative Frobenius tail of Δ = M − I left out of the basis (see factorEditDelta). */
export const EDIT_BASIS_TAIL = 1e-6;

export interface EditBasis {
  k: number;
  /** Δ·R [d, k] row-major */
  L: Float64Array;
  /** [d, k] row-major, orthonormal columns */
  R: Float64Array;
  /** The relative Frobenius norm of Δ left out. */
  tail: number;
}

/**
 * Factor ΔW [out, d] (float64, row-major) at a fixed rank or the smallest rank within `error`.
 * With `projected` (ΔW ≈ C·Rᵀ, C = W·L [out, k] from factorEditDelta), the SVD is of C — the same
 * singular values and left vectors, right vectors R·V_C — and the error is still measured against
 * the exact ΔW; when that way cannot meet the request (a rank above k, or ε not reached), the site
 * is factored from ΔW itself.
 */
export async function factorDelta(
  dW: Float64Array,
  out: number,
  d: number,
  choice: { rank: number } | { error: number },
  gemm: GemmEngine,
  projected?: { C: Float64Array; basis: EditBasis },
): Promise<LoraFactors> {
  let norm2 = 0;
  for (const x of dW) norm2 += x * x;
  const norm = Math.sqrt(norm2);
  const w = projected ? projected.basis.k : d; // width of the matrix whose SVD is taken
  const small = Math.min(out, w);
  if (projected && 'rank' in choice && Math.min(choice.rank, Math.min(out, d)) > small) {
    return factorDelta(dW, out, d, choice, gemm);
  }
  const left = out <= w; // eigenvectors of X Xᵀ (out × out), else of Xᵀ X (w × w)
  const X = matrix(projected ? projected.C : dW, out, w);
  const G = (await gemm.gemm(X, X, left ? { transB: true, compute: 'float64' } : { transA: true, compute: 'float64' }))
    .data as Float64Array;
  const eig = symmetricEigen(G, small);
  const sigma = Array.from(eig.values, (v) => Math.sqrt(Math.max(0, v)));
  // P = X projected on the top eigenvectors: rows U_iᵀ X [small, w] (left) or columns X V_i [out, small].
  const E = matrix(eig.vectors, small, small);
  const P = (await gemm.gemm(E, X, left ? { compute: 'float64' } : { transB: true, compute: 'float64' }))
    .data as Float64Array; // left: [small, w] = Uᵀ X ; right: [small, out] = Vᵀ Xᵀ = (X V)ᵀ

  const build = async (r: number): Promise<LoraFactors> => {
    const up = new Float32Array(out * r);
    const downW = new Float64Array(r * w);
    for (let k = 0; k < r; k++) {
      const s = sigma[k] as number;
      const a = s > 0 ? Math.sqrt(s) : 0;
      const inv = s > 0 ? 1 / Math.sqrt(s) : 0;
      if (left) {
        for (let i = 0; i < out; i++) up[i * r + k] = (eig.vectors[k * small + i] as number) * a;
        for (let j = 0; j < w; j++) downW[k * w + j] = (P[k * w + j] as number) * inv;
      } else {
        for (let j = 0; j < w; j++) downW[k * w + j] = (eig.vectors[k * small + j] as number) * a;
        for (let i = 0; i < out; i++) up[i * r + k] = (P[k * out + i] as number) * inv;
      }
    }
    // down [r, d]: as is, or mapped back from the basis: (Σ^½ V_Cᵀ)·Rᵀ.
    const down =
      projected && r > 0
        ? ((await gemm.gemm(matrix(downW, r, w), matrix(projected.basis.R, d, w), { transB: true, output: 'float32' }))
            .data as Float32Array)
        : Float32Array.from(downW);
    return { rank: r, up, down, error: await reconstructionError(dW, up, down, out, d, r, norm, gemm), norm };
  };

  if ('rank' in choice) return build(Math.min(choice.rank, small));
  // Smallest r whose spectral tail is within ε, then checked on the float32 factors (and grown if needed).
  const total = sigma.reduce((a, s) => a + s * s, 0);
  let r = 0;
  let tail = total;
  while (r < small && (total === 0 ? 0 : Math.sqrt(Math.max(0, tail) / total)) > choice.error) {
    tail -= (sigma[r] as number) ** 2;
    r++;
  }
  let f = await build(r);
  while (f.error > choice.error && f.rank < small) f = await build(f.rank + 1);
  if (projected && f.error > choice.error) return factorDelta(dW, out, d, choice, gemm);
  return f;
}

/** ‖ΔW − up·down‖_F / ‖ΔW‖_F, the product and difference in float64 (onnxruntime); 0 when ΔW = 0 and the factors are too. */
export async function reconstructionError(
  dW: Float64Array,
  up: Float32Array,
  down: Float32Array,
  out: number,
  d: number,
  r: number,
  norm: number,
  gemm: GemmEngine,
): Promise<number> {
  const residual = (
    await gemm.gemm(matrix(up, out, r), matrix(down, r, d), {
      alpha: -1,
      c: matrix(dW, out, d),
      beta: 1,
      compute: 'float64',
    })
  ).data;
  let err2 = 0;
  for (let i = 0; i < residual.length; i++) err2 += (residual[i] as number) ** 2;
  if (norm === 0) return err2 === 0 ? 0 : Number.POSITIVE_INFINITY;
  return Math.sqrt(err2) / norm;
}

export function loraKeys(name: string, format: LoraFormat): { down: string; up: string; alpha: string | null } {
  if (format === 'kohya') {
    const base = `lora_unet_${name.replace(/\./g, '_')}`;
    return { down: `${base}.lora_down.weight`, up: `${base}.lora_up.weight`, alpha: `${base}.alpha` };
  }
  return { down: `unet.${name}.lora_A.weight`, up: `unet.${name}.lora_B.weight`, alpha: null };
}

export async function exportLora(request: LoraRequest): Promise<LoraResult> {
  const t0 = performance.now();
  for (const [field, v] of [
    ['editFile', request.editFile],
    ['modelPath', request.modelPath],
    ['outPath', request.outPath],
  ] as const) {
    if (typeof v !== 'string' || v.trim() === '') throw new UsageError(`${show(v)} is not a path`, { field });
  }
  if ((request.rank === undefined) === (request.error === undefined)) {
    throw new UsageError(
      'give exactly one of `rank` r (a fixed rank) or `error` ε (the largest relative error per site)',
      { mentions: ['rank', 'error'] },
    );
  }
  if (request.rank !== undefined && !(Number.isInteger(request.rank) && request.rank >= 1)) {
    throw new UsageError(`${show(request.rank)} must be an integer ≥ 1`, { field: 'rank' });
  }
  if (request.error !== undefined && !(Number.isFinite(request.error) && request.error >= 0 && request.error < 1)) {
    throw new UsageError(`${show(request.error)} must be a number in [0, 1) (relative Frobenius error per site)`, {
      field: 'error',
    });
  }
  const format = request.format ?? 'kohya';
  if (format !== 'kohya' && format !== 'peft')
    throw new UsageError(`${show(format)} must be kohya or peft`, { field: 'format' });
  const outPath = resolve(request.outPath);
  if (!outPath.endsWith('.safetensors'))
    throw new UsageError(`${show(outPath)}: a LoRA is written to a .safetensors file`, { field: 'outPath' });
  const threads = request.threads ?? 0;

  const edit = readEditFile(resolve(request.editFile));
  const model = openPortableModel(request.modelPath);
  checkExportTarget(model.path, outPath, request.force ?? false);
  const compat = checkCompatibility(edit, model, request.force ?? false);
  const { d } = edit;
  const delta = new Float64Array(d * d);
  for (let i = 0; i < d * d; i++) delta[i] = edit.M[i] as number;
  for (let i = 0; i < d; i++) delta[i * d + i] = (delta[i * d + i] as number) - 1;

  const byName = new Map(portableSites(model).map((s) => [s.name, s]));
  const choice: { rank: number } | { error: number } =
    request.rank !== undefined ? { rank: request.rank } : { error: request.error as number };
  const tensors: TensorToWrite[] = [];
  const sites: LoraSite[] = [];
  const gemm = new GemmEngine({ threads });
  let basisRank: number | null = null;
  try {
    const basis = await factorEditDelta(delta, d, gemm);
    basisRank = basis?.k ?? null;
    for (const name of edit.meta.sites) {
      const site = byName.get(name);
      if (!site) throw new UsageError(`no site ${show(name)}`, { field: 'modelPath' }); // checkCompatibility found them all
      const W = matrix(Float64Array.from(readPortableWeight(model, name)), site.out, d);
      const dW = (await gemm.gemm(W, matrix(delta, d, d), { compute: 'float64' })).data as Float64Array;
      const projected = basis
        ? { C: (await gemm.gemm(W, matrix(basis.L, d, basis.k), { compute: 'float64' })).data as Float64Array, basis }
        : undefined;
      const f = await factorDelta(dW, site.out, d, choice, gemm, projected);
      let wNorm2 = 0;
      for (const x of W.data) wNorm2 += x * x;
      const keys = loraKeys(name, format);
      const bytes = (a: Float32Array) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
      tensors.push({ name: keys.down, dtype: 'F32', shape: [f.rank, d], data: bytes(f.down) });
      tensors.push({ name: keys.up, dtype: 'F32', shape: [site.out, f.rank], data: bytes(f.up) });
      if (keys.alpha) tensors.push({ name: keys.alpha, dtype: 'F32', shape: [], data: bytes(Float32Array.of(f.rank)) });
      sites.push({
        name,
        out: site.out,
        d,
        rank: f.rank,
        error: f.error,
        relativeChange: wNorm2 > 0 ? f.norm / Math.sqrt(wNorm2) : 0,
      });
    }
  } finally {
    await gemm.dispose();
  }
  const maxError = Math.max(0, ...sites.map((s) => s.error));
  const meta = {
    kind: 'time-debias-lora',
    how: 'ΔW = W·(M − I) per site, truncated SVD in float64 (Gram eigendecomposition), balanced factors, alpha = rank (scale 1)',
    format,
    selection: choice,
    editFile: {
      path: edit.path,
      sha256: createHash('sha256').update(readFileSync(edit.path)).digest('hex'),
      ...editSummary(edit),
    },
    baseModel: model.path,
    sites: sites.map((s) => ({ name: s.name, rank: s.rank, error: s.error })),
    maxError,
    tool: { name: 'time-debias', version: toolVersion() },
  };
  const metadata: Record<string, string> = { format: 'pt', time_edit_lora: JSON.stringify(meta) };
  if (format === 'kohya') metadata.ss_network_module = 'networks.lora';
  writeSafetensors(outPath, tensors, metadata);
  const parameters = sites.reduce((a, s) => a + s.rank * (s.out + s.d), 0);
  return {
    kind: 'time-edit-lora',
    editFile: edit.path,
    modelPath: model.path,
    outPath,
    format,
    selection: 'rank' in choice ? { kind: 'rank', rank: choice.rank } : { kind: 'error', error: choice.error },
    sites,
    maxError,
    parameters,
    bytes: tensors.reduce((a, t) => a + t.data.byteLength, 0),
    notes: compat.notes,
    basisRank,
    timings: { total: Math.round(performance.now() - t0) },
  };
}
