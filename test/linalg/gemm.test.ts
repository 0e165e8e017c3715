import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { GemmEngine, matrix } from '../../src/linalg/gemm.js';
import { gaussian, gaussian32, maxRelativeError, naiveMatmul, rng, transpose } from './reference.js';

const engine = new GemmEngine({ threads: 1 });
after(() => engine.dispose());

describe('GemmEngine.gemm matches the naive product', () => {
  const random = rng(1);
  const m = 37;
  const k = 53;
  const n = 29;
  for (const dtype of ['float32', 'float64'] as const) {
    for (const transA of [false, true]) {
      for (const transB of [false, true]) {
        test(`${dtype} transA=${transA} transB=${transB}`, async () => {
          const make = dtype === 'float32' ? gaussian32 : gaussian;
          const a = make(random, m * k);
          const b = make(random, k * n);
          const A = transA ? matrix(Float64Array.from(transpose(a, m, k)), k, m) : matrix(a, m, k);
          const B = transB ? matrix(Float64Array.from(transpose(b, k, n)), n, k) : matrix(b, k, n);
          if (dtype === 'float32') {
            A.data = Float32Array.from(A.data);
            B.data = Float32Array.from(B.data);
          }
          const y = await engine.gemm(A, B, { transA, transB });
          assert.equal(y.rows, m);
          assert.equal(y.cols, n);
          assert.ok(dtype === 'float32' ? y.data instanceof Float32Array : y.data instanceof Float64Array);
          const expected = naiveMatmul(a, b, m, k, n);
          assert.ok(maxRelativeError(y.data, expected) < (dtype === 'float32' ? 1e-5 : 1e-13));
        });
      }
    }
  }

  test('alpha, beta and C: Y = alpha·A·B + beta·C, float64', async () => {
    const a = gaussian(random, m * k);
    const b = gaussian(random, k * n);
    const c = gaussian(random, m * n);
    const y = await engine.gemm(matrix(a, m, k), matrix(b, k, n), { alpha: -1, beta: 0.5, c: matrix(c, m, n) });
    const ab = naiveMatmul(a, b, m, k, n);
    const expected = ab.map((v, i) => -v + 0.5 * (c[i] as number));
    assert.ok(maxRelativeError(y.data, expected) < 1e-13);
  });

  test('float32 inputs accumulated in float64, written into a given array', async () => {
    const a = gaussian32(random, m * k);
    const b = gaussian32(random, k * n);
    const out = new Float64Array(m * n);
    const y = await engine.gemm(matrix(a, m, k), matrix(b, k, n), { compute: 'float64', out });
    assert.equal(y.data, out);
    // The float32 inputs are exact in float64, so the product matches to float64 precision.
    assert.ok(maxRelativeError(out, naiveMatmul(a, b, m, k, n)) < 1e-13);
  });

  test('subarray views (offsets into a larger buffer) are read from the right place', async () => {
    const big = gaussian(random, 1000);
    const a = big.subarray(100, 100 + 6 * 5);
    const b = big.subarray(517, 517 + 5 * 4);
    const y = await engine.gemm(matrix(a, 6, 5), matrix(b, 5, 4));
    assert.ok(maxRelativeError(y.data, naiveMatmul(a, b, 6, 5, 4)) < 1e-13);
  });

  test('an empty inner dimension gives beta·C (or zeros)', async () => {
    const c = gaussian(random, 6);
    const y = await engine.gemm(matrix(new Float64Array(0), 2, 0), matrix(new Float64Array(0), 0, 3), {
      c: matrix(c, 2, 3),
      beta: 2,
    });
    assert.deepEqual(
      [...y.data],
      [...c].map((v) => 2 * v),
    );
    const z = await engine.gemm(matrix(new Float32Array(0), 2, 0), matrix(new Float32Array(0), 0, 3));
    assert.deepEqual([...z.data], [0, 0, 0, 0, 0, 0]);
  });

  test('shape errors name both shapes', async () => {
    await assert.rejects(
      engine.gemm(matrix(new Float32Array(6), 2, 3), matrix(new Float32Array(8), 4, 2)),
      /inner dimensions differ: op\(A\) is 2×3, op\(B\) is 4×2/,
    );
    assert.throws(() => matrix(new Float32Array(5), 2, 3), /5 elements for shape \[2, 3\]/);
  });
});

describe('GemmEngine.weightedGram', () => {
  test('Xᵀ·diag(w)·X and Xᵀ·diag(w)·Y in float64 from float32 rows', async () => {
    const random = rng(2);
    const n = 300;
    const p = 24;
    const q = 17;
    const x = gaussian32(random, n * p);
    const y = gaussian32(random, n * q);
    const w = Float64Array.from({ length: n }, () => 0.1 + random() * 10);
    const { xx, xy } = await engine.weightedGram(matrix(x, n, p), matrix(y, n, q), w);
    const xw = new Float64Array(n * p);
    for (let i = 0; i < n; i++) for (let j = 0; j < p; j++) xw[i * p + j] = (x[i * p + j] as number) * (w[i] as number);
    const xt = transpose(xw, n, p);
    assert.ok(maxRelativeError(xx.data, naiveMatmul(xt, x, p, n, p)) < 1e-13);
    assert.ok(maxRelativeError(xy.data, naiveMatmul(xt, y, p, n, q)) < 1e-13);
  });
});

