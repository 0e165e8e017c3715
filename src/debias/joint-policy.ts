/**
 * The joint commit's decisions, pure (like tuner.ts: data in, decision out, no I/O): which
 * professions a verification round finds outside tolerance, whether to accept the round's strengths
 * or re-tune, and the damped Newton steps in ln s of a re-tuning round.
 */
import type { JobConfig } from './config.js';
import { logit, normalQuantile } from './dose-response.js';
import { wilsonInterval } from './tuner.js';
import type { JobState, JointRound } from './types.js';

/** Fraction of the Newton step taken in a joint re-tuning round. */
export const JOINT_DAMPING = 0.7;
/** Smallest joint re-tuning step in ln s. */
export const MIN_JOINT_STEP = 0.1;
/** Largest joint re-tuning step in ln s. */
export const MAX_JOINT_STEP = 1.5;

export interface JointSettings {
  tolerance: number;
  /** the tuning confidence: a profession is outside only if its interval at this level excludes t */
  confidence: number;
  /** re-tuning rounds after the first verification */
  jointRounds: number;
  /** interference compensation on: re-tuning moves σ_p (equivalent single-edit strengths) */
  compensate: boolean;
  strengthRange: [number, number];
}

export function jointSettings(config: JobConfig): JointSettings {
  const t = config.tuning;
  return {
    tolerance: t.tolerance,
    confidence: t.confidence,
    jointRounds: t.jointRounds,
    compensate: t.compensate,
    strengthRange: t.strengthRange,
  };
}

type Shares = Readonly<Record<string, { k: number; n: number; share: number }>>;

/**
 * Outside = beyond tolerance AND significantly off target (its Wilson interval at the tuning
 * confidence excludes t): the verification sample's own noise must not start a re-tuning round.
 */
export function outsideTolerance(
  pairs: readonly { profession: string; target: number }[],
  shares: Shares,
  settings: Pick<JointSettings, 'tolerance' | 'confidence'>,
): string[] {
  const z = normalQuantile(0.5 + settings.confidence / 2);
  return pairs
    .filter((p) => {
      const { k, n, share } = shares[p.profession] as { k: number; n: number; share: number };
      const [lo, hi] = wilsonInterval(k, n, z);
      return Math.abs(share - p.target) > settings.tolerance + 1e-9 && (hi < p.target || lo > p.target);
    })
    .map((p) => p.profession);
}

/** The slope used for professions without a fitted one: the median of the positive fitted slopes, else 1. */
export function fallbackSlope(slopes: readonly (number | undefined)[]): number {
  const positive = slopes.filter((b): b is number => b !== undefined && b > 0).sort((a, b) => a - b);
  return positive.length ? (positive[positive.length >> 1] as number) : 1;
}

export type JointDecision =
  /** keep the strengths of the last verified solve */
  | { kind: 'accept'; strengths: Record<string, number> }
  /** re-tune: the next round's σ_p (compensation on) or joint strengths (off) */
  | { kind: 'retune'; moves: 'equivalent' | 'strengths'; next: Record<string, number> };

/**
 * After verification round `round` (already counted in `roundsDone`): accept when every profession is
 * within tolerance or the re-tuning rounds are spent; else damped Newton steps in ln s for the
 * professions outside — on σ_p when compensating (the tuner's slope is a single-edit slope), else on
 * the joint strength itself.
 */
export function decideJoint(
  round: JointRound,
  roundsDone: number,
  pairs: readonly { profession: string; target: number }[],
  slopes: Readonly<Record<string, number | undefined>>,
  settings: JointSettings,
): JointDecision {
  if (round.outside.length === 0 || roundsDone > settings.jointRounds) {
    return { kind: 'accept', strengths: { ...round.strengths } };
  }
  const fallback = fallbackSlope(Object.values(slopes));
  const base = settings.compensate ? (round.equivalent ?? round.strengths) : round.strengths;
  const next = { ...base };
  const [lo, hi] = settings.strengthRange;
  for (const p of pairs) {
    if (!round.outside.includes(p.profession)) continue;
    const { k, n } = round.shares[p.profession] as { k: number; n: number };
    const share = (k + 0.5) / (n + 1); // keep logit finite at 0/n and n/n
    const beta = slopes[p.profession] ?? fallback;
    // Damped (the other professions move too: full steps oscillate).
    const raw = (JOINT_DAMPING * (logit(p.target) - logit(share))) / beta;
    // At least MIN_JOINT_STEP: with common random numbers a tiny step may flip no seed at all.
    const step = Math.sign(raw) * Math.min(MAX_JOINT_STEP, Math.max(MIN_JOINT_STEP, Math.abs(raw)));
    next[p.profession] = Math.min(hi, Math.max(lo, (next[p.profession] as number) * Math.exp(step)));
  }
  return { kind: 'retune', moves: settings.compensate ? 'equivalent' : 'strengths', next };
}

/**
 * A profession's final tuning status: UCE's loop decides for all; after joint rounds the last
 * verified joint solve decides; without them, the profession's own tuning.
 */
export function professionStatus(
  strategy: JobConfig['tuning']['strategy'],
  state: Pick<JobState, 'uce' | 'joint' | 'tuners'>,
  profession: string,
): 'converged' | 'exhausted' {
  if (strategy === 'uce') return state.uce?.converged ? 'converged' : 'exhausted';
  const lastRound = state.joint.rounds[state.joint.rounds.length - 1];
  if (lastRound) return lastRound.outside.includes(profession) ? 'exhausted' : 'converged';
  return state.tuners[profession]?.status === 'converged' ? 'converged' : 'exhausted';
}
