/**
 * Stage 4, export: the joint edit applied to every edited site and written as a model folder
 * (model/, diffusers layout, with time-edit.json) — when every profession converged or the caller
 * asked for a partial export. Skipped when the run folder already holds the export.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { AuditResult } from '../../audit/run.js';
import { applyEdit } from '../../edit/apply.js';
import type { EditSolution } from '../../edit/solve.js';
import type { GemmEngine } from '../../linalg/gemm.js';
import { EDIT_MANIFEST, exportEditedModel } from '../../model/export.js';
import { type EditSite, readSiteWeightStored } from '../../model/sites.js';
import type { JobConfig } from '../config.js';
import type { ProfessionPair } from '../prompts.js';
import { shareSummary } from '../result.js';
import type { RunFolder } from '../run-folder.js';
import type { JobState, JobWorld } from '../types.js';

export interface ExportInput {
  config: JobConfig;
  world: Pick<JobWorld, 'model'>;
  folder: RunFolder;
  sites: readonly EditSite[];
  solution: EditSolution;
  gemm: GemmEngine;
  pairs: ProfessionPair[];
  preserve: string[];
  before: AuditResult;
  log: (line: string) => void;
}

/** Export (or find the export of) the joint edit; returns the model folder. */
export async function exportStage(input: ExportInput): Promise<string> {
  const { config, world, folder, sites, solution, gemm, pairs, preserve, before, log } = input;
  const { state } = folder;
  const modelDir = folder.modelDir;
  if (state.phase === 'joint') state.phase = 'export';
  if (state.phase === 'export' || !existsSync(join(modelDir, EDIT_MANIFEST))) {
    log(`export: ${sites.length} sites → ${modelDir}`);
    const weights = sites.map((s) => ({ name: s.name, ...readSiteWeightStored(world.model, s) }));
    const applied = await applyEdit(weights, solution, { gemm });
    await exportEditedModel({
      model: world.model,
      weights: new Map(applied.sites.map((s) => [s.name, s.W])),
      layout: 'stored',
      outDir: modelDir,
      force: true,
      sites: [...sites],
      manifest: modelManifest(config, state, pairs, solution, preserve, before),
    });
    folder.advance('after');
  }
  return modelDir;
}

/**
 * time-edit.json's debias section, written once with the export, before the after audit: the after
 * audit records the exported folder's digest, so the manifest must not change after it: `after` is
 * null (the after shares are in job.json and the reports).
 */
export function modelManifest(
  config: JobConfig,
  state: JobState,
  pairs: ProfessionPair[],
  solution: EditSolution,
  preserve: string[],
  before: AuditResult,
): Record<string, unknown> & { debias: unknown } {
  return {
    tool: 'time-debias',
    method: 'TIME (arXiv 2303.08084), joint closed form over all professions',
    solve: { kind: solution.kind, n: solution.n, d: solution.d },
    debias: {
      strategy: config.tuning.strategy,
      attribute: config.attribute,
      target: config.target,
      augment: config.prompts.augment,
      preserve: { prompts: preserve, weight: config.preserve.weight, unrelatedWeight: config.preserve.unrelatedWeight },
      professions: pairs.map((p) => ({
        profession: p.profession,
        source: p.source,
        destination: p.destination,
        destinationClass: p.destinationClass,
        strength: state.joint.strengths[p.profession],
        lambda: 1 / (state.joint.strengths[p.profession] as number),
        uceWeight: state.uce?.weights[p.profession],
        rows: config.prompts.augment ? 4 * 77 : 77,
        before: shareSummary(before, p.profession),
        after: null,
      })),
    },
  };
}
