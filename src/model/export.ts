/**
 * Export an edited model as a complete model folder (issue 2 §6):
 *
 *   1. checks: every weight names a located site and has out × d finite values; the output does not
 *      exist (or `force`), and is neither the input folder nor inside it, nor contains it;
 *   2. every file of the input folder is cloned into `<outDir>.tmp-<random>` next to the target
 *      (reflink where the filesystem allows, a plain copy otherwise, never a hard link; symlinks are
 *      copied as the files they point to), while the edited source files are hashed (sha256);
 *   3. the UNet's edited tensors are patched in the clones (src/onnx/write.ts), nothing else changes;
 *   4. `time-edit.json` is written: the caller's manifest + per-site ‖ΔW‖_F/‖W‖_F, the sha256 of each
 *      edited source file and the tool version (no date: the same edit exports the same bytes);
 *   5. everything is fsynced, then the folder is renamed into place (with `force`, the old folder is
 *      renamed away first and deleted after the new one is in place).
 *
 * The input is only ever read. On any failure the temporary folder is removed: nothing is written.
 *
 * Two ways to call it: `exportEditedModel` (weights in hand), or `startExport` as soon as the model
 * is open, which starts step 2 in the background (clone in the libuv pool, hash in a worker thread)
 * so the edit's computation overlaps the copy, then `finish(weights)` for steps 3–5.
 */
import { randomBytes } from 'node:crypto';
import {
  closeSync,
  constants,
  existsSync,
  fsyncSync,
  lstatSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { chmod, copyFile } from 'node:fs/promises';
import { basename, dirname, join, normalize, relative, resolve, sep } from 'node:path';
import { bytesToFloat32, readTensorFloat32 } from '../onnx/model-file.js';
import { applyWritePlan, planTensorWrites } from '../onnx/write.js';
import { removeExportLeftovers, trackTemp } from '../util/atomic.js';
import { EditError, ModelFormatError, OutputError, show } from '../util/errors.js';
import { fsErrorToOutput } from '../util/fs-errors.js';
import { type SourceFileRecord, sha256Files } from './file-hash.js';
import type { SdModel } from './folder.js';
import { checkOutsideModel, checkReplaceable, describePath } from './path-guard.js';
import { lockExportTarget } from './run-lock.js';
import { type EditSite, locateSites, toStoredBytes } from './sites.js';

export const EDIT_MANIFEST = 'time-edit.json';

export interface ExportOptions {
  model: SdModel;
  /** Site name → the edited weight W' in torch layout [out, d] (row-major float32), or see `layout`. */
  weights: ReadonlyMap<string, Float32Array>;
  /** 'stored': the weights are already in each site's stored layout (readSiteWeightStored → applyEdit). */
  layout?: 'torch' | 'stored';
  outDir: string;
  /** Replace an existing outDir (atomically: the old folder is renamed away, then deleted). */
  force?: boolean;
  /** What was edited (prompts, λ, rows, ...): written to time-edit.json with the export's own facts. */
  manifest?: Record<string, unknown>;
  /** Sites as located before (default: located again). */
  sites?: readonly EditSite[];
}

export interface EditedSiteRecord {
  name: string;
  projection: EditSite['projection'];
  initializer: string;
  /** torch layout [out, d] */
  shape: [number, number];
  dtype: string;
  /** ‖W' − W‖_F / ‖W‖_F of the stored tensors. */
  relativeChange: number;
}

export type { SourceFileRecord };

export interface ExportResult {
  kind: 'model-export';
  outDir: string;
  manifestPath: string;
  /** Files in the output folder (time-edit.json included). */
  files: number;
  /** Bytes of the input folder's files copied. */
  bytesCopied: number;
  /** Files of the output that differ from the input (relative paths). */
  patchedFiles: string[];
  editedSites: EditedSiteRecord[];
  sourceFiles: SourceFileRecord[];
  /** True when an existing outDir was replaced (force). */
  replaced: boolean;
  /** Milliseconds per phase: clone (hashing and the ‖ΔW‖ sums alongside), patch, manifest, fsync, rename. */
  timings: { clone: number; patch: number; manifest: number; fsync: number; rename: number; total: number };
}

/** The package version, read once from package.json. */
export function toolVersion(): string {
  const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version?: string };
  return pkg.version ?? '0.0.0';
}

