/**
 * The TIME edit end to end, as one library call (issue 2 items 5–7): a Stable Diffusion ONNX model
 * folder in, a complete edited model folder out, and a plain JSON-serializable result.
 *
 *   editModel(request)
 *     0. normalize + validate the request (pure; UsageError/OutputError whose `field` names the
 *        request's parameter: `lambda`, `pairs[2].source`; the CLI relabels it with its flag)
 *     1. open the model folder, locate the cross-attention K/V sites, select them   (prepare.ts selectSites)
 *     2. tokenize every prompt and align every pair (EditError naming both prompts) (prepare.ts planEdit)
 *     3. encode the prompts with the model's text encoder → the rows c_i, c*_i       (prepare.ts prepareEdit)
 *     4. solve the joint objective for M (one d×d matrix for every site)            (solve.ts)
 *     5. W'_s = W_s·M for the selected sites                                         (commit.ts → apply.ts)
 *     6. export: clone the folder, patch the edited tensors, write the one validated
 *        time-edit.json (manifest.ts), rename                                         (commit.ts → model/export.ts)
 *   Steps 0–2 check everything that can be checked before any heavy work, and nothing is written
 *   before they pass. Then the clone of step 6 starts in the background (into `<out>.tmp-*`, next to
 *   the output) while steps 3–5 compute; it is renamed into place only at the very end, and removed
 *   if anything fails.
 *   The input folder is only ever read.
 *
 * Strengths (mission.md §2, solve.ts eq. 1): every row of pair p has weight w_p = 1/λ_p with
 *   λ_p = λ / weight_p       (weight_p from a pairs file's weight column, default 1),
 * so that without weights every pair has TIME's λ (default 0.1), and a weight of 2 makes a pair twice
 * as strong. A library caller that has tuned λ_p per pair (the debias pipeline's joint commit) gives
 * it directly as the pair's `lambda` instead. Preservation rows (prompts mapped to themselves) have
 * weight μ.
 */
import { join, resolve } from 'node:path';
import { GemmEngine } from '../linalg/gemm.js';
import { checkExportTarget } from '../model/export.js';
import { openSdModel, type SdModelFormat, type SdPrecision } from '../model/folder.js';
import { locateSites, readSiteWeightStored, type SiteProjection } from '../model/sites.js';
import { cudaAvailable, DEVICES, type Device } from '../runtime/ort.js';
import { ClipTextEncoder, encodePrompts } from '../text/encoder.js';
import { writeFileAtomic } from '../util/atomic.js';
import { ModelFormatError, show, UsageError } from '../util/errors.js';
import { beginCommit, editRecord, type PendingCommit } from './commit.js';
import { EDIT_FILE, onnxEditFile } from './edit-file.js';
import type { EditRecord } from './manifest.js';
import { PROJECTIONS, planEdit, prepareEdit, selectSites } from './prepare.js';
import { augmentPrompts } from './rows.js';
import { DEFAULT_LAMBDA, DEFAULT_PRESERVE_WEIGHT, solveEdit } from './solve.js';

export { DEFAULT_LAMBDA, DEFAULT_PRESERVE_WEIGHT, selectSites };

/**
 * One (source, destination) pair. Its strength: `weight` (> 0, default 1) scales it, λ_p = λ / weight;
 * or `lambda` gives λ_p itself (not both).
 */
export interface EditPair {
  source: string;
  destination: string;
  weight?: number;
  lambda?: number;
}

/** Progress events (for a CLI's status lines); `stage` names the step that starts. */
export type EditProgress =
  | { stage: 'open'; modelDir: string; format: SdModelFormat; precision: SdPrecision; d: number; sites: number }
  | { stage: 'encode'; prompts: number }
  | { stage: 'solve'; rows: number; d: number }
  | { stage: 'apply'; sites: number }
  | { stage: 'export'; outDir: string };

