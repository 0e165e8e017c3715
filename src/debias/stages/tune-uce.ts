/**
 * Stage 2 (uce): UCE's fixed-step loop (mission.md §2) on the joint edit, for comparison with ed50:
 * every profession's target rows move by w_p ← w_p + step·(t − measured) until all are within tolerance.
 */
import pLimit from 'p-limit';
import type { Profession } from '../../audit/professions.js';
import { fmt, type StageContext } from './context.js';

/** UCE's fixed edit strength s = 1/λ (TIME's default λ = 0.1); its loop moves the targets instead. */
export const UCE_STRENGTH = 10;

/** UCE's fixed-step loop (mission.md §2) on the joint edit: w_p ← w_p + step·(t − measured). */
export async function tuneUce(ctx: StageContext): Promise<void> {
  const { config, state, pairs, professions, solveFor, evaluate, save, log } = ctx;
  const u = config.tuning.uce;
  state.uce ??= {
    round: 0,
    weights: Object.fromEntries(pairs.map((p) => [p.profession, 0])),
    history: [],
    images: Object.fromEntries(pairs.map((p) => [p.profession, 0])),
    converged: false,
    done: false,
  };
  const uce = state.uce;
  const strengths = Object.fromEntries(pairs.map((p) => [p.profession, UCE_STRENGTH]));
  const indices = Array.from({ length: u.imagesPerRound }, (_, i) => i);
  const limit = pLimit(config.concurrency);
  while (!uce.done) {
    // Round 0 has w = 0: targets equal sources and M = I (the unedited model).
    const M = (await solveFor(strengths, uce.weights)).M;
    const shares: Record<string, number> = {};
    await Promise.all(
      pairs.map((pair) =>
        limit(async () => {
          const profession = professions.get(pair.profession) as Profession;
          const outcomes = await evaluate(profession, M, config.seeds.tuning, indices, pair.destinationClass);
          shares[pair.profession] = outcomes.filter(Boolean).length / outcomes.length;
          uce.images[pair.profession] = (uce.images[pair.profession] ?? 0) + outcomes.length;
        }),
      ),
    );
    const within = pairs.every((p) => Math.abs((shares[p.profession] as number) - p.target) <= config.tuning.tolerance);
    uce.history.push({
      round: uce.round,
      weights: { ...uce.weights },
      shares,
      images: pairs.length * u.imagesPerRound,
    });
    log(
      `uce round ${uce.round}: ${pairs.map((p) => `${p.profession} ${fmt(shares[p.profession] as number)}`).join(', ')}`,
    );
    if (within) {
      uce.converged = true;
      uce.done = true;
    } else if (uce.round + 1 >= u.maxRounds) {
      uce.done = true;
    } else {
      for (const p of pairs)
        uce.weights[p.profession] =
          (uce.weights[p.profession] as number) + u.step * (p.target - (shares[p.profession] as number));
      uce.round++;
    }
    save();
  }
}

/** UCE's loop is joint already: its commit is the fixed strength for every profession. */
export async function commitUce(ctx: StageContext): Promise<void> {
  const { state, pairs, save } = ctx;
  if (state.joint.done) return;
  state.joint.strengths = Object.fromEntries(pairs.map((p) => [p.profession, UCE_STRENGTH]));
  state.joint.done = true;
  save();
}