/** Where an export goes; checked when the export starts. */
export interface ExportTarget {
  model: SdModel;
  outDir: string;
  /** Replace an existing outDir (atomically: the old folder is renamed away, then deleted). */
  force?: boolean;
  /** Sites as located before (default: located again). */
  sites?: readonly EditSite[];
}

/** What the edit produced, given when the export finishes. */
export interface ExportContent {
  /** Site name → the edited weight W' in torch layout [out, d] (row-major float32), or see `layout`. */
  weights: ReadonlyMap<string, Float32Array>;
  /** 'stored': the weights are already in each site's stored layout (readSiteWeightStored → applyEdit). */
  layout?: 'torch' | 'stored';
  /** What was edited (prompts, λ, rows, ...): written to time-edit.json with the export's own facts. */
  manifest?: Record<string, unknown>;
  /**
   * Checks the complete manifest (the caller's + the export's facts) before it is written; a throw
   * aborts the export (edit/commit.ts validates it against the time-edit.json schema here).
   */
  checkManifest?: (manifest: Record<string, unknown>) => void;
  /** More files for the top of the output folder (name → bytes), e.g. the portable edit file edit.safetensors. */
  extraFiles?: ReadonlyMap<string, Uint8Array>;
}

/**
 * An export under way: the input folder is being cloned into the temporary folder and the files
 * that hold edit sites are being hashed (in a worker thread), while the caller computes the edit.
 * Call `finish` with the weights, or `abort` to remove the temporary folder.
 */
export interface PendingExport {
  readonly outDir: string;
  readonly tmpDir: string;
  finish(content: ExportContent): Promise<ExportResult>;
  abort(): Promise<void>;
}

/** Write the edited model folder in one call. See the module comment for the steps and guarantees. */
export async function exportEditedModel(options: ExportOptions): Promise<ExportResult> {
  // Validate the weights before anything is written.
  const sites = options.sites ?? locateSites(options.model);
  const prepared = prepareReplacements(options.model, sites, options.weights, options.layout === 'stored');
  const job = beginExport({ ...options, sites });
  return job.finishWith(prepared, options.manifest);
}

/**
 * Start an export: check the output location (OutputError: exists without `force`, is or is inside
 * the input, contains the input), create `<outDir>.tmp-<random>`, and start cloning every file and
 * hashing the files that hold edit sites. The clone runs in the libuv thread pool and the hash in a
 * worker thread, so the caller's own computation (the edit) overlaps with them.
 */
export function startExport(target: ExportTarget): PendingExport {
  const sites = target.sites ?? locateSites(target.model);
  const job = beginExport({ ...target, sites });
  return {
    outDir: job.outDir,
    tmpDir: job.tmpDir,
    abort: job.abort,
    finish: async (content) => {
      let prepared: Prepared;
      try {
        prepared = prepareReplacements(target.model, sites, content.weights, content.layout === 'stored');
      } catch (error) {
        await job.abort();
        throw error;
      }
      return job.finishWith(prepared, content.manifest, content.checkManifest, content.extraFiles);
    },
  };
}

interface Prepared {
  replacements: Map<string, Uint8Array>;
  edited: EditSite[];
}

