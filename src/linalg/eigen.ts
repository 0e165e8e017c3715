/**
 * Eigendecomposition of a symmetric matrix in float64: Householder reduction to tridiagonal form,
 * then the implicit QL method (tred2 / tql2 of EISPACK, as in JAMA's EigenvalueDecomposition).
 * O(n³); used for the Gram matrices of LoRA factoring (src/edit/lora.ts), n ≤ d.
 *
 *   A = V·diag(λ)·Vᵀ,  V orthogonal; returned with λ in DESCENDING order and `vectors` holding the
 *   eigenvectors as ROWS (row i is the eigenvector of λ_i), each of length n.
 */
import { EditError } from '../util/errors.js';

export interface SymmetricEigen {
  n: number;
  /** Descending. */
  values: Float64Array;
  /** n × n row-major; row i is the unit eigenvector of values[i]. */
  vectors: Float64Array;
}

export function symmetricEigen(A: Float64Array, n: number): SymmetricEigen {
  if (A.length !== n * n) throw new EditError(`eigen: ${A.length} values is not an n × n matrix with n = ${n}`);
  const V = Float64Array.from(A);
  const d = new Float64Array(n);
  const e = new Float64Array(n);
  // tred2 keeps V column-major, so its memory read row-major is Vᵀ: tql2 then rotates contiguous rows.
  tred2(V, d, e, n);
  const Vt = V;
  tql2(Vt, d, e, n);
  const order = Array.from({ length: n }, (_, i) => i).sort((a, b) => (d[b] as number) - (d[a] as number));
  const values = new Float64Array(n);
  const vectors = new Float64Array(n * n);
  order.forEach((src, dst) => {
    values[dst] = d[src] as number;
    vectors.set(Vt.subarray(src * n, (src + 1) * n), dst * n);
  });
  return { n, values, vectors };
}

/** Householder tridiagonalization; V accumulates the transformation (JAMA tred2). */
function tred2(V: Float64Array, d: Float64Array, e: Float64Array, n: number): void {
  const at = (i: number, j: number) => V[j * n + i] as number;
  for (let j = 0; j < n; j++) d[j] = at(n - 1, j);
  for (let i = n - 1; i > 0; i--) {
    let scale = 0;
    let h = 0;
    for (let k = 0; k < i; k++) scale += Math.abs(d[k] as number);
    if (scale === 0) {
      e[i] = d[i - 1] as number;
      for (let j = 0; j < i; j++) {
        d[j] = at(i - 1, j);
        V[j * n + i] = 0;
        V[i * n + j] = 0;
      }
    } else {
      for (let k = 0; k < i; k++) {
        d[k] = (d[k] as number) / scale;
        h += (d[k] as number) * (d[k] as number);
      }
      let f = d[i - 1] as number;
      let g = Math.sqrt(h);
      if (f > 0) g = -g;
      e[i] = scale * g;
      h -= f * g;
      d[i - 1] = f - g;
      for (let j = 0; j < i; j++) e[j] = 0;
      for (let j = 0; j < i; j++) {
        f = d[j] as number;
        V[i * n + j] = f;
        g = (e[j] as number) + at(j, j) * f;
        for (let k = j + 1; k <= i - 1; k++) {
          const vkj = at(k, j);
          g += vkj * (d[k] as number);
          e[k] = (e[k] as number) + vkj * f;
        }
        e[j] = g;
      }
      f = 0;
      for (let j = 0; j < i; j++) {
        e[j] = (e[j] as number) / h;
        f += (e[j] as number) * (d[j] as number);
      }
      const hh = f / (h + h);
      for (let j = 0; j < i; j++) e[j] = (e[j] as number) - hh * (d[j] as number);
      for (let j = 0; j < i; j++) {
        f = d[j] as number;
        g = e[j] as number;
        for (let k = j; k <= i - 1; k++) V[j * n + k] = at(k, j) - (f * (e[k] as number) + g * (d[k] as number));
        d[j] = at(i - 1, j);
        V[j * n + i] = 0;
      }
    }
    d[i] = h;
  }
  for (let i = 0; i < n - 1; i++) {
    V[i * n + n - 1] = at(i, i);
    V[i * n + i] = 1;
    const h = d[i + 1] as number;
    if (h !== 0) {
      for (let k = 0; k <= i; k++) d[k] = at(k, i + 1) / h;
      for (let j = 0; j <= i; j++) {
        let g = 0;
        for (let k = 0; k <= i; k++) g += at(k, i + 1) * at(k, j);
        for (let k = 0; k <= i; k++) V[j * n + k] = at(k, j) - g * (d[k] as number);
      }
    }
    for (let k = 0; k <= i; k++) V[(i + 1) * n + k] = 0;
  }
  for (let j = 0; j < n; j++) {
    d[j] = at(n - 1, j);
    V[j * n + n - 1] = 0;
  }
  V[(n - 1) * n + n - 1] = 1;
  e[0] = 0;
}

/** Implicit QL on the tridiagonal (d, e); Vt's ROWS are rotated (JAMA tql2 on Vᵀ). */
function tql2(Vt: Float64Array, d: Float64Array, e: Float64Array, n: number): void {
  for (let i = 1; i < n; i++) e[i - 1] = e[i] as number;
  e[n - 1] = 0;
  let f = 0;
  let tst1 = 0;
  const eps = 2 ** -52;
  for (let l = 0; l < n; l++) {
    tst1 = Math.max(tst1, Math.abs(d[l] as number) + Math.abs(e[l] as number));
    let m = l;
    while (m < n) {
      if (Math.abs(e[m] as number) <= eps * tst1) break;
      m++;
    }
    if (m > l) {
      let iter = 0;
      do {
        if (++iter > 60) throw new EditError('eigen: the QL iteration did not converge (is the matrix finite?)');
        let g = d[l] as number;
        let p = ((d[l + 1] as number) - g) / (2 * (e[l] as number));
        let r = Math.sqrt(p * p + 1);
        if (p < 0) r = -r;
        d[l] = (e[l] as number) / (p + r);
        d[l + 1] = (e[l] as number) * (p + r);
        const dl1 = d[l + 1] as number;
        let h = g - (d[l] as number);
        for (let i = l + 2; i < n; i++) d[i] = (d[i] as number) - h;
        f += h;
        p = d[m] as number;
        let c = 1;
        let c2 = c;
        let c3 = c;
        const el1 = e[l + 1] as number;
        let s = 0;
        let s2 = 0;
        for (let i = m - 1; i >= l; i--) {
          c3 = c2;
          c2 = c;
          s2 = s;
          g = c * (e[i] as number);
          h = c * p;
          r = Math.sqrt(p * p + (e[i] as number) * (e[i] as number));
          e[i + 1] = s * r;
          s = (e[i] as number) / r;
          c = p / r;
          p = c * (d[i] as number) - s * g;
          d[i + 1] = h + s * (c * g + s * (d[i] as number));
          const a = i * n;
          const b = (i + 1) * n;
          for (let k = 0; k < n; k++) {
            const vb = Vt[b + k] as number;
            const va = Vt[a + k] as number;
            Vt[b + k] = s * va + c * vb;
            Vt[a + k] = c * va - s * vb;
          }
        }
        p = (-s * s2 * c3 * el1 * (e[l] as number)) / dl1;
        e[l] = s * p;
        d[l] = c * p;
      } while (Math.abs(e[l] as number) > eps * tst1);
    }
    d[l] = (d[l] as number) + f;
    e[l] = 0;
  }
}
