/**
 * A generation request and its checks (diffusers' `check_inputs`), in one place and needing no
 * model: defaults applied, every rule checked, errors (GenerationError) whose `field` names the
 * request's parameter (`steps`, `height`, `latents`); the CLI relabels it with its flag.
 */
import { GenerationError, show } from '../util/errors.js';
import { latentSide } from './geometry.js';
import { validateSeed } from './rng.js';
import { isSchedulerId, SCHEDULER_IDS, type SchedulerConfigJson, type SchedulerId } from './schedulers/index.js';
import { LATENT_CHANNELS } from './unet.js';

/**
 * An edit applied to the text side (encoder_hidden_states rows e → T(e)): edit/text-transform.ts
 * makes it (`textSideEdit(M)`), so the pipeline applies an edit without knowing its maths.
 */
export interface TextSideEdit {
  kind: 'text-transform';
  /** sha256 of the transform: the edit's identity in image records. */
  sha256: string;
  apply(hidden: Float32Array, d: number): Float32Array;
}

export interface GenerateRequest {
  prompt: string;
  /** "" (default) as diffusers does when no negative prompt is given. */
  negativePrompt?: string;
  /** One image per seed. Required unless `latents` is given (then optional: seeds of the scheduler noise). */
  seeds?: readonly number[];
  /** Initial latents z (before × init_noise_sigma), float32 [n, 4, h/8, w/8]. */
  latents?: { shape: readonly number[]; data: Float32Array };
  /** Denoising steps (default 25). */
  steps?: number;
  /** Scheduler CLI id (default 'pndm', Stable Diffusion 1.x's own). */
  scheduler?: string;
  /** Overrides of the model's scheduler_config.json fields (e.g. { timestep_spacing: 'trailing' }). */
  schedulerOverrides?: SchedulerConfigJson;
  /** DDIM η (default 0). */
  eta?: number;
  /** Classifier-free guidance scale g (default 7.5; ≤ 1 disables the unconditional pass). */
  guidance?: number;
  height?: number;
  width?: number;
  /** Images per UNet batch (default 1; with guidance the UNet sees 2× this). */
  batchSize?: number;
  /** Batches run at once (default 1: onnxruntime already uses the cores). Images do not depend on it. */
  concurrency?: number;
  /**
   * An all-site TIME edit applied to the text side: encoder_hidden_states rows e become M e. Made by
   * edit/text-transform.ts `textSideEdit(M)` (or from Δ = M − I, or a low-rank Δ = Uᵀ Z).
   */
  textTransform?: TextSideEdit;
  /** Return each image's final latents (x_0, before the VAE scaling). */
  returnLatents?: boolean;
  /** Called after every denoising step of every batch, and once per decoded image. */
  onProgress?: (event: ProgressEvent) => void;
}

export type ProgressEvent =
  | {
      kind: 'step';
      batch: number;
      step: number;
      steps: number;
      images: number[];
      /** Denoising steps done and to do over all batches. */
      done: number;
      total: number;
    }
  | { kind: 'image'; index: number; done: number; total: number };

export interface NormalizedRequest {
  prompt: string;
  negativePrompt: string;
  seeds: number[] | null;
  latents: { shape: number[]; data: Float32Array } | null;
  count: number;
  steps: number;
  scheduler: SchedulerId;
  schedulerOverrides: SchedulerConfigJson;
  eta: number;
  guidance: number;
  guided: boolean;
  height: number;
  width: number;
  batchSize: number;
  concurrency: number;
  textTransform: TextSideEdit | null;
  returnLatents: boolean;
  onProgress?: (event: ProgressEvent) => void;
}

/** Without a model a size need only be a positive integer (its VAE scale factor is checked once it is loaded). */
function positiveSide(field: 'height' | 'width', pixels: number): number {
  if (!Number.isInteger(pixels) || pixels < 1) {
    throw new GenerationError(`${show(pixels)} is not a positive integer`, { field });
  }
  return pixels;
}

/**
 * `geometry` is the model's (its native size and VAE scale factor f, src/generate/geometry.ts);
 * without it (checks made before a model is loaded) sizes default to 512 × 512 and need only be
 * positive integers, and given latents only rank 4 with 4 channels.
 */