function beginExport(target: ExportTarget & { sites: readonly EditSite[] }): {
  outDir: string;
  tmpDir: string;
  abort: () => Promise<void>;
  finishWith: (
    prepared: Prepared,
    manifest?: Record<string, unknown>,
    checkManifest?: ExportContent['checkManifest'],
    extraFiles?: ExportContent['extraFiles'],
  ) => Promise<ExportResult>;
} {
  const { model, sites } = target;
  const { outDir } = checkExportTarget(model.dir, target.outDir, target.force ?? false);
  const parent = dirname(outDir);
  // One export per target at a time; then, under the lock, the target is checked again (another
  // export may have finished meanwhile) and the leftovers of interrupted exports are removed.
  const lock = lockExportTarget('outDir', outDir);
  let exists: boolean;
  const tmp = `${outDir}.tmp-${randomBytes(6).toString('hex')}`;
  let untrack: () => void;
  try {
    // leftovers first: an earlier export renamed away by a replace that died is restored here
    removeExportLeftovers(outDir);
    ({ exists } = checkExportTarget(model.dir, outDir, target.force ?? false));
    untrack = trackTemp(tmp);
    mkdirSync(tmp, { recursive: true });
  } catch (error) {
    lock.release();
    throw fsErrorToOutput(error, 'outDir', outDir);
  }
  const release = () => {
    untrack();
    lock.release();
  };
  const t0 = performance.now();
  const unetRel = relative(model.dir, model.unet.dir);

  // The files that can be edited: those holding a site's initializer (relative to the model folder).
  const siteFiles = new Set<string>();
  for (const site of sites) {
    const s = model.unet.initializerByName.get(site.initializer)?.storage;
    siteFiles.add(join(unetRel, s?.kind === 'external' ? normalize(s.location) : basename(model.unet.path)));
  }
  const cloning = settle(cloneTree(model.dir, tmp));
  const hashing = settle(sha256Files(model.dir, [...siteFiles]));
  let done = false;

  /** Remove the temporary folder; a no-op once finish has begun (it cleans up after itself). */
  const abort = async () => {
    if (done) return;
    done = true;
    await Promise.all([cloning, hashing]);
    rmSync(tmp, { recursive: true, force: true });
    release();
  };

  const finishWith = async (
    prepared: Prepared,
    manifestIn?: Record<string, unknown>,
    checkManifest?: ExportContent['checkManifest'],
    extraFiles?: ExportContent['extraFiles'],
  ): Promise<ExportResult> => {
    if (done) throw new OutputError(`export to ${show(outDir)}: finish() after the export was finished or aborted`);
    done = true;
    try {
      const { replacements, edited } = prepared;
      const plan = planTensorWrites(model.unet, replacements);
      const editedSources = plan.touchedFiles.map((f) => join(unetRel, f));
      // ‖ΔW‖/‖W‖ per site, computed while the copy is still running (reads the source's originals).
      const editedSites: EditedSiteRecord[] = edited.map((site) => {
        const init = model.unet.initializerByName.get(site.initializer);
        if (!init) throw new EditError(`export: no initializer ${show(site.initializer)}`);
        const before = readTensorFloat32(model.unet, init);
        const after = bytesToFloat32(replacements.get(site.initializer) as Uint8Array, site.dataType);
        return {
          name: site.name,
          projection: site.projection,
          initializer: site.initializer,
          shape: [site.out, site.d],
          dtype: site.dtype,
          relativeChange: relativeChange(before, after),
        };
      });
      const copied = unwrap(await cloning);
      const hashes = unwrap(await hashing);
      const sourceFiles: SourceFileRecord[] = [];
      for (const rel of editedSources)
        sourceFiles.push(hashes.get(rel) ?? (await sha256Files(model.dir, [rel])).get(rel)!);
      const tClone = performance.now();

      // Patch the UNet's edited tensors in the clones.
      applyWritePlan(plan, join(tmp, unetRel), model.unet.dir);
      const tPatch = performance.now();

      // The manifest.
      const manifest = {
        ...(manifestIn ?? {}),
        tool: { name: 'time-debias', version: toolVersion() },
        sourceModel: {
          dir: model.dir,
          format: model.format,
          precision: model.precision,
          d: model.d,
          files: sourceFiles,
        },
        editedSites,
      };
      checkManifest?.(manifest);
      writeFileSync(join(tmp, EDIT_MANIFEST), `${JSON.stringify(manifest, null, 2)}\n`);
      for (const [name, bytes] of extraFiles ?? []) {
        if (name !== basename(name) || name === EDIT_MANIFEST || existsSync(join(tmp, name))) {
          throw new OutputError(`export: extra file ${show(name)} must be a new file name at the top of the folder`);
        }
        writeFileSync(join(tmp, name), bytes);
      }
      const tManifest = performance.now();

      // fsync everything, then rename into place.
      fsyncTree(tmp);
      const tFsync = performance.now();
      let replaced = false;
      if (exists) {
        const old = `${outDir}.tmp-old-${randomBytes(6).toString('hex')}`;
        trackTemp(old);
        renameSync(outDir, old);
        try {
          renameSync(tmp, outDir);
        } catch (error) {
          renameSync(old, outDir);
          throw error;
        }
        rmSync(old, { recursive: true, force: true });
        replaced = true;
      } else {
        renameSync(tmp, outDir);
      }
      fsyncPath(parent);
      release();
      const tEnd = performance.now();
      const ms = (x: number) => Math.round(x * 10) / 10;
      return {
        kind: 'model-export',
        outDir,
        manifestPath: join(outDir, EDIT_MANIFEST),
        files: copied.files + 1 + (extraFiles?.size ?? 0),
        bytesCopied: copied.bytes,
        patchedFiles: editedSources.map((f) => f.split(sep).join('/')),
        editedSites,
        sourceFiles,
        replaced,
        timings: {
          clone: ms(tClone - t0),
          patch: ms(tPatch - tClone),
          manifest: ms(tManifest - tPatch),
          fsync: ms(tFsync - tManifest),
          rename: ms(tEnd - tFsync),
          total: ms(tEnd - t0),
        },
      };
    } catch (error) {
      await Promise.all([cloning, hashing]);
      rmSync(tmp, { recursive: true, force: true });
      release();
      throw fsErrorToOutput(error, 'outDir', outDir);
    }
  };
  return { outDir, tmpDir: tmp, finishWith, abort };
}

