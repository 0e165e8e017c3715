/**
 * The pipeline's stored reference: the default tiny model (src/demo/sd-model.ts), a fixed request,
 * and 3 × 3 corner slices (diffusers' test convention: image[0, -3:, -3:, last channel] in [0, 1],
 * and the same corner of the final latents' last channel).
 * `node --import tsx test/generate/pipeline-reference.ts --write` regenerates
 * fixtures/pipeline-reference.json (review the diff before committing it).
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildTinySdModel, TINY_SD_VERSION } from '../../src/demo/sd-model.js';
import { type GenerateRequest, type GenerateResult, StableDiffusionPipeline } from '../../src/generate/pipeline.js';

export const PIPELINE_REFERENCE_REQUEST: GenerateRequest = Object.freeze({
  prompt: 'a photo of a doctor',
  negativePrompt: '',
  seeds: [0],
  steps: 6,
  scheduler: 'pndm',
  guidance: 7.5,
  height: 64,
  width: 64,
});

export function cornerSlices(result: GenerateResult): { image: number[]; latents: number[] } {
  const img = result.images[0];
  if (!img?.latents) throw new Error('reference run needs returnLatents');
  const image: number[] = [];
  const latents: number[] = [];
  const h = img.height;
  const w = img.width;
  for (let y = h - 3; y < h; y++)
    for (let x = w - 3; x < w; x++) image.push((img.rgb[3 * (y * w + x) + 2] as number) / 255);
  const lh = h / 8;
  const lw = w / 8;
  const plane = 3 * lh * lw; // channel 3 of 4
  for (let y = lh - 3; y < lh; y++)
    for (let x = lw - 3; x < lw; x++) latents.push(img.latents[plane + y * lw + x] as number);
  return { image, latents };
}

if (process.argv[1] === fileURLToPath(import.meta.url) && process.argv.includes('--write')) {
  const dir = mkdtempSync(join(tmpdir(), 'td-ref-'));
  try {
    buildTinySdModel(dir, {});
    const p = await StableDiffusionPipeline.create(dir, { threads: 1 });
    const r = await p.generate({ ...PIPELINE_REFERENCE_REQUEST, returnLatents: true });
    await p.dispose();
    const doc = {
      about: 'test/generate/pipeline-reference.ts: default tiny SD model, fixed request, 3 × 3 corner slices',
      tinySdVersion: TINY_SD_VERSION,
      request: PIPELINE_REFERENCE_REQUEST,
      slices: cornerSlices(r),
    };
    writeFileSync(new URL('./fixtures/pipeline-reference.json', import.meta.url), `${JSON.stringify(doc, null, 1)}\n`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
