import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { applyEdit } from '../../src/edit/apply.js';
import { buildRows } from '../../src/edit/rows.js';
import { type EditSolution, rowWeights, solveEdit } from '../../src/edit/solve.js';
import { GemmEngine } from '../../src/linalg/gemm.js';
import { EditError } from '../../src/util/errors.js';
import { maxRelativeError, rng } from '../linalg/reference.js';
import { fakeEncoder, TOKENS } from './fake-encoder.js';
import {
  diffNorm,
  norm,
  project,
  randomRows,
  randomSites,
  referenceTime,
  referenceWeighted,
  weightsOf,
} from './problem.js';

const gemm = new GemmEngine();
after(() => gemm.dispose());

/** Relative error of the edit itself: ‖(W' − W) − (W_ref − W)‖ / ‖W_ref − W‖. */
function editError(edited: Float32Array, ref: Float64Array, W: Float32Array): number {
  let diff = 0;
  let size = 0;
  for (let i = 0; i < W.length; i++) {
    diff += ((edited[i] as number) - (ref[i] as number)) ** 2;
    size += ((ref[i] as number) - (W[i] as number)) ** 2;
  }
  return Math.sqrt(diff / size);
}

describe("golden math: W' equals the direct normal-equation solution (float64, Gaussian elimination)", () => {
  const cases = [
    { name: 'Woodbury (n < d)', d: 32, L: 6, pairs: 3, method: 'woodbury' as const, expect: 'woodbury' },
    { name: 'Cholesky (n ≥ d)', d: 32, L: 6, pairs: 9, method: 'cholesky' as const, expect: 'cholesky' },
    { name: 'auto picks Woodbury for n < d', d: 40, L: 5, pairs: 2, method: 'auto' as const, expect: 'woodbury' },
    { name: 'auto picks Cholesky for n ≥ d', d: 24, L: 6, pairs: 4, method: 'auto' as const, expect: 'cholesky' },
    // Large enough for the blocked factorization and solves to go through onnxruntime.
    { name: 'Cholesky, d = 160, n = 400', d: 160, L: 20, pairs: 20, method: 'auto' as const, expect: 'cholesky' },
    { name: 'Woodbury, d = 200, n = 150', d: 200, L: 15, pairs: 10, method: 'auto' as const, expect: 'woodbury' },
  ];
  for (const c of cases) {
    test(`${c.name}, λ = 0.1, 3 sites`, async () => {
      const random = rng(c.d * 1000 + c.pairs);
      const rows = randomRows(random, { d: c.d, L: c.L, pairs: c.pairs });
      const sites = randomSites(random, c.d, [10, 17, 23]);
      const solution = await solveEdit(rows, { lambda: 0.1, method: c.method, gemm });
      assert.equal(solution.kind, c.expect);
      assert.equal(solution.n, rows.n);
      assert.equal(solution.d, c.d);
      const { sites: edited } = await applyEdit(sites, solution, { gemm });
      sites.forEach((s, i) => {
        const ref = referenceTime(s.W, rows, 0.1);
        const got = (edited[i] as { W: Float32Array }).W;
        assert.ok(maxRelativeError(got, ref) < 1e-5, `W' error ${maxRelativeError(got, ref)}`);
        assert.ok(editError(got, ref, s.W) < 1e-4, `ΔW error ${editError(got, ref, s.W)}`);
      });
    });
  }

  test('per-pair λ and preservation rows: the weighted normal equations of the joint objective', async () => {
    for (const method of ['woodbury', 'cholesky'] as const) {
      const random = rng(77);
      const rows = randomRows(random, { d: 30, L: 4, pairs: 3, perPair: 2, preserve: 2 });
      const lambdas = [0.05, 0.3, 2];
      const sites = randomSites(random, 30, [12, 9]);
      const solution = await solveEdit(rows, { lambda: lambdas, mu: 0.7, method, gemm });
      const { sites: edited } = await applyEdit(sites, solution, { gemm });
      const w = weightsOf(rows, lambdas, 0.7);
      sites.forEach((s, i) => {
        const ref = referenceWeighted(s.W, rows, w);
        const got = (edited[i] as { W: Float32Array }).W;
        assert.ok(maxRelativeError(got, ref) < 1e-5, `${method}: W' error ${maxRelativeError(got, ref)}`);
        assert.ok(editError(got, ref, s.W) < 1e-4);
      });
    }
  });

  test('μ per preserved prompt (muByPrompt): each preserved group has its own weight', async () => {
    const random = rng(78);
    const rows = randomRows(random, { d: 20, L: 3, pairs: 2, preserve: 3 });
    const lambdas = [0.1, 0.5];
    const sites = randomSites(random, 20, [7]);
    const muByPrompt = new Map([
      ['keep0', 5],
      ['keep2', 0.02],
    ]);
    const solution = await solveEdit(rows, { lambda: lambdas, mu: 0.3, muByPrompt, gemm });
    const { sites: edited } = await applyEdit(sites, solution, { gemm });
    const w = weightsOf(rows, lambdas, 0.3);
    for (const g of rows.groups) {
      if (g.kind === 'preserve' && muByPrompt.has(g.prompt))
        w.fill(muByPrompt.get(g.prompt) as number, g.start, g.start + g.count);
    }
    const ref = referenceWeighted((sites[0] as { W: Float32Array }).W, rows, w);
    const got = (edited[0] as { W: Float32Array }).W;
    assert.ok(maxRelativeError(got, ref) < 1e-5, `W' error ${maxRelativeError(got, ref)}`);
    assert.deepEqual(
      [...rowWeights(rows, { lambda: lambdas, mu: 0.3, muByPrompt })].slice(6),
      [5, 5, 5, 0.3, 0.3, 0.3, 0.02, 0.02, 0.02],
    );
    await assert.rejects(
      solveEdit(rows, { lambda: lambdas, muByPrompt: new Map([['keep1', -1]]), gemm }),
      /preservation weight of "keep1": -1 is not valid/,
    );
  });
});

