/**
 * Portable edits (issue 12 item 2): `time-debias apply --edit edit.safetensors --model IN --out OUT`.
 *
 *   applyEditFile(request)
 *     0. normalize the request (UsageError naming the field); read and check the edit file
 *     1. open the target: an ONNX folder (diffusers or Optimum layout), a diffusers folder with
 *        safetensors UNet weights (one file or shards), or a single-file CompVis .safetensors
 *     2. fingerprint its text encoder and compare with the file's (EditError unless --force: the
 *        file's M would be the wrong edit); compare the UNet too (a different one is a note)
 *     3. the matrix to apply:  M_α = I + α(M − I)   (--scale α, default 1: M itself)
 *                              M_α⁻¹                 (--revert; refused when κ₁(M_α) > 1e6)
 *     4. write: ONNX → the same export as `edit` (model/export.ts), so the result is today's
 *        direct export of the same M; safetensors → one streaming copy of each UNet file (formats/
 *        safetensors.ts: the kernel copies, a worker thread hashes the source, the edited tensors
 *        are patched over the copy), the other files of a folder cloned; all into a temporary path,
 *        renamed at the end. From the CLI a single file's copy starts before all this (apply-early.ts)
 *        and is finished here, or stopped and removed when a check refuses the request.
 *
 * W′ = W·M_α per listed site in float32 (apply.ts, the same product as `edit`), stored back in the
 * tensor's own dtype with round to nearest even (F16, BF16). The input is never modified.
 */
