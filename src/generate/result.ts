/**
 * What a generation returns (diffusers' pipeline_output.py): the images with the parameters each was
 * made with, how the size was decided, warnings and timings. Plain data, JSON-serializable except
 * the pixel and latent arrays.
 */

import type { NativeSize, VaeScale } from './geometry.js';
import type { SchedulerId } from './schedulers/index.js';

/** Generation parameters of one image (embedded in its PNG and the run's JSON sidecar). */
export interface ImageRecord {
  index: number;
  /** The image's seed (its latents and scheduler noise), or null when latents were given without seeds. */
  seed: number | null;
  latentsSource: 'seed' | 'given';
  prompt: string;
  negativePrompt: string;
  steps: number;
  scheduler: SchedulerId;
  guidance: number;
  eta: number;
  width: number;
  height: number;
  model: ModelIdentity;
  /** The in-memory edit active for this image, if any. */
  edit: EditIdentity | null;
  promptTruncated: boolean;
}

export interface ModelIdentity {
  name: string;
  dir: string;
  format: string;
  precision: string;
  d: number;
}

/** The in-memory edit of an image: a text-side transform (edit/text-transform.ts), by its sha256. */
export type EditIdentity = { kind: 'text-transform'; sha256: string };

export interface GeneratedImage {
  width: number;
  height: number;
  /** RGB, 8 bits per channel, row-major HWC. */
  rgb: Uint8Array;
  record: ImageRecord;
  /** [4 · h/f · w/f] final latents (f: the VAE scale factor), when asked for. */
  latents?: Float32Array;
}

export interface GenerateTiming {
  /** Whole call, ms. */
  totalMs: number;
  textMs: number;
  /** Time inside UNet session runs, ms. */
  unetMs: number;
  unetCalls: number;
  /** Denoising loop time (UNet + guidance + scheduler + tensor handling), ms. */
  loopMs: number;
  decodeMs: number;
}

export interface GenerateResult {
  kind: 'generation';
  images: GeneratedImage[];
  /**
   * How the size was decided: 'given' (height and width in the request), else the model's native
   * size's source (geometry.ts); and the VAE scale factor with its source.
   */
  size: { height: number; width: number; decidedBy: 'given' | NativeSize['source']; detail: string };
  vaeScale: VaeScale;
  warnings: string[];
  timing: GenerateTiming;
}
