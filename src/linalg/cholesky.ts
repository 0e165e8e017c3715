/**
 * Cholesky decomposition A = L·Lᵀ of a symmetric positive definite matrix, in float64: factor once,
 * solve many times (the ml-matrix / LAPACK potrf–potrs contract).
 *
 * Storage is row-major n×n. The O(n²·b) work (diagonal blocks, panels, leaf solves) runs in JS
 * with contiguous inner loops; the O(n³) work (block updates) is float64 GEMM through onnxruntime
 * when a GemmEngine is given. Measured on 2 cores: n = 768 with 768 right-hand sides, factor
 * ≈ 16 ms and solve ≈ 40 ms, against ≈ 110 ms and ≈ 390 ms in plain JS.
 *
 *   factor (left-looking, block column J = [j0, j1), b = j1 − j0):
 *     P  ← A[j0:, J] − L[j0:, :j0]·L[J, :j0]ᵀ          (GEMM)
 *     L[J, J]  = chol(P[J])                             (JS, unblocked Cholesky–Crout)
 *     L[j1:, J] = P[j1:]·L[J, J]⁻ᵀ                       (JS, row-wise triangular solve)
 *   solve A·X = B:  L·Y = B, then Lᵀ·X = Y, each by recursive halving of the rows:
 *     Y₁ = L₁₁⁻¹B₁;  B₂ −= L₂₁·Y₁ (GEMM);  Y₂ = L₂₂⁻¹B₂   (leaves of b rows in JS)
 */
import { EditError } from '../util/errors.js';
import type { GemmEngine } from './gemm.js';
import { copyBlock, dot, subtractCombination, subtractProduct } from './kernels.js';

export interface CholeskyOptions {
  /** Run the large block updates through onnxruntime (float64). Without it everything runs in JS. */
  gemm?: GemmEngine;
  /** Leaf / block size (default 32: measured best for n = 308…768 with 768 right-hand sides). */
  block?: number;
  /** Name of the matrix in error messages (e.g. "A = I + C·D·Cᵀ"). */
  label?: string;
}

export class Cholesky {
  private constructor(
    /** Order of A. */
    readonly n: number,
    /** The lower factor, row-major n×n, zero above the diagonal (partial when not positive definite). */
    readonly L: Float64Array,
    /** Index of the first pivot that was not positive (or not finite), −1 when A is SPD. */
    readonly failedPivot: number,
    private readonly options: CholeskyOptions,
  ) {}

  /** Factor A (row-major n×n; only the lower triangle is read). Never throws for a non-SPD matrix: ask `isPositiveDefinite()`. */
  static async factor(a: Float64Array, n: number, options: CholeskyOptions = {}): Promise<Cholesky> {
    if (!Number.isInteger(n) || n < 0 || a.length !== n * n) {
      throw new RangeError(`Cholesky: ${a.length} elements for an ${n}×${n} matrix`);
    }
    const bs = blockSize(options.block);
    const L = new Float64Array(n * n);
    for (let i = 0; i < n; i++) L.set(a.subarray(i * n, i * n + i + 1), i * n);
    let failedPivot = -1;
    for (let j0 = 0; j0 < n && failedPivot < 0; j0 += bs) {
      const jb = Math.min(bs, n - j0);
      const below = n - j0;
      // Panel P = rows j0.., columns [j0, j0+jb) of A, updated with the columns already factored.
      const P = copyBlock(L, n, j0, n, j0, j0 + jb);
      if (j0 > 0) {
        const X = copyBlock(L, n, j0, n, 0, j0);
        await subtractProduct(P, X, X.subarray(0, jb * j0), below, j0, jb, 'NT', options.gemm);
      }
      // Diagonal block: unblocked Cholesky–Crout on P[0:jb, 0:jb].
      for (let i = 0; i < jb && failedPivot < 0; i++) {
        const pi = i * jb;
        for (let j = 0; j < i; j++) {
          P[pi + j] = ((P[pi + j] as number) - dot(P, pi, P, j * jb, j)) / (P[j * jb + j] as number);
        }
        const s = (P[pi + i] as number) - dot(P, pi, P, pi, i);
        if (!(s > 0) || !Number.isFinite(s)) failedPivot = j0 + i;
        else P[pi + i] = Math.sqrt(s);
        for (let j = i + 1; j < jb; j++) P[pi + j] = 0;
      }
      if (failedPivot >= 0) {
        for (let r = 0; r < jb; r++) L.set(P.subarray(r * jb, r * jb + jb), (j0 + r) * n + j0);
        break;
      }
      // Rows below: P[r, :] ← P[r, :]·L_JJ⁻ᵀ, i.e. solve L_JJ·x = P[r, :]ᵀ row by row.
      for (let r = jb; r < below; r++) {
        const pr = r * jb;
        for (let k = 0; k < jb; k++) {
          P[pr + k] = ((P[pr + k] as number) - dot(P, pr, P, k * jb, k)) / (P[k * jb + k] as number);
        }
      }
      for (let r = 0; r < below; r++) L.set(P.subarray(r * jb, r * jb + jb), (j0 + r) * n + j0);
    }
    return new Cholesky(n, L, failedPivot, options);
  }