import { createHash, randomBytes } from 'node:crypto';
import {
  closeSync,
  constants,
  fsyncSync,
  mkdirSync,
  openSync,
  readFileSync,
  readSync,
  renameSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { copyFile } from 'node:fs/promises';
import { dirname, join, relative, resolve } from 'node:path';
import {
  fromFloat32,
  type PatchFn,
  type SafetensorsHeader,
  type StreamCopy,
  type StreamCopyResult,
  streamCopyWithPatches,
  toFloat32,
} from '../formats/safetensors.js';
import { GemmEngine } from '../linalg/gemm.js';
import { type Checkpoint, detectModelKind, listFiles, openCheckpoint } from '../model/checkpoints.js';
import { checkExportTarget, relativeChange, startExport, toolVersion } from '../model/export.js';
import {
  compareTextEncoders,
  compareUnets,
  fingerprintOnnx,
  fingerprintSafetensors,
  sampleWeight,
  type TextEncoderFingerprint,
  type UnetFingerprint,
} from '../model/fingerprint.js';
import { openSdModel, type SdModel } from '../model/folder.js';
import {
  type EditSite,
  locateSites,
  readSiteWeight,
  readSiteWeightStored,
  type SiteProjection,
} from '../model/sites.js';
import { EditError, ModelFormatError, OutputError, show, UsageError } from '../util/errors.js';
import { applyEdit } from './apply.js';
import { type EditFile, readEditFile } from './edit-file.js';
import type { EditSolution } from './solve.js';

/** --revert refuses M_α whose 1-norm condition number exceeds this (float32 weights keep ~7 digits). */
export const MAX_REVERT_CONDITION = 1e6;
export const APPLY_MANIFEST_SUFFIX = '.time-edit.json';

/** A model the edit can go to, with its sites named by diffusers module path. */
export type PortableModel =
  | { kind: 'onnx-folder'; path: string; model: SdModel; sites: EditSite[] }
  | { kind: 'diffusers-safetensors' | 'single-file'; path: string; checkpoint: Checkpoint };

export interface PortableSite {
  name: string;
  projection: SiteProjection;
  out: number;
  d: number;
  /** 'float32' | 'float16' | 'bfloat16' */
  dtype: string;
}

const DTYPE_NAMES: Record<string, string> = { F32: 'float32', F16: 'float16', BF16: 'bfloat16' };

export function openPortableModel(path: string): PortableModel {
  const p = resolve(path);
  const kind = detectModelKind(p);
  if (kind === 'onnx-folder') {
    const model = openSdModel(p);
    return { kind, path: p, model, sites: locateSites(model) };
  }
  return { kind, path: p, checkpoint: openCheckpoint(p) };
}

export function portableSites(m: PortableModel): PortableSite[] {
  if (m.kind === 'onnx-folder') {
    return m.sites.map((s) => ({ name: s.name, projection: s.projection, out: s.out, d: s.d, dtype: s.dtype }));
  }
  return m.checkpoint.sites.map((s) => ({
    name: s.name,
    projection: s.projection,
    out: s.out,
    d: s.d,
    dtype: DTYPE_NAMES[s.dtype] ?? s.dtype,
  }));
}

export function portableD(m: PortableModel): number {
  return m.kind === 'onnx-folder' ? m.model.d : m.checkpoint.d;
}

/** The text encoder's fingerprint, or null when the model carries no text encoder (a UNet-only file). */
export function portableTextFingerprint(m: PortableModel): TextEncoderFingerprint | null {
  if (m.kind === 'onnx-folder') return fingerprintOnnx(m.model.files.textEncoder, m.model.components.tokenizer);
  const te = m.checkpoint.tokenEmbedding;
  return te ? fingerprintSafetensors(te.file, te.key, m.checkpoint.tokenizerDir) : null;
}

/** A site's weight W [out, d] (torch layout) as float32. */
export function readPortableWeight(m: PortableModel, name: string): Float32Array {
  if (m.kind === 'onnx-folder') {
    const site = m.sites.find((s) => s.name === name);
    if (!site) throw new ModelFormatError(`${show(m.path)}: no cross-attention site ${show(name)}`);
    return readSiteWeight(m.model, site);
  }
  const site = m.checkpoint.sites.find((s) => s.name === name);
  const header = site && m.checkpoint.unetFiles.find((h) => h.path === site.file);
  if (!site || !header) throw new ModelFormatError(`${show(m.path)}: no cross-attention site ${show(name)}`);
  const t = header.byName.get(site.key);
  if (!t) throw new ModelFormatError(`${show(site.file)}: no tensor ${show(site.key)}`);
  const fd = openSync(site.file, 'r');
  try {
    const bytes = Buffer.alloc(t.end - t.begin);
    let off = 0;
    while (off < bytes.byteLength) {
      const n = readSyncAt(fd, bytes, off, header.dataStart + t.begin + off);
      if (n === 0) throw new ModelFormatError(`${show(site.file)}: ends inside tensor ${show(site.key)}`);
      off += n;
    }
    return toFloat32(new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength), site.dtype, site.key);
  } finally {
    closeSync(fd);
  }
}

/** The UNet fingerprint over `names` (default: every site), from weights in torch layout. */
export function portableUnetFingerprint(m: PortableModel, names?: readonly string[]): UnetFingerprint {
  const sites: Record<string, number[]> = {};
  for (const s of portableSites(m)) {
    if (names && !names.includes(s.name)) continue;
    sites[s.name] = sampleWeight(readPortableWeight(m, s.name), s.out, s.d);
  }
  return { sites };
}

