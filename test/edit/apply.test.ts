import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { applyEdit, transformRows } from '../../src/edit/apply.js';
import { buildRows } from '../../src/edit/rows.js';
import { solveEdit } from '../../src/edit/solve.js';
import { GemmEngine } from '../../src/linalg/gemm.js';
import { EditError } from '../../src/util/errors.js';
import { gaussian32, maxRelativeError, naiveMatmul, rng, transpose } from '../linalg/reference.js';
import { fakeEncoder, TOKENS } from './fake-encoder.js';
import { diffNorm, norm, randomRows, randomSites } from './problem.js';

const gemm = new GemmEngine();
after(() => gemm.dispose());

describe('applyEdit', () => {
  const d = 64;
  const random = rng(21);
  const rows = randomRows(random, { d, L: 6, pairs: 2 }); // n = 12, rank 12: low rank applies (2r < d)
  const sites = randomSites(random, d, [32, 32, 48, 16]);

  test("low-rank and dense forms give the same W' = W·M", async () => {
    const solution = await solveEdit(rows, { gemm });
    assert.equal(solution.kind, 'woodbury');
    const low = await applyEdit(sites, solution, { gemm });
    assert.equal(low.form, 'lowRank');
    const dense = await applyEdit(sites, solution, { gemm, form: 'dense' });
    assert.equal(dense.form, 'dense');
    sites.forEach((s, i) => {
      const out = s.W.length / d;
      const expected = naiveMatmul(s.W, solution.M, out, d, d);
      const a = (low.sites[i] as { W: Float32Array }).W;
      const b = (dense.sites[i] as { W: Float32Array }).W;
      assert.ok(maxRelativeError(a, expected) < 1e-5);
      assert.ok(maxRelativeError(b, expected) < 1e-5);
      assert.equal(low.sites[i]?.name, s.name);
      assert.equal(low.sites[i]?.out, out);
    });
  });

  test("relativeChange is ‖W' − W‖_F / ‖W‖_F per site", async () => {
    const solution = await solveEdit(rows, { gemm, lambda: 0.5 });
    const { sites: edited } = await applyEdit(sites, solution, { gemm, norms: true });
    const plain = await applyEdit(sites, solution, { gemm, form: 'dense' });
    sites.forEach((s, i) => {
      assert.equal(plain.sites[i]?.relativeChange, undefined, 'no norms unless asked for');
      assert.ok(maxRelativeError(plain.sites[i]?.W as Float32Array, edited[i]?.W as Float32Array) < 1e-5);
      const e = edited[i] as { W: Float32Array; relativeChange: number };
      const expected = diffNorm(e.W, s.W) / norm(s.W);
      assert.ok(expected > 1e-3);
      assert.ok(Math.abs(e.relativeChange - expected) < 1e-4 * expected, `${e.relativeChange} vs ${expected}`);
    });
  });

  test('the inputs are not modified; given output arrays are filled and reused', async () => {
    const before = sites.map((s) => Float32Array.from(s.W));
    const solution = await solveEdit(rows, { gemm, method: 'cholesky' });
    const outputs = sites.map((s) => new Float32Array(s.W.length));
    const first = await applyEdit(sites, solution, { gemm, outputs });
    assert.equal(first.form, 'dense');
    first.sites.forEach((e, i) => {
      assert.equal(e.W, outputs[i]);
    });
    sites.forEach((s, i) => {
      assert.deepEqual(s.W, before[i]);
    });
    const again = await applyEdit(sites, solution, { gemm, outputs });
    again.sites.forEach((e, i) => {
      assert.equal(e.W, outputs[i]);
    });
  });

  test("repeated edits reuse the engine's sessions (no growth)", async () => {
    const solution = await solveEdit(rows, { gemm });
    await applyEdit(sites, solution, { gemm });
    const count = gemm.sessionCount;
    for (let i = 0; i < 3; i++) {
      await applyEdit(sites, await solveEdit(rows, { gemm, lambda: 0.1 * (i + 1) }), { gemm });
    }
    assert.equal(gemm.sessionCount, count);
  });

  test('errors: no sites, a weight that is not [out, d], low rank for a Cholesky solution', async () => {
    const solution = await solveEdit(rows, { gemm, method: 'cholesky' });
    await assert.rejects(applyEdit([], solution, { gemm }), /no sites were given/);
    await assert.rejects(
      applyEdit([{ name: 'bad.to_v', W: new Float32Array(d * 3 + 1) }], solution, { gemm }),
      (e: unknown) =>
        e instanceof EditError &&
        /"bad.to_v" has 193 values, not a whole number of rows of width d = 64/.test(e.message),
    );
    await assert.rejects(applyEdit(sites, solution, { gemm, form: 'lowRank' }), /needs a Woodbury solution/);
    await assert.rejects(applyEdit(sites, solution, { gemm, outputs: [] }), /0 output arrays for 4 sites/);
  });
});

describe('an edit that changes nothing', () => {
  test("source = destination: rank 0, M = I, W' = W exactly", async () => {
    const d = 32;
    const { encode } = fakeEncoder(d, 10);
    const rows = await buildRows(encode, { pairs: [{ source: 'a doctor', destination: 'a doctor' }], tokens: TOKENS });
    const solution = await solveEdit(rows, { gemm });
    assert.equal(solution.kind === 'woodbury' && solution.rank, 0);
    assert.ok(solution.delta.every((v) => v === 0));
    const sites = randomSites(rng(30), d, [6, 9]);
    for (const norms of [false, true]) {
      const { sites: edited } = await applyEdit(sites, solution, { gemm, norms });
      edited.forEach((e, i) => {
        assert.deepEqual(e.W, sites[i]?.W);
        if (norms) assert.equal(e.relativeChange, 0);
      });
    }
  });
});

describe('transformRows: editing all sites = mapping the text rows by M', () => {
  test("W'·c = W·(M·c) for every site and row", async () => {
    const d = 40;
    const random = rng(22);
    const rows = randomRows(random, { d, L: 7, pairs: 2 });
    const sites = randomSites(random, d, [24, 12]);
    const solution = await solveEdit(rows, { gemm });
    const { sites: edited } = await applyEdit(sites, solution, { gemm });
    const text = gaussian32(random, 77 * d); // a new prompt's rows [77, d]
    const mapped = await transformRows(text, solution, gemm);
    sites.forEach((s, i) => {
      const out = s.W.length / d;
      // Rows as columns: (W'·Cᵀ) vs (W·(M·c)ᵀ) — compare [77, out] outputs.
      const viaEdit = naiveMatmul(text, transpose((edited[i] as { W: Float32Array }).W, out, d), 77, d, out);
      const viaRows = naiveMatmul(mapped, transpose(s.W, out, d), 77, d, out);
      assert.ok(maxRelativeError(viaRows, viaEdit) < 1e-5);
    });
    await assert.rejects(transformRows(new Float32Array(d + 1), solution, gemm), /not whole rows of width d = 40/);
  });
});
