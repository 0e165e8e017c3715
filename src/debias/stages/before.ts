/**
 * Stage 1, before: the baseline audit of every profession (edited and held out) on the held-out
 * evaluation templates and seeds, and the pairs it decides (each profession's destination is the
 * class under-represented at baseline unless the config fixes it). Resumes from its audit folder;
 * the pairs are recomputed on resume and checked against the saved ones.
 */
import { type AuditOptions, type AuditResult, runAudit } from '../../audit/run.js';
import { OutputError } from '../../util/errors.js';
import type { JobConfig } from '../config.js';
import type { Preflight } from '../preflight.js';
import { buildPairs, type ProfessionPair } from '../prompts.js';
import type { RunFolder } from '../run-folder.js';
import type { JobWorld } from '../types.js';
import { auditSource, progressLogger } from './context.js';

/** What the before and after audits share (everything but the folder and the image source). */
export type AuditCommon = Omit<AuditOptions, 'out' | 'source'>;

export function auditCommon(config: JobConfig, world: Pick<JobWorld, 'classifier' | 'professions'>, pre: Preflight) {
  return {
    classifier: world.classifier,
    professions: world.professions,
    templates: pre.evaluation.templates,
    seeds: pre.evaluation.seeds,
    attribute: pre.attribute,
    threshold: config.attribute.threshold,
    targetClass: config.target.class,
    targetShare: config.target.share,
    batchSize: Math.max(config.generation.batchSize, 8),
  } satisfies AuditCommon;
}

export interface BeforeResult {
  audit: AuditResult;
  /** share of the config's target class per profession */
  baseline: Map<string, number | null>;
  pairs: ProfessionPair[];
}

export async function runBefore(
  config: JobConfig,
  world: Pick<JobWorld, 'pipeline' | 'classifier' | 'professions' | 'queue' | 'model'>,
  pre: Preflight,
  folder: RunFolder,
  log: (line: string) => void,
): Promise<BeforeResult> {
  const { templates, perTemplate } = pre.evaluation;
  log(`before: auditing ${pre.all.length} professions × ${templates.length} templates × ${perTemplate} seeds`);
  const audit = await runAudit({
    ...auditCommon(config, world, pre),
    out: folder.path('before'),
    source: await auditSource(world, world.pipeline, pre.generation, config.device),
    onProgress: progressLogger(log, 'before'),
  });
  const baseline = new Map(audit.professions.map((p) => [p.profession, p.share.p]));
  // Deterministic: recomputed on resume, checked against the saved pairs.
  const pairs = buildPairs(config, pre.edited, baseline);
  const { state } = folder;
  if (state.pairs && JSON.stringify(state.pairs) !== JSON.stringify(pairs)) {
    throw new OutputError(
      `${folder.dir}: the saved pairs differ from this run's (the baseline changed?); pass \`restart\``,
      {
        field: 'outDir',
        mentions: ['restart'],
      },
    );
  }
  state.pairs = pairs;
  folder.advance('tuning');
  return { audit, baseline, pairs };
}
