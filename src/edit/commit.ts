/**
 * The commit half of the one edit core: apply a solved edit to the selected sites (W'_s = W_s·M,
 * apply.ts) and export the edited model folder with its ONE `time-edit.json` (manifest.ts), written
 * once, validated against the schema before it is written. `edit` and the debias job both commit
 * through here.
 *
 *   beginCommit(target)      check the output location, start cloning the input folder in the
 *                            background (model/export.ts startExport) — call it as soon as the
 *                            checks have passed, so the copy overlaps the computation
 *   pending.commit(content)  apply, then patch the clone, write time-edit.json and the portable edit
 *                            file edit.safetensors (edit-file.ts: M and what it was computed with),
 *                            fsync, rename
 *   pending.abort()          remove the temporary folder (nothing is written)
 *   commitEdit(...)          both in one call
 *
 * The input folder is only ever read.
 */
import type { GemmEngine } from '../linalg/gemm.js';
import { type ExportResult, startExport } from '../model/export.js';
import type { SdModel } from '../model/folder.js';
import { type EditSite, readSiteWeightStored } from '../model/sites.js';
import { EditError, OutputError, show } from '../util/errors.js';
import { applyEdit } from './apply.js';
import { EDIT_FILE, onnxEditFile } from './edit-file.js';
import {
  assertEditManifest,
  type DebiasManifestSection,
  EDIT_MANIFEST_VERSION,
  type EditManifest,
  type EditRecord,
  type ManifestPair,
  type ManifestPreserve,
  TIME_METHOD,
} from './manifest.js';
import type { RowSet } from './rows.js';
import type { EditSolution } from './solve.js';

export interface CommitTarget {
  model: SdModel;
  /** The output model folder; must not exist unless `force`. */
  outDir: string;
  force?: boolean;
  /** Every located site of the model (default: located again). */
  allSites?: readonly EditSite[];
}

/** What an edit changed, as the manifest records it (the solver's facts come from the solution). */
export interface CommitDescription {
  /** TIME's λ; null when every pair carries its own λ_p. */
  lambda: number | null;
  augment: boolean;
  projections: EditRecord['projections'];
  layers: string[] | null;
  pairsFile?: string | null;
  pairs: ManifestPair[];
  preserve: ManifestPreserve | null;
  /** Rows per prompt (the padded length L). */
  perPrompt: number;
  warnings?: string[];
  /** The debias job's section, written in the same manifest. */
  debias?: DebiasManifestSection;
}

export interface CommitContent {
  /** The sites to edit (selectSites), in the order the manifest lists them. */
  sites: readonly EditSite[];
  solution: EditSolution;
  gemm?: GemmEngine;
  describe: CommitDescription;
  /** Called when W' is formed, before the export's patch and write (a CLI's status line). */
  onApplied?: () => void;
}

export interface CommitResult {
  kind: 'edit-commit';
  /** How W' was formed: W + W·Δ (dense) or W + (W Uᵀ) Z (lowRank). */
  applyForm: 'dense' | 'lowRank';
  manifest: EditManifest;
  export: ExportResult;
  /** Milliseconds: apply, and the rest of the export from the end of apply. */
  timings: { apply: number; export: number };
}

export interface PendingCommit {
  readonly outDir: string;
  commit(content: CommitContent): Promise<CommitResult>;
  abort(): Promise<void>;
}

/**
 * The manifest's pairs and preservation, read off a row set (rows.ts) and the strengths it was solved
 * with: per pair its first group's prompts, its λ_p and its rows (augmentations included); per
 * preserved prompt μ (or μ_q from `muByPrompt`). For callers that build rows themselves (the debias
 * job); `lambda` is the global λ, or null when every pair has its own.
 */
export function describeRows(
  rows: RowSet,
  strengths: {
    lambdas: readonly number[];
    lambda: number | null;
    mu: number;
    muByPrompt?: ReadonlyMap<string, number>;
  },
): Pick<CommitDescription, 'pairs' | 'preserve' | 'perPrompt'> {
  const pairs: ManifestPair[] = [];
  for (const g of rows.groups) {
    if (g.kind !== 'pair') continue;
    const lambdaP = strengths.lambdas[g.pair];
    if (lambdaP === undefined) {
      throw new EditError(`${strengths.lambdas.length} values for ${rows.pairCount} pairs`, { field: 'lambdas' });
    }
    const have = pairs[g.pair];
    if (have) {
      have.rows += g.count;
      have.prompts.push(g.source);
    } else {
      pairs[g.pair] = {
        source: g.source,
        destination: g.destination,
        weight: strengths.lambda === null ? null : strengths.lambda / lambdaP,
        lambda: lambdaP,
        rows: g.count,
        prompts: [g.source],
      };
    }
  }
  const kept = rows.groups.filter((g) => g.kind === 'preserve');
  const weights = kept.map((g) => strengths.muByPrompt?.get(g.prompt) ?? strengths.mu);
  const preserve: ManifestPreserve | null =
    kept.length === 0
      ? null
      : {
          prompts: kept.map((g) => g.prompt),
          weight: strengths.mu,
          weights: weights.every((w) => w === strengths.mu) ? null : weights,
          rows: kept.reduce((a, g) => a + g.count, 0),
        };
  return { pairs, preserve, perPrompt: rows.length };
}

