/**
 * The job's result (DebiasResult) assembled from the state and the audits: per profession its pair,
 * strength, tuning cost and before/after shares; the summary's mean Δ, gendered and unrelated checks.
 */
import type { AuditResult } from '../audit/run.js';
import { meanDelta } from '../audit/stats.js';
import type { JobConfig } from './config.js';
import { professionStatus } from './joint-policy.js';
import type { ProfessionPair } from './prompts.js';
import type { AfterResult } from './stages/after.js';
import { imagesUsed } from './tuner.js';
import type { DebiasResult, JobState, ProfessionOutcome, ShareSummary } from './types.js';

export function shareSummary(audit: AuditResult | null, profession: string): ShareSummary | null {
  const p = audit?.professions.find((x) => x.profession === profession);
  if (!p) return null;
  return { share: p.share.p, lower: p.share.lower, upper: p.share.upper, delta: p.delta.value, n: p.share.n };
}

export function assembleResult(
  config: JobConfig,
  runDir: string,
  state: JobState,
  pairs: ProfessionPair[],
  before: AuditResult,
  afterStage: AfterResult,
  exported: string | null,
  complete: boolean,
  held: Set<string>,
): DebiasResult {
  const after = afterStage.audit;
  const outcomes: ProfessionOutcome[] = pairs.map((p) => {
    const tuner = state.tuners[p.profession];
    const accepted = tuner?.probes.filter((x) => x.outcome === 'accepted').at(-1);
    const strength = state.joint.strengths[p.profession] as number;
    return {
      profession: p.profession,
      destinationClass: p.destinationClass,
      source: p.source,
      destination: p.destination,
      target: p.target,
      status: professionStatus(config.tuning.strategy, state, p.profession),
      strength,
      lambda: 1 / strength,
      probes: tuner ? tuner.probes.length : (state.uce?.history.length ?? 0),
      tuningImages: tuner ? imagesUsed(tuner) : (state.uce?.images[p.profession] ?? 0),
      singleShare: accepted ? accepted.k / accepted.n : tuner?.result ? tuner.result.share : null,
      jointShares: state.joint.rounds.map((r) => r.shares[p.profession]?.share ?? Number.NaN),
      before: shareSummary(before, p.profession),
      after: shareSummary(after, p.profession),
      heldOutParity: parityOf(shareSummary(after, p.profession), config),
    };
  });
  const edited = (audit: AuditResult | null) =>
    audit?.professions.filter((p) => !held.has(p.profession) && p.share.n > 0) ?? [];
  const md = (audit: AuditResult | null) => {
    const counts = edited(audit).map((p) => ({ k: p.share.k, n: p.share.n }));
    return counts.length ? meanDelta(counts, { target: config.target.share, seed: 1 }) : null;
  };
  const tuningImages = outcomes.reduce((a, o) => a + o.tuningImages, 0);
  const afterDeltas = edited(after).map((p) => p.delta.value as number);
  const meanDeltaAfter = md(after);
  const outside = outcomes.filter((o) => o.heldOutParity === 'outside').map((o) => o.profession);
  return {
    kind: 'debias',
    version: 1,
    runDir,
    audits: { before: 'before', after: afterStage.dir },
    strategy: config.tuning.strategy,
    status: !complete ? 'tolerance-not-reached' : outside.length ? 'held-out-parity-not-reached' : 'complete',
    exported,
    professions: outcomes,
    heldOut: [...held].map((h) => ({ profession: h, before: shareSummary(before, h), after: shareSummary(after, h) })),
    summary: {
      professions: pairs.length,
      targetClass: config.target.class,
      targetShare: config.target.share,
      meanDeltaBefore: md(before),
      meanDeltaAfter,
      maxDeltaAfter: afterDeltas.length ? Math.max(...afterDeltas) : null,
      tuningImages,
      tuningImagesPerProfession: pairs.length ? tuningImages / pairs.length : 0,
      genderedKept: afterStage.genderedKept,
      unrelatedTextChange: afterStage.unrelated,
      jointRounds: state.joint.rounds.length,
      heldOutParity: {
        target: config.target.share,
        tolerance: config.tuning.tolerance,
        outside,
        meanDelta: meanDeltaAfter && {
          value: meanDeltaAfter.value,
          lower: meanDeltaAfter.lower,
          upper: meanDeltaAfter.upper,
          parityFloor: meanDeltaAfter.parityFloor,
          atFloor: meanDeltaAfter.lower <= meanDeltaAfter.parityFloor,
        },
      },
    },
    joint: state.joint.rounds,
    comparison: afterStage.comparison,
    classes: [...before.classes],
    images: afterStage.images,
  };
}

/** Whether a held-out after interval meets target ± tolerance (of the config's target class). */
export function parityOf(after: ShareSummary | null, config: JobConfig): 'reached' | 'outside' | null {
  if (!after || after.share === null) return null;
  const t = config.target.share;
  const tol = config.tuning.tolerance;
  return after.upper < t - tol - 1e-9 || after.lower > t + tol + 1e-9 ? 'outside' : 'reached';
}
