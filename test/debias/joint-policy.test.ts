import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  decideJoint,
  fallbackSlope,
  JOINT_DAMPING,
  type JointSettings,
  MIN_JOINT_STEP,
  outsideTolerance,
  professionStatus,
} from '../../src/debias/joint-policy.js';
import type { JobState, JointRound } from '../../src/debias/types.js';

const settings: JointSettings = {
  tolerance: 0.05,
  confidence: 0.8,
  jointRounds: 2,
  compensate: false,
  strengthRange: [0.001, 100],
};
const pairs = [
  { profession: 'nurse', target: 0.5 },
  { profession: 'doctor', target: 0.5 },
];
const logit = (p: number) => Math.log(p / (1 - p));

function round(shares: Record<string, [number, number]>, strengths: Record<string, number>): JointRound {
  const r: JointRound = {
    round: 0,
    strengths,
    shares: Object.fromEntries(Object.entries(shares).map(([p, [k, n]]) => [p, { k, n, share: k / n }])),
    outside: [],
  };
  r.outside = outsideTolerance(pairs, r.shares, settings);
  return r;
}

test('outsideTolerance: beyond tolerance AND significantly off target', () => {
  // 0.30 of 160: Wilson 80% interval ≈ [0.26, 0.35] excludes 0.5 → outside
  // 0.40 of 10: beyond tolerance but the interval (≈ [0.23, 0.60]) holds 0.5 → noise, not outside
  const r = round({ nurse: [48, 160], doctor: [4, 10] }, { nurse: 1, doctor: 1 });
  assert.deepEqual(r.outside, ['nurse']);
  // within tolerance, however large n
  assert.deepEqual(round({ nurse: [5400, 10000], doctor: [4600, 10000] }, { nurse: 1, doctor: 1 }).outside, []);
  // 0.56 of 10000 is significant but only 0.06 − 0.05 beyond: outside; 0.549 is not
  assert.deepEqual(round({ nurse: [5600, 10000], doctor: [5490, 10000] }, { nurse: 1, doctor: 1 }).outside, ['nurse']);
});

test('fallbackSlope: median of the positive fitted slopes, else 1', () => {
  assert.equal(fallbackSlope([3, undefined, 1, -2, 2]), 2);
  assert.equal(fallbackSlope([4, 1]), 4); // upper median (index n >> 1 of the sorted slopes)
  assert.equal(fallbackSlope([undefined, -1]), 1);
});

test('decideJoint: accept when all within tolerance, or when the rounds are spent', () => {
  const ok = round({ nurse: [80, 160], doctor: [78, 160] }, { nurse: 2, doctor: 3 });
  assert.deepEqual(decideJoint(ok, 1, pairs, {}, settings), { kind: 'accept', strengths: { nurse: 2, doctor: 3 } });
  const off = round({ nurse: [30, 160], doctor: [80, 160] }, { nurse: 2, doctor: 3 });
  assert.equal(decideJoint(off, 2, pairs, {}, settings).kind, 'retune');
  assert.deepEqual(decideJoint(off, 3, pairs, {}, settings), {
    kind: 'accept',
    strengths: { nurse: 2, doctor: 3 },
  });
});

test('decideJoint: damped Newton step in ln s on the professions outside only', () => {
  const off = round({ nurse: [30, 160], doctor: [80, 160] }, { nurse: 2, doctor: 3 });
  const d = decideJoint(off, 1, pairs, { nurse: 0.8, doctor: 1.2 }, settings);
  assert.equal(d.kind, 'retune');
  if (d.kind !== 'retune') return;
  assert.equal(d.moves, 'strengths');
  const share = 30.5 / 161; // (k + ½)/(n + 1)
  const step = (JOINT_DAMPING * (logit(0.5) - logit(share))) / 0.8;
  assert.ok(step > MIN_JOINT_STEP && step < 1.5, String(step));
  assert.ok(Math.abs((d.next.nurse as number) - 2 * Math.exp(step)) < 1e-12, String(d.next.nurse));
  assert.equal(d.next.doctor, 3);
});

test('decideJoint: steps bounded to [0.1, 1.5] in ln s and to the strength range; σ moves when compensating', () => {
  // nearly on target but significant with a huge n: the raw step is tiny → MIN_JOINT_STEP
  const near = round({ nurse: [44_000, 100_000], doctor: [50_000, 100_000] }, { nurse: 2, doctor: 3 });
  const small = decideJoint(near, 1, pairs, { nurse: 5 }, settings);
  assert.ok(small.kind === 'retune' && Math.abs((small.next.nurse as number) - 2 * Math.exp(0.1)) < 1e-12);
  // far off with a shallow slope: the step is capped at 1.5
  const far = round({ nurse: [1, 160], doctor: [80, 160] }, { nurse: 2, doctor: 3 });
  const big = decideJoint(far, 1, pairs, { nurse: 0.1 }, settings);
  assert.ok(big.kind === 'retune' && Math.abs((big.next.nurse as number) - 2 * Math.exp(1.5)) < 1e-12);
  // the range clamps; too much (share above target) steps down
  const over = round({ nurse: [159, 160], doctor: [80, 160] }, { nurse: 0.0011, doctor: 3 });
  const low = decideJoint(over, 1, pairs, { nurse: 0.1 }, settings);
  assert.ok(low.kind === 'retune' && low.next.nurse === 0.001);
  // compensating: the step applies to σ_p (the round's equivalent strengths)
  const comp = { ...far, equivalent: { nurse: 5, doctor: 7 } };
  const c = decideJoint(comp, 1, pairs, { nurse: 0.1 }, { ...settings, compensate: true });
  assert.ok(c.kind === 'retune' && c.moves === 'equivalent');
  assert.ok(Math.abs((c.next.nurse as number) - 5 * Math.exp(1.5)) < 1e-12 && c.next.doctor === 7);
});

test('professionStatus: the last joint round decides, else the own tuning; UCE its loop', () => {
  const state = {
    uce: null,
    tuners: { nurse: { status: 'converged' }, doctor: { status: 'exhausted' } },
    joint: { rounds: [] as JointRound[], strengths: {}, pending: null, done: false },
  } as unknown as Pick<JobState, 'uce' | 'joint' | 'tuners'>;
  assert.equal(professionStatus('ed50', state, 'nurse'), 'converged');
  assert.equal(professionStatus('ed50', state, 'doctor'), 'exhausted');
  state.joint.rounds.push({ round: 0, strengths: {}, shares: {}, outside: ['nurse'] });
  assert.equal(professionStatus('ed50', state, 'nurse'), 'exhausted');
  assert.equal(professionStatus('ed50', state, 'doctor'), 'converged');
  assert.equal(professionStatus('uce', state, 'doctor'), 'exhausted');
});
