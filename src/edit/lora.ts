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

/** Factor ΔW [out, d] (float64, row-major) at a fixed rank or the smallest rank within `error`. */
export async function factorDelta(
  dW: Float64Array,
  out: number,
  d: number,
  choice: { rank: number } | { error: number },
  gemm: GemmEngine,
): Promise<LoraFactors> {
  let norm2 = 0;
  for (const x of dW) norm2 += x * x;
  const norm = Math.sqrt(norm2);
  const small = Math.min(out, d);
  const left = out <= d; // eigenvectors of ΔW ΔWᵀ (out × out), else of ΔWᵀ ΔW (d × d)
  const X = matrix(dW, out, d);
  const G = (await gemm.gemm(X, X, left ? { transB: true, compute: 'float64' } : { transA: true, compute: 'float64' }))
    .data as Float64Array;
  const eig = symmetricEigen(G, small);
  const sigma = Array.from(eig.values, (v) => Math.sqrt(Math.max(0, v)));
  // P = ΔW projected on the top eigenvectors: rows U_iᵀ ΔW [small, d] (left) or columns ΔW V_i [out, small].
  const E = matrix(eig.vectors, small, small);
  const P = (await gemm.gemm(E, X, left ? { compute: 'float64' } : { transB: true, compute: 'float64' }))
    .data as Float64Array; // left: [small, d] = Uᵀ ΔW ; right: [small, out] = Vᵀ ΔWᵀ = (ΔW V)ᵀ

  const build = (r: number): LoraFactors => {
    const up = new Float32Array(out * r);
    const down = new Float32Array(r * d);
    for (let k = 0; k < r; k++) {
      const s = sigma[k] as number;
      const a = s > 0 ? Math.sqrt(s) : 0;
      const inv = s > 0 ? 1 / Math.sqrt(s) : 0;
      if (left) {
        for (let i = 0; i < out; i++) up[i * r + k] = (eig.vectors[k * small + i] as number) * a;
        for (let j = 0; j < d; j++) down[k * d + j] = (P[k * d + j] as number) * inv;
      } else {
        for (let j = 0; j < d; j++) down[k * d + j] = (eig.vectors[k * small + j] as number) * a;
        for (let i = 0; i < out; i++) up[i * r + k] = (P[k * out + i] as number) * inv;
      }
    }
    return { rank: r, up, down, error: reconstructionError(dW, up, down, out, d, r, norm), norm };
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
  let f = build(r);
  while (f.error > choice.error && f.rank < small) f = build(f.rank + 1);
  return f;
}

/** ‖ΔW − up·down‖_F / ‖ΔW‖_F in float64 (0 when ΔW = 0 and the factors are too). */
export function reconstructionError(
  dW: Float64Array,
  up: Float32Array,
  down: Float32Array,
  out: number,
  d: number,
  r: number,
  norm: number,
): number {
  let err2 = 0;
  const row = new Float64Array(d);
  for (let i = 0; i < out; i++) {
    for (let j = 0; j < d; j++) row[j] = dW[i * d + j] as number;
    for (let k = 0; k < r; k++) {
      const u = up[i * r + k] as number;
      if (u === 0) continue;
      const base = k * d;
      for (let j = 0; j < d; j++) row[j] = (row[j] as number) - u * (down[base + j] as number);
    }
    for (let j = 0; j < d; j++) err2 += (row[j] as number) ** 2;
  }
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
  for (const [flag, v] of [
    ['--edit', request.editFile],
    ['--model', request.modelPath],
    ['--out', request.outPath],
  ] as const) {
    if (typeof v !== 'string' || v.trim() === '') throw new UsageError(`${flag}: ${show(v)} is not a path`);
  }
  if ((request.rank === undefined) === (request.error === undefined)) {
    throw new UsageError(
      'export-lora: give exactly one of --rank r (a fixed rank) or --error ε (the largest relative error per site)',
    );
  }
  if (request.rank !== undefined && !(Number.isInteger(request.rank) && request.rank >= 1)) {
    throw new UsageError(`--rank: ${show(request.rank)} must be an integer ≥ 1`);
  }
  if (request.error !== undefined && !(Number.isFinite(request.error) && request.error >= 0 && request.error < 1)) {
    throw new UsageError(
      `--error: ${show(request.error)} must be a number in [0, 1) (relative Frobenius error per site)`,
    );
  }
  const format = request.format ?? 'kohya';
  if (format !== 'kohya' && format !== 'peft') throw new UsageError(`--format: ${show(format)} must be kohya or peft`);
  const outPath = resolve(request.outPath);
  if (!outPath.endsWith('.safetensors'))
    throw new UsageError(`--out ${show(outPath)}: a LoRA is written to a .safetensors file`);
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
  try {
    for (const name of edit.meta.sites) {
      const site = byName.get(name);
      if (!site) throw new UsageError(`--model: no site ${show(name)}`); // checkCompatibility found them all
      const W = readPortableWeight(model, name);
      const dW = (
        await gemm.gemm(matrix(Float64Array.from(W), site.out, d), matrix(delta, d, d), { compute: 'float64' })
      ).data as Float64Array;
      const f = await factorDelta(dW, site.out, d, choice, gemm);
      let wNorm2 = 0;
      for (const x of W) wNorm2 += x * x;
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
    timings: { total: Math.round(performance.now() - t0) },
  };
}