/** M_α = I + α(M − I), or its inverse (--revert), with the inverse's 1-norm condition number. */
export function effectiveMatrix(
  M: Float32Array,
  d: number,
  options: { scale?: number; revert?: boolean } = {},
): { M: Float32Array; condition: number | null } {
  const scale = options.scale ?? 1;
  if (scale === 1 && !options.revert) return { M, condition: null };
  const A = new Float64Array(d * d);
  for (let i = 0; i < d * d; i++) A[i] = scale * (M[i] as number);
  for (let i = 0; i < d; i++) A[i * d + i] = (A[i * d + i] as number) + 1 - scale;
  if (!options.revert) {
    const Ma = Float32Array.from(A);
    if (!Ma.every(Number.isFinite)) {
      throw new UsageError(
        `α = ${show(scale)} makes M_α = I + α(M − I) overflow float32 (its entries pass ±3.4e38); use an α of ordinary size`,
        { field: 'scale' },
      );
    }
    return { M: Ma, condition: null };
  }
  const norm1 = (X: Float64Array) => {
    let best = 0;
    for (let j = 0; j < d; j++) {
      let s = 0;
      for (let i = 0; i < d; i++) s += Math.abs(X[i * d + j] as number);
      best = Math.max(best, s);
    }
    return best;
  };
  const inv = invert(A, d);
  const condition = inv ? norm1(A) * norm1(inv) : Number.POSITIVE_INFINITY;
  if (!inv || !(condition <= MAX_REVERT_CONDITION)) {
    throw new EditError(
      `M${scale === 1 ? '' : `_α (α = ${scale})`} is ill-conditioned (κ₁ = ${condition.toPrecision(3)} > ${MAX_REVERT_CONDITION}); its inverse would amplify the weights' rounding, so it is not applied`,
      { field: 'revert' },
    );
  }
  return { M: Float32Array.from(inv), condition };
}

/** A⁻¹ by LU with partial pivoting (float64), or null when A is singular. */
function invert(Ain: Float64Array, d: number): Float64Array | null {
  const A = Float64Array.from(Ain);
  const inv = new Float64Array(d * d);
  for (let i = 0; i < d; i++) inv[i * d + i] = 1;
  for (let c = 0; c < d; c++) {
    let p = c;
    for (let r = c + 1; r < d; r++) if (Math.abs(A[r * d + c] as number) > Math.abs(A[p * d + c] as number)) p = r;
    const pivot = A[p * d + c] as number;
    if (pivot === 0 || !Number.isFinite(pivot)) return null;
    if (p !== c) {
      for (let j = 0; j < d; j++) {
        const t = A[c * d + j] as number;
        A[c * d + j] = A[p * d + j] as number;
        A[p * d + j] = t;
        const u = inv[c * d + j] as number;
        inv[c * d + j] = inv[p * d + j] as number;
        inv[p * d + j] = u;
      }
    }
    const ip = 1 / pivot;
    for (let j = 0; j < d; j++) {
      A[c * d + j] = (A[c * d + j] as number) * ip;
      inv[c * d + j] = (inv[c * d + j] as number) * ip;
    }
    for (let r = 0; r < d; r++) {
      if (r === c) continue;
      const f = A[r * d + c] as number;
      if (f === 0) continue;
      for (let j = 0; j < d; j++) {
        A[r * d + j] = (A[r * d + j] as number) - f * (A[c * d + j] as number);
        inv[r * d + j] = (inv[r * d + j] as number) - f * (inv[c * d + j] as number);
      }
    }
  }
  return inv;
}

export interface ApplyFileRequest {
  /** The edit file (`edit.safetensors`). */
  editFile: string;
  /** ONNX folder, diffusers safetensors folder, or single-file .safetensors. Never modified. */
  modelPath: string;
  /** Output folder (folders) or .safetensors file (single files). */
  outPath: string;
  /** α: apply I + α(M − I). Default 1. */
  scale?: number;
  /** Apply the inverse (undo an edit applied before). */
  revert?: boolean;
  /** Replace an existing output; apply even when the text encoder's fingerprint differs. */
  force?: boolean;
  threads?: number;
}

export interface AppliedSite {
  name: string;
  /** Tensor key (safetensors) or initializer (ONNX). */
  key: string;
  dtype: string;
  shape: [number, number];
  /** ‖W′ − W‖_F / ‖W‖_F of the stored tensors. */
  relativeChange: number;
}

