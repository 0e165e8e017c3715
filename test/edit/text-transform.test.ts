import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { solveEdit } from '../../src/edit/solve.js';
import { applyTextTransform, textSideEdit, textTransformHash, textTransformOf } from '../../src/edit/text-transform.js';
import { GemmEngine } from '../../src/linalg/gemm.js';
import { EditError } from '../../src/util/errors.js';
import { gaussian32, rng } from '../linalg/reference.js';
import { randomRows } from './problem.js';

function relErr(a: Float32Array, b: Float32Array): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < a.length; i++) {
    num += ((a[i] as number) - (b[i] as number)) ** 2;
    den += (b[i] as number) ** 2;
  }
  return Math.sqrt(num / den);
}

describe('text transform: W′ = W M applied as e ↦ M e', () => {
  const gemm = new GemmEngine({ threads: 1 });
  after(() => gemm.dispose());

  test('a Woodbury solution’s low-rank form Δ = Uᵀ Z gives the rows M e (float32 tolerance)', async () => {
    const d = 48;
    const rows = randomRows(rng(11), { d, L: 5, pairs: 2, shift: 0.3 });
    const solution = await solveEdit(rows, { lambda: 0.1, method: 'woodbury', gemm });
    assert.equal(solution.kind, 'woodbury');
    const lowRank = textTransformOf(solution);
    assert.equal(lowRank.kind, 'low-rank');
    const hidden = gaussian32(rng(12), 7 * d);
    const viaM = applyTextTransform(solution.M, hidden, d);
    const viaFactors = applyTextTransform(lowRank, hidden, d);
    assert.ok(relErr(viaFactors, viaM) < 1e-5, `‖Uᵀ(Z e) + e − M e‖/‖M e‖ = ${relErr(viaFactors, viaM)}`);
    const viaDelta = applyTextTransform({ kind: 'delta', delta: solution.delta }, hidden, d);
    assert.ok(relErr(viaDelta, viaM) < 1e-5);
    const cholesky = await solveEdit(rows, { lambda: 0.1, method: 'cholesky', gemm });
    assert.equal(textTransformOf(cholesky).kind, 'matrix');
  });

  test('the pipeline’s form: apply + a sha256 identity; sizes that do not fit d are EditErrors naming the field', () => {
    const d = 4;
    const M = new Float32Array(d * d);
    for (let i = 0; i < d; i++) M[i * d + i] = 2;
    const edit = textSideEdit(M);
    assert.equal(edit.kind, 'text-transform');
    assert.equal(edit.sha256, textTransformHash({ kind: 'matrix', M }));
    assert.notEqual(edit.sha256, textSideEdit({ kind: 'delta', delta: M }).sha256);
    assert.deepEqual([...edit.apply(Float32Array.from([1, 2, 3, 4]), d)], [2, 4, 6, 8]);
    assert.throws(
      () => edit.apply(new Float32Array(3 * 5), 5),
      (e: unknown) => e instanceof EditError && e.field === 'textTransform' && /M must be d × d = 25/.test(e.message),
    );
  });
});
