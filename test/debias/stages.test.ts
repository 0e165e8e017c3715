/**
 * The tuning stages against a small fake world: the solver returns a marker M per strength vector,
 * the evaluator answers from a known dose-response curve with common random numbers (image i is in
 * the destination class when its fixed uniform u_i < π(s)); the joint solve weakens every edit
 * (interference), which the joint rounds must correct.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Profession } from '../../src/audit/professions.js';
import { normalizeConfig } from '../../src/debias/config.js';
import type { ProfessionPair } from '../../src/debias/prompts.js';
import type { Evaluator, StageContext } from '../../src/debias/stages/context.js';
import { jointRounds } from '../../src/debias/stages/joint.js';
import { tuneEd50 } from '../../src/debias/stages/tune-ed50.js';
import type { JobState } from '../../src/debias/types.js';
import type { RowSet } from '../../src/edit/rows.js';
import type { EditSolution } from '../../src/edit/solve.js';

/** True ED50 (ln s) and slope per profession; the joint solve acts at `INTERFERENCE` × s. */
const CURVES: Record<string, { x50: number; beta: number }> = {
  nurse: { x50: Math.log(0.2), beta: 2.5 },
  doctor: { x50: Math.log(0.05), beta: 1.8 },
};
const INTERFERENCE = 0.5;
const TOLERANCE = 0.05;
const pi = (name: string, s: number) => {
  const c = CURVES[name]!;
  return 1 / (1 + Math.exp(-c.beta * (Math.log(s) - c.x50)));
};
const u = (i: number) => ((i + 1) * 0.6180339887498949) % 1;

function fakeWorld() {
  const solved = new Map<Float32Array, Record<string, number>>();
  const calls = { solve: 0, images: 0 };
  const solveFor = async (strengths: Record<string, number>) => {
    calls.solve++;
    const M = new Float32Array(1);
    solved.set(M, { ...strengths });
    return { M } as unknown as EditSolution;
  };
  const evaluate: Evaluator = async (profession, M, _seedStart, indices) => {
    const strengths = solved.get(M)!;
    const joint = Object.keys(strengths).length > 1 ? INTERFERENCE : 1;
    const p = pi(profession.profession, (strengths[profession.profession] as number) * joint);
    calls.images += indices.length;
    return indices.map((i) => u(i) < p);
  };
  return { solveFor, evaluate, calls };
}

function context(saves: { n: number }) {
  const config = normalizeConfig(
    {
      name: 'fake',
      model: 'demo',
      classifier: 'demo',
      professions: { list: 'demo' },
      tuning: {
        initialStrength: 1,
        compensate: false,
        jointRounds: 4,
        verificationImages: 400,
        imagesPerProbe: 400,
        batch: 50,
        tolerance: TOLERANCE,
      },
      concurrency: 2,
    },
    '/tmp',
  );
  const names = Object.keys(CURVES);
  const pairs: ProfessionPair[] = names.map(
    (n) =>
      ({
        profession: n,
        source: `a ${n}`,
        destination: `a female ${n}`,
        destinationClass: 'female',
        target: 0.5,
      }) as ProfessionPair,
  );
  const state: JobState = {
    kind: 'debias-state',
    version: 1,
    fingerprint: 'fake',
    phase: 'tuning',
    pairs,
    tuners: {},
    uce: null,
    joint: { rounds: [], strengths: {}, pending: null, done: false },
    probeLog: [],
  };
  const world = fakeWorld();
  const ctx: StageContext = {
    config,
    state,
    pairs,
    professions: new Map(names.map((n) => [n, { profession: n, article: 'a' } as Profession])),
    solveFor: world.solveFor,
    evaluate: world.evaluate,
    rows: {} as RowSet,
    opposite: undefined,
    baseline: new Map(),
    save: () => {
      saves.n++;
    },
    log: () => {},
  };
  return { ctx, calls: world.calls };
}

test('tune-ed50 stage: every profession converges to its own ED50 on single edits', async () => {
  const saves = { n: 0 };
  const { ctx, calls } = context(saves);
  await tuneEd50(ctx);
  for (const name of Object.keys(CURVES)) {
    const tuner = ctx.state.tuners[name]!;
    assert.equal(tuner.status, 'converged', name);
    const s = tuner.result!.strength;
    // the accepted strength's true share is within tolerance (plus the acceptance interval's slack)
    assert.ok(Math.abs(pi(name, s) - 0.5) <= TOLERANCE + 0.03, `${name}: s=${s} π=${pi(name, s)}`);
    assert.ok(tuner.fit && tuner.fit.beta > 0, name);
  }
  assert.equal(
    ctx.state.probeLog.length,
    Object.values(ctx.state.tuners).reduce((a, t) => a + t.probes.length, 0),
  );
  assert.ok(saves.n >= ctx.state.probeLog.length, 'saved after every batch');
  assert.ok(calls.images > 0);
});

test('joint stage: interference found on verification and corrected by re-tuning rounds; resumes a pending round', async () => {
  const saves = { n: 0 };
  const { ctx, calls } = context(saves);
  await tuneEd50(ctx);
  const single = Object.fromEntries(Object.keys(CURVES).map((n) => [n, ctx.state.tuners[n]!.result!.strength]));
  await jointRounds(ctx);
  const { joint } = ctx.state;
  assert.ok(joint.done);
  // the first round verifies the single-edit strengths, which the joint solve halves: outside
  assert.deepEqual(joint.rounds[0]!.strengths, single);
  assert.deepEqual(joint.rounds[0]!.outside.sort(), ['doctor', 'nurse']);
  assert.ok(joint.rounds.length >= 2 && joint.rounds.length <= 5, String(joint.rounds.length));
  const last = joint.rounds.at(-1)!;
  assert.deepEqual(last.outside, []);
  assert.deepEqual(joint.strengths, last.strengths);
  for (const [name, s] of Object.entries(joint.strengths)) {
    assert.ok(s > (single[name] as number), `${name}: the joint strength grew to make up for the interference`);
    assert.ok(Math.abs(pi(name, s * INTERFERENCE) - 0.5) <= 0.1, `${name}: joint π=${pi(name, s * INTERFERENCE)}`);
  }

  // Resume: a pending round with one profession verified evaluates only the other.
  const again = context({ n: 0 });
  again.ctx.state.tuners = ctx.state.tuners;
  again.ctx.state.joint = {
    rounds: [],
    strengths: { ...last.strengths },
    pending: { round: 0, strengths: { ...last.strengths }, shares: { nurse: last.shares.nurse! }, outside: [] },
    done: false,
  };
  await jointRounds(again.ctx);
  assert.equal(again.calls.images, ctx.config.tuning.verificationImages, 'only doctor was rendered');
  assert.deepEqual(again.ctx.state.joint.rounds[0]!.shares, last.shares);
  assert.ok(calls.images > 0);
});