export interface ApplyFileResult {
  kind: 'time-edit-apply';
  editFile: string;
  modelPath: string;
  modelKind: PortableModel['kind'];
  keyMap: string | null;
  outPath: string;
  manifestPath: string;
  replaced: boolean;
  d: number;
  scale: number;
  revert: boolean;
  /** κ₁ of the applied matrix's inverse (only with --revert). */
  condition: number | null;
  textEncoder: 'match' | 'mismatch-forced' | 'absent-forced';
  unet: 'same' | 'different' | 'unknown';
  sites: AppliedSite[];
  notes: string[];
  /** Bytes of the source files read (and hashed) in the streaming pass; 0 for ONNX folders (cloned). */
  bytesStreamed: number;
  /**
   * ms: `check` (everything before writing) = readEdit + openModel + compatibility + matrix (M_α and
   * the edit file's hash); `write`; `total`. `written`: where the writing of a safetensors
   * checkpoint went (absent for ONNX folders).
   */
  timings: {
    /** performance.now() when applyEditFile began: ms since the process started (the CLI's start-up). */
    startedAtProcessMs: number;
    check: number;
    write: number;
    total: number;
    readEdit: number;
    openModel: number;
    compatibility: number;
    matrix: number;
    written?: WriteTimings;
  };
}

export function normalizeApplyRequest(r: ApplyFileRequest): Required<ApplyFileRequest> {
  for (const [field, v] of [
    ['editFile', r.editFile],
    ['modelPath', r.modelPath],
    ['outPath', r.outPath],
  ] as const) {
    if (typeof v !== 'string' || v.trim() === '') throw new UsageError(`${show(v)} is not a path`, { field });
  }
  const scale = r.scale ?? 1;
  if (typeof scale !== 'number' || !Number.isFinite(scale)) {
    throw new UsageError(`${show(scale)} is not valid; α must be a finite number (1 applies the edit as made)`, {
      field: 'scale',
    });
  }
  const threads = r.threads ?? 0;
  if (!Number.isInteger(threads) || threads < 0)
    throw new UsageError(`${show(threads)} must be an integer ≥ 0`, { field: 'threads' });
  return {
    editFile: resolve(r.editFile),
    modelPath: resolve(r.modelPath),
    outPath: resolve(r.outPath),
    scale,
    revert: r.revert ?? false,
    force: r.force ?? false,
    threads,
  };
}

/**
 * A streaming copy of a single-file checkpoint started before apply's checks (apply-early.ts), into
 * `tmp`; applyEditFile finishes it, or stops and removes it when it refuses the request.
 */
export interface EarlyCopy {
  /** The source file (resolved). */
  file: string;
  /** Where it is being copied: the temporary output path. */
  tmp: string;
  stream: StreamCopy;
}

/** Apply an edit file to a model (see the module comment); `early`: a copy already under way (apply-early.ts). */
export async function applyEditFile(request: ApplyFileRequest, early?: EarlyCopy): Promise<ApplyFileResult> {
  try {
    return await applyEditFileWith(request, early);
  } catch (error) {
    if (early) {
      await early.stream.abort();
      rmSync(early.tmp, { force: true });
    }
    throw error;
  }
}

