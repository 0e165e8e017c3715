/**
 * Seed plans. Every image of an audit is generated from one integer seed; a plan is a contiguous
 * range [start, start + count) with a recorded use. Tuning and held-out (evaluation) ranges must
 * be disjoint, so an audit after debiasing never measures on the seeds the tuner saw.
 * The same seeds are used for every prompt (common random numbers across professions/templates).
 */
import { show, UsageError } from '../util/errors.js';

export type SeedUse = 'tuning' | 'verification' | 'evaluation';

export interface SeedPlan {
  kind: 'seed-plan';
  use: SeedUse;
  start: number;
  /** images per prompt */
  count: number;
  /**
   * 'shared' (default): every template uses seeds start … start+count−1 (paired across templates);
   * 'distinct': template k uses start + k·count … (count·templates independent seeds per profession).
   */
  perTemplate?: 'shared' | 'distinct';
}

/** Default first seed of each use (as configs/schema.json); ranges of up to 500,000 images stay disjoint. */
export const DEFAULT_SEED_START: Readonly<Record<SeedUse, number>> = Object.freeze({
  tuning: 0,
  verification: 500_000,
  evaluation: 1_000_000,
});

export function seedPlan(use: SeedUse, count: number, start = DEFAULT_SEED_START[use]): SeedPlan {
  if (!Number.isInteger(count) || count < 1)
    throw new UsageError(`${show(count)} must be an integer ≥ 1 (images per prompt)`, { field: 'images' });
  if (!Number.isInteger(start) || start < 0 || start + count > 2 ** 32) {
    throw new UsageError(`${show(start)} must be an integer ≥ 0 with start + \`images\` ≤ 2^32`, {
      field: 'seedStart',
      mentions: ['images'],
    });
  }
  return { kind: 'seed-plan', use, start, count };
}

/** The seeds of template k (k = 0 for 'shared' plans, whatever the template). */
export function planSeeds(plan: SeedPlan, template = 0): number[] {
  const first = plan.start + (plan.perTemplate === 'distinct' ? template * plan.count : 0);
  return Array.from({ length: plan.count }, (_, i) => first + i);
}

/** Seeds a plan spans over `templates` templates. */
export function planSpan(plan: SeedPlan, templates: number): number {
  return plan.perTemplate === 'distinct' ? plan.count * templates : plan.count;
}

/** Throws when two plans of different uses overlap. */
export function checkDisjoint(plans: readonly SeedPlan[]): void {
  for (let i = 0; i < plans.length; i++)
    for (let j = i + 1; j < plans.length; j++) {
      const a = plans[i] as SeedPlan;
      const b = plans[j] as SeedPlan;
      if (a.use !== b.use && a.start < b.start + b.count && b.start < a.start + a.count) {
        throw new UsageError(
          `seeds: ${a.use} [${a.start}, ${a.start + a.count}) overlaps ${b.use} [${b.start}, ${b.start + b.count}) (rule: tuning and held-out seeds are disjoint)`,
        );
      }
    }
}