describe('Woodbury and Cholesky agree', () => {
  for (const { d, L, pairs, preserve } of [
    { d: 48, L: 8, pairs: 2, preserve: 1 }, // n = 24 < d
    { d: 48, L: 8, pairs: 8, preserve: 0 }, // n = 64 ≥ d
    { d: 128, L: 16, pairs: 6, preserve: 1 }, // n = 112 < d, through onnxruntime
  ]) {
    test(`d = ${d}, n = ${L * (pairs + preserve)}: M and Δ to float32 precision`, async () => {
      const rows = randomRows(rng(d + pairs), { d, L, pairs, preserve });
      const wood = await solveEdit(rows, { lambda: 0.1, method: 'woodbury', gemm });
      const chol = await solveEdit(rows, { lambda: 0.1, method: 'cholesky', gemm });
      assert.equal(wood.kind, 'woodbury');
      assert.equal(chol.kind, 'cholesky');
      assert.ok(maxRelativeError(wood.M, chol.M) < 2e-6, `M: ${maxRelativeError(wood.M, chol.M)}`);
      assert.ok(maxRelativeError(wood.delta, chol.delta) < 1e-5, `Δ: ${maxRelativeError(wood.delta, chol.delta)}`);
      // M − I = Δ.
      for (let i = 0; i < d; i++) {
        for (let j = 0; j < d; j++) {
          const m = chol.M[i * d + j] as number;
          assert.ok(Math.abs(m - (i === j ? 1 : 0) - (chol.delta[i * d + j] as number)) < 1e-6);
        }
      }
    });
  }
});