async function applyEditFileWith(request: ApplyFileRequest, given?: EarlyCopy): Promise<ApplyFileResult> {
  const t0 = performance.now();
  const req = normalizeApplyRequest(request);
  const edit = readEditFile(req.editFile);
  const tRead = performance.now();
  const target = openPortableModel(req.modelPath);
  if (target.kind === 'single-file' && !req.outPath.endsWith('.safetensors')) {
    throw new UsageError(`${show(req.outPath)}: a single-file checkpoint is written to a .safetensors file`, {
      field: 'outPath',
    });
  }
  const { outPath, exists } = outputTarget(target.path, req.outPath, req.force);
  // An early copy is used only for the file and output it was started for (it always is, from the CLI).
  let early = given;
  if (
    early &&
    !(target.kind === 'single-file' && early.file === target.path && dirname(early.tmp) === dirname(outPath))
  ) {
    await early.stream.abort();
    rmSync(early.tmp, { force: true });
    early = undefined;
  }
  const tOpen = performance.now();
  const check = checkCompatibility(edit, target, req.force);
  const tCompat = performance.now();
  const { M, condition } = effectiveMatrix(edit.M, edit.d, { scale: req.scale, revert: req.revert });
  const solution: EditSolution = {
    kind: 'cholesky',
    n: edit.meta.edit.rows.total,
    d: edit.d,
    M,
    delta: minusIdentity(M, edit.d),
  };
  const editSha = sha256OfFile(req.editFile);
  const manifestBase = {
    kind: 'time-edit-apply',
    editFile: { path: req.editFile, sha256: editSha, ...editSummary(edit) },
    scale: req.scale,
    revert: req.revert,
    condition,
    textEncoder: check.textEncoder,
    unet: check.unet,
    notes: check.notes,
  };
  const tCheck = performance.now();
  const gemm = new GemmEngine({ threads: req.threads });
  try {
    let sites: AppliedSite[];
    let manifestPath: string;
    let bytesStreamed = 0;
    let writeTimings: WriteTimings | undefined;
    if (target.kind === 'onnx-folder') {
      const chosen = edit.meta.sites.map((n) => target.sites.find((s) => s.name === n) as EditSite);
      const pending = startExport({ model: target.model, outDir: outPath, force: req.force, sites: target.sites });
      let finishing = false;
      try {
        const applied = await applyEdit(
          chosen.map((s) => ({ name: s.name, ...readSiteWeightStored(target.model, s) })),
          solution,
          { gemm, form: 'dense' },
        );
        finishing = true;
        const exported = await pending.finish({
          weights: new Map(applied.sites.map((s) => [s.name, s.W])),
          layout: 'stored',
          manifest: manifestBase,
        });
        manifestPath = exported.manifestPath;
        sites = exported.editedSites.map((s) => ({
          name: s.name,
          key: s.initializer,
          dtype: s.dtype,
          shape: s.shape,
          relativeChange: s.relativeChange,
        }));
      } catch (error) {
        if (!finishing) await pending.abort();
        throw error;
      }
    } else {
      const written = await writeCheckpoint(target.checkpoint, edit.meta.sites, solution, gemm, {
        outPath,
        exists,
        manifest: manifestBase,
        early,
      });
      sites = written.sites;
      manifestPath = written.manifestPath;
      bytesStreamed = written.bytesStreamed;
      writeTimings = written.timings;
    }
    const tEnd = performance.now();
    const ms = (x: number) => Math.round(x * 10) / 10;
    return {
      kind: 'time-edit-apply',
      editFile: req.editFile,
      modelPath: target.path,
      modelKind: target.kind,
      keyMap: target.kind === 'onnx-folder' ? null : target.checkpoint.keyMap,
      outPath,
      manifestPath,
      replaced: exists,
      d: edit.d,
      scale: req.scale,
      revert: req.revert,
      condition,
      textEncoder: check.textEncoder,
      unet: check.unet,
      sites,
      notes: check.notes,
      bytesStreamed,
      timings: {
        startedAtProcessMs: ms(t0),
        check: ms(tCheck - t0),
        write: ms(tEnd - tCheck),
        total: ms(tEnd - t0),
        readEdit: ms(tRead - t0),
        openModel: ms(tOpen - tRead),
        compatibility: ms(tCompat - tOpen),
        matrix: ms(tCheck - tCompat),
        ...(writeTimings ? { written: writeTimings } : {}),
      },
    };
  } finally {
    await gemm.dispose();
  }
}

/** The edit's facts for a manifest: the record it carries (as time-edit.json has it), its form (and date, in files made before exports became reproducible). */
export function editSummary(edit: EditFile): Record<string, unknown> {
  return {
    form: edit.meta.form,
    formatVersion: edit.meta.formatVersion,
    ...(edit.meta.date ? { date: edit.meta.date } : {}),
    edit: edit.meta.edit,
  };
}

