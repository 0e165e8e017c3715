/**
 * `apply`'s entry point for the command line, light to import (formats/safetensors.ts and
 * model/checkpoints.ts only). For a single-file checkpoint it starts the streaming copy — the
 * kernel's copy and the hash pass — before the rest of apply is loaded and run (the edit file and
 * its schema, the fingerprints, onnxruntime: ≈ 0.5–0.8 s of imports and checks on 2 cores), so that
 * the gigabytes move meanwhile; applyEditFile (portable.ts) then checks everything as it always does
 * and patches and completes that copy instead of starting its own.
 *
 * The copy goes to the temporary path apply would write anyway (next to --out); when any check
 * refuses the request it is stopped and removed, so nothing is written, as without it (such an error
 * only waits for the kernel's copy to end). It starts only when the request plainly allows writing:
 * the model is one .safetensors file whose header reads and that holds cross-attention sites, --out
 * ends in .safetensors in an existing folder, is not the model, and is absent unless --force, and
 * the --edit file exists.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, rmSync, statSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { startStreamCopy } from '../formats/safetensors.js';
import { openCheckpoint } from '../model/checkpoints.js';
import type { ApplyFileRequest, ApplyFileResult, EarlyCopy } from './portable.js';

export async function applyEditFileEarly(request: ApplyFileRequest): Promise<ApplyFileResult> {
  const early = startEarlyCopy(request);
  try {
    const { applyEditFile } = await import('./portable.js');
    return await applyEditFile(request, early ?? undefined);
  } catch (error) {
    // applyEditFile removes it on its own errors; this covers a failed import.
    if (early) {
      await early.stream.abort();
      rmSync(early.tmp, { force: true });
    }
    throw error;
  }
}

function startEarlyCopy(r: ApplyFileRequest): EarlyCopy | null {
  if (typeof r.modelPath !== 'string' || typeof r.outPath !== 'string' || r.modelPath.trim() === '') return null;
  if (r.outPath.trim() === '') return null;
  const model = resolve(r.modelPath);
  const out = resolve(r.outPath);
  try {
    if (!model.toLowerCase().endsWith('.safetensors') || !out.endsWith('.safetensors') || out === model) return null;
    if (!statSync(model).isFile() || !statSync(dirname(out)).isDirectory()) return null;
    if (existsSync(out) && r.force !== true) return null;
    // A mistyped --edit is the likeliest error: not worth a copy that is thrown away.
    if (typeof r.editFile !== 'string' || !statSync(resolve(r.editFile)).isFile()) return null;
    const ckpt = openCheckpoint(model);
    const header = ckpt.unetFiles[0];
    if (ckpt.kind !== 'single-file' || !header) return null;
    const tmp = `${out}.tmp-${randomBytes(6).toString('hex')}`;
    const stream = startStreamCopy(header, tmp, { ranges: new Set(ckpt.sites.map((s) => s.key)) });
    return { file: model, tmp, stream };
  } catch {
    return null; // whatever is wrong, applyEditFile finds it and says so
  }
}