describe('limits of λ', () => {
  const d = 32;
  const random = rng(5);
  const rows = randomRows(random, { d, L: 5, pairs: 3 }); // n = 15 < d: the targets can be met exactly
  const sites = randomSites(random, d, [16, 24]);

  /** max over sites and rows of ‖W'c_i − W c*_i‖ / ‖W c*_i‖. */
  async function targetResidual(solution: EditSolution): Promise<number> {
    const { sites: edited } = await applyEdit(sites, solution, { gemm });
    let worst = 0;
    sites.forEach((s, k) => {
      const out = s.W.length / d;
      for (let i = 0; i < rows.n; i++) {
        const c = rows.sources.subarray(i * d, (i + 1) * d);
        const cs = rows.targets.subarray(i * d, (i + 1) * d);
        const target = project(s.W, cs, out, d);
        const got = project((edited[k] as { W: Float32Array }).W, c, out, d);
        worst = Math.max(worst, diffNorm(got, target) / norm(target));
      }
    });
    return worst;
  }

  test("λ → 0: W'c_i → v*_i = W c*_i on every site (keys and values reach their targets)", async () => {
    const residuals: number[] = [];
    for (const lambda of [1, 1e-2, 1e-4, 1e-6]) {
      residuals.push(await targetResidual(await solveEdit(rows, { lambda, gemm })));
    }
    for (let i = 1; i < residuals.length; i++)
      assert.ok((residuals[i] as number) < (residuals[i - 1] as number), `${residuals}`);
    assert.ok((residuals[3] as number) < 1e-4, `residual at λ = 1e-6: ${residuals[3]}`);
    assert.ok((residuals[0] as number) > 1e-2, 'at λ = 1 the targets are not met (the edit is regularized)');
  });

  test("λ → ∞: W' → W", async () => {
    const changes: number[] = [];
    for (const lambda of [1, 1e3, 1e6, 1e9]) {
      const { sites: edited } = await applyEdit(sites, await solveEdit(rows, { lambda, gemm }), { gemm, norms: true });
      changes.push(Math.max(...edited.map((s) => s.relativeChange as number)));
    }
    for (let i = 1; i < changes.length; i++)
      assert.ok((changes[i] as number) < (changes[i - 1] as number), `${changes}`);
    assert.ok((changes[3] as number) < 1e-7, `‖W' − W‖/‖W‖ at λ = 1e9: ${changes[3]}`);
  });
});

describe('preservation', () => {
  test('preserved rows keep W c_q (unchanged keys/values) while the edited rows move to their targets', async () => {
    const d = 40;
    const random = rng(9);
    const rows = randomRows(random, { d, L: 5, pairs: 2, preserve: 2 }); // n = 20 < d
    const sites = randomSites(random, d, [8, 16]);
    const change = async (mu: number | undefined, useRows = rows) => {
      const solution = await solveEdit(useRows, { lambda: 1e-3, mu, gemm });
      const { sites: edited } = await applyEdit(sites, solution, { gemm });
      let preserved = 0;
      let edit = 0;
      sites.forEach((s, k) => {
        const out = s.W.length / d;
        const Wp = (edited[k] as { W: Float32Array }).W;
        for (const g of rows.groups) {
          for (let i = g.start; i < g.start + g.count; i++) {
            const c = rows.sources.subarray(i * d, (i + 1) * d);
            const before = project(s.W, c, out, d);
            const after = project(Wp, c, out, d);
            if (g.kind === 'preserve') preserved = Math.max(preserved, diffNorm(after, before) / norm(before));
            else {
              const target = project(s.W, rows.targets.subarray(i * d, (i + 1) * d), out, d);
              edit = Math.max(edit, diffNorm(after, target) / norm(target));
            }
          }
        }
      });
      return { preserved, edit };
    };
    const strong = await change(1e6);
    assert.ok(strong.preserved < 1e-4, `preserved rows moved by ${strong.preserved}`);
    assert.ok(strong.edit < 1e-2, `edited rows missed their targets by ${strong.edit}`);
    // Without the preservation rows, the same prompts' projections do change.
    const withoutPreserve = { ...rows, n: 10, groups: rows.groups.filter((g) => g.kind === 'pair') };
    withoutPreserve.sources = rows.sources.subarray(0, 10 * d);
    withoutPreserve.targets = rows.targets.subarray(0, 10 * d);
    const free = await change(undefined, withoutPreserve);
    assert.ok(free.preserved > 1e-2, `without preservation the rows moved only ${free.preserved}`);
  });

  test('Woodbury drops rows whose target equals the source: rank = #(c*_i ≠ c_i)', async () => {
    const d = 32;
    const { encode } = fakeEncoder(d, 10);
    const rows = await buildRows(encode, {
      pairs: [{ source: 'a doctor', destination: 'a female doctor' }],
      preserve: ['a dog'],
      tokens: TOKENS,
    });
    // BOS and "a" rows are identical in source and destination (causal encoder), and all 10
    // preservation rows map to themselves: 20 rows, rank 8.
    const solution = await solveEdit(rows, { gemm });
    assert.equal(solution.kind, 'woodbury');
    assert.equal(solution.kind === 'woodbury' && solution.rank, 8);
    assert.equal(solution.kind === 'woodbury' && solution.factors.u.length, 8 * d);
    const chol = await solveEdit(rows, { gemm, method: 'cholesky' });
    assert.ok(maxRelativeError(solution.M, chol.M) < 2e-6);
  });
});

