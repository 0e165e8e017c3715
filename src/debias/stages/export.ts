/**
 * Stage 4, export: the joint edit committed through the edit core (edit/commit.ts: apply to every
 * edited site, export the model folder model/ with its ONE typed time-edit.json, schema-checked,
 * written once) — when every profession converged or the caller asked for a partial export. Skipped
 * when the run folder already holds the export.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { AuditResult } from '../../audit/run.js';
import { commitEdit } from '../../edit/commit.js';
import { type DebiasManifestSection, EDIT_MANIFEST_FILE, type ManifestPair } from '../../edit/manifest.js';
import { augmentPrompts, type RowSet } from '../../edit/rows.js';
import type { EditSolution } from '../../edit/solve.js';
import type { GemmEngine } from '../../linalg/gemm.js';
import type { EditSite } from '../../model/sites.js';
import type { JobConfig } from '../config.js';
import type { ProfessionPair } from '../prompts.js';
import { shareSummary } from '../result.js';
import type { JobRows } from '../rows.js';
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
  jobRows: JobRows;
  before: AuditResult;
  log: (line: string) => void;
}

/** Export (or find the export of) the joint edit; returns the model folder. */
export async function exportStage(input: ExportInput): Promise<string> {
  const { config, world, folder, sites, solution, gemm, pairs, jobRows, before, log } = input;
  const { state } = folder;
  const modelDir = folder.modelDir;
  if (state.phase === 'joint') state.phase = 'export';
  if (state.phase === 'export' || !existsSync(join(modelDir, EDIT_MANIFEST_FILE))) {
    log(`export: ${sites.length} sites → ${modelDir}`);
    const { rows, preserve, unrelatedWeights } = jobRows;
    await commitEdit({
      model: world.model,
      outDir: modelDir,
      force: true,
      allSites: sites,
      sites,
      solution,
      gemm,
      describe: {
        // every pair carries its own λ_p = 1/s_p: no global λ
        lambda: null,
        augment: config.prompts.augment,
        projections: [...config.edit.projections],
        layers: config.edit.layers ? [...config.edit.layers] : null,
        pairs: manifestPairs(config, state, pairs, rows),
        preserve: preserve.length
          ? {
              prompts: preserve,
              weight: config.preserve.weight,
              weights: unrelatedWeights.size
                ? preserve.map((p) => unrelatedWeights.get(p) ?? config.preserve.weight)
                : null,
              rows: preserve.length * rows.length,
            }
          : null,
        perPrompt: rows.length,
        debias: debiasSection(config, state, pairs, preserve, before, rows.length),
      },
    });
    folder.advance('after');
  }
  return modelDir;
}

function manifestPairs(config: JobConfig, state: JobState, pairs: ProfessionPair[], rows: RowSet): ManifestPair[] {
  return pairs.map((p) => {
    const prompts = config.prompts.augment ? augmentPrompts(p.source) : [p.source];
    return {
      source: p.source,
      destination: p.destination,
      weight: null,
      lambda: 1 / (state.joint.strengths[p.profession] as number),
      rows: prompts.length * rows.length,
      prompts,
    };
  });
}

/**
 * time-edit.json's debias section, written once with the export, before the after audit: the after
 * audit records the exported folder's digest, so the manifest must not change after it: `after` is
 * null (the after shares are in job.json and the reports).
 */
export function debiasSection(
  config: JobConfig,
  state: JobState,
  pairs: ProfessionPair[],
  preserve: string[],
  before: AuditResult,
  perPrompt: number,
): DebiasManifestSection {
  return {
    strategy: config.tuning.strategy,
    attribute: config.attribute as unknown as Record<string, unknown>,
    target: config.target,
    augment: config.prompts.augment,
    preserve: { prompts: preserve, weight: config.preserve.weight, unrelatedWeight: config.preserve.unrelatedWeight },
    professions: pairs.map((p) => ({
      profession: p.profession,
      source: p.source,
      destination: p.destination,
      destinationClass: p.destinationClass,
      strength: state.joint.strengths[p.profession] as number,
      lambda: 1 / (state.joint.strengths[p.profession] as number),
      ...(state.uce ? { uceWeight: state.uce.weights[p.profession] as number } : {}),
      rows: (config.prompts.augment ? augmentPrompts(p.source).length : 1) * perPrompt,
      before: shareSummary(before, p.profession),
      after: null,
    })),
  };
}