/**
 * Where an export may go: `outDir` must be neither the input folder nor inside it, must not contain
 * it (`force` would delete the input), and must not exist unless `force`. OutputError otherwise.
 * The edit command checks this before any heavy work; the export again right before it writes.
 */
export function checkExportTarget(
  modelDir: string,
  outDirIn: string,
  force: boolean,
): { outDir: string; exists: boolean } {
  const outDir = resolve(outDirIn);
  // real paths, for the model folder and each component folder (src/model/path-guard.ts)
  checkOutsideModel('outDir', outDir, modelDir, { replacing: true });
  const exists = existsSync(outDir) || isSymlink(outDir);
  if (exists && !force) {
    throw new OutputError(`${show(outDir)} already exists; choose another folder, or replace it (\`force\`)`, {
      field: 'outDir',
      mentions: ['force'],
    });
  }
  // --force replaces only a model folder this tool exported (or an empty folder); a file output
  // (a .safetensors checkpoint or LoRA) only a regular file, never a folder or a link
  if (exists && outDir.endsWith('.safetensors')) {
    if (!lstatSync(outDir).isFile()) {
      throw new OutputError(`${show(outDir)} is ${describePath(outDir)}, not a file; refusing to replace it`, {
        field: 'outDir',
      });
    }
  } else if (exists) checkReplaceable('outDir', outDir, 'model');
  return { outDir, exists };
}

/** Weights → stored bytes per initializer; EditError for unknown sites, wrong sizes, non-finite values. */
function prepareReplacements(
  model: SdModel,
  sites: readonly EditSite[],
  weights: ReadonlyMap<string, Float32Array>,
  stored = false,
): Prepared {
  if (weights.size === 0) throw new EditError('export: no edited weights given; nothing to export');
  const byName = new Map(sites.map((s) => [s.name, s]));
  const replacements = new Map<string, Uint8Array>();
  const edited: EditSite[] = [];
  for (const [name, W] of weights) {
    const site = byName.get(name);
    if (!site) {
      throw new EditError(
        `export: ${show(name)} is not a site of ${show(model.unet.path)} (sites: ${sites
          .slice(0, 3)
          .map((s) => s.name)
          .join(', ')}${sites.length > 3 ? `, … ${sites.length} in all` : ''})`,
      );
    }
    for (let i = 0; i < W.length; i++) {
      if (!Number.isFinite(W[i])) {
        throw new EditError(`export: weights of site ${show(name)} hold a non-finite value at index ${i}`);
      }
    }
    if (replacements.has(site.initializer)) {
      throw new EditError(`export: initializer ${show(site.initializer)} edited twice`);
    }
    replacements.set(site.initializer, toStoredBytes(site, W, stored));
    edited.push(site);
  }
  return { replacements, edited };
}

