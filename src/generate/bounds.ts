/**
 * Bounds on every number that sizes memory or time (issue 11), checked before any work — by the
 * CLI commands and by the debias preflight (so a dry run refuses what the run would refuse):
 *
 *   side      height and width: positive multiples of 8, at most 4 × the model's own size
 *             (8 × sample_size; 512 when unknown) — beyond that SD gives no usable image;
 *   memory    the UNet's attention at full latent resolution materializes, per batch,
 *             2 (guidance) × batch × 8 heads × (h/8 · w/8)² float32 scores: that must fit in the
 *             machine's memory (os.totalmem);
 *   images    a run's images each keep a record (and, for `generate`, the decoded image) in memory:
 *             at most what the JS heap holds;
 *   steps     at most the scheduler's training timesteps (1000);
 *   bootstrap 1 ≤ resamples ≤ 1,000,000.
 *
 * The limits come from the model and the machine, so a bigger machine accepts more.
 */
import { totalmem } from 'node:os';
import { getHeapStatistics } from 'node:v8';
import { show, type TimeDebiasErrorOptions } from '../util/errors.js';

export interface WorkSizes {
  height?: number;
  width?: number;
  batchSize?: number;
  steps?: number;
  /** images the run renders or classifies in all */
  images?: number;
  /** bytes each image keeps in memory until the run ends, besides its record (generate: the pixels) */
  bytesPerImage?: number;
  bootstrap?: number;
}

export interface BoundsContext {
  /**
   * The library parameter each number came from, the errors' `field` (default: the key itself,
   * `height`, `batchSize`, …; e.g. `images: 'seeds'` when the images are a list of seeds).
   */
  fields?: Partial<Record<keyof WorkSizes, string>>;
  /** The UNet's sample_size (latent side); default 64 (512-pixel models). */
  sampleSize?: number | null;
  /** The scheduler's training timesteps; default 1000. */
  trainSteps?: number;
  /** Machine memory in bytes; default os.totalmem(). */
  memoryBytes?: number;
  /** JS heap limit in bytes; default v8's heap_size_limit. */
  heapBytes?: number;
  /** The error to throw (UsageError, ConfigError for a job config, …), with its field and mentions. */
  error: (message: string, options: TimeDebiasErrorOptions) => Error;
}

/** Bytes a planned image's record takes in memory (keys, prompt, probabilities), generously. */
const RECORD_BYTES = 2048;
const MAX_BOOTSTRAP = 1_000_000;
const GiB = 1024 ** 3;

/** The largest image side the model accepts: 4 × its own size. */
export function maxSide(sampleSize?: number | null): number {
  return 4 * 8 * Math.max(sampleSize ?? 64, 64);
}

/** The side rule in words: whose size the bound is 4 × of. */
function sideRule(sampleSize?: number | null): string {
  if (!sampleSize) return "4 × 512, the size SD 1.x models are made for (checked before the model's own size is read)";
  const own = 8 * sampleSize;
  if (own >= 512) return `4 × ${own}, the model's own size`;
  return `4 × 512: this model's own size ${own} is smaller, and the bound never goes below SD 1.x's`;
}

/** Bytes of the attention scores of one UNet batch at full latent resolution (guidance doubles it). */
export function attentionBytes(height: number, width: number, batchSize: number): number {
  const tokens = (height / 8) * (width / 8);
  return 2 * batchSize * 8 * tokens * tokens * 4;
}

/** Throw `ctx.error(...)` for the first number outside its bound. */
export function checkWorkBounds(sizes: WorkSizes, ctx: BoundsContext): void {
  const field = (k: keyof WorkSizes) => ctx.fields?.[k] ?? k;
  const fail = (k: keyof WorkSizes, message: string, mentions: (keyof WorkSizes)[] = []): never => {
    throw ctx.error(message, { field: field(k), ...(mentions.length ? { mentions: mentions.map(field) } : {}) });
  };
  const intAtLeast = (k: keyof WorkSizes, min: number) => {
    const v = sizes[k];
    if (v !== undefined && (!Number.isInteger(v) || v < min)) fail(k, `${show(v)} must be an integer ≥ ${min}`);
  };
  const side = maxSide(ctx.sampleSize);
  for (const k of ['height', 'width'] as const) {
    const v = sizes[k];
    if (v === undefined) continue;
    if (!Number.isInteger(v) || v < 8 || v % 8 !== 0) fail(k, `${show(v)} is not a positive multiple of 8`);
    if (v > side) {
      fail(
        k,
        `${v} is larger than ${side} (rule: at most ${sideRule(ctx.sampleSize)}; larger images need more memory than the model can use and give no usable image)`,
      );
    }
  }
  intAtLeast('batchSize', 1);
  intAtLeast('steps', 1);
  intAtLeast('images', 1);
  const trainSteps = ctx.trainSteps ?? 1000;
  if (sizes.steps !== undefined && sizes.steps > trainSteps)
    fail('steps', `${sizes.steps} is more than the scheduler's ${trainSteps} training timesteps`);
  if (sizes.bootstrap !== undefined) {
    intAtLeast('bootstrap', 1);
    if (sizes.bootstrap > MAX_BOOTSTRAP)
      fail('bootstrap', `${sizes.bootstrap} is more than ${MAX_BOOTSTRAP} resamples`);
  }
  const memory = ctx.memoryBytes ?? totalmem();
  if (sizes.height !== undefined && sizes.width !== undefined) {
    const batch = sizes.batchSize ?? 1;
    const need = attentionBytes(sizes.height, sizes.width, batch);
    if (need > memory) {
      fail(
        'height',
        `${sizes.height} × \`${field('width')}\` ${sizes.width} with \`${field('batchSize')}\` ${batch} needs ≈ ${(need / GiB).toFixed(1)} GiB ` +
          `for the UNet's attention alone; this machine has ${(memory / GiB).toFixed(1)} GiB (use a smaller size or batch)`,
        ['width', 'batchSize'],
      );
    }
  }
  if (sizes.images !== undefined) {
    const heap = ctx.heapBytes ?? getHeapStatistics().heap_size_limit;
    const each = RECORD_BYTES + (sizes.bytesPerImage ?? 0);
    // records live on the JS heap; generated pixels in typed arrays, off the heap
    const pool = sizes.bytesPerImage ? Math.min(memory, heap + memory / 2) : heap;
    const most = Math.max(1, Math.floor(pool / 2 / each));
    if (sizes.images > most) {
      fail(
        'images',
        `${sizes.images} images in all is more than this process can hold (at most ${most}: ` +
          `${(pool / GiB).toFixed(1)} GiB for ${each} bytes per image); split the run`,
      );
    }
  }
}
