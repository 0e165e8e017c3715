/**
 * Before/after comparison of two audits (`time-debias compare RUN_A RUN_B`), paired per profession.
 *
 * Per profession (eq. (5) of src/audit/stats.ts): the target share before and after with Wilson
 * intervals, their difference with Newcombe's interval, the two-proportion z test, and — when the
 * two runs generated the same prompts with the same seeds (common random numbers) — McNemar's exact
 * test on the image pairs, which is then the significance that counts. Δ before and after with
 * their intervals. Over professions: the change of mean Δ with a seeded bootstrap interval.
 */
import { show, UsageError } from '../util/errors.js';
import type { AuditImage, AuditResult, ProfessionResult } from './run.js';
import { type DeltaChange, meanDeltaChange, type ShareChange, shareChange } from './stats.js';

export interface ProfessionComparison {
  profession: string;
  before: Pick<ProfessionResult, 'share' | 'delta' | 'classified' | 'unclear'>;
  after: Pick<ProfessionResult, 'share' | 'delta' | 'classified' | 'unclear'>;
  /** p_after − p_before, Newcombe interval, z test, McNemar when paired */
  change: ShareChange;
  /** Δ_after − Δ_before (null when a side has no classified image) */
  deltaChange: number | null;
  /** Image pairs (same prompt and seed, both classified) used by McNemar's test. */
  pairs: number;
}

export interface Comparison {
  kind: 'comparison';
  version: 1;
  before: { fingerprint: string; professionList: string; images: number; settings: Record<string, unknown> };
  after: { fingerprint: string; professionList: string; images: number; settings: Record<string, unknown> };
  targetClass: string;
  targetShare: number;
  professions: ProfessionComparison[];
  /** Professions only in one of the runs (not compared). */
  onlyBefore: string[];
  onlyAfter: string[];
  summary: {
    professions: number;
    /** All compared professions had every image paired. */
    paired: boolean;
    meanDelta: DeltaChange;
    significant: number;
    /** Professions whose Δ went down / up with a significant share change. */
    improved: number;
    worsened: number;
  };
}

function pairKey(img: AuditImage): string | null {
  return img.prompt !== null && img.seed !== null ? JSON.stringify([img.profession, img.prompt, img.seed]) : null;
}

export function compareAudits(
  before: AuditResult,
  after: AuditResult,
  options: { bootstrap?: { samples?: number; seed?: number } } = {},
): Comparison {
  const s1 = before.summary;
  const s2 = after.summary;
  if (s1.targetClass !== s2.targetClass || s1.targetShare !== s2.targetShare) {
    throw new UsageError(
      `compare: the runs measure different targets (${show(s1.targetClass)} at ${s1.targetShare} vs ${show(s2.targetClass)} at ${s2.targetShare}); they are not comparable`,
    );
  }
  if (before.classes.join('\u0000') !== after.classes.join('\u0000')) {
    throw new UsageError(
      `compare: the runs have different classes (${before.classes.join(', ')} vs ${after.classes.join(', ')})`,
    );
  }
  const target = s1.targetClass;
  const afterBy = new Map(after.professions.map((p) => [p.profession, p]));
  const beforeNames = new Set(before.professions.map((p) => p.profession));
  const common = before.professions.filter((p) => afterBy.has(p.profession));
  if (common.length === 0) throw new UsageError('compare: the two runs have no profession in common');
  const afterImages = new Map<string, AuditImage>();
  for (const img of after.images) {
    const k = pairKey(img);
    if (k) afterImages.set(k, img);
  }
  let allPaired = true;
  const professions: ProfessionComparison[] = common.map((b) => {
    const a = afterBy.get(b.profession) as ProfessionResult;
    let pa = 0;
    let pb = 0;
    let pc = 0;
    let pd = 0;
    let pairs = 0;
    let fullyPaired = b.images > 0 && b.images === a.images;
    for (const img of before.images) {
      if (img.profession !== b.profession) continue;
      const k = pairKey(img);
      const other = k ? afterImages.get(k) : undefined;
      if (!other) {
        fullyPaired = false;
        continue;
      }
      if (img.kind === 'unclear' || other.kind === 'unclear') continue;
      pairs++;
      const x = img.label === target;
      const y = other.label === target;
      if (x && y) pa++;
      if (x && !y) pb++;
      if (!x && y) pc++;
      if (!x && !y) pd++;
    }
    if (!fullyPaired) allPaired = false;
    const change = shareChange(
      { k: b.share.k, n: b.share.n },
      { k: a.share.k, n: a.share.n },
      fullyPaired ? { a: pa, b: pb, c: pc, d: pd } : undefined,
    );
    const pick = (p: ProfessionResult) => ({
      share: p.share,
      delta: p.delta,
      classified: p.classified,
      unclear: p.unclear,
    });
    return {
      profession: b.profession,
      before: pick(b),
      after: pick(a),
      change,
      deltaChange: a.delta.value !== null && b.delta.value !== null ? a.delta.value - b.delta.value : null,
      pairs,
    };
  });
  const meanDelta = meanDeltaChange(
    professions.map((p) => ({
      before: { k: p.before.share.k, n: p.before.share.n },
      after: { k: p.after.share.k, n: p.after.share.n },
    })),
    { target: s1.targetShare, samples: options.bootstrap?.samples ?? 2000, seed: options.bootstrap?.seed ?? 1 },
  );
  const significant = professions.filter((p) => p.change.significant);
  const side = (r: AuditResult) => ({
    fingerprint: r.fingerprint,
    professionList: r.plan.professionList,
    images: r.summary.images,
    settings: r.settings,
  });
  return {
    kind: 'comparison',
    version: 1,
    before: side(before),
    after: side(after),
    targetClass: target,
    targetShare: s1.targetShare,
    professions,
    onlyBefore: before.professions.filter((p) => !afterBy.has(p.profession)).map((p) => p.profession),
    onlyAfter: after.professions.filter((p) => !beforeNames.has(p.profession)).map((p) => p.profession),
    summary: {
      professions: professions.length,
      paired: allPaired,
      meanDelta,
      significant: significant.length,
      improved: significant.filter((p) => (p.deltaChange ?? 0) < 0).length,
      worsened: significant.filter((p) => (p.deltaChange ?? 0) > 0).length,
    },
  };
}
