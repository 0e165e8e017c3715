/**
 * The audit's image source on top of the generation pipeline (src/generate/pipeline.ts): one
 * `generate(prompt, seeds)` call per chunk, with the generation settings fixed for the whole run.
 * Its `identity` (model folder digest, edit, generation settings, device) goes into the run
 * fingerprint: results of a run folder are only reused under the same identity.
 */
import { createHash } from 'node:crypto';
import type { RgbImage } from '../classify/clip.js';
import { textSideEdit } from '../edit/text-transform.js';
import type { StableDiffusionPipeline } from '../generate/pipeline.js';
import type { TaskGeneration } from '../queue/task.js';
import type { ImageSource } from './run.js';
import { folderDigest } from './store.js';

export interface GenerationSettings {
  /** Height and width default to the model's native size (pipeline.nativeSize). */
  steps?: number;
  scheduler?: string;
  guidance?: number;
  height?: number;
  width?: number;
  negativePrompt?: string;
  /** M (d × d): an in-memory all-site TIME edit, as the pipeline takes it. */
  textTransform?: Float32Array;
  /** Images per UNet batch (does not change the images; not fingerprinted). */
  batchSize?: number;
}

/** Counts of what the source did (for tests and benchmarks). */
export interface SourceCounters {
  calls: number;
  images: number;
}

/** The generation settings an audit fixes for a whole run (defaults filled in): a task's (queue/task.ts). */
export type FixedGeneration = TaskGeneration;

/**
 * The settings an audit's images are rendered with, and the identity that goes into the run
 * fingerprint — one definition for the in-process source below and the queue's (queue-source.ts),
 * so a run folder can be resumed by either.
 */
export function generatorIdentity(
  model: { dir: string; digest: string },
  geometry: Pick<StableDiffusionPipeline, 'nativeSize' | 'vaeScale'>,
  settings: GenerationSettings,
  device: string,
): { fixed: FixedGeneration; identity: Record<string, unknown> } {
  const given = settings.height !== undefined && settings.width !== undefined;
  const fixed: FixedGeneration = {
    steps: settings.steps ?? 25,
    scheduler: settings.scheduler ?? 'pndm',
    guidance: settings.guidance ?? 7.5,
    height: settings.height ?? geometry.nativeSize.height,
    width: settings.width ?? geometry.nativeSize.width,
    negativePrompt: settings.negativePrompt ?? '',
  };
  const identity: Record<string, unknown> = {
    kind: 'generator',
    model: { path: model.dir, digest: model.digest },
    // The pipeline no longer swaps UNet sessions (only a text-side edit is in memory); the key stays,
    // always null, so that run folders made before keep their fingerprint and resume.
    unetEdit: null,
    textTransform: settings.textTransform ? hashFloats(settings.textTransform) : null,
    ...fixed,
    // how the size was decided: 'given', or the model's native size's source (src/generate/geometry.ts)
    sizeFrom: given ? 'given' : geometry.nativeSize.source,
    vaeScale: geometry.vaeScale.factor,
    device,
  };
  return { fixed, identity };
}

export function pipelineSource(
  pipeline: StableDiffusionPipeline,
  settings: GenerationSettings = {},
  device: string = 'cpu',
): ImageSource & { counters: SourceCounters } {
  const { fixed, identity } = generatorIdentity(
    { dir: pipeline.model.dir, digest: folderDigest(pipeline.model.dir) },
    pipeline,
    settings,
    device,
  );
  const counters: SourceCounters = { calls: 0, images: 0 };
  const textTransform = settings.textTransform ? textSideEdit(settings.textTransform) : undefined;
  return {
    kind: 'generator',
    identity,
    counters,
    async generate(prompt: string, seeds: readonly number[]): Promise<RgbImage[]> {
      const result = await pipeline.generate({
        prompt,
        seeds,
        ...fixed,
        batchSize: settings.batchSize ?? seeds.length,
        textTransform,
      });
      counters.calls++;
      counters.images += result.images.length;
      return result.images.map((img) => ({ width: img.width, height: img.height, data: img.rgb }));
    },
  };
}

function hashFloats(x: Float32Array): string {
  return createHash('sha256')
    .update(new Uint8Array(x.buffer, x.byteOffset, x.byteLength))
    .digest('hex');
}