export function normalizeRequest(
  request: GenerateRequest,
  geometry?: { height: number; width: number; vaeScale: number },
): NormalizedRequest {
  if (typeof request.prompt !== 'string')
    throw new GenerationError(`${show(request.prompt)} is not text`, { field: 'prompt' });
  const negativePrompt = request.negativePrompt ?? '';
  if (typeof negativePrompt !== 'string') {
    throw new GenerationError(`${show(negativePrompt)} is not text`, { field: 'negativePrompt' });
  }
  const steps = request.steps ?? 25;
  if (!Number.isInteger(steps) || steps < 1)
    throw new GenerationError(`${show(steps)} is not an integer >= 1`, { field: 'steps' });
  const scheduler = request.scheduler ?? 'pndm';
  if (!isSchedulerId(scheduler)) {
    throw new GenerationError(
      `${show(scheduler)} is not a known scheduler; valid schedulers are ${SCHEDULER_IDS.join(', ')}`,
      { field: 'scheduler' },
    );
  }
  const eta = request.eta ?? 0;
  if (typeof eta !== 'number' || !Number.isFinite(eta) || eta < 0)
    throw new GenerationError(`${show(eta)} is not a number >= 0`, { field: 'eta' });
  if (eta !== 0 && scheduler !== 'ddim')
    throw new GenerationError(`${show(eta)} applies to the ddim scheduler only, not ${scheduler}`, { field: 'eta' });
  const guidance = request.guidance ?? 7.5;
  if (typeof guidance !== 'number' || !Number.isFinite(guidance)) {
    throw new GenerationError(`${show(guidance)} is not a number`, { field: 'guidance' });
  }
  const height = request.height ?? geometry?.height ?? 512;
  const width = request.width ?? geometry?.width ?? 512;
  const f = geometry?.vaeScale ?? 1;
  const latentHeight = geometry ? latentSide('height', height, f) : positiveSide('height', height);
  const latentWidth = geometry ? latentSide('width', width, f) : positiveSide('width', width);
  const batchSize = request.batchSize ?? 1;
  if (!Number.isInteger(batchSize) || batchSize < 1) {
    throw new GenerationError(`${show(batchSize)} is not an integer >= 1`, { field: 'batchSize' });
  }
  const concurrency = request.concurrency ?? 1;
  if (!Number.isInteger(concurrency) || concurrency < 1) {
    throw new GenerationError(`${show(concurrency)} is not an integer >= 1`, { field: 'concurrency' });
  }
  const seeds = request.seeds ? request.seeds.map((s) => validateSeed(s)) : null;
  let latents: NormalizedRequest['latents'] = null;
  let count: number;
  if (request.latents) {
    const shape = [...request.latents.shape];
    const expected = [LATENT_CHANNELS, latentHeight, latentWidth];
    const checked = geometry ? expected : [LATENT_CHANNELS];
    if (shape.length !== 4 || checked.some((s, i) => shape[i + 1] !== s) || (shape[0] as number) < 1) {
      throw new GenerationError(
        geometry
          ? `shape [${shape.join(', ')}] does not match [n, ${expected.join(', ')}]: n images of ${height} × ${width} with this model's VAE scale factor ${f} (latent side = image side / ${f})`
          : `shape [${shape.join(', ')}] is not [n, ${LATENT_CHANNELS}, height, width]`,
        { field: 'latents' },
      );
    }
    if (request.latents.data.length !== shape.reduce((a, b) => a * b, 1)) {
      throw new GenerationError(`${request.latents.data.length} values for shape [${shape.join(', ')}]`, {
        field: 'latents',
      });
    }
    count = shape[0] as number;
    if (seeds && seeds.length !== count) {
      throw new GenerationError(`${seeds.length} seeds for ${count} latents; give one per image or none`, {
        field: 'seeds',
      });
    }
    latents = { shape, data: request.latents.data };
  } else {
    if (!seeds || seeds.length === 0)
      throw new GenerationError('give at least one seed (or initial latents)', { field: 'seeds' });
    count = seeds.length;
  }
  return {
    prompt: request.prompt,
    negativePrompt,
    seeds,
    latents,
    count,
    steps,
    scheduler: scheduler as SchedulerId,
    schedulerOverrides: { ...(request.schedulerOverrides ?? {}) },
    eta,
    guidance,
    guided: guidance > 1,
    height,
    width,
    batchSize,
    concurrency,
    textTransform: request.textTransform ?? null,
    returnLatents: request.returnLatents ?? false,
    onProgress: request.onProgress,
  };
}