type Settled<T> = { ok: true; value: T } | { ok: false; error: unknown };

/** A promise that never rejects (so a failure before finish/abort is not an unhandled rejection). */
function settle<T>(p: Promise<T>): Promise<Settled<T>> {
  return p.then(
    (value) => ({ ok: true as const, value }),
    (error: unknown) => ({ ok: false as const, error }),
  );
}

function unwrap<T>(s: Settled<T>): T {
  if (!s.ok) throw s.error;
  return s.value;
}

/** ‖after − before‖_F / ‖before‖_F (float64 sums). */
export function relativeChange(before: Float32Array, after: Float32Array): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < before.length; i++) {
    const b = before[i] as number;
    const diff = (after[i] as number) - b;
    num += diff * diff;
    den += b * b;
  }
  return den > 0 ? Math.sqrt(num / den) : num > 0 ? Number.POSITIVE_INFINITY : 0;
}

function isSymlink(path: string): boolean {
  try {
    return lstatSync(path).isSymbolicLink();
  } catch {
    return false;
  }
}

/** Copy every file under `src` into `dst` (created): clones, symlinks dereferenced, modes from the umask. */
async function cloneTree(src: string, dst: string): Promise<{ files: number; bytes: number }> {
  const jobs: { from: string; to: string; size: number }[] = [];
  const walk = (from: string, to: string, depth: number) => {
    if (depth > 64) throw new OutputError(`export: ${show(from)} is nested too deep (symlink loop?)`);
    mkdirSync(to, { recursive: true });
    for (const entry of readdirSync(from, { withFileTypes: true })) {
      const a = join(from, entry.name);
      const b = join(to, entry.name);
      let st: ReturnType<typeof statSync>;
      try {
        st = statSync(a); // follows symlinks
      } catch (cause) {
        throw new ModelFormatError(`export: ${show(a)} cannot be read (a broken symbolic link?)`, { cause });
      }
      if (st.isDirectory()) walk(a, b, depth + 1);
      else if (st.isFile()) jobs.push({ from: a, to: b, size: st.size });
      else throw new OutputError(`export: ${show(a)} is neither a file nor a folder; cannot copy it`);
    }
  };
  walk(src, dst, 0);
  // Files get the permissions of a newly created file (the umask: what mkdir gave the folder, less
  // execute), not the source's: a read-only source model gives an editable copy.
  const fileMode = statSync(dst).mode & 0o666;
  // Largest first, two at a time (the big weight file starts at once).
  jobs.sort((x, y) => y.size - x.size);
  let next = 0;
  const worker = async () => {
    while (next < jobs.length) {
      const job = jobs[next++] as (typeof jobs)[number];
      await copyFile(job.from, job.to, constants.COPYFILE_FICLONE);
      await chmod(job.to, fileMode);
    }
  };
  await Promise.all([worker(), worker()]);
  return { files: jobs.length, bytes: jobs.reduce((s, j) => s + j.size, 0) };
}

function fsyncPath(path: string): void {
  let fd: number | undefined;
  try {
    fd = openSync(path, 'r');
    fsyncSync(fd);
  } catch {
    // some platforms cannot fsync a directory; the data files were synced
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

function fsyncTree(dir: string): void {
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, entry.name);
    if (entry.isDirectory()) fsyncTree(p);
    else fsyncPath(p);
  }
  fsyncPath(dir);
}