/** Output rules: not the input, not inside it, not containing it; exists only with --force. */
function outputTarget(input: string, out: string, force: boolean): { outPath: string; exists: boolean } {
  const { outDir, exists } = checkExportTarget(input, out, force);
  return { outPath: outDir, exists };
}

interface Compatibility {
  textEncoder: ApplyFileResult['textEncoder'];
  unet: ApplyFileResult['unet'];
  notes: string[];
}

/** d, the sites, the text encoder (refused unless --force), the UNet (a note). */
export function checkCompatibility(edit: EditFile, target: PortableModel, force: boolean): Compatibility {
  const d = portableD(target);
  if (d !== edit.d) {
    throw new EditError(
      `${show(edit.path)} is a d = ${edit.d} edit; \`modelPath\` ${show(target.path)} has text width d = ${d} (an SD ${edit.d === 1024 ? '2.x' : '1.x'} edit cannot apply to this model)`,
      { field: 'editFile', mentions: ['modelPath'] },
    );
  }
  const have = new Map(portableSites(target).map((s) => [s.name, s]));
  const missing = edit.meta.sites.filter((n) => !have.has(n));
  if (missing.length > 0) {
    throw new ModelFormatError(
      `${show(target.path)} lacks ${missing.length} of the edit's ${edit.meta.sites.length} sites (e.g. ${show(missing[0])}); ` +
        `expected their ${target.kind === 'single-file' ? 'CompVis' : 'diffusers'} keys — is this the same model family?`,
      { field: 'modelPath' },
    );
  }
  const notes: string[] = [];
  const fp = portableTextFingerprint(target);
  let textEncoder: Compatibility['textEncoder'] = 'match';
  if (!fp) {
    if (!force) {
      throw new EditError(
        `${show(target.path)} carries no text encoder to compare with the edit's; M is only right for the text encoder it was computed with — pass \`force\` if you know it is the same`,
        { field: 'modelPath', mentions: ['force'] },
      );
    }
    textEncoder = 'absent-forced';
    notes.push('the model carries no text encoder; applied without a fingerprint check because it was forced');
  } else {
    const cmp = compareTextEncoders(edit.meta.textEncoder, fp);
    if (!cmp.match) {
      if (!force) {
        throw new EditError(
          `${show(edit.path)} was computed with another text encoder than \`modelPath\` ${show(target.path)}'s (${cmp.differences.join('; ')}); its M would be the wrong edit. Pass \`force\` to apply it anyway`,
          { field: 'editFile', mentions: ['modelPath', 'force'] },
        );
      }
      textEncoder = 'mismatch-forced';
      notes.push(`text encoder differs (${cmp.differences.join('; ')}); applied because it was forced`);
    }
  }
  let unet: Compatibility['unet'] = 'unknown';
  if (edit.meta.unet) {
    const cmp = compareUnets(edit.meta.unet, portableUnetFingerprint(target, Object.keys(edit.meta.unet.sites)));
    unet = cmp.match ? 'same' : 'different';
    if (!cmp.match) {
      notes.push(
        'the UNet differs from the one the edit was computed on (same text encoder): a TIME edit applies to it as such, but strengths tuned on the other UNet may not give the same shares here',
      );
    }
  }
  return { textEncoder, unet, notes };
}

function minusIdentity(M: Float32Array, d: number): Float32Array {
  const out = Float32Array.from(M);
  for (let i = 0; i < d; i++) out[i * d + i] = (out[i * d + i] as number) - 1;
  return out;
}