  isPositiveDefinite(): boolean {
    return this.failedPivot < 0;
  }

  /** Solve A·X = B for B row-major n×nrhs; returns X (B is not modified). */
  async solve(b: Float64Array, nrhs = 1): Promise<Float64Array> {
    const x = Float64Array.from(b);
    await this.solveInPlace(x, nrhs);
    return x;
  }

  /** Solve A·X = B in place: B (row-major n×nrhs) becomes X. */
  async solveInPlace(b: Float64Array, nrhs = 1): Promise<void> {
    this.assertPositiveDefinite();
    await this.forwardInPlace(b, nrhs);
    await this.backwardInPlace(b, nrhs);
  }

  /** L·Y = B in place (B row-major n×m). */
  async forwardInPlace(b: Float64Array, m = 1): Promise<void> {
    this.assertPositiveDefinite();
    this.checkRhs(b, m);
    await this.forward(b, m, 0, this.n);
  }

  /** Lᵀ·X = Y in place (Y row-major n×m). */
  async backwardInPlace(b: Float64Array, m = 1): Promise<void> {
    this.assertPositiveDefinite();
    this.checkRhs(b, m);
    await this.backward(b, m, 0, this.n);
  }

  /**
   * Rows [r0, r1) of L·Y = B, the rows above r0 already eliminated. Recursive halving: the two
   * halves are solved in turn and the coupling B₂ −= L₂₁·Y₁ is one GEMM, so the large products are
   * few and large (efficient in onnxruntime) and only the leaves run in JS.
   */
  private async forward(b: Float64Array, m: number, r0: number, r1: number): Promise<void> {
    const { n, L } = this;
    const leaf = blockSize(this.options.block);
    if (r1 - r0 > leaf) {
      const mid = r0 + splitPoint(r1 - r0, leaf);
      await this.forward(b, m, r0, mid);
      const L21 = copyBlock(L, n, mid, r1, r0, mid);
      await subtractProduct(
        b.subarray(mid * m, r1 * m),
        L21,
        b.subarray(r0 * m, mid * m),
        r1 - mid,
        mid - r0,
        m,
        'NN',
        this.options.gemm,
      );
      await this.forward(b, m, mid, r1);
      return;
    }
    for (let i = r0; i < r1; i++) {
      // y_i −= Σ_{r0≤k<i} L[i,k]·y_k (coefficients along row i of L), then y_i /= L[i,i]
      subtractCombination(b, i * m, m, L, i * n + r0, 1, b, r0 * m, i - r0);
      const inv = 1 / (L[i * n + i] as number);
      for (let j = 0; j < m; j++) b[i * m + j] = (b[i * m + j] as number) * inv;
    }
  }

  /** Rows [r0, r1) of Lᵀ·X = Y, the rows below r1 already eliminated (recursive, as `forward`). */
  private async backward(b: Float64Array, m: number, r0: number, r1: number): Promise<void> {
    const { n, L } = this;
    const leaf = blockSize(this.options.block);
    if (r1 - r0 > leaf) {
      const mid = r0 + splitPoint(r1 - r0, leaf);
      await this.backward(b, m, mid, r1);
      const L21 = copyBlock(L, n, mid, r1, r0, mid);
      await subtractProduct(
        b.subarray(r0 * m, mid * m),
        L21,
        b.subarray(mid * m, r1 * m),
        mid - r0,
        r1 - mid,
        m,
        'TN',
        this.options.gemm,
      );
      await this.backward(b, m, r0, mid);
      return;
    }
    for (let i = r1 - 1; i >= r0; i--) {
      // x_i −= Σ_{i<k<r1} L[k,i]·x_k (coefficients down column i of L), then x_i /= L[i,i]
      subtractCombination(b, i * m, m, L, (i + 1) * n + i, n, b, (i + 1) * m, r1 - i - 1);
      const inv = 1 / (L[i * n + i] as number);
      for (let j = 0; j < m; j++) b[i * m + j] = (b[i * m + j] as number) * inv;
    }
  }

  private checkRhs(b: Float64Array, m: number): void {
    if (!Number.isInteger(m) || m < 0 || b.length !== this.n * m) {
      throw new RangeError(`Cholesky.solve: right-hand side has ${b.length} elements; expected ${this.n}×${m}`);
    }
  }

  private assertPositiveDefinite(): void {
    if (this.failedPivot >= 0) {
      throw new EditError(
        `${this.options.label ?? 'matrix'} (${this.n}×${this.n}) is not symmetric positive definite: pivot ` +
          `${this.failedPivot} is not a positive finite number (non-finite rows, or rows that are not what they should be)`,
      );
    }
  }
}

/** Where to split a range of `size` rows: half, rounded to a multiple of the leaf size. */
function splitPoint(size: number, leaf: number): number {
  return Math.max(leaf, Math.round(size / 2 / leaf) * leaf);
}

function blockSize(block: number | undefined): number {
  const b = block ?? 32;
  if (!Number.isInteger(b) || b < 1) throw new RangeError(`Cholesky: block size ${b} is not a positive integer`);
  return b;
}