export interface EditRequest {
  /** The Stable Diffusion ONNX model folder (diffusers or Optimum export). Never modified. */
  modelDir: string;
  /** One pair or many (one joint solve). */
  pairs: readonly EditPair[];
  /** Where the pairs came from (a `--pairs` file), for messages and the manifest. */
  pairsFile?: string;
  /** TIME's regularization λ > 0 (default 0.1). */
  lambda?: number;
  /** Add TIME's three augmented pairs per pair ("A photo of …", "An image of …", "A picture of …"). */
  augment?: boolean;
  /** Which projections to edit (default both; `--no-keys` → ['to_v']). */
  projections?: readonly SiteProjection[];
  /** Edit only sites whose module name starts with one of these prefixes (at a `.` boundary). */
  layers?: readonly string[];
  /** Prompts whose rows keep their projections, with weight μ (default DEFAULT_PRESERVE_WEIGHT). */
  preserve?: { prompts: readonly string[]; weight?: number };
  /** The output model folder (with `editOnly`: the edit file, *.safetensors); must not exist unless `force`. */
  outDir: string;
  /**
   * Write only the portable edit file (edit.safetensors: M and what it was computed with,
   * edit-file.ts) to `outDir`; no model copy. Without it the exported folder holds edit.safetensors
   * next to time-edit.json.
   */
  editOnly?: boolean;
  force?: boolean;
  /** Device of the text encoder ('cpu' default, or 'cuda'). */
  device?: Device;
  /** onnxruntime intra-op threads (0 or absent: onnxruntime decides). */
  threads?: number;
  onProgress?: (event: EditProgress) => void;
}

export interface EditedPairRecord {
  source: string;
  destination: string;
  /** The pair's relative weight λ / λ_p (1 when neither weight nor λ_p was given). */
  weight: number;
  /** λ_p = λ / weight (or as given); the pair's rows have weight 1/λ_p. */
  lambda: number;
  /** Rows of this pair in the objective (77, or 4 × 77 with augmentations). */
  rows: number;
  /** Source prompts of its rows: the pair's source, then the augmentations. */
  prompts: string[];
}

export interface EditedSiteResult {
  name: string;
  projection: SiteProjection;
  /** torch layout W [out, d] */
  out: number;
  d: number;
  /** The stored dtype ('float32', 'float16', ...). */
  dtype: string;
  /** ‖W' − W‖_F / ‖W‖_F of the tensors as stored in the output (after rounding to the dtype). */
  relativeChange: number;
}

/** Milliseconds per step. The clone of the input runs in the background from the end of `check`. */
export interface EditTimings {
  /** Opening the folder, locating sites, tokenizing and aligning. */
  check: number;
  encode: number;
  solve: number;
  apply: number;
  /** From the end of `apply`: the rest of the clone, the patch, time-edit.json, fsync and rename. */
  export: number;
  total: number;
}

export interface EditResult {
  kind: 'time-edit';
  modelDir: string;
  outDir: string;
  manifestPath: string;
  /** The portable edit file in outDir (edit.safetensors). */
  editFile: string;
  /** True when an existing outDir was replaced (`force`). */
  replaced: boolean;
  format: SdModelFormat;
  precision: SdPrecision;
  d: number;
  /** The solver used: Woodbury (n < d) or Cholesky on the d×d system. */
  method: 'woodbury' | 'cholesky';
  /** How W' was formed: W + W·Δ (dense) or W + (W Uᵀ) Z (lowRank). */
  applyForm: 'dense' | 'lowRank';
  /** Rank of the update when the solve was Woodbury. */
  rank: number | null;
  lambda: number;
  augment: boolean;
  projections: SiteProjection[];
  layers: string[] | null;
  pairs: EditedPairRecord[];
  preserve: { prompts: string[]; weight: number; rows: number } | null;
  /** Rows in the objective: all, of the pairs, of the preserved prompts; and per prompt (the padded length L). */
  rows: { total: number; pairs: number; preserve: number; perPrompt: number };
  sites: EditedSiteResult[];
  /** Sites in the model (before --no-keys / --layers selection). */
  sitesInModel: number;
  /** Σ out × d over the edited sites. */
  parameters: number;
  /** E.g. prompts longer than the text encoder's 77 tokens (cut). */
  warnings: string[];
  /** Milliseconds. */
  timings: EditTimings;
}