describe('GemmEngine.updateEach', () => {
  const random = rng(3);
  const k = 20;
  const xs = [7, 13, 5].map((rows) => matrix(gaussian32(random, rows * k), rows, k));
  const r = 3;
  const u = gaussian32(random, r * k);
  const v = gaussian32(random, r * k, 0.1);
  const delta = gaussian32(random, k * k, 0.1);
  const m = Float32Array.from(delta, (x, i) => x + (i % (k + 1) === 0 ? 1 : 0)); // I + Δ
  const cases = [
    {
      update: { kind: 'product' as const, m: matrix(m, k, k) },
      change: (x: Float32Array, rows: number) => naiveMatmul(x, delta, rows, k, k),
    },
    {
      update: { kind: 'dense' as const, delta: matrix(delta, k, k) },
      change: (x: Float32Array, rows: number) => naiveMatmul(x, delta, rows, k, k),
    },
    {
      update: { kind: 'lowRank' as const, u: matrix(u, r, k), v: matrix(v, r, k) },
      change: (x: Float32Array, rows: number) =>
        naiveMatmul(naiveMatmul(x, transpose(u, r, k), rows, k, r), v, rows, r, k),
    },
  ];
  for (const { update, change } of cases) {
    for (const norms of [false, true]) {
      test(`${update.kind}${norms ? ' with norms' : ''}: Y_i = X_i + change_i, into given output arrays`, async () => {
        const outputs = xs.map((x) => new Float32Array(x.rows * k));
        const res = await engine.updateEach(xs, update, { outputs, norms });
        xs.forEach((x, i) => {
          assert.equal(res.outputs[i], outputs[i]);
          const c = change(x.data, x.rows);
          const expected = c.map((value, j) => value + (x.data[j] as number));
          assert.ok(maxRelativeError(outputs[i] as Float32Array, expected) < 1e-5);
          if (!norms) {
            assert.equal(res.changeSquared, undefined);
            return;
          }
          const changeSq = c.reduce((s, value) => s + value * value, 0);
          const normSq = x.data.reduce((s, value) => s + value * value, 0);
          assert.ok(Math.abs((res.changeSquared?.[i] as number) - changeSq) < 1e-4 * changeSq);
          assert.ok(Math.abs((res.normSquared?.[i] as number) - normSq) < 1e-4 * normSq);
        });
      });
    }
  }

  for (const { update } of cases) {
    for (const norms of [false, true]) {
      test(`${update.kind}${norms ? ' with norms' : ''}, columns: the transposes of the row-form results`, async () => {
        const rowForm = await engine.updateEach(xs, update, { norms });
        const xts = xs.map((x) => matrix(Float32Array.from(transpose(x.data, x.rows, k)), k, x.rows));
        const res = await engine.updateEach(xts, update, { norms, columns: true });
        xs.forEach((x, i) => {
          const expected = transpose(rowForm.outputs[i] as Float32Array, x.rows, k);
          assert.ok(maxRelativeError(res.outputs[i] as Float32Array, expected) < 1e-5);
          if (norms) {
            const a = res.changeSquared?.[i] as number;
            const b = rowForm.changeSquared?.[i] as number;
            assert.ok(Math.abs(a - b) < 1e-4 * b);
          }
        });
      });
    }
  }

  test('new output arrays when none are given', async () => {
    const res = await engine.updateEach(xs, { kind: 'dense', delta: matrix(delta, k, k) });
    assert.equal(res.outputs.length, 3);
    assert.equal(res.outputs[1]?.length, 13 * k);
  });

  test('shape errors are reported before onnxruntime runs', async () => {
    await assert.rejects(
      engine.updateEach([matrix(new Float32Array(6), 2, 3)], {
        kind: 'dense',
        delta: matrix(new Float32Array(16), 4, 4),
      }),
      /X_0 has 3 columns; the update acts on 4/,
    );
    await assert.rejects(
      engine.updateEach([matrix(new Float32Array(6), 2, 3)], { kind: 'product', m: matrix(new Float32Array(6), 2, 3) }),
      /the product matrix is 2×3; it must be square/,
    );
  });
});

describe('sessions are reused and released', () => {
  test('repeated products reuse one session per operation; dispose releases them', async () => {
    const local = new GemmEngine();
    const random = rng(4);
    for (let i = 0; i < 5; i++) {
      const rows = 3 + i; // symbolic dimensions: other shapes, same session
      await local.gemm(matrix(gaussian32(random, rows * 4), rows, 4), matrix(gaussian32(random, 4 * 2), 4, 2));
    }
    assert.equal(local.sessionCount, 1);
    await local.gemm(matrix(gaussian(random, 4), 2, 2), matrix(gaussian(random, 4), 2, 2));
    assert.equal(local.sessionCount, 2);
    await local.dispose();
    assert.equal(local.sessionCount, 0);
    await assert.rejects(
      local.gemm(matrix(gaussian(random, 4), 2, 2), matrix(gaussian(random, 4), 2, 2)),
      /used after dispose/,
    );
  });
});