describe('validation', () => {
  const rows = randomRows(rng(3), { d: 8, L: 3, pairs: 2, preserve: 1 });
  for (const bad of [0, -0.1, Number.NaN, Number.POSITIVE_INFINITY, '0.1' as unknown as number]) {
    test(`λ = ${String(bad)} is refused, naming --lambda and the value`, async () => {
      await assert.rejects(solveEdit(rows, { lambda: bad, gemm }), (e: unknown) => {
        assert.ok(e instanceof EditError);
        assert.match(e.message, /^lambda: /);
        assert.ok(e.message.includes(typeof bad === 'string' ? '"0.1"' : String(bad)), e.message);
        assert.match(e.message, /finite number > 0/);
        return true;
      });
    });
  }

  test('per-pair λ: wrong length, and a bad value names its pair', async () => {
    await assert.rejects(solveEdit(rows, { lambda: [0.1], gemm }), /lambda: 1 values for 2 pairs/);
    await assert.rejects(
      solveEdit(rows, { lambda: [0.1, -1], gemm }),
      /lambda: -1 is not a valid λ \(pair 1: "s1.0" → "d1.0"\)/,
    );
  });

  test('μ must be positive when there are preservation rows', async () => {
    await assert.rejects(solveEdit(rows, { mu: 0, gemm }), /mu: 0 is not valid; the preservation weight μ/);
    assert.deepEqual([...rowWeights(rows, { lambda: [0.5, 0.25], mu: 3 })], [2, 2, 2, 4, 4, 4, 3, 3, 3]);
  });

  test('empty rows, non-finite rows, an unknown method', async () => {
    await assert.rejects(
      solveEdit({ ...rows, n: 0, sources: new Float32Array(0), targets: new Float32Array(0) }, { gemm }),
      /row set is empty/,
    );
    const nan = { ...rows, sources: Float32Array.from(rows.sources) };
    nan.sources[5] = Number.NaN;
    for (const method of ['woodbury', 'cholesky'] as const) {
      await assert.rejects(solveEdit(nan, { method, gemm }), /is not positive definite .* rows must be finite/);
    }
    await assert.rejects(solveEdit(rows, { method: 'lu' as 'auto', gemm }), /method: "lu" is not one of/);
  });

  test('without an engine, a temporary one is made and released', async () => {
    const solution = await solveEdit(rows);
    assert.equal(solution.M.length, 64);
  });
});
