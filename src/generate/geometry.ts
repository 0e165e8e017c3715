/**
 * The image geometry a model folder implies, decided once when a pipeline opens (never a constant):
 *
 *   VAE scale factor f   the latent is f× smaller than the image on each side.
 *     1. the VAE's config.json: f = 2^(len(block_out_channels) − 1)    (diffusers' vae_scale_factor)
 *     2. else measured: decode one small latent [1, 4, h, w] and divide the image's sides by h, w
 *        (remembered per VAE graph digest, so a process measures a model once)
 *
 *   native size H × W     what the model was trained for, the default of every rendering command
 *     1. unet/config.json sample_size × f                              (Optimum and diffusers folders)
 *     2. model_index.json "_time_debias": {"native_size": [H, W]}       (this project's metadata: the demo model)
 *     3. a fixed spatial size of the UNet graph's `sample` input × f
 *     4. fallback, said as a warning: SD 2.x-768 (text width 1024, v-prediction) → 768 × 768,
 *        anything else (SD 1.x, SD 2.x base) → 512 × 512
 */
import { GenerationError, libraryName, ModelFormatError, type NameOf, show } from '../util/errors.js';

export interface VaeScale {
  factor: number;
  source: 'vae-config' | 'decode-probe';
  /** How it was decided, in words (for settings, messages, inspect). */
  detail: string;
}

export interface NativeSize {
  height: number;
  width: number;
  source: 'unet-config' | 'model-index' | 'unet-graph' | 'fallback';
  detail: string;
}

/** f from a VAE config.json object, or null when it does not say (no block_out_channels list). */
export function vaeScaleFromConfig(config: Record<string, unknown> | null, where: string): VaeScale | null {
  const blocks = config?.block_out_channels;
  if (blocks === undefined) return null;
  if (!Array.isArray(blocks) || blocks.length < 1) {
    throw new ModelFormatError(`${where}: block_out_channels ${show(blocks)} must be a non-empty list`);
  }
  return {
    factor: 2 ** (blocks.length - 1),
    source: 'vae-config',
    detail: `${where} block_out_channels has ${blocks.length} entries: 2^${blocks.length - 1}`,
  };
}

const measured = new Map<string, number>();

/**
 * f measured: `decode(h, w)` decodes a zero latent [1, 4, h, w] and returns the image's sides. The
 * result is remembered under `digest` (the VAE graph's sha256). Both sides must agree and be a power of 2.
 */
export async function probeVaeScale(
  digest: string,
  where: string,
  decode: (h: number, w: number) => Promise<{ height: number; width: number }>,
): Promise<VaeScale> {
  const known = measured.get(digest);
  const detail = (f: number) =>
    `measured: a [1, 4, 4, 6] latent decodes to ${4 * f} × ${6 * f} (${where} has no config.json with block_out_channels)`;
  if (known !== undefined) return { factor: known, source: 'decode-probe', detail: detail(known) };
  const h = 4;
  const w = 6;
  const out = await decode(h, w);
  const fy = out.height / h;
  const fx = out.width / w;
  if (fy !== fx || !Number.isInteger(fy) || fy < 1 || (fy & (fy - 1)) !== 0) {
    throw new ModelFormatError(
      `${where}: a [1, 4, ${h}, ${w}] latent decodes to ${out.height} × ${out.width}, not the same power-of-2 scale on both sides; cannot tell the VAE's scale factor`,
    );
  }
  measured.set(digest, fy);
  return { factor: fy, source: 'decode-probe', detail: detail(fy) };
}

function sizePair(value: unknown, where: string): [number, number] | null {
  if (value === undefined || value === null) return null;
  const pair = typeof value === 'number' ? [value, value] : value;
  if (!Array.isArray(pair) || pair.length !== 2 || !pair.every((v) => Number.isInteger(v) && (v as number) >= 1)) {
    throw new ModelFormatError(`${where}: ${show(value)} must be a positive integer or [height, width]`);
  }
  return pair as [number, number];
}

export interface NativeSizeInput {
  /** unet/config.json (null when absent) */
  unetConfig: Record<string, unknown> | null;
  /** model_index.json (null when absent) */
  modelIndex: Record<string, unknown> | null;
  /** The UNet graph's `sample` input shape (numbers where fixed). */
  unetSampleShape: readonly (number | string | null)[] | undefined;
  vaeScale: VaeScale;
  /** Text width d (768 for SD 1.x, 1024 for SD 2.x). */
  textWidth: number;
  /** The scheduler config's prediction_type. */
  predictionType: string | undefined;
}

/** The native size, by the rules of the module header. */
export function decideNativeSize(input: NativeSizeInput): NativeSize {
  const f = input.vaeScale.factor;
  const fromUnet = sizePair(input.unetConfig?.sample_size, 'unet/config.json sample_size');
  if (fromUnet) {
    return {
      height: fromUnet[0] * f,
      width: fromUnet[1] * f,
      source: 'unet-config',
      detail: `unet/config.json sample_size ${fromUnet.join(' × ')} × VAE scale ${f}`,
    };
  }
  const meta = input.modelIndex?._time_debias as Record<string, unknown> | undefined;
  const fromIndex = sizePair(meta?.native_size, 'model_index.json _time_debias.native_size');
  if (fromIndex) {
    return {
      height: fromIndex[0],
      width: fromIndex[1],
      source: 'model-index',
      detail: `model_index.json _time_debias.native_size ${fromIndex.join(' × ')}`,
    };
  }
  const shape = input.unetSampleShape;
  if (shape && typeof shape[2] === 'number' && typeof shape[3] === 'number') {
    return {
      height: shape[2] * f,
      width: shape[3] * f,
      source: 'unet-graph',
      detail: `the UNet graph's fixed sample size ${shape[2]} × ${shape[3]} × VAE scale ${f}`,
    };
  }
  const sd2v = input.textWidth === 1024 && input.predictionType === 'v_prediction';
  const side = sd2v ? 768 : 512;
  return {
    height: side,
    width: side,
    source: 'fallback',
    detail: sd2v
      ? 'fallback: no unet/config.json sample_size, no declared or fixed size; text width 1024 with v-prediction is SD 2.x-768'
      : `fallback: no unet/config.json sample_size, no declared or fixed size; SD 1.x (and SD 2.x base) render at 512 (text width ${input.textWidth})`,
  };
}

/**
 * The stderr line of a fallback size (null when the model said its size); `nameOf` names the height
 * and width parameters as the caller's user knows them (`--height` on the command line).
 */
export function nativeSizeWarning(size: NativeSize, nameOf: NameOf = libraryName): string | null {
  if (size.source !== 'fallback') return null;
  return `image size ${size.height} × ${size.width} is a guess (${size.detail}); set ${nameOf('height')} and ${nameOf('width')} if the model was made for another size`;
}

/**
 * The latent shape of an image: [4, H/f, W/f]. H and W must be multiples of f (the VAE decodes
 * f × f pixel blocks).
 */
export function latentSide(field: 'height' | 'width', pixels: number, f: number): number {
  if (!Number.isInteger(pixels) || pixels < f || pixels % f !== 0) {
    throw new GenerationError(
      `${show(pixels)} is not a positive multiple of ${f} (this model's VAE scale factor: it decodes ${f} × ${f} pixel blocks)`,
      { field },
    );
  }
  return pixels / f;
}
