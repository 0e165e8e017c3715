/** Symmetric eigendecomposition: A·v = λ·v, V orthogonal, λ descending; known spectra. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { symmetricEigen } from '../../src/linalg/eigen.js';
import { randomFloats } from '../onnx/helpers.js';

test('random Gram matrices: residual and orthogonality to 1e-12, values descending', () => {
  for (const n of [1, 2, 3, 17, 60]) {
    const B = randomFloats(n * n, n);
    const A = new Float64Array(n * n);
    for (let i = 0; i < n; i++)
      for (let j = 0; j < n; j++) {
        let s = 0;
        for (let k = 0; k < n; k++) s += (B[i * n + k] as number) * (B[j * n + k] as number);
        A[i * n + j] = s;
      }
    const { values, vectors } = symmetricEigen(A, n);
    for (let q = 0; q < n; q++) {
      if (q > 0) assert.ok((values[q] as number) <= (values[q - 1] as number));
      for (let i = 0; i < n; i++) {
        let s = 0;
        for (let k = 0; k < n; k++) s += (A[i * n + k] as number) * (vectors[q * n + k] as number);
        assert.ok(
          Math.abs(s - (values[q] as number) * (vectors[q * n + i] as number)) <= 1e-12 * (values[0] as number),
        );
      }
      for (let p = 0; p <= q; p++) {
        let dot = 0;
        for (let k = 0; k < n; k++) dot += (vectors[q * n + k] as number) * (vectors[p * n + k] as number);
        assert.ok(Math.abs(dot - (p === q ? 1 : 0)) <= 1e-12);
      }
    }
  }
});

test('a known spectrum: diag(3, 1, 2) rotated, and a rank-1 matrix', () => {
  const c = Math.cos(0.3);
  const s = Math.sin(0.3);
  // R diag(3,1,2) Rᵀ with R a rotation in the (0,1) plane
  const A = Float64Array.of(3 * c * c + s * s, (3 - 1) * c * s, 0, (3 - 1) * c * s, 3 * s * s + c * c, 0, 0, 0, 2);
  const e = symmetricEigen(A, 3);
  assert.deepEqual(
    Array.from(e.values, (v) => Number(v.toFixed(12))),
    [3, 2, 1],
  );
  const u = Float64Array.of(1, 2, 2);
  const R1 = new Float64Array(9);
  for (let i = 0; i < 3; i++) for (let j = 0; j < 3; j++) R1[i * 3 + j] = (u[i] as number) * (u[j] as number);
  const r = symmetricEigen(R1, 3);
  assert.ok(Math.abs((r.values[0] as number) - 9) < 1e-12);
  assert.ok(Math.abs(r.values[1] as number) < 1e-12 && Math.abs(r.values[2] as number) < 1e-12);
});
