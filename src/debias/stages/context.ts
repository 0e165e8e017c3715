/**
 * What the tuning stages work with, built once by the job: the pairs, the rows and their solver, an
 * evaluator that renders and classifies images of one profession under a text transform, the state
 * and its save. Tests hand the stages a small fake of this (a solver and an evaluator of their own).
 */
import type { Profession } from '../../audit/professions.js';
import { queueSource } from '../../audit/queue-source.js';
import type { ImageSource, RenderService } from '../../audit/run.js';
import { type GenerationSettings, pipelineSource } from '../../audit/source.js';
import type { ClipClassifier } from '../../classify/clip.js';
import type { Attribute } from '../../classify/labels.js';
import type { RowSet } from '../../edit/rows.js';
import { textSideEdit } from '../../edit/text-transform.js';
import type { StableDiffusionPipeline } from '../../generate/pipeline.js';
import type { RenderQueue } from '../../queue/producer.js';
import type { JobConfig } from '../config.js';
import { type ProfessionPair, tuningPrompt } from '../prompts.js';
import type { Solver } from '../rows.js';
import type { JobState, JobWorld } from '../types.js';

/** Generate and classify: per seed-pool index, whether the image is in the class `dest`. */
export type Evaluator = (
  profession: Profession,
  M: Float32Array,
  seedStart: number,
  indices: readonly number[],
  dest: string,
) => Promise<boolean[]>;

export interface StageContext {
  config: JobConfig;
  state: JobState;
  pairs: ProfessionPair[];
  professions: Map<string, Profession>;
  solveFor: Solver;
  evaluate: Evaluator;
  /** the row set of every pair (pair order) and the preservation prompts */
  rows: RowSet;
  /** per pair row of `rows`: the other class's destination row (interference.ts eq. I1'), when compensating */
  opposite: Float32Array | undefined;
  /** share of the config's target class per profession at baseline */
  baseline: ReadonlyMap<string, number | null>;
  save: () => void;
  log: (line: string) => void;
}

/**
 * The audit's image source for a model folder: in process on `pipeline`, or on the queue's workers
 * (the same generate + classify code) when the world has a queue.
 */
export async function auditSource(
  world: Pick<JobWorld, 'queue' | 'classifier' | 'model'>,
  pipeline: StableDiffusionPipeline,
  settings: GenerationSettings,
  device: string,
): Promise<ImageSource | RenderService> {
  if (!world.queue) return pipelineSource(pipeline, settings, device);
  return queueSource({
    queue: world.queue,
    modelDir: pipeline.model.dir,
    model: pipeline.model,
    classifier: world.classifier,
    generation: settings,
    device,
  });
}

/** The evaluator on the real pipeline and classifier: the tuning prompts, images grouped by prompt. */
export function pipelineEvaluator(
  config: JobConfig,
  world: { pipeline: StableDiffusionPipeline; classifier: ClipClassifier } & Pick<JobWorld, 'queue' | 'model'>,
  attribute: Attribute,
): Evaluator {
  const gen = config.generation;
  if (world.queue) return queueEvaluator(config, { ...world, queue: world.queue }, attribute);
  return async (profession, M, seedStart, indices, dest) => {
    const byPrompt = new Map<string, number[]>();
    for (const i of indices) {
      const prompt = tuningPrompt(config, profession, i);
      byPrompt.set(prompt, [...(byPrompt.get(prompt) ?? []), i]);
    }
    const outcome = new Map<number, boolean>();
    for (const [prompt, idx] of byPrompt) {
      const result = await world.pipeline.generate({
        prompt,
        negativePrompt: gen.negativePrompt,
        seeds: idx.map((i) => seedStart + i),
        steps: gen.steps,
        scheduler: gen.scheduler,
        guidance: gen.guidance,
        height: gen.height,
        width: gen.width,
        batchSize: Math.max(gen.batchSize, idx.length),
        textTransform: textSideEdit(M),
      });
      const images = result.images.map((img) => ({ width: img.width, height: img.height, data: img.rgb }));
      const labels = await world.classifier.classify(images, attribute, {
        profession: profession.profession,
        threshold: config.attribute.threshold,
      });
      labels.forEach((l, j) => {
        outcome.set(idx[j] as number, l.kind === 'label' && l.label === dest);
      });
    }
    return indices.map((i) => outcome.get(i) as boolean);
  };
}

/**
 * The evaluator on the queue: one task per tuning prompt (the same seeds per prompt as in process),
 * M sent by digest; workers render with base + M and classify.
 */
function queueEvaluator(
  config: JobConfig,
  world: { pipeline: StableDiffusionPipeline; classifier: ClipClassifier; queue: RenderQueue } & Pick<
    JobWorld,
    'model'
  >,
  attribute: Attribute,
): Evaluator {
  return async (profession, M, seedStart, indices, dest) => {
    const byPrompt = new Map<string, number[]>();
    for (const i of indices) {
      const prompt = tuningPrompt(config, profession, i);
      byPrompt.set(prompt, [...(byPrompt.get(prompt) ?? []), i]);
    }
    const source = await queueSource({
      queue: world.queue,
      modelDir: world.pipeline.model.dir,
      model: world.pipeline.model,
      classifier: world.classifier,
      generation: { ...config.generation, textTransform: M },
      device: config.device,
    });
    const groups = [...byPrompt.entries()];
    const outcome = new Map<number, boolean>();
    await source.render(
      groups.map(([prompt, idx]) => ({
        profession: profession.profession,
        prompt,
        seeds: idx.map((i) => seedStart + i),
        keep: idx.map(() => false),
        attribute,
        threshold: config.attribute.threshold ?? null,
      })),
      (g, images) => {
        const idx = (groups[g] as [string, number[]])[1];
        images.forEach((img, j) => {
          const l = img.classification;
          outcome.set(idx[j] as number, l.kind === 'label' && l.label === dest);
        });
      },
    );
    return indices.map((i) => outcome.get(i) as boolean);
  };
}

export function progressLogger(log: (line: string) => void, name: string) {
  let last = -1;
  return (p: { done: number; total: number }) => {
    const pct = Math.floor((100 * p.done) / Math.max(1, p.total));
    if (pct >= last + 10 || p.done === p.total) {
      last = pct;
      log(`${name}: ${p.done}/${p.total} images`);
    }
  };
}

/** Numbers in log lines: three decimals. */
export function fmt(x: number): string {
  return Number.isFinite(x) ? x.toFixed(3) : String(x);
}