/** `editOnly`: the edit file and what it holds (no model was written). */
export interface EditFileResult {
  kind: 'time-edit-file';
  modelDir: string;
  editFile: string;
  replaced: boolean;
  d: number;
  method: 'woodbury' | 'cholesky';
  rank: number | null;
  lambda: number;
  augment: boolean;
  projections: SiteProjection[];
  layers: string[] | null;
  pairs: EditedPairRecord[];
  rows: EditRecord['rows'];
  /** The sites the file applies to. */
  sites: string[];
  warnings: string[];
  timings: { check: number; encode: number; solve: number; write: number; total: number };
}

/** A request with every default applied and every rule checked. */
interface NormalizedRequest {
  modelDir: string;
  pairs: EditedPairRecord[];
  pairsFile: string | null;
  lambda: number;
  augment: boolean;
  projections: SiteProjection[];
  layers: string[] | null;
  preserve: { prompts: string[]; weight: number } | null;
  outDir: string;
  editOnly: boolean;
  force: boolean;
  device: Device;
  threads: number;
}

/**
 * Check the request (pure: no file is read). Errors: UsageError whose `field` names the request's
 * parameter (`lambda`, `pairs[2].source`, `preserve.weight`); the CLI relabels it with its flag.
 */
export function normalizeEditRequest(request: EditRequest): NormalizedRequest {
  if (request === null || typeof request !== 'object') {
    throw new UsageError(`edit request: ${show(request)} is not an object`);
  }
  if (typeof request.modelDir !== 'string' || request.modelDir.trim() === '') {
    throw new UsageError(`${show(request.modelDir)} is not a folder path; give the model folder`, {
      field: 'modelDir',
    });
  }
  if (typeof request.outDir !== 'string' || request.outDir.trim() === '') {
    throw new UsageError(`${show(request.outDir)} is not a folder path; give the output folder`, { field: 'outDir' });
  }
  const lambda = request.lambda ?? DEFAULT_LAMBDA;
  if (typeof lambda !== 'number' || !Number.isFinite(lambda) || lambda <= 0) {
    throw new UsageError(
      `${show(lambda)} is not valid; λ must be a finite number > 0 (TIME's default is ${DEFAULT_LAMBDA})`,
      { field: 'lambda' },
    );
  }
  const pairsFile = request.pairsFile ?? null;
  if (!Array.isArray(request.pairs) || request.pairs.length === 0) {
    throw pairsFile
      ? new UsageError(
          `${show(pairsFile)}: the file holds no pairs; at least one (source, destination) row is needed`,
          {
            field: 'pairsFile',
          },
        )
      : new UsageError(`${show(request.pairs)}; give at least one (source, destination) pair`, { field: 'pairs' });
  }
  const augment = request.augment ?? false;
  if (typeof augment !== 'boolean') {
    throw new UsageError(`${show(augment)} must be true or false`, { field: 'augment' });
  }
  const pairs = request.pairs.map((p, i): EditedPairRecord => {
    const field = `pairs[${i}]`;
    if (p === null || typeof p !== 'object') {
      throw new UsageError(`${show(p)} is not a {source, destination} pair`, { field });
    }
    assertPrompt(`${field}.source`, p.source);
    assertPrompt(`${field}.destination`, p.destination);
    if (p.weight !== undefined && p.lambda !== undefined) {
      throw new UsageError(
        `weight ${show(p.weight)} and lambda ${show(p.lambda)} both given; give the pair a weight (λ_p = λ / weight) or its own λ_p, not both`,
        { field },
      );
    }
    if (p.lambda !== undefined && (typeof p.lambda !== 'number' || !Number.isFinite(p.lambda) || p.lambda <= 0)) {
      throw new UsageError(`${show(p.lambda)} is not valid; λ_p must be a finite number > 0`, {
        field: `${field}.lambda`,
      });
    }
    const weight = p.lambda !== undefined ? lambda / p.lambda : (p.weight ?? 1);
    if (typeof weight !== 'number' || !Number.isFinite(weight) || weight <= 0) {
      throw new UsageError(
        `${show(weight)} is not valid; a pair's weight must be a finite number > 0 (λ_p = λ / weight)`,
        { field: `${field}.weight` },
      );
    }
    const prompts = augment ? augmentPrompts(p.source) : [p.source];
    const lambdaP = p.lambda ?? lambda / weight;
    return { source: p.source, destination: p.destination, weight, lambda: lambdaP, rows: 0, prompts };
  });

  const projections = [...(request.projections ?? PROJECTIONS)];
  if (projections.length === 0) {
    throw new UsageError('none selected; edit to_k and to_v (default) or to_v only', { field: 'projections' });
  }
  for (const p of projections) {
    if (!PROJECTIONS.includes(p)) {
      throw new UsageError(`${show(p)} is not one of ${PROJECTIONS.join(', ')}`, { field: 'projections' });
    }
  }
  const uniqueProjections = PROJECTIONS.filter((p) => projections.includes(p));

  let layers: string[] | null = null;
  if (request.layers !== undefined) {
    if (!Array.isArray(request.layers) || request.layers.length === 0) {
      throw new UsageError(`${show(request.layers)}; give at least one module-name prefix (e.g. up_blocks.3)`, {
        field: 'layers',
      });
    }
    layers = request.layers.map((l) => {
      if (typeof l !== 'string' || l.trim() === '' || /\s/.test(l.trim())) {
        throw new UsageError(`${show(l)} is not a module-name prefix (e.g. "up_blocks.3" or "mid_block")`, {
          field: 'layers',
        });
      }
      return l.trim();
    });
  }

  let preserve: NormalizedRequest['preserve'] = null;
  if (request.preserve !== undefined) {
    const { prompts, weight = DEFAULT_PRESERVE_WEIGHT } = request.preserve;
    if (!Array.isArray(prompts) || prompts.length === 0) {
      throw new UsageError(`${show(prompts)}; give at least one prompt to preserve`, { field: 'preserve.prompts' });
    }
    prompts.forEach((p, i) => {
      assertPrompt(`preserve.prompts[${i}]`, p);
    });
    if (typeof weight !== 'number' || !Number.isFinite(weight) || weight <= 0) {
      throw new UsageError(`${show(weight)} is not valid; μ must be a finite number > 0`, { field: 'preserve.weight' });
    }
    preserve = { prompts: [...prompts], weight };
  }

  const force = request.force ?? false;
  if (typeof force !== 'boolean') throw new UsageError(`${show(force)} must be true or false`, { field: 'force' });
  const editOnly = request.editOnly ?? false;
  if (typeof editOnly !== 'boolean') {
    throw new UsageError(`${show(editOnly)} must be true or false`, { field: 'editOnly' });
  }
  if (editOnly && !request.outDir.endsWith('.safetensors')) {
    throw new UsageError(`${show(request.outDir)}: with editOnly the output is the edit file, e.g. edit.safetensors`, {
      field: 'outDir',
    });
  }
  const device = request.device ?? 'cpu';
  if (!(DEVICES as readonly string[]).includes(device)) {
    throw new UsageError(`${show(device)} is not a known device; valid devices are ${DEVICES.join(', ')}`, {
      field: 'device',
    });
  }
  const threads = request.threads ?? 0;
  if (!Number.isInteger(threads) || threads < 0) {
    throw new UsageError(`${show(threads)} must be an integer ≥ 0 (0: one per core)`, { field: 'threads' });
  }
  return {
    modelDir: resolve(request.modelDir),
    pairs,
    pairsFile,
    lambda,
    augment,
    projections: uniqueProjections,
    layers,
    preserve,
    outDir: resolve(request.outDir),
    editOnly,
    force,
    device,
    threads,
  };
}

