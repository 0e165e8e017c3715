/**
 * The real-scale bench model: a complete diffusers-ONNX folder whose UNet is SD 1.4's
 * (src/demo/sd14-unet.ts, 859,520,964 random parameters, 3.4 GB of float32 in unet/weights.pb)
 * and whose other components are the tiny builder's at d = 768 (CLIP-L's width): a one-layer text
 * encoder and an 8-channel VAE decoder that still upsamples 64×64 latents to 512×512 images. Built
 * once into a cache folder ($TIME_DEBIAS_CACHE_DIR/sd14-bench-v<N>, else outputs/cache/...), which
 * `npm run bench -- sd14` reuses and `--clean` (or SD14_BENCH_CLEAN=1) removes after the run.
 */
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { buildTinySdModel } from '../src/demo/sd-model.js';
import {
  planSd14Unet,
  SD14_UNET_BUILDER_VERSION,
  SD14_UNET_CONFIG,
  type WriteSd14Result,
  writeSd14Unet,
} from '../src/demo/sd14-unet.js';

export interface Sd14BenchModel {
  dir: string;
  parameterCount: number;
  weightBytes: number;
  /** ms to build, or 0 when the cached folder was reused. */
  buildMs: number;
}

export function sd14CacheRoot(): string {
  return resolve(process.env.TIME_DEBIAS_CACHE_DIR ?? join('outputs', 'cache'));
}

export function sd14BenchDir(): string {
  return join(sd14CacheRoot(), `sd14-bench-v${SD14_UNET_BUILDER_VERSION}`);
}

/** Build (or reuse) the bench model folder. The folder appears only complete (temporary name, then rename). */
export function ensureSd14BenchModel(): Sd14BenchModel {
  const dir = sd14BenchDir();
  const marker = join(dir, 'sd14-bench.json');
  if (existsSync(marker)) {
    const m = JSON.parse(readFileSync(marker, 'utf8')) as { parameterCount: number; weightBytes: number };
    return { dir, parameterCount: m.parameterCount, weightBytes: m.weightBytes, buildMs: 0 };
  }
  const t0 = performance.now();
  const tmp = `${dir}.partial-${process.pid}`;
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(tmp, { recursive: true });
  try {
    buildTinySdModel(tmp, { d: SD14_UNET_CONFIG.crossAttentionDim, latentSize: 64 });
    const written: WriteSd14Result = writeSd14Unet(join(tmp, 'unet'), planSd14Unet(SD14_UNET_CONFIG));
    writeFileSync(
      join(tmp, 'sd14-bench.json'),
      `${JSON.stringify({ parameterCount: written.parameterCount, weightBytes: written.weightBytes, builder: SD14_UNET_BUILDER_VERSION }, null, 2)}\n`,
    );
    rmSync(dir, { recursive: true, force: true });
    renameSync(tmp, dir);
    return {
      dir,
      parameterCount: written.parameterCount,
      weightBytes: written.weightBytes,
      buildMs: performance.now() - t0,
    };
  } catch (error) {
    rmSync(tmp, { recursive: true, force: true });
    throw error;
  }
}

export function removeSd14BenchModel(): void {
  rmSync(sd14BenchDir(), { recursive: true, force: true });
}