/** The manifest body of an edit (everything but the export's facts). */
export function editRecord(
  describe: CommitDescription,
  solution: EditSolution,
  applyForm: 'dense' | 'lowRank',
  sites: readonly Pick<EditSite, 'name'>[],
): EditRecord {
  const pairRows = describe.pairs.reduce((a, p) => a + p.rows, 0);
  const preserveRows = describe.preserve?.rows ?? 0;
  const record: EditRecord = {
    kind: 'time-edit',
    version: EDIT_MANIFEST_VERSION,
    method: {
      ...TIME_METHOD,
      solver: solution.kind,
      applyForm,
      rank: solution.kind === 'woodbury' ? solution.rank : null,
    },
    lambda: describe.lambda,
    augment: describe.augment,
    projections: [...describe.projections],
    layers: describe.layers ? [...describe.layers] : null,
    pairsFile: describe.pairsFile ?? null,
    pairs: describe.pairs,
    preserve: describe.preserve,
    rows: { total: pairRows + preserveRows, pairs: pairRows, preserve: preserveRows, perPrompt: describe.perPrompt },
    d: solution.d,
    sites: sites.map((s) => s.name),
    warnings: describe.warnings ?? [],
  };
  if (describe.debias) record.debias = describe.debias;
  return record;
}

/** Check the output location and start cloning the input (see the module comment). */
export function beginCommit(target: CommitTarget): PendingCommit {
  const pending = startExport({
    model: target.model,
    outDir: target.outDir,
    force: target.force ?? false,
    ...(target.allSites ? { sites: target.allSites } : {}),
  });
  let started = false;
  return {
    outDir: pending.outDir,
    abort: async () => {
      if (started) return;
      started = true;
      await pending.abort();
    },
    commit: async (content) => {
      if (started) {
        throw new OutputError(`commit to ${show(pending.outDir)}: commit() after the commit was made or aborted`);
      }
      started = true;
      const t0 = performance.now();
      let applied: Awaited<ReturnType<typeof applyEdit>>;
      let stored: { site: EditSite; W: Float32Array; transposed: boolean }[];
      try {
        // In each site's stored layout (the exporter's Wᵀ: W'ᵀ = Mᵀ·Wᵀ): nothing is transposed on the
        // way in or out.
        stored = content.sites.map((site) => ({ site, ...readSiteWeightStored(target.model, site) }));
        applied = await applyEdit(
          stored.map(({ site, W, transposed }) => ({ name: site.name, W, transposed })),
          content.solution,
          content.gemm ? { gemm: content.gemm } : {},
        );
      } catch (error) {
        await pending.abort();
        throw error;
      }
      const tApply = performance.now();
      content.onApplied?.();
      const record = editRecord(content.describe, content.solution, applied.form, content.sites);
      let manifest: EditManifest | undefined;
      let editFile: Uint8Array;
      try {
        // The portable edit (edit-file.ts): M, the text encoder's and the UNet's fingerprints, the record.
        editFile = onnxEditFile(target.model, stored, content.solution.M, record);
      } catch (error) {
        await pending.abort();
        throw error;
      }
      const exported = await pending.finish({
        extraFiles: new Map([[EDIT_FILE, editFile]]),
        weights: new Map(applied.sites.map((s) => [s.name, s.W])),
        layout: 'stored',
        manifest: record as unknown as Record<string, unknown>,
        checkManifest: (complete) => {
          assertEditManifest(complete);
          manifest = complete;
        },
      });
      const tEnd = performance.now();
      return {
        kind: 'edit-commit',
        applyForm: applied.form,
        manifest: manifest as EditManifest,
        export: exported,
        timings: { apply: round(tApply - t0), export: round(tEnd - tApply) },
      };
    },
  };
}

/** Apply and export in one call: `beginCommit(target).commit(content)`. */
export async function commitEdit(options: CommitTarget & CommitContent): Promise<CommitResult> {
  return beginCommit(options).commit(options);
}

function round(ms: number): number {
  return Math.round(ms * 10) / 10;
}
