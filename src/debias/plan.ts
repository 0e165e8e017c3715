/**
 * `debias --dry-run`: what a job would do, without generating its images — the pairs (with both
 * candidate destinations where the baseline decides), the rows of the joint objective, the image
 * budget of every phase, and a time estimate from one timed single-step generation.
 */
import type { GenerateResult } from '../generate/pipeline.js';
import { libraryName, type NameOf } from '../util/errors.js';
import type { JobConfig } from './config.js';
import { preflight } from './preflight.js';
import { fillJobTemplate, preservationPrompts } from './prompts.js';
import type { JobWorld } from './types.js';

export interface DryRunPlan {
  kind: 'debias-plan';
  professions: {
    profession: string;
    source: string;
    /** destination prompt per candidate class (the baseline picks the under-represented one unless fixed) */
    destinations: Record<string, string>;
    fixed: string | null;
  }[];
  heldOut: string[];
  rows: {
    perPair: number;
    pairs: number;
    preserved: number;
    total: number;
    d: number;
    method: 'woodbury' | 'cholesky';
  };
  budget: {
    beforeAudit: number;
    afterAudit: number;
    genderedAudit: number;
    /**
     * expected tuning images (ed50: ≈ 1.75 × imagesPerProbe per profession with the text-side first
     * probe, as measured on the demo world, 2 × without; uce: rounds × images per round), and the most possible
     */
    tuningExpected: number;
    tuningMax: number;
    /** verification images: one round expected with interference compensation (two without), every round at most */
    verificationExpected: number;
    verification: number;
    totalExpected: number;
    totalMax: number;
  };
  estimate: {
    secondsPerImage: number;
    expectedMinutes: number;
    maxMinutes: number;
    /**
     * Wall time with N workers of the measured speed (a model, not a measurement: images × s/image ÷ N,
     * perfect scaling): N = the workers the queue sees, or 1, 4 and 16 without a queue.
     */
    byWorkers: { workers: number; expectedSeconds: number; maxSeconds: number }[];
    /** The workers counted on the queue (null: no queue given). */
    queueWorkers: number | null;
  };
  /** the image size every image of the job has, and how it was decided */
  size: GenerateResult['size'];
}

export interface PlanOptions {
  /** Workers connected to the job's queue (the estimate is given for them). */
  queueWorkers?: number;
}

export async function planDebias(config: JobConfig, world: JobWorld, options: PlanOptions = {}): Promise<DryRunPlan> {
  // The job's own checks first: whatever the dry run accepts, the job accepts.
  const { all, edited, held } = preflight(config, world);
  const professions = edited.map((p) => ({
    profession: p.profession,
    source: fillJobTemplate(config.prompts.source, p),
    destinations: Object.fromEntries(
      config.attribute.classes.map((c) => [c.id, fillJobTemplate(config.prompts.destination, p, c.word)]),
    ),
    fixed: config.prompts.destinationClass[p.profession] ?? null,
  }));
  const perPair = (config.prompts.augment ? 4 : 1) * 77;
  const preserved = preservationPrompts(config, edited).length * 77;
  const total = perPair * edited.length + preserved;
  const d = world.model.d;
  const perTemplate = Math.ceil(config.audit.imagesPerProfession / config.prompts.evaluationTemplates.length);
  const auditImages = all.length * perTemplate * config.prompts.evaluationTemplates.length;
  const gendered = config.audit.gendered
    ? edited.length * config.attribute.classes.length * Math.max(4, Math.ceil(config.audit.imagesPerProfession / 10))
    : 0;
  const t = config.tuning;
  const tuningMax =
    t.strategy === 'ed50'
      ? edited.length * t.maxProbes * t.imagesPerProbe
      : edited.length * t.uce.maxRounds * t.uce.imagesPerRound;
  const tuningExpected =
    t.strategy === 'ed50'
      ? edited.length *
        Math.min(
          t.maxProbes * t.imagesPerProbe,
          Math.ceil((t.initialStrength === 'auto' ? 1.75 : 2) * t.imagesPerProbe),
        )
      : edited.length * Math.min(t.uce.maxRounds, 10) * t.uce.imagesPerRound;
  const rounds = t.jointRounds + 1;
  const verification = t.strategy === 'ed50' ? edited.length * rounds * t.verificationImages : 0;
  const verificationExpected =
    t.strategy === 'ed50' ? edited.length * Math.min(rounds, t.compensate ? 1 : 2) * t.verificationImages : 0;
  const totalExpected = 2 * auditImages + gendered + tuningExpected + verificationExpected;
  const totalMax = 2 * auditImages + gendered + tuningMax + verification;
  // One timed single-step generation of a batch as the job runs them (after a warm-up), per image,
  // scaled to the job's steps. (Batches amortize the UNet's fixed cost: a single image would
  // overestimate small models several times.)
  const g = config.generation;
  const batch = Math.max(1, Math.min(g.batchSize, 32));
  const timed = async () => {
    const r = await world.pipeline.generate({
      prompt: professions[0]?.source ?? 'a photo',
      seeds: Array.from({ length: batch }, (_, i) => i),
      batchSize: batch,
      steps: 1,
      scheduler: g.scheduler,
      guidance: g.guidance,
      height: g.height,
      width: g.width,
    });
    return r;
  };
  await timed();
  const { timing, size } = await timed();
  const secondsPerImage = (timing.textMs + timing.loopMs * g.steps + timing.decodeMs) / 1000 / batch;
  return {
    kind: 'debias-plan',
    professions,
    heldOut: [...held],
    rows: { perPair, pairs: edited.length, preserved, total, d, method: total < d ? 'woodbury' : 'cholesky' },
    budget: {
      beforeAudit: auditImages,
      afterAudit: auditImages,
      genderedAudit: gendered,
      tuningExpected,
      tuningMax,
      verificationExpected,
      verification,
      totalExpected,
      totalMax,
    },
    estimate: {
      secondsPerImage,
      expectedMinutes: (secondsPerImage * totalExpected) / 60,
      maxMinutes: (secondsPerImage * totalMax) / 60,
      byWorkers: (options.queueWorkers !== undefined ? [Math.max(1, options.queueWorkers)] : [1, 4, 16]).map((n) => ({
        workers: n,
        expectedSeconds: (secondsPerImage * totalExpected) / n,
        maxSeconds: (secondsPerImage * totalMax) / n,
      })),
      queueWorkers: options.queueWorkers ?? null,
    },
    size,
  };
}

