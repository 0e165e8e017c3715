import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { Cholesky } from '../../src/linalg/cholesky.js';
import { GemmEngine } from '../../src/linalg/gemm.js';
import { EditError } from '../../src/util/errors.js';
import { gaussian, gaussSolve, maxRelativeError, naiveMatmul, randomSpd, rng, transpose } from './reference.js';

const engine = new GemmEngine({ threads: 1 });
after(() => engine.dispose());

describe('Cholesky factorization', () => {
  const random = rng(10);
  const cases = [
    { n: 1, block: 32, gemm: false },
    { n: 7, block: 32, gemm: false },
    { n: 70, block: 16, gemm: false },
    { n: 150, block: 16, gemm: true }, // blocks large enough to go through onnxruntime
    { n: 150, block: 150, gemm: false }, // one block: the unblocked kernel alone
  ];
  for (const { n, block, gemm } of cases) {
    test(`L·Lᵀ = A, L lower triangular (n=${n}, block=${block}, ${gemm ? 'onnxruntime' : 'JS'} updates)`, async () => {
      const a = randomSpd(random, n, 1);
      const chol = await Cholesky.factor(a, n, { block, gemm: gemm ? engine : undefined });
      assert.ok(chol.isPositiveDefinite());
      assert.equal(chol.failedPivot, -1);
      for (let i = 0; i < n; i++) for (let j = i + 1; j < n; j++) assert.equal(chol.L[i * n + j], 0);
      const llt = naiveMatmul(chol.L, transpose(chol.L, n, n), n, n, n);
      assert.ok(maxRelativeError(llt, a) < 1e-13, `‖LLᵀ − A‖ too large: ${maxRelativeError(llt, a)}`);
    });
  }

  test('only the lower triangle of A is read', async () => {
    const n = 9;
    const a = randomSpd(random, n);
    const junk = Float64Array.from(a);
    for (let i = 0; i < n; i++) for (let j = i + 1; j < n; j++) junk[i * n + j] = 1e9;
    const x = await Cholesky.factor(a, n);
    const y = await Cholesky.factor(junk, n);
    assert.deepEqual([...x.L], [...y.L]);
  });
});

describe('Cholesky solves', () => {
  const random = rng(11);
  for (const { n, m, block, gemm } of [
    { n: 40, m: 1, block: 32, gemm: false },
    { n: 40, m: 5, block: 8, gemm: false },
    { n: 200, m: 120, block: 16, gemm: true },
  ]) {
    test(`A·X = B agrees with Gaussian elimination (n=${n}, ${m} right-hand sides, block=${block})`, async () => {
      const a = randomSpd(random, n, 0.5);
      const b = gaussian(random, n * m);
      const chol = await Cholesky.factor(a, n, { block, gemm: gemm ? engine : undefined });
      const x = await chol.solve(b, m);
      const expected = gaussSolve(a, b, n, m);
      assert.ok(maxRelativeError(x, expected) < 1e-10, `error ${maxRelativeError(x, expected)}`);
      // Residual A·X − B.
      assert.ok(maxRelativeError(naiveMatmul(a, x, n, n, m), b) < 1e-11);
    });
  }

  test('factor once, solve many: the factor is not changed by solves', async () => {
    const n = 30;
    const a = randomSpd(random, n);
    const chol = await Cholesky.factor(a, n);
    const L = Float64Array.from(chol.L);
    for (let r = 0; r < 3; r++) {
      const b = gaussian(random, n);
      const x = await chol.solve(b);
      assert.ok(maxRelativeError(naiveMatmul(a, x, n, n, 1), b) < 1e-11);
    }
    assert.deepEqual([...chol.L], [...L]);
  });

  test('forward and backward halves: L·Y = B then Lᵀ·X = Y', async () => {
    const n = 25;
    const a = randomSpd(random, n);
    const chol = await Cholesky.factor(a, n, { block: 4 });
    const b = gaussian(random, n * 3);
    const y = Float64Array.from(b);
    await chol.forwardInPlace(y, 3);
    assert.ok(maxRelativeError(naiveMatmul(chol.L, y, n, n, 3), b) < 1e-12);
    const x = Float64Array.from(y);
    await chol.backwardInPlace(x, 3);
    assert.ok(maxRelativeError(naiveMatmul(transpose(chol.L, n, n), x, n, n, 3), y) < 1e-12);
  });
});

describe('non-SPD matrices are detected', () => {
  test('an indefinite matrix: isPositiveDefinite() is false and the failing pivot is named', async () => {
    // [[1, 2], [2, 1]] has eigenvalues 3 and −1.
    const chol = await Cholesky.factor(Float64Array.from([1, 2, 2, 1]), 2);
    assert.equal(chol.isPositiveDefinite(), false);
    assert.equal(chol.failedPivot, 1);
    await assert.rejects(chol.solve(Float64Array.from([1, 1])), (e: unknown) => {
      assert.ok(e instanceof EditError);
      assert.match(e.message, /not symmetric positive definite: pivot 1/);
      return true;
    });
  });

  test('a negative diagonal, a singular matrix and NaN entries', async () => {
    assert.equal((await Cholesky.factor(Float64Array.from([-1]), 1)).isPositiveDefinite(), false);
    assert.equal((await Cholesky.factor(Float64Array.from([1, 1, 1, 1]), 2)).isPositiveDefinite(), false);
    const withNaN = randomSpd(rng(12), 40);
    withNaN[35 * 40 + 3] = Number.NaN;
    const chol = await Cholesky.factor(withNaN, 40, { block: 16, gemm: engine });
    assert.equal(chol.isPositiveDefinite(), false);
    assert.equal(chol.failedPivot, 35);
  });

  test('a large indefinite matrix fails in a later block', async () => {
    const n = 100;
    const a = randomSpd(rng(13), n);
    a[80 * n + 80] = -1e6;
    const chol = await Cholesky.factor(a, n, { block: 16, gemm: engine });
    assert.equal(chol.failedPivot, 80);
  });

  test('bad shapes are refused', async () => {
    await assert.rejects(Cholesky.factor(new Float64Array(5), 2), /5 elements for an 2×2 matrix/);
    const chol = await Cholesky.factor(Float64Array.from([4]), 1);
    await assert.rejects(chol.solve(new Float64Array(3), 2), /right-hand side has 3 elements; expected 1×2/);
  });
});
