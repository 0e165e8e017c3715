/**
 * The evaluate job: resolve the inputs ("demo" names the embedded demo world's model, classifier or
 * TIMED file), open the model and the classifier once, run the evaluation (run.ts), write the
 * reports, dispose. Returns the plain result and the files written; the CLI only renders.
 *
 * With `queue` (redis://…) the images are rendered and classified by `time-debias worker`s
 * (src/audit/queue-source.ts: tasks name the model and classifier by digest, each row's edit M by
 * the digest of its bytes); the coordinator opens only the model's tokenizer and text encoder (the
 * edits' rows), not its UNet or VAE. In process, the pipeline renders (src/audit/pipeline-renderer.ts,
 * the code the workers run).
 */
import { readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { pipelineRenderer } from '../audit/pipeline-renderer.js';
import { queueSource } from '../audit/queue-source.js';
import type { RenderService } from '../audit/run.js';
import { ClipClassifier } from '../classify/clip.js';
import { checkWorkBounds } from '../generate/bounds.js';
import type { NativeSize } from '../generate/geometry.js';
import { nativeSizeWarning } from '../generate/geometry.js';
import { declaredSampleSize, readModelGeometry } from '../generate/model-geometry.js';
import { StableDiffusionPipeline } from '../generate/pipeline.js';
import { openSdModel, type SdModel } from '../model/folder.js';
import { checkOutsideModel } from '../model/path-guard.js';
import { parseQueueUrl } from '../queue/connection.js';
import { RenderQueue, type RenderQueueOptions } from '../queue/producer.js';
import { writeEvaluateReports } from '../report/evaluate.js';
import { validateDevice, validateThreads } from '../runtime/ort.js';
import { ClipTextEncoder, encodePrompts } from '../text/encoder.js';
import { ClipTokenizer } from '../text/tokenizer.js';
import { type NameOf, show, UsageError } from '../util/errors.js';
import { type EvaluateMode, type EvaluateProgress, type EvaluateResult, fileDigest, runEvaluate } from './run.js';
import { parseRowSpec, parseTimed } from './timed.js';

/** The demo TIMED file (three designed colour assumptions of the demo world). */
export const DEMO_TIMED_FILE = join(dirname(fileURLToPath(import.meta.url)), '..', 'demo', 'timed-demo.csv');

/** Generation defaults of the demo world (what its design is calibrated for, at the demo's 8 steps). */
export const DEMO_EVALUATE_GENERATION = Object.freeze({
  steps: 8,
  scheduler: 'pndm',
  guidance: 7.5,
  height: 64,
  width: 64,
  batchSize: 32,
});

export interface EvaluateJobOptions {
  /** TIMED CSV file, or "demo". */
  dataset: string;
  /** Model folder, or "demo". */
  model: string;
  /** CLIP folder, or "demo". */
  classifier: string;
  out: string;
  /** Row selection ("all", "0-4,7"). */
  rows?: string;
  images: number;
  seedStart?: number;
  mode: EvaluateMode;
  lambdas: readonly number[];
  augment: boolean;
  generation: {
    steps?: number;
    scheduler?: string;
    guidance?: number;
    height?: number;
    width?: number;
    negativePrompt?: string;
    batchSize?: number;
  };
  device?: string;
  threads?: number;
  sheetImages?: number;
  restart?: boolean;
  bootstrap?: { samples?: number; seed?: number };
  onProgress?: (p: EvaluateProgress) => void;
  log?: (line: string) => void;
  /** How the caller's user names a parameter a log line advises (`height` → `--height`); default its own name. */
  nameOf?: NameOf;
  /** redis://… of a render queue: images are rendered and classified by `time-debias worker`s (default: in process). */
  queue?: string;
  /** Deadlines and checks of the queue (src/queue/producer.ts). */
  queueOptions?: RenderQueueOptions;
}

export interface EvaluateJobResult {
  result: EvaluateResult;
  out: string;
  reports: string[];
  /** Wall time of the job, seconds (not in evaluate.json, which has no timings). */
  seconds: number;
  /** Whether the demo world was built by this call (false: from the cache or not used). */
  demoBuilt: boolean;
}

export async function runEvaluateJob(o: EvaluateJobOptions): Promise<EvaluateJobResult> {
  const t0 = performance.now();
  const device = validateDevice(o.device ?? 'cpu');
  validateThreads(o.threads);
  if (o.queue !== undefined) parseQueueUrl(o.queue);
  const usesDemo = o.model === 'demo' || o.classifier === 'demo';
  let demoBuilt = false;
  let modelDir = o.model;
  let classifierDir = o.classifier;
  if (usesDemo) {
    const { ensureDemoWorld } = await import('../demo/world.js');
    const world = ensureDemoWorld();
    demoBuilt = world.built;
    if (o.model === 'demo') modelDir = world.modelDir;
    if (o.classifier === 'demo') classifierDir = world.classifierDir;
  }
  // The run folder never goes into the model (the source is only ever read).
  checkOutsideModel('out', o.out, modelDir);
  const file = o.dataset === 'demo' ? DEMO_TIMED_FILE : resolve(o.dataset);
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (cause) {
    throw new UsageError(`cannot read ${show(o.dataset)} (${(cause as Error).message})`, { cause, field: 'dataset' });
  }
  const dataset = parseTimed(text, o.dataset === 'demo' ? 'demo (src/demo/timed-demo.csv)' : o.dataset);
  const rows = o.rows === undefined ? undefined : parseRowSpec(o.rows, dataset.rowCount);
  const demoGen = o.model === 'demo' ? DEMO_EVALUATE_GENERATION : undefined;
  const batchSize = o.generation.batchSize ?? demoGen?.batchSize ?? 4;
  if (!Number.isInteger(batchSize) || batchSize < 1)
    throw new UsageError(`${show(batchSize)} must be an integer ≥ 1`, { field: 'batchSize' });
  // Every number that sizes memory or time, before anything is loaded: images in all are
  // (baseline + each λ) × rows × 11 prompts × images.
  checkWorkBounds(
    {
      height: o.generation.height,
      width: o.generation.width,
      steps: o.generation.steps,
      batchSize,
      images: Number.isInteger(o.images)
        ? (1 + o.lambdas.length) * (rows?.length ?? dataset.rowCount) * 11 * o.images
        : o.images,
      bootstrap: o.bootstrap?.samples,
    },
    { sampleSize: declaredSampleSize(modelDir), error: (m, opts) => new UsageError(m, opts) },
  );

  const sessionOptions = { device, threads: o.threads || undefined };
  // What is open, closed in reverse order whatever happens.
  const opened: { dispose(): Promise<void> }[] = [];
  const closeAll = async () => {
    for (const x of opened.reverse()) await x.dispose();
  };
  try {
    const queue = o.queue ? await RenderQueue.connect(o.queue, { log: o.log, ...o.queueOptions }) : undefined;
    if (queue) opened.push({ dispose: () => queue.close() });
    // In process: the whole pipeline. With a queue the coordinator renders nothing: it needs only the
    // tokenizer and the text encoder (the edits' rows) and the model's geometry (the default size).
    let pipeline: StableDiffusionPipeline | undefined;
    let model: SdModel;
    let tokenizer: ClipTokenizer;
    let textEncoder: ClipTextEncoder;
    let nativeSize: NativeSize;
    if (queue) {
      model = openSdModel(modelDir);
      tokenizer = await ClipTokenizer.fromFolder(model.components.tokenizer);
      textEncoder = await ClipTextEncoder.create(model.files.textEncoder, sessionOptions);
      opened.push(textEncoder);
      nativeSize = (await readModelGeometry(model, sessionOptions)).nativeSize;
    } else {
      pipeline = await StableDiffusionPipeline.create(modelDir, sessionOptions);
      opened.push(pipeline);
      ({ model, tokenizer, textEncoder, nativeSize } = pipeline);
    }
    if (!demoGen && (o.generation.height === undefined || o.generation.width === undefined)) {
      const warning = nativeSizeWarning(nativeSize, o.nameOf);
      if (warning) o.log?.(`warning: ${warning}`);
    }
    const classifier = await ClipClassifier.load(classifierDir, sessionOptions);
    opened.push(classifier);
    const generation = {
      steps: o.generation.steps ?? demoGen?.steps ?? 25,
      scheduler: o.generation.scheduler ?? demoGen?.scheduler ?? 'pndm',
      guidance: o.generation.guidance ?? demoGen?.guidance ?? 7.5,
      height: o.generation.height ?? demoGen?.height ?? nativeSize.height,
      width: o.generation.width ?? demoGen?.width ?? nativeSize.width,
      negativePrompt: o.generation.negativePrompt ?? '',
      batchSize,
    };
    const renderer: RenderService = queue
      ? await queueSource({ queue, modelDir: model.dir, model, classifier, generation, device })
      : pipelineRenderer(pipeline as StableDiffusionPipeline, classifier, generation, device);
    const result = await runEvaluate({
      out: o.out,
      dataset,
      datasetDigest: fileDigest(file),
      rows,
      world: {
        modelDir: model.dir,
        tokenizer,
        classifier,
        encode: async (prompts) => encodePrompts(tokenizer, textEncoder, prompts),
        renderer,
      },
      images: o.images,
      seedStart: o.seedStart,
      mode: o.mode,
      lambdas: o.lambdas,
      augment: o.augment,
      generation,
      device,
      sheetImages: o.sheetImages,
      restart: o.restart,
      bootstrap: o.bootstrap,
      onProgress: o.onProgress,
      log: o.log,
    });
    const reports = writeEvaluateReports(o.out, result);
    return { result, out: o.out, reports, seconds: (performance.now() - t0) / 1000, demoBuilt };
  } finally {
    await closeAll();
  }
}
