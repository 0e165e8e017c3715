/**
 * A TIME edit of ALL cross-attention to_k/to_v sites, applied on the text side (solve.ts eq. 5):
 *
 *   W′_s = W_s M  for every site s   ⇒   W′_s e = W_s (M e)  for every row e of encoder_hidden_states
 *
 * In Stable Diffusion's UNet, encoder_hidden_states reaches nothing but the attn2 to_k/to_v
 * projections, so feeding M e to the ORIGINAL UNet is exactly the edited model, and switching edits
 * (the debias tuning's probes) costs one d × d product per prompt row instead of a new UNet.
 *
 * Notation (row-major float32):
 *   M      d × d                the whole map                         e ↦ M e
 *   Δ      d × d, Δ = M − I     keeps a small edit's precision         e ↦ e + Δ e
 *   U, Z   r × d, Δ = Uᵀ Z      a Woodbury solution's rank-r update    e ↦ e + Uᵀ (Z e)   (O(r d), not O(d²))
 *
 * `textSideEdit(t)` wraps a transform into what the generation pipeline takes (generate/pipeline.ts
 * `TextSideEdit`: `apply` + the `sha256` that identifies it in image records), so the pipeline (a
 * lower floor) applies an edit without knowing its maths.
 */
import { createHash } from 'node:crypto';
import { EditError, show } from '../util/errors.js';
import type { EditSolution } from './solve.js';

/** The text-side form of an all-site edit W′ = W M (solve.ts gives M, and U, Z for Woodbury). */
export type TextTransform =
  | { kind: 'matrix'; M: Float32Array }
  | { kind: 'delta'; delta: Float32Array }
  | { kind: 'low-rank'; rank: number; u: Float32Array; z: Float32Array };

/** What the generation pipeline applies to its encoder_hidden_states rows (structurally its TextSideEdit). */
export interface TextSideEditOf {
  kind: 'text-transform';
  /** sha256 of the transform's kind and values: the edit's identity in image records and audits. */
  sha256: string;
  /** Rows e (length d) of `hidden` [rows, d] → the edited rows. */
  apply(hidden: Float32Array, d: number): Float32Array;
}

/** A plain Float32Array is M. */
export function toTextTransform(t: Float32Array | TextTransform): TextTransform {
  return t instanceof Float32Array ? { kind: 'matrix', M: t } : t;
}

/**
 * The text-side form of a solved edit: the rank-r factors of a Woodbury solution (Δ = Uᵀ Z), or M
 * itself for a Cholesky solution.
 */
export function textTransformOf(solution: EditSolution): TextTransform {
  return solution.kind === 'woodbury'
    ? { kind: 'low-rank', rank: solution.rank, u: solution.factors.u, z: solution.factors.z }
    : { kind: 'matrix', M: solution.M };
}

/** Wrap a transform for the pipeline (see the module comment). */
export function textSideEdit(t: Float32Array | TextTransform): TextSideEditOf {
  const transform = toTextTransform(t);
  return {
    kind: 'text-transform',
    sha256: textTransformHash(transform),
    apply: (hidden, d) => applyTextTransform(transform, hidden, d),
  };
}

/**
 * Rows e (length d) of `hidden` [rows, d] → M e:
 *   matrix    M e                     (M row-major d × d)
 *   delta     e + Δ e                 (Δ = M − I, row-major d × d)
 *   low-rank  e + Uᵀ (Z e)            (U, Z row-major r × d: O(r d) per row instead of O(d²))
 * Sums in float64, results rounded to float32. EditError (field `textTransform`) when the sizes do
 * not fit the model's text width d.
 */
export function applyTextTransform(t: Float32Array | TextTransform, hidden: Float32Array, d: number): Float32Array {
  const transform = toTextTransform(t);
  const check = (what: string, values: Float32Array, count: number, rule: string) => {
    if (values.length !== count) {
      throw new EditError(
        `${what} has ${values.length} values; the model's text width is d = ${d}, so ${rule} = ${count}`,
        { field: 'textTransform' },
      );
    }
  };
  const rows = hidden.length / d;
  const out = new Float32Array(hidden.length);
  const e = new Float64Array(d);
  if (transform.kind === 'low-rank') {
    const r = transform.rank;
    if (!Number.isInteger(r) || r < 0) {
      throw new EditError(`rank ${show(r)} is not an integer >= 0`, { field: 'textTransform' });
    }
    check('U', transform.u, r * d, 'U must be r × d');
    check('Z', transform.z, r * d, 'Z must be r × d');
    const ze = new Float64Array(r);
    for (let row = 0; row < rows; row++) {
      for (let j = 0; j < d; j++) e[j] = hidden[row * d + j] as number;
      for (let k = 0; k < r; k++) {
        let sum = 0;
        for (let j = 0; j < d; j++) sum += (transform.z[k * d + j] as number) * (e[j] as number);
        ze[k] = sum;
      }
      for (let i = 0; i < d; i++) {
        let sum = e[i] as number;
        for (let k = 0; k < r; k++) sum += (transform.u[k * d + i] as number) * (ze[k] as number);
        out[row * d + i] = sum;
      }
    }
    return out;
  }
  const A = transform.kind === 'matrix' ? transform.M : transform.delta;
  check(
    transform.kind === 'matrix' ? 'M' : 'Δ',
    A,
    d * d,
    transform.kind === 'matrix' ? 'M must be d × d' : 'Δ must be d × d',
  );
  const plusIdentity = transform.kind === 'delta';
  for (let row = 0; row < rows; row++) {
    for (let j = 0; j < d; j++) e[j] = hidden[row * d + j] as number;
    for (let i = 0; i < d; i++) {
      let sum = plusIdentity ? (e[i] as number) : 0;
      const base = i * d;
      for (let j = 0; j < d; j++) sum += (A[base + j] as number) * (e[j] as number);
      out[row * d + i] = sum;
    }
  }
  return out;
}

/** sha256 of a transform's kind and values (its identity in image records). */
export function textTransformHash(t: TextTransform): string {
  const h = createHash('sha256').update(t.kind);
  const add = (a: Float32Array) => h.update(new Uint8Array(a.buffer, a.byteOffset, a.byteLength));
  if (t.kind === 'matrix') add(t.M);
  else if (t.kind === 'delta') add(t.delta);
  else {
    h.update(String(t.rank));
    add(t.u);
    add(t.z);
  }
  return h.digest('hex');
}
