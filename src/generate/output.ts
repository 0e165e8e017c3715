/**
 * Writing a generation run to a folder: one PNG per image (parameters embedded, png.ts), a JSON
 * sidecar for the run, the final latents as .npy on request and a contact sheet on request.
 *
 *   OUT/00000-<seed>.png …        images, named by index and seed (index-given for given latents)
 *   OUT/generation.json           { kind: 'generation-run', images: [{ file, record }], warnings, timing, … }
 *   OUT/latents.npy               float32 [n, 4, h/8, w/8] final latents (--save-latents)
 *   OUT/grid.png                  contact sheet (--grid)
 *
 * Existing files are never overwritten (OutputError naming the file); each file is written to a
 * temporary name and renamed, so an interrupted run leaves no half-written image.
 */
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { writeFileAtomic, writeJsonAtomic } from '../util/atomic.js';
import { OutputError, show } from '../util/errors.js';
import { withFsErrors } from '../util/fs-errors.js';
import { contactSheet } from './grid.js';
import { encodeNpy } from './npy.js';
import { encodePng, imagePng } from './png.js';
import type { GeneratedImage, GenerateResult } from './result.js';

export interface WriteRunOptions {
  grid?: boolean;
  saveLatents?: boolean;
  /** Extra facts for the sidecar (e.g. the command line). */
  extra?: Record<string, unknown>;
}

export interface WrittenRun {
  kind: 'generation-run';
  dir: string;
  images: string[];
  sidecar: string;
  latents: string | null;
  grid: string | null;
}

export function imageFileName(image: GeneratedImage): string {
  const r = image.record;
  return `${String(r.index).padStart(5, '0')}-${r.seed === null ? 'latents' : r.seed}.png`;
}

export function writeGenerationRun(dir: string, result: GenerateResult, options: WriteRunOptions = {}): WrittenRun {
  withFsErrors('outDir', dir, () => mkdirSync(dir, { recursive: true }));
  const names = result.images.map(imageFileName);
  const sidecar = 'generation.json';
  const planned = [...names, sidecar];
  if (options.saveLatents) planned.push('latents.npy');
  if (options.grid) planned.push('grid.png');
  for (const name of planned) {
    if (existsSync(join(dir, name))) {
      throw new OutputError(`${show(join(dir, name))} already exists; choose another folder or remove it`, {
        field: 'outDir',
      });
    }
  }
  result.images.forEach((image, i) => {
    writeFileAtomic(join(dir, names[i] as string), imagePng(image));
  });
  let latents: string | null = null;
  if (options.saveLatents) {
    const first = result.images[0];
    if (!first?.latents) throw new OutputError('the generation did not return latents', { field: 'saveLatents' });
    const per = first.latents.length;
    const data = new Float32Array(per * result.images.length);
    result.images.forEach((img, i) => {
      data.set(img.latents as Float32Array, i * per);
    });
    latents = 'latents.npy';
    writeFileAtomic(
      join(dir, latents),
      encodeNpy({
        shape: [result.images.length, 4, first.height / result.vaeScale.factor, first.width / result.vaeScale.factor],
        data,
      }),
    );
  }
  let grid: string | null = null;
  if (options.grid) {
    grid = 'grid.png';
    const sheet = contactSheet(
      result.images.map((img) => ({
        ...img,
        label: img.record.seed === null ? `#${img.record.index}` : `seed ${img.record.seed}`,
      })),
    );
    writeFileAtomic(join(dir, grid), encodePng(sheet, { parameters: result.images[0]?.record.prompt ?? '' }));
  }
  writeJsonAtomic(join(dir, sidecar), {
    kind: 'generation-run',
    created: new Date().toISOString(),
    ...(options.extra ?? {}),
    size: result.size,
    vaeScale: result.vaeScale,
    images: result.images.map((img, i) => ({ file: names[i], record: img.record })),
    latents,
    grid,
    warnings: result.warnings,
    timing: result.timing,
  });
  return { kind: 'generation-run', dir, images: names, sidecar, latents, grid };
}
