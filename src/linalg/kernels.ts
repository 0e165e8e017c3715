/**
 * Plain float64 kernels for the small parts of the blocked factorizations (diagonal blocks, panels
 * below a GEMM threshold). Row-major storage; every inner loop runs over contiguous memory, unrolled
 * by four so that one load/store of the target row serves four multiply-adds.
 */
import type { GemmEngine } from './gemm.js';
import { matrix } from './gemm.js';

export type ProductLayout = 'NN' | 'NT' | 'TN';

/** Below this many multiply-adds a product is done in JS (an onnxruntime call costs ~0.1 ms). */
export const GEMM_THRESHOLD = 1 << 16;

/**
 * C ← C − op(A)·op(B) for an m×n block C, with k the inner dimension:
 *   NN: A m×k, B k×n     NT: A m×k, B n×k     TN: A k×m, B k×n
 * Large products go through `engine` (float64 Gemm in onnxruntime); small ones, or all of them when
 * no engine is given, run in JS.
 */
export async function subtractProduct(
  c: Float64Array,
  a: Float64Array,
  b: Float64Array,
  m: number,
  k: number,
  n: number,
  layout: ProductLayout,
  engine?: GemmEngine,
): Promise<void> {
  if (m === 0 || n === 0 || k === 0) return;
  if (engine && m * k * n >= GEMM_THRESHOLD) {
    const am = layout === 'TN' ? matrix(a, k, m) : matrix(a, m, k);
    const bm = layout === 'NT' ? matrix(b, n, k) : matrix(b, k, n);
    const y = await engine.gemm(am, bm, {
      transA: layout === 'TN',
      transB: layout === 'NT',
      alpha: -1,
      beta: 1,
      c: matrix(c, m, n),
      compute: 'float64',
    });
    c.set(y.data);
    return;
  }
  if (layout === 'NN') subtractNN(c, a, b, m, k, n);
  else if (layout === 'NT') subtractNT(c, a, b, m, k, n);
  else subtractTN(c, a, b, m, k, n);
}

/** C[i,:] −= Σ_t A[i,t]·B[t,:] — axpy over contiguous rows of B. */
function subtractNN(c: Float64Array, a: Float64Array, b: Float64Array, m: number, k: number, n: number): void {
  for (let i = 0; i < m; i++) subtractCombination(c, i * n, n, a, i * k, 1, b, 0, k);
}

/** C[i,j] −= A[i,:]·B[j,:] — dot products of contiguous rows. */
function subtractNT(c: Float64Array, a: Float64Array, b: Float64Array, m: number, k: number, n: number): void {
  for (let i = 0; i < m; i++) {
    const ai = i * k;
    const ci = i * n;
    for (let j = 0; j < n; j++) c[ci + j] = (c[ci + j] as number) - dot(a, ai, b, j * k, k);
  }
}

/** C[i,:] −= Σ_t A[t,i]·B[t,:] — axpy with the scalar read down a column of A. */
function subtractTN(c: Float64Array, a: Float64Array, b: Float64Array, m: number, k: number, n: number): void {
  for (let i = 0; i < m; i++) subtractCombination(c, i * n, n, a, i, m, b, 0, k);
}

/**
 * One row minus a combination of rows: y[yo + j] −= Σ_{t<count} coef[co + t·cs] · x[xo + t·len + j]
 * for j < len (the rows of x are contiguous, `len` apart; the coefficients `cs` apart). Unrolled by
 * four so that one load/store of the target row serves four multiply-adds. The products above, and
 * the triangular solves of the Cholesky leaves (cholesky.ts), are this loop.
 */
export function subtractCombination(
  y: Float64Array,
  yo: number,
  len: number,
  coef: Float64Array,
  co: number,
  cs: number,
  x: Float64Array,
  xo: number,
  count: number,
): void {
  let t = 0;
  let c = co;
  let x0 = xo;
  for (; t + 3 < count; t += 4, c += 4 * cs, x0 += 4 * len) {
    const a0 = coef[c] as number;
    const a1 = coef[c + cs] as number;
    const a2 = coef[c + 2 * cs] as number;
    const a3 = coef[c + 3 * cs] as number;
    const x1 = x0 + len;
    const x2 = x1 + len;
    const x3 = x2 + len;
    for (let j = 0; j < len; j++) {
      y[yo + j] =
        (y[yo + j] as number) -
        a0 * (x[x0 + j] as number) -
        a1 * (x[x1 + j] as number) -
        a2 * (x[x2 + j] as number) -
        a3 * (x[x3 + j] as number);
    }
  }
  for (; t < count; t++, c += cs, x0 += len) {
    const a = coef[c] as number;
    for (let j = 0; j < len; j++) y[yo + j] = (y[yo + j] as number) - a * (x[x0 + j] as number);
  }
}

/** Σ_t x[xo+t]·y[yo+t] for t < len, four partial sums. */
export function dot(x: Float64Array, xo: number, y: Float64Array, yo: number, len: number): number {
  let s0 = 0;
  let s1 = 0;
  let s2 = 0;
  let s3 = 0;
  let t = 0;
  for (; t + 3 < len; t += 4) {
    s0 += (x[xo + t] as number) * (y[yo + t] as number);
    s1 += (x[xo + t + 1] as number) * (y[yo + t + 1] as number);
    s2 += (x[xo + t + 2] as number) * (y[yo + t + 2] as number);
    s3 += (x[xo + t + 3] as number) * (y[yo + t + 3] as number);
  }
  for (; t < len; t++) s0 += (x[xo + t] as number) * (y[yo + t] as number);
  return s0 + s1 + (s2 + s3);
}

/** Copy the block rows [r0, r1) × cols [c0, c1) of a row-major matrix with `cols` columns. */
export function copyBlock(
  src: Float64Array,
  cols: number,
  r0: number,
  r1: number,
  c0: number,
  c1: number,
): Float64Array {
  const w = c1 - c0;
  const out = new Float64Array((r1 - r0) * w);
  for (let r = r0; r < r1; r++) out.set(src.subarray(r * cols + c0, r * cols + c1), (r - r0) * w);
  return out;
}
