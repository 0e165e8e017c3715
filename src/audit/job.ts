/**
 * One call for a whole audit from plain options (what the CLI and the debias job need): open the
 * classifier and, unless auditing a folder of images, the generation pipeline; run or resume the
 * audit into the run folder; release everything.
 */
import { ClipClassifier } from '../classify/clip.js';
import { type Attribute, genderAttribute, validateAttribute } from '../classify/labels.js';
import type { PreprocessMode } from '../classify/preprocess-pil.js';
import { checkWorkBounds } from '../generate/bounds.js';
import { nativeSizeWarning } from '../generate/geometry.js';
import { declaredSampleSize } from '../generate/model-geometry.js';
import { StableDiffusionPipeline } from '../generate/pipeline.js';
import { checkOutsideModel } from '../model/path-guard.js';
import { RenderQueue, type RenderQueueOptions } from '../queue/producer.js';
import type { Device } from '../runtime/ort.js';
import { type NameOf, UsageError } from '../util/errors.js';
import { loadProfessions } from './professions.js';
import { queueSource } from './queue-source.js';
import { type AuditProgress, type AuditResult, auditImageFolder, runAudit } from './run.js';
import { type SeedUse, seedPlan } from './seeds.js';
import { type GenerationSettings, pipelineSource } from './source.js';
import { resolveTemplates } from './templates.js';

export interface AuditJobOptions {
  /** Stable Diffusion ONNX folder (or use `fromImages`). */
  model?: string;
  /** A folder with one sub-folder of images per profession (instead of `model`). */
  fromImages?: string;
  classifier: string;
  /** List name or file; optional with `fromImages` (then the folder names are the professions). */
  professions?: string;
  select?: string[];
  /** Template set names and/or templates (default ['default']). */
  templates?: string[];
  /** Images per prompt. */
  images?: number;
  seedStart?: number;
  seedUse?: SeedUse;
  attribute?: Attribute;
  threshold?: number;
  targetClass?: string;
  targetShare?: number;
  generation?: GenerationSettings;
  device?: Device;
  threads?: number;
  /** Classifier image preprocessing (default 'transformers'). */
  preprocess?: PreprocessMode;
  batchSize?: number;
  keepImages?: boolean;
  sheetImages?: number;
  restart?: boolean;
  out: string;
  bootstrap?: { samples?: number; seed?: number };
  seedGroups?: number;
  onProgress?: (p: AuditProgress) => void;
  /** redis://… of a render queue: images are rendered and classified by `time-debias worker`s (default: in process). */
  queue?: string;
  /** Deadlines and checks of the queue (src/queue/producer.ts). */
  queueOptions?: RenderQueueOptions;
  /** A line for stderr (e.g. an image size that is a fallback guess, not the model's word). */
  onWarning?: (message: string) => void;
  /** How the caller's user names a parameter a warning advises (`height` → `--height`); default its own name. */
  nameOf?: NameOf;
}

export async function runAuditJob(o: AuditJobOptions): Promise<AuditResult> {
  if (o.model && o.fromImages)
    throw new UsageError('give one, not both, of `model` and `fromImages`', {
      field: 'model',
      mentions: ['fromImages'],
    });
  if (!o.model && !o.fromImages)
    throw new UsageError('give one of `model` and `fromImages` (the images to audit come from one of them)', {
      mentions: ['model', 'fromImages'],
    });
  const attribute = o.attribute ? validateAttribute(o.attribute) : genderAttribute();
  // Cheap checks before anything is loaded.
  const professions = o.professions ? loadProfessions(o.professions, { select: o.select }) : undefined;
  if (o.model && !professions)
    throw new UsageError('needed with `model` (e.g. winobias35)', { field: 'professions', mentions: ['model'] });
  const templates = o.model ? resolveTemplates(o.templates ?? ['default']) : [];
  // Every number that sizes memory or time, before anything is planned or loaded.
  const g = o.generation ?? {};
  checkWorkBounds(
    {
      height: g.height,
      width: g.width,
      steps: g.steps,
      batchSize: o.batchSize,
      images: o.model ? (o.images ?? 20) * templates.length * (professions?.professions.length ?? 1) : undefined,
      bootstrap: o.bootstrap?.samples,
    },
    { sampleSize: o.model ? declaredSampleSize(o.model) : null, error: (m, o) => new UsageError(m, o) },
  );
  if (o.model) checkOutsideModel('out', o.out, o.model);
  const seeds = o.model ? seedPlan(o.seedUse ?? 'evaluation', o.images ?? 20, o.seedStart) : undefined;
  const classifier = await ClipClassifier.load(o.classifier, {
    device: o.device,
    threads: o.threads,
    preprocess: o.preprocess,
  });
  try {
    const common = {
      out: o.out,
      classifier,
      attribute,
      threshold: o.threshold,
      targetClass: o.targetClass,
      targetShare: o.targetShare,
      restart: o.restart,
      bootstrap: o.bootstrap,
      seedGroups: o.seedGroups,
      onProgress: o.onProgress,
      batchSize: o.batchSize,
    };
    if (o.fromImages) return await auditImageFolder({ ...common, dir: o.fromImages, professions });
    const plan = {
      professions: professions as NonNullable<typeof professions>,
      templates,
      seeds: seeds as NonNullable<typeof seeds>,
      keepImages: o.keepImages,
      sheetImages: o.sheetImages,
    };
    if (o.queue) {
      const queue = await RenderQueue.connect(o.queue, o.queueOptions);
      try {
        const source = await queueSource({
          queue,
          modelDir: o.model as string,
          classifier,
          generation: o.generation,
          device: o.device ?? 'cpu',
        });
        return await runAudit({ ...common, ...plan, source });
      } finally {
        await queue.close();
      }
    }
    const pipeline = await StableDiffusionPipeline.create(o.model as string, { device: o.device, threads: o.threads });
    try {
      const source = pipelineSource(pipeline, o.generation, o.device ?? 'cpu');
      if (o.generation?.height === undefined || o.generation?.width === undefined) {
        const warning = nativeSizeWarning(pipeline.nativeSize, o.nameOf);
        if (warning) o.onWarning?.(warning);
      }
      return await runAudit({ ...common, ...plan, source });
    } finally {
      await pipeline.dispose();
    }
  } finally {
    await classifier.dispose();
  }
}