/** Run the TIME edit and export the edited model. See the module comment for the steps. */
export async function editModel(request: EditRequest & { editOnly: true }): Promise<EditFileResult>;
export async function editModel(request: EditRequest): Promise<EditResult>;
export async function editModel(request: EditRequest): Promise<EditResult | EditFileResult> {
  const t0 = performance.now();
  const progress = request.onProgress ?? (() => {});
  // 0. The request.
  const req = normalizeEditRequest(request);
  const target = checkExportTarget(req.modelDir, req.outDir, req.force);

  // 1. The model folder and its sites.
  const model = openSdModel(req.modelDir);
  const allSites = locateSites(model);
  const sites = selectSites(allSites, req.projections, req.layers);
  progress({
    stage: 'open',
    modelDir: model.dir,
    format: model.format,
    precision: model.precision,
    d: model.d,
    sites: sites.length,
  });
  if (req.device === 'cuda' && !cudaAvailable()) {
    throw new UsageError(
      '"cuda" was asked for but onnxruntime-node\'s CUDA provider is not installed on this host (needs the opt-in install and CUDA 12 + cuDNN 9); use the device "cpu"',
      { field: 'device' },
    );
  }

  // 2. Tokenize and align every pair (the alignment errors come before any model is loaded). The
  //    tokenizer module (transformers.js, about half a second to import) is loaded only now, so that
  //    the checks above answer fast.
  const { ClipTokenizer } = await import('../text/tokenizer.js');
  const tokenizer = await ClipTokenizer.fromFolder(model.components.tokenizer);
  const plan = planEdit(tokenizer, {
    pairs: req.pairs,
    augment: req.augment,
    preserve: req.preserve?.prompts ?? [],
  });
  const tCheck = performance.now();

  // Every check has passed: the commit starts cloning the input folder into `<out>.tmp-*` now, in
  // the background, while the edit is computed (commit.ts beginCommit). Any failure from here on
  // removes the temporary folder (abort); only commit() renames it into place.
  const pending: PendingCommit | null = req.editOnly
    ? null
    : beginCommit({ model, outDir: req.outDir, force: req.force, allSites });
  let committing = false;

  // 3–4. Rows, M.
  const gemm = new GemmEngine({ threads: req.threads });
  let encoder: ClipTextEncoder | undefined;
  try {
    encoder = await ClipTextEncoder.create(model.files.textEncoder, { device: req.device, threads: req.threads });
    const enc = encoder;
    const prepared = await prepareEdit(plan, async (prompts) => {
      progress({ stage: 'encode', prompts: prompts.length });
      const out = await encodePrompts(tokenizer, enc, prompts);
      for (const e of out) {
        if (e.d !== model.d) {
          throw new ModelFormatError(
            `text width mismatch: the text encoder ${show(model.files.textEncoder)} returned rows of width ${e.d}, but the UNet's cross-attention expects d = ${model.d}`,
          );
        }
      }
      return out.map((e) => ({ ids: e.ids, hidden: e.hidden }));
    });
    const { rows } = prepared;
    await encoder.dispose();
    encoder = undefined;
    const tEncode = performance.now();

    progress({ stage: 'solve', rows: rows.n, d: rows.d });
    const solution = await solveEdit(rows, {
      lambda: req.pairs.map((p) => p.lambda),
      mu: req.preserve?.weight ?? DEFAULT_PRESERVE_WEIGHT,
      gemm,
    });
    const tSolve = performance.now();

    const pairs = req.pairs.map((p, i) => ({ ...p, rows: prepared.pairRows[i] as number }));
    const preserve = req.preserve ? { ...req.preserve, rows: prepared.preserveRows } : null;
    const describe = {
      lambda: req.lambda,
      augment: req.augment,
      projections: req.projections,
      layers: req.layers,
      pairsFile: req.pairsFile,
      pairs,
      preserve: preserve && { ...preserve, weights: null },
      perPrompt: rows.length,
      warnings: prepared.warnings,
    };
    // What both results report of the solve, as requested.
    const solved = {
      method: solution.kind,
      rank: solution.kind === 'woodbury' ? solution.rank : null,
      lambda: req.lambda,
      augment: req.augment,
      projections: req.projections,
      layers: req.layers,
      pairs,
    };
    if (pending === null) {
      // editOnly: the portable edit file alone (`apply` later forms W·M in the dense product form).
      progress({ stage: 'export', outDir: req.outDir });
      const record = editRecord(describe, solution, 'dense', sites);
      const stored = sites.map((site) => ({ site, ...readSiteWeightStored(model, site) }));
      writeFileAtomic(req.outDir, onnxEditFile(model, stored, solution.M, record));
      const tWrite = performance.now();
      return {
        kind: 'time-edit-file',
        modelDir: model.dir,
        editFile: req.outDir,
        replaced: target.exists,
        d: model.d,
        ...solved,
        rows: record.rows,
        sites: sites.map((s) => s.name),
        warnings: prepared.warnings,
        timings: {
          check: round(tCheck - t0),
          encode: round(tEncode - tCheck),
          solve: round(tSolve - tEncode),
          write: round(tWrite - tSolve),
          total: round(tWrite - t0),
        },
      };
    }

    // 5–6. W' = W·M for the selected sites, and the export with its time-edit.json and edit.safetensors.
    progress({ stage: 'apply', sites: sites.length });
    committing = true;
    const committed = await pending.commit({
      sites,
      solution,
      gemm,
      describe,
      onApplied: () => progress({ stage: 'export', outDir: req.outDir }),
    });
    const exported = committed.export;
    const tApply = tSolve + committed.timings.apply;
    const tExport = performance.now();

    return {
      kind: 'time-edit',
      modelDir: model.dir,
      outDir: exported.outDir,
      manifestPath: exported.manifestPath,
      editFile: join(exported.outDir, EDIT_FILE),
      replaced: exported.replaced,
      format: model.format,
      precision: model.precision,
      d: model.d,
      ...solved,
      applyForm: committed.applyForm,
      preserve,
      rows: committed.manifest.rows,
      sites: exported.editedSites.map((s) => ({
        name: s.name,
        projection: s.projection,
        out: s.shape[0],
        d: s.shape[1],
        dtype: s.dtype,
        relativeChange: s.relativeChange,
      })),
      sitesInModel: allSites.length,
      parameters: sites.reduce((sum, s) => sum + s.out * s.d, 0),
      warnings: prepared.warnings,
      timings: {
        check: round(tCheck - t0),
        encode: round(tEncode - tCheck),
        solve: round(tSolve - tEncode),
        apply: round(tApply - tSolve),
        export: round(tExport - tApply),
        total: round(tExport - t0),
      },
    };
  } catch (error) {
    // commit() cleans up after itself; before it, the pending clone is removed here.
    if (!committing) await pending?.abort();
    throw error;
  } finally {
    await encoder?.dispose();
    await gemm.dispose();
  }
}

/**
 * Reject a missing or empty prompt (the wording of `assertPrompt` in text/tokenizer.ts, which this
 * module does not import eagerly).
 */
function assertPrompt(field: string, value: unknown): asserts value is string {
  if (typeof value !== 'string') {
    throw new UsageError(`${show(value)} is not a prompt; give a non-empty text`, { field });
  }
  if (value.trim().length === 0) {
    throw new UsageError(`${show(value)} is empty; a prompt with at least one word is required`, { field });
  }
}

function round(ms: number): number {
  return Math.round(ms * 10) / 10;
}
