import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { compensateInterference, editProgress } from '../../src/debias/interference.js';
import { subsetRows } from '../../src/debias/rows.js';
import type { RowSet } from '../../src/edit/rows.js';
import { solveEdit } from '../../src/edit/solve.js';
import { GemmEngine } from '../../src/linalg/gemm.js';
import { randomRows } from '../edit/problem.js';
import { gaussian32, rng } from '../linalg/reference.js';

const gemm = new GemmEngine();
after(() => gemm.dispose());

const solveAt = (rows: RowSet, strengths: readonly number[], mu = 1) =>
  solveEdit(rows, { lambda: strengths.map((s) => 1 / s), mu, gemm });

describe('editProgress (interference.ts eq. I1)', () => {
  test('one pair, one row: π = s‖c‖² / (1 + s‖c‖²) (Sherman–Morrison)', async () => {
    const random = rng(7);
    const rows = randomRows(random, { d: 12, L: 1, pairs: 1 });
    let a = 0;
    for (const v of rows.sources) a += v * v;
    for (const s of [0.01, 0.1, 1, 10]) {
      const pi = editProgress(rows, await solveAt(rows, [s]))[0] as number;
      assert.ok(Math.abs(pi - (s * a) / (1 + s * a)) < 1e-5, `s=${s}: π=${pi}, expected ${(s * a) / (1 + s * a)}`);
    }
  });

  test('no edit → 0; monotone in the strength; restricted to the pairs asked for', async () => {
    const random = rng(8);
    const rows = randomRows(random, { d: 16, L: 5, pairs: 2, preserve: 1 });
    const d = rows.d;
    const zero = editProgress(rows, { d, delta: new Float32Array(d * d) });
    assert.deepEqual(zero, [0, 0]);
    let last = -1;
    for (const s of [0.001, 0.01, 0.1, 1]) {
      const pi = editProgress(rows, await solveAt(rows, [s, 1]))[0] as number;
      assert.ok(pi > last && pi < 1, `π(${s}) = ${pi} after ${last}`);
      last = pi;
    }
    const only = editProgress(rows, await solveAt(rows, [1, 1]), { pairs: [1] });
    assert.ok(Number.isNaN(only[0]) && Number.isFinite(only[1]));
  });

  test("eq. I1': along the attribute direction only (a component common to both destinations does not count)", () => {
    const random = rng(9);
    const d = 8;
    const rows = randomRows(random, { d, L: 1, pairs: 1 });
    const c = rows.sources;
    const move = Float32Array.from(rows.targets, (t, a) => t - (c[a] as number));
    // The other-class destination differs from the destination in coordinate 0 only: the attribute
    // direction is e₀; every other component of the move is common to both destinations.
    const opposite = Float32Array.from(rows.targets);
    opposite[0] = (rows.targets[0] as number) - 1;
    let cc = 0;
    for (const v of c) cc += v * v;
    /** Δ = v cᵀ / ‖c‖², so that Δc = v. */
    const deltaMoving = (v: Float32Array) => {
      const delta = new Float32Array(d * d);
      for (let a = 0; a < d; a++)
        for (let b = 0; b < d; b++) delta[a * d + b] = ((v[a] as number) * (c[b] as number)) / cc;
      return { d, delta };
    };
    const commonOnly = Float32Array.from(move, (m, a) => (a === 0 ? 0 : m));
    const close = (x: number, y: number) => Math.abs(x - y) < 1e-4;
    assert.ok(close(editProgress(rows, deltaMoving(commonOnly), { opposite })[0] as number, 0));
    assert.ok(close(editProgress(rows, deltaMoving(move), { opposite })[0] as number, 1));
    // Eq. I1 counts the common part as progress.
    let mm = 0;
    for (const m of move) mm += m * m;
    const expected = (mm - (move[0] as number) ** 2) / mm;
    assert.ok(close(editProgress(rows, deltaMoving(commonOnly))[0] as number, expected));
    assert.throws(() => editProgress(rows, deltaMoving(move), { opposite: new Float32Array(3) }), /opposite rows/);
  });
});

describe('compensateInterference (eq. I2)', () => {
  test('joint progress matches each pair’s own edit; the uncompensated joint solve does not', async () => {
    const random = rng(11);
    const d = 24;
    // Pairs whose source rows share a large common component: the joint solve couples them.
    const rows = randomRows(random, { d, L: 4, pairs: 3, preserve: 2, shift: 0.5 });
    const common = gaussian32(random, d, 2);
    for (let r = 0; r < rows.n; r++)
      for (let a = 0; a < d; a++) {
        rows.sources[r * d + a] = (rows.sources[r * d + a] as number) + (common[a] as number);
        rows.targets[r * d + a] = (rows.targets[r * d + a] as number) + (common[a] as number);
      }
    for (const g of rows.groups) {
      if (g.kind === 'preserve')
        rows.targets.set(rows.sources.subarray(g.start * d, (g.start + g.count) * d), g.start * d);
    }
    const sigma = [0.05, 0.2, 0.02];
    const targets: number[] = [];
    for (let p = 0; p < 3; p++) {
      const own = subsetRows(rows, [p]);
      targets.push(editProgress(own, await solveAt(own, [sigma[p] as number]))[0] as number);
    }
    const result = await compensateInterference({
      equivalent: sigma,
      targets,
      rows,
      range: [1e-4, 1e4],
      solveJoint: (s) => solveAt(rows, s),
      tolerance: 1e-4,
      maxIterations: 60,
    });
    const uncompensatedGap = Math.max(...result.before.map((p, i) => Math.abs(p - (targets[i] as number))));
    assert.ok(uncompensatedGap > 0.01, `the test problem must interfere (gap ${uncompensatedGap})`);
    assert.ok(result.residual < 1e-4, `residual ${result.residual}`);
    const check = editProgress(rows, await solveAt(rows, result.strengths));
    check.forEach((p, i) => {
      assert.ok(Math.abs(p - (targets[i] as number)) < 1e-3, `pair ${i}: ${p} vs ${targets[i]}`);
    });
    assert.deepEqual(check, result.after);
  });

  test('deterministic (resume recomputes the same strengths)', async () => {
    const random = rng(12);
    const rows = randomRows(random, { d: 10, L: 2, pairs: 2, preserve: 1 });
    const run = () =>
      compensateInterference({
        equivalent: [0.1, 0.3],
        targets: [0.2, 0.4],
        rows,
        range: [1e-3, 1e3],
        solveJoint: (s) => solveAt(rows, s),
      });
    assert.deepEqual(await run(), await run());
  });
});
