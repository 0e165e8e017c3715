/**
 * Test-side reference maths, written independently of src/linalg: a seeded random source, naive
 * float64 products and Gaussian elimination with partial pivoting.
 */

/** mulberry32: a small seeded PRNG, uniform in [0, 1). */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Standard normal samples (Box–Muller). */
export function gaussian(random: () => number, length: number, scale = 1): Float64Array {
  const out = new Float64Array(length);
  for (let i = 0; i < length; i += 2) {
    const u = 1 - random();
    const v = random();
    const r = Math.sqrt(-2 * Math.log(u)) * scale;
    out[i] = r * Math.cos(2 * Math.PI * v);
    if (i + 1 < length) out[i + 1] = r * Math.sin(2 * Math.PI * v);
  }
  return out;
}

export function gaussian32(random: () => number, length: number, scale = 1): Float32Array {
  return Float32Array.from(gaussian(random, length, scale));
}

/** C = A·B, A m×k, B k×n, all row-major (plain triple loop, float64). */
export function naiveMatmul(a: ArrayLike<number>, b: ArrayLike<number>, m: number, k: number, n: number): Float64Array {
  const c = new Float64Array(m * n);
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) {
      let s = 0;
      for (let t = 0; t < k; t++) s += (a[i * k + t] as number) * (b[t * n + j] as number);
      c[i * n + j] = s;
    }
  }
  return c;
}

/** Transpose of an m×n row-major matrix. */
export function transpose(a: ArrayLike<number>, m: number, n: number): Float64Array {
  const t = new Float64Array(m * n);
  for (let i = 0; i < m; i++) for (let j = 0; j < n; j++) t[j * m + i] = a[i * n + j] as number;
  return t;
}

/** Solve A·X = B (A n×n, B n×m) by Gaussian elimination with partial pivoting, float64. */
export function gaussSolve(a: ArrayLike<number>, b: ArrayLike<number>, n: number, m: number): Float64Array {
  const A = Float64Array.from(a as ArrayLike<number>);
  const X = Float64Array.from(b as ArrayLike<number>);
  for (let col = 0; col < n; col++) {
    let piv = col;
    for (let r = col + 1; r < n; r++)
      if (Math.abs(A[r * n + col] as number) > Math.abs(A[piv * n + col] as number)) piv = r;
    if (piv !== col) {
      for (let j = 0; j < n; j++)
        [A[col * n + j], A[piv * n + j]] = [A[piv * n + j] as number, A[col * n + j] as number];
      for (let j = 0; j < m; j++)
        [X[col * m + j], X[piv * m + j]] = [X[piv * m + j] as number, X[col * m + j] as number];
    }
    const p = A[col * n + col] as number;
    for (let r = col + 1; r < n; r++) {
      const f = (A[r * n + col] as number) / p;
      if (f === 0) continue;
      for (let j = col; j < n; j++) A[r * n + j] = (A[r * n + j] as number) - f * (A[col * n + j] as number);
      for (let j = 0; j < m; j++) X[r * m + j] = (X[r * m + j] as number) - f * (X[col * m + j] as number);
    }
  }
  for (let col = n - 1; col >= 0; col--) {
    const p = A[col * n + col] as number;
    for (let j = 0; j < m; j++) {
      let s = X[col * m + j] as number;
      for (let t = col + 1; t < n; t++) s -= (A[col * n + t] as number) * (X[t * m + j] as number);
      X[col * m + j] = s / p;
    }
  }
  return X;
}

/** A random symmetric positive definite matrix X·Xᵀ + shift·I (n×n). */
export function randomSpd(random: () => number, n: number, shift = 1): Float64Array {
  const x = gaussian(random, n * n);
  const a = naiveMatmul(x, transpose(x, n, n), n, n, n);
  for (let i = 0; i < n; i++) a[i * n + i] = (a[i * n + i] as number) + shift;
  return a;
}

/** max |a − b| / max |b|. */
export function maxRelativeError(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let diff = 0;
  let scale = 0;
  for (let i = 0; i < b.length; i++) {
    diff = Math.max(diff, Math.abs((a[i] as number) - (b[i] as number)));
    scale = Math.max(scale, Math.abs(b[i] as number));
  }
  return scale === 0 ? diff : diff / scale;
}

/** ‖a − b‖_F / ‖b‖_F. */
export function frobeniusRelativeError(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let diff = 0;
  let norm = 0;
  for (let i = 0; i < b.length; i++) {
    diff += ((a[i] as number) - (b[i] as number)) ** 2;
    norm += (b[i] as number) ** 2;
  }
  return Math.sqrt(diff / norm);
}