async function writeCheckpoint(
  ckpt: Checkpoint,
  siteNames: readonly string[],
  solution: EditSolution,
  gemm: GemmEngine,
  out: { outPath: string; exists: boolean; manifest: Record<string, unknown>; early?: EarlyCopy | undefined },
): Promise<{ sites: AppliedSite[]; manifestPath: string; bytesStreamed: number; timings: WriteTimings }> {
  const chosen = siteNames.map((n) => ckpt.sites.find((s) => s.name === n) as Checkpoint['sites'][number]);
  const byFile = new Map<string, Set<string>>();
  for (const s of chosen) {
    const set = byFile.get(s.file) ?? new Set<string>();
    set.add(s.key);
    byFile.set(s.file, set);
  }
  const single = ckpt.kind === 'single-file';
  mkdirSync(dirname(out.outPath), { recursive: true });
  const tmp = out.early?.tmp ?? `${out.outPath}.tmp-${randomBytes(6).toString('hex')}`;
  const tmpManifest = `${tmp}${APPLY_MANIFEST_SUFFIX}`;
  const relTo = single ? dirname(ckpt.path) : ckpt.path;
  const sites: AppliedSite[] = [];
  const sourceFiles: { path: string; bytes: number; sha256: string }[] = [];
  const outputTensors: Record<string, string> = {};
  let bytesStreamed = 0;
  const timelines: StreamTimeline[] = [];
  const work = { gemm: 0, convert: 0 };
  try {
    if (!single) mkdirSync(tmp);
    const streamed = new Map<string, SafetensorsHeader>();
    for (const h of ckpt.unetFiles) if (byFile.has(h.path)) streamed.set(h.path, h);
    // Folders: clone every other file (reflink where possible), alongside the streaming.
    const clones: Promise<void>[] = [];
    if (!single) {
      for (const rel of listFiles(ckpt.path)) {
        const src = join(ckpt.path, rel);
        if (streamed.has(src)) continue;
        const dst = join(tmp, rel);
        mkdirSync(dirname(dst), { recursive: true });
        clones.push(copyFile(src, dst, constants.COPYFILE_FICLONE));
      }
    }
    const siteByKey = new Map(chosen.map((s) => [`${s.file}\u0000${s.key}`, s]));
    // Float32 arrays reused for every site (W, W′, W′ as stored and read back) and its stored bytes:
    // fresh memory is not free (page faults), and a site is done before the next one starts.
    const most = Math.max(0, ...chosen.map((s) => s.out * s.d));
    const pool = {
      W: new Float32Array(most),
      edited: new Float32Array(most),
      back: new Float32Array(most),
      stored: new Uint8Array(most * 4),
    };
    for (const [file, header] of streamed) {
      const dst = single ? tmp : join(tmp, relative(ckpt.path, file));
      const patch: PatchFn = async (entry, bytes) => {
        const site = siteByKey.get(`${file}\u0000${entry.name}`) as Checkpoint['sites'][number];
        const n = site.out * site.d;
        const t0 = performance.now();
        const W = toFloat32(bytes, entry.dtype, entry.name, pool.W.subarray(0, n));
        const edited = pool.edited.subarray(0, n);
        const t1 = performance.now();
        await applyEdit([{ name: site.name, W }], solution, { gemm, form: 'dense', outputs: [edited] });
        const t2 = performance.now();
        const stored = fromFloat32(edited, entry.dtype, entry.name, pool.stored.subarray(0, bytes.byteLength));
        sites.push({
          name: site.name,
          key: entry.name,
          dtype: DTYPE_NAMES[entry.dtype] ?? entry.dtype,
          shape: [site.out, site.d],
          relativeChange: relativeChange(W, toFloat32(stored, entry.dtype, entry.name, pool.back.subarray(0, n))),
        });
        work.gemm += t2 - t1;
        work.convert += t1 - t0 + (performance.now() - t2);
        return stored;
      };
      const names = byFile.get(file) as Set<string>;
      const res =
        out.early && out.early.file === file && out.early.tmp === dst
          ? await out.early.stream.finish(names, patch)
          : await streamCopyWithPatches(header, dst, names, patch);
      timelines.push({ path: relative(relTo, file).split('\\').join('/'), ...res.timeline });
      bytesStreamed += res.bytes;
      sourceFiles.push({
        path: relative(relTo, file).split('\\').join('/'),
        bytes: res.bytes,
        sha256: res.sourceSha256,
      });
      for (const p of res.patched) outputTensors[p.name] = p.sha256;
    }
    await Promise.all(clones);
    const tManifest = performance.now();
    const order = new Map(siteNames.map((n, i) => [n, i]));
    sites.sort((a, b) => (order.get(a.name) as number) - (order.get(b.name) as number));
    const manifest = {
      ...out.manifest,
      tool: { name: 'time-debias', version: toolVersion() },
      sourceModel: { path: ckpt.path, kind: ckpt.kind, keyMap: ckpt.keyMap, d: ckpt.d, files: sourceFiles },
      output: {
        note: 'every byte equals the source file except the edited tensors, whose sha256 is listed',
        editedTensorSha256: outputTensors,
      },
      editedSites: sites,
    };
    const text = `${JSON.stringify(manifest, null, 2)}\n`;
    const manifestPath = single ? `${out.outPath}${APPLY_MANIFEST_SUFFIX}` : join(out.outPath, 'time-edit.json');
    if (single) {
      writeFileSync(tmpManifest, text);
      fsyncFile(tmpManifest);
      renameSync(tmp, out.outPath);
      renameSync(tmpManifest, manifestPath);
    } else {
      writeFileSync(join(tmp, 'time-edit.json'), text);
      for (const rel of listFiles(tmp)) fsyncFile(join(tmp, rel));
      if (out.exists) {
        const old = `${out.outPath}.old-${randomBytes(6).toString('hex')}`;
        renameSync(out.outPath, old);
        try {
          renameSync(tmp, out.outPath);
        } catch (error) {
          renameSync(old, out.outPath);
          throw error;
        }
        rmSync(old, { recursive: true, force: true });
      } else renameSync(tmp, out.outPath);
    }
    fsyncFile(dirname(out.outPath));
    const ms = (x: number) => Math.round(x * 10) / 10;
    return {
      sites,
      manifestPath,
      bytesStreamed,
      timings: {
        files: timelines,
        gemm: ms(work.gemm),
        convert: ms(work.convert),
        manifest: ms(performance.now() - tManifest),
      },
    };
  } catch (error) {
    rmSync(tmp, { recursive: true, force: true });
    rmSync(tmpManifest, { force: true });
    if (error instanceof OutputError || error instanceof ModelFormatError || error instanceof EditError) throw error;
    throw new OutputError(`writing ${show(out.outPath)} failed (${(error as Error).message}); nothing was written`, {
      cause: error,
    });
  }
}

/** One streamed file's timeline (formats/safetensors.ts): when each concurrent part ended, ms from its start. */
export type StreamTimeline = { path: string } & StreamCopyResult['timeline'];

/** Where the time of writing a safetensors checkpoint went (ms). */
export interface WriteTimings {
  /** Per streamed file: copy, hash pass, patches, fsync (concurrent; see StreamCopyResult). */
  files: StreamTimeline[];
  /** In the patches: the products W·M (onnxruntime, incl. creating its session on first use). */
  gemm: number;
  /** In the patches: dtype conversions to and from float32 and the relative change. */
  convert: number;
  /** Writing the manifest, renaming, syncing the folder. */
  manifest: number;
}

function fsyncFile(path: string): void {
  let fd: number | null = null;
  try {
    fd = openSync(path, 'r');
    fsyncSync(fd);
  } catch {
    // some filesystems refuse fsync on folders; the rename is still atomic
  } finally {
    if (fd !== null) closeSync(fd);
  }
}

function readSyncAt(fd: number, buf: Buffer, off: number, position: number): number {
  return readSync(fd, buf, off, buf.byteLength - off, position);
}

export function sha256OfFile(path: string): string {
  return createHashHex(readFileSync(path));
}

function createHashHex(data: Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}