/**
 * The dry run as text; `nameOf` names the parameters its advice names as the user knows them
 * (`steps` → `config.generation.steps` in a config-driven run).
 */
export function renderPlan(plan: DryRunPlan, nameOf: NameOf = libraryName): string {
  const lines: string[] = [];
  lines.push(`pairs (${plan.professions.length}):`);
  for (const p of plan.professions) {
    const dest = p.fixed
      ? `"${p.destinations[p.fixed]}" (fixed)`
      : `${Object.values(p.destinations)
          .map((d) => `"${d}"`)
          .join(' or ')} (the under-represented class at baseline)`;
    lines.push(`  "${p.source}" → ${dest}`);
  }
  if (plan.heldOut.length) lines.push(`held out (audited, not edited): ${plan.heldOut.join(', ')}`);
  const r = plan.rows;
  lines.push(
    `rows: ${r.pairs} pairs × ${r.perPair} + ${r.preserved} preserved = ${r.total} rows of d = ${r.d} (${r.method})`,
  );
  const b = plan.budget;
  lines.push(
    `images: before ${b.beforeAudit}, tuning ≈ ${b.tuningExpected} (at most ${b.tuningMax}), verification ≈ ${b.verificationExpected} (at most ${b.verification}), after ${b.afterAudit}, gendered ${b.genderedAudit}`,
  );
  lines.push(
    `images are ${plan.size.height} × ${plan.size.width} (${plan.size.decidedBy === 'given' ? `given: ${nameOf('height')} and ${nameOf('width')}` : plan.size.detail})`,
  );
  lines.push(`total ≈ ${b.totalExpected} images (at most ${b.totalMax})`);
  const e = plan.estimate;
  lines.push(`time: ${e.secondsPerImage.toFixed(3)} s per image (measured) in one process here`);
  const who =
    e.queueWorkers !== null ? ` (the queue sees ${e.queueWorkers})` : ' of this speed (a model: perfect scaling)';
  for (const w of e.byWorkers) {
    lines.push(
      `  ${w.workers} worker${w.workers === 1 ? '' : 's'}${who}: ≈ ${humanDuration(w.expectedSeconds)} (at most ${humanDuration(w.maxSeconds)})`,
    );
  }
  lines.push(
    `  brings it down: more workers (time-debias worker on other machines, ${nameOf('queue')}), GPU workers (${nameOf('device')} cuda, ` +
      `about 100× a CPU per image), fewer steps (${nameOf('steps')}), fewer images (${nameOf('imagesPerProfession')}, ` +
      `${nameOf('verificationImages')}), fewer professions`,
  );
  return `${lines.join('\n')}\n`;
}

/** Seconds in the unit a person reads: s, min, h or days. */
export function humanDuration(seconds: number): string {
  if (!Number.isFinite(seconds)) return String(seconds);
  if (seconds < 90) return `${seconds.toFixed(seconds < 10 ? 1 : 0)} s`;
  if (seconds < 90 * 60) return `${(seconds / 60).toFixed(1)} min`;
  if (seconds < 48 * 3600) return `${(seconds / 3600).toFixed(1)} h`;
  return `${(seconds / 86400).toFixed(1)} days`;
}
