/**
 * Stage 3 (ed50): ONE joint closed-form solve over all professions at their tuned strengths, verified
 * on fresh seeds; professions outside tolerance are re-tuned in bounded rounds (joint-policy.ts
 * decides). With compensation on, each round's strengths are first corrected for the interference
 * between professions on the text side (interference.ts). Saved after every verification.
 */
import pLimit from 'p-limit';
import type { Profession } from '../../audit/professions.js';
import { compensateInterference, editProgress } from '../interference.js';
import { decideJoint, jointSettings, outsideTolerance } from '../joint-policy.js';
import type { JointRound } from '../types.js';
import { fmt, type StageContext } from './context.js';

export async function jointRounds(ctx: StageContext): Promise<void> {
  const { config, state, pairs, professions, solveFor, evaluate, save, log } = ctx;
  const joint = state.joint;
  if (joint.done) return;
  if (Object.keys(joint.strengths).length === 0) {
    joint.strengths = Object.fromEntries(
      pairs.map((p) => [p.profession, state.tuners[p.profession]!.result!.strength]),
    );
  }
  // σ_p: the equivalent single-edit strengths; re-tuning rounds move them (compensation on).
  joint.equivalent ??= { ...joint.strengths };
  const slopes = Object.fromEntries(pairs.map((p) => [p.profession, state.tuners[p.profession]?.fit?.beta]));
  const settings = jointSettings(config);
  const indices = Array.from({ length: config.tuning.verificationImages }, (_, i) => i);
  const limit = pLimit(config.concurrency);
  while (!joint.done) {
    const round = joint.rounds.length;
    let pending = joint.pending;
    if (!pending) {
      pending = { round, strengths: { ...joint.strengths }, shares: {}, outside: [] };
      if (config.tuning.compensate && pairs.length > 1) {
        const equivalent = { ...(joint.equivalent as Record<string, number>) };
        const c = await compensate(ctx, equivalent);
        pending.strengths = c.strengths;
        pending.equivalent = equivalent;
        pending.compensation = c.record;
        log(
          `joint round ${round}: interference compensation (text side), progress ${pairs
            .map(
              (p) =>
                `${p.profession} ${fmt(c.record.uncompensated[p.profession] as number)}→${fmt(c.record.compensated[p.profession] as number)}/${fmt(c.record.target[p.profession] as number)}`,
            )
            .join(', ')}`,
        );
      }
      joint.pending = pending;
      save();
    }
    const current = pending;
    const M = (await solveFor(current.strengths)).M;
    await Promise.all(
      pairs.map((pair) =>
        limit(async () => {
          if (current.shares[pair.profession]) return;
          const profession = professions.get(pair.profession) as Profession;
          const outcomes = await evaluate(profession, M, config.seeds.verification, indices, pair.destinationClass);
          const k = outcomes.filter(Boolean).length;
          current.shares[pair.profession] = { k, n: outcomes.length, share: k / outcomes.length };
          save();
        }),
      ),
    );
    current.outside = outsideTolerance(pairs, current.shares, settings);
    joint.rounds.push(current);
    joint.pending = null;
    log(
      `joint round ${round}: ${pairs.map((p) => `${p.profession} ${fmt(current.shares[p.profession]!.share)}`).join(', ')}` +
        (current.outside.length ? ` — outside tolerance: ${current.outside.join(', ')}` : ' — all within tolerance'),
    );
    const decision = decideJoint(current, joint.rounds.length, pairs, slopes, settings);
    if (decision.kind === 'accept') {
      joint.strengths = decision.strengths;
      joint.done = true;
    } else if (decision.moves === 'equivalent') joint.equivalent = decision.next;
    else joint.strengths = decision.next;
    save();
  }
}

/**
 * Joint strengths compensated for interference (interference.ts): targets π*_p from each
 * profession's own edit at σ_p, then eq. I2 on the joint solve.
 */
async function compensate(
  ctx: StageContext,
  equivalent: Record<string, number>,
): Promise<{ strengths: Record<string, number>; record: NonNullable<JointRound['compensation']> }> {
  const { config, pairs, rows, opposite, solveFor } = ctx;
  const names = pairs.map((p) => p.profession);
  const targets: number[] = [];
  for (let i = 0; i < names.length; i++) {
    const name = names[i] as string;
    const own = await solveFor({ [name]: equivalent[name] as number });
    targets.push(editProgress(rows, own, { opposite, pairs: [i] })[i] as number);
  }
  const result = await compensateInterference({
    equivalent: names.map((n) => equivalent[n] as number),
    targets,
    rows,
    range: config.tuning.strengthRange,
    progress: { opposite },
    solveJoint: (s) => solveFor(Object.fromEntries(names.map((n, i) => [n, s[i] as number]))),
  });
  const byName = (xs: readonly number[]) => Object.fromEntries(names.map((n, i) => [n, xs[i] as number]));
  return {
    strengths: byName(result.strengths),
    record: {
      target: byName(result.targets),
      uncompensated: byName(result.before),
      compensated: byName(result.after),
      residual: result.residual,
      iterations: result.iterations,
    },
  };
}
