/**
 * Plain typed-array maths of zero-shot CLIP classification (kept apart from the model code, as
 * transformers.js keeps utils/maths.js apart from its tensors).
 *
 *   notation
 *     t̂_{c,k}   normalised text embedding of the k-th label prompt of class c
 *     ĉ_c       class embedding: the prompt ensemble averaged in embedding space, renormalised
 *               ĉ_c = normalize( (1/K_c) Σ_k t̂_{c,k} )                       (CLIP's prompt ensembling)
 *     v̂         normalised image embedding
 *     s         logit scale, exp(logit_scale) (100 for trained CLIP)
 *     z_c       logits, z_c = s · v̂·ĉ_c                                      (cosine × logit scale)
 *     p_c       class probabilities, p = softmax(z)
 */

/** x / ||x||₂ (a zero vector stays zero). */
export function normalize(x: ArrayLike<number>): Float32Array {
  let ss = 0;
  for (let i = 0; i < x.length; i++) ss += (x[i] as number) ** 2;
  const n = Math.sqrt(ss);
  const out = new Float32Array(x.length);
  if (n === 0) return out;
  for (let i = 0; i < x.length; i++) out[i] = (x[i] as number) / n;
  return out;
}

export function dot(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new RangeError(`dot: lengths ${a.length} and ${b.length} differ`);
  let s = 0;
  for (let i = 0; i < a.length; i++) s += (a[i] as number) * (b[i] as number);
  return s;
}

/** ĉ = normalize(mean_k normalize(t_k)). */
export function ensemble(vectors: readonly ArrayLike<number>[]): Float32Array {
  if (vectors.length === 0) throw new RangeError('ensemble: no vectors');
  const dim = (vectors[0] as ArrayLike<number>).length;
  const acc = new Float64Array(dim);
  for (const v of vectors) {
    if (v.length !== dim) throw new RangeError(`ensemble: vector of length ${v.length}, expected ${dim}`);
    const u = normalize(v);
    for (let i = 0; i < dim; i++) acc[i] = (acc[i] as number) + (u[i] as number) / vectors.length;
  }
  return normalize(acc);
}

/** Numerically stable softmax (subtracts the maximum). */
export function softmax(z: readonly number[]): number[] {
  const m = Math.max(...z);
  const e = z.map((x) => Math.exp(x - m));
  const sum = e.reduce((a, b) => a + b, 0);
  return e.map((x) => x / sum);
}

/** Index of the largest entry (first on ties). */
export function argmax(x: readonly number[]): number {
  let best = 0;
  for (let i = 1; i < x.length; i++) if ((x[i] as number) > (x[best] as number)) best = i;
  return best;
}
