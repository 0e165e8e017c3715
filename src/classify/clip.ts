/**
 * Zero-shot CLIP classification through @huggingface/transformers, strictly from a local folder in
 * the transformers.js layout (mission.md §3): `config.json`, `preprocessor_config.json`,
 * `tokenizer.json`, `tokenizer_config.json` and either `onnx/model.onnx` (joint CLIPModel) or
 * `onnx/text_model.onnx` + `onnx/vision_model.onnx` (split CLIPTextModelWithProjection /
 * CLIPVisionModelWithProjection).
 *
 * transformers.js runs onnxruntime-node itself (its own backend): the accepted exception to the
 * one-runtime-module rule. Device and threads are passed through its options.
 *
 * Per image (src/classify/math.ts for the notation):
 *   z_c = s · v̂·ĉ_c,  p = softmax(z),  label = argmax p,  "unclear" when max p < threshold (if set).
 * Class embeddings ĉ_c are prompt ensembles averaged in embedding space and renormalised. The logit
 * scale s is read off the joint model's own logits (logits_per_image = s · cos); for split models it
 * is `options.logitScale`, else config.json's `time_debias.logit_scale`, else 100 (trained CLIP).
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { cudaAvailable, validateDevice, validateThreads } from '../runtime/ort.js';
import {
  AutoImageProcessor,
  AutoTokenizer,
  CLIPModel,
  CLIPTextModelWithProjection,
  CLIPVisionModelWithProjection,
  type ImageProcessor,
  isLocalOnly,
  type PreTrainedModel,
  type PreTrainedTokenizer,
  RawImage,
  Tensor,
} from '../runtime/transformers.js';
import { ClassifierError, show, UsageError } from '../util/errors.js';
import { type Attribute, resolvePrompts, validateAttribute } from './labels.js';
import { argmax, dot, ensemble, normalize, softmax } from './math.js';
import {
  type ClipImageProcessorConfig,
  type PreprocessMode,
  pilPreprocess,
  readImageProcessorConfig,
  validatePreprocess,
} from './preprocess-pil.js';

/** An RGB image, 8 bits per channel, height × width × 3 (row-major HWC), as the generator makes them. */
export interface RgbImage {
  width: number;
  height: number;
  data: Uint8Array | Uint8ClampedArray;
}

/** An image in memory, or the path of an image file (PNG, JPEG, ...). */
export type ImageInput = RgbImage | string;

export interface ClassifierOptions {
  /** 'cpu' (default) or 'cuda'. */
  device?: 'cpu' | 'cuda';
  /** onnxruntime intra-op threads; 0/undefined lets onnxruntime decide. */
  threads?: number;
  /** Images per model run (default 16). */
  batchSize?: number;
  /** Override the logit scale s = exp(logit_scale). */
  logitScale?: number;
  /**
   * Image preprocessing: 'transformers' (default; transformers.js' processor, sharp's resize) or
   * 'pil' (PIL's antialiased resize, as the references preprocess; src/classify/preprocess-pil.ts).
   */
  preprocess?: PreprocessMode;
}

export interface ClassifyOptions {
  /** Replaces "{profession}" in label prompts. */
  profession?: string;
  /** Top probability below this → kind 'unclear'. Off (undefined) by default, as in the references. */
  threshold?: number;
}

/** One image's result. `label` is the argmax class in both variants. */
export type ImageClassification =
  | { kind: 'label'; label: string; probabilities: Record<string, number> }
  | { kind: 'unclear'; label: string; probabilities: Record<string, number>; threshold: number };

export interface ClassifierFolder {
  kind: 'clip-folder';
  dir: string;
  variant: 'joint' | 'split';
  modelType: string;
}

const COMMON_FILES = ['config.json', 'preprocessor_config.json', 'tokenizer.json', 'tokenizer_config.json'] as const;
const JOINT_FILES = ['onnx/model.onnx'] as const;
const SPLIT_FILES = ['onnx/text_model.onnx', 'onnx/vision_model.onnx'] as const;
const LAYOUT =
  'a transformers.js CLIP folder holds config.json, preprocessor_config.json, tokenizer.json, tokenizer_config.json and ' +
  'onnx/model.onnx (or onnx/text_model.onnx + onnx/vision_model.onnx)';

/**
 * Check a classifier folder before anything is loaded: a local directory (not a URL or hub id) with
 * every file of the layout. All missing files are named at once.
 */
export function inspectClassifierFolder(dir: string): ClassifierFolder {
  if (typeof dir !== 'string' || dir.trim() === '')
    throw new ClassifierError(`${show(dir)} must be a folder path`, { field: 'classifierDir' });
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(dir)) {
    throw new ClassifierError(
      `${show(dir)} is a URL; the classifier is loaded only from a local folder (remote models are disabled, nothing is downloaded)`,
      { field: 'classifierDir' },
    );
  }
  const abs = resolve(dir);
  if (!existsSync(abs)) {
    throw new ClassifierError(
      `${show(dir)} does not exist; it must be a local folder (remote model ids are not downloaded); ${LAYOUT}`,
      { field: 'classifierDir' },
    );
  }
  if (!statSync(abs).isDirectory()) {
    throw new ClassifierError(`${show(dir)} is not a folder; ${LAYOUT}`, { field: 'classifierDir' });
  }
  const has = (f: string) => existsSync(join(abs, f));
  const joint = JOINT_FILES.every(has);
  const split = SPLIT_FILES.every(has);
  const missing: string[] = COMMON_FILES.filter((f) => !has(f));
  if (!joint && !split) {
    const partial = SPLIT_FILES.some(has);
    missing.push(...(partial ? SPLIT_FILES.filter((f) => !has(f)) : JOINT_FILES));
  }
  if (missing.length) {
    throw new ClassifierError(`${show(dir)}: missing ${missing.join(', ')}; ${LAYOUT}`, { field: 'classifierDir' });
  }
  let config: { model_type?: unknown };
  try {
    config = JSON.parse(readFileSync(join(abs, 'config.json'), 'utf8'));
  } catch (cause) {
    throw new ClassifierError(`${show(dir)}: config.json is not valid JSON (${(cause as Error).message})`, {
      cause,
      field: 'classifierDir',
    });
  }
  if (config.model_type !== 'clip') {
    throw new ClassifierError(
      `${show(dir)}: config.json model_type is ${show(config.model_type)}; a CLIP model ("clip") is required`,
      { field: 'classifierDir' },
    );
  }
  return { kind: 'clip-folder', dir: abs, variant: joint ? 'joint' : 'split', modelType: 'clip' };
}

interface OrtSessionLike {
  inputNames: string[];
  outputNames: string[];
}

function sessionOf(model: PreTrainedModel): OrtSessionLike {
  return (model as unknown as { sessions: Record<string, OrtSessionLike> }).sessions.model as OrtSessionLike;
}

function requireIo(model: PreTrainedModel, file: string, inputs: string[], outputs: string[], dir: string): void {
  const s = sessionOf(model);
  const missingIn = inputs.filter((n) => !s.inputNames.includes(n));
  const missingOut = outputs.filter((n) => !s.outputNames.includes(n));
  if (missingIn.length || missingOut.length) {
    const parts = [];
    if (missingIn.length) parts.push(`inputs ${missingIn.join(', ')} (it has ${s.inputNames.join(', ') || 'none'})`);
    if (missingOut.length)
      parts.push(`outputs ${missingOut.join(', ')} (it has ${s.outputNames.join(', ') || 'none'})`);
    throw new ClassifierError(`${show(dir)}: ${file} lacks the ${parts.join(' and the ')} a CLIP classifier needs`, {
      field: 'classifierDir',
    });
  }
}

function rows(t: Tensor): Float32Array[] {
  const [n, d] = t.dims as [number, number];
  const data = t.data as Float32Array;
  return Array.from({ length: n }, (_, i) => data.slice(i * d, (i + 1) * d));
}

function validatePositive(field: string, value: number | undefined, integer: boolean): void {
  if (value === undefined) return;
  if (!Number.isFinite(value) || value <= 0 || (integer && !Number.isInteger(value))) {
    throw new ClassifierError(`${show(value)} must be a positive ${integer ? 'integer' : 'number'}`, { field });
  }
}

export class ClipClassifier {
  private readonly textCache = new Map<string, Float32Array>();
  private disposed = false;

  private constructor(
    readonly folder: ClassifierFolder,
    private readonly tokenizer: PreTrainedTokenizer,
    private readonly processor: ImageProcessor,
    private readonly joint: PreTrainedModel | undefined,
    private readonly textModel: PreTrainedModel | undefined,
    private readonly visionModel: PreTrainedModel | undefined,
    readonly logitScale: number,
    readonly batchSize: number,
    /** A processed blank image, the pixel input fed to the joint model when only text is wanted. */
    private readonly blankPixels: Tensor,
    /** How images become pixel_values ('transformers' or 'pil'). */
    readonly preprocessing: PreprocessMode,
    /** The parsed preprocessor_config.json, for 'pil'. */
    private readonly pilConfig: ClipImageProcessorConfig | undefined,
  ) {}

  /** Load a CLIP folder (checked first, see `inspectClassifierFolder`), strictly locally. */
  static async load(dir: string, options: ClassifierOptions = {}): Promise<ClipClassifier> {
    validatePositive('batchSize', options.batchSize, true);
    validatePositive('logitScale', options.logitScale, false);
    if (options.threads !== undefined && (!Number.isInteger(options.threads) || options.threads < 0)) {
      throw new ClassifierError(`${show(options.threads)} must be a non-negative integer`, { field: 'threads' });
    }
    validateThreads(options.threads);
    const device = validateDevice(options.device ?? 'cpu');
    const preprocessing = validatePreprocess(options.preprocess ?? 'transformers');
    const folder = inspectClassifierFolder(dir);
    const pilConfig =
      preprocessing === 'pil' ? readImageProcessorConfig(join(folder.dir, 'preprocessor_config.json')) : undefined;
    if (device === 'cuda' && !cudaAvailable()) {
      throw new UsageError(
        `"cuda": onnxruntime-node's CUDA provider is not installed on this host (needs the opt-in install and CUDA 12 + cuDNN 9; see README "CUDA"); use the device "cpu"`,
        { field: 'device' },
      );
    }
    if (!isLocalOnly()) {
      throw new ClassifierError(
        'transformers.js was set to allow remote models; the classifier loads only local files (runtime/transformers.ts sets this once)',
      );
    }
    const path = folder.dir;
    const session_options: Record<string, unknown> = { graphOptimizationLevel: 'all' };
    if (options.threads) session_options.intraOpNumThreads = options.threads;
    const modelOptions = { local_files_only: true, dtype: 'fp32' as const, device, session_options };
    const loaded: PreTrainedModel[] = [];
    try {
      const tokenizer = await AutoTokenizer.from_pretrained(path, { local_files_only: true });
      const processor = await AutoImageProcessor.from_pretrained(path, { local_files_only: true });
      let joint: PreTrainedModel | undefined;
      let textModel: PreTrainedModel | undefined;
      let visionModel: PreTrainedModel | undefined;
      if (folder.variant === 'joint') {
        joint = await CLIPModel.from_pretrained(path, modelOptions);
        loaded.push(joint);
        requireIo(
          joint,
          'onnx/model.onnx',
          ['input_ids', 'pixel_values'],
          ['text_embeds', 'image_embeds', 'logits_per_image'],
          dir,
        );
      } else {
        textModel = await CLIPTextModelWithProjection.from_pretrained(path, modelOptions);
        loaded.push(textModel);
        visionModel = await CLIPVisionModelWithProjection.from_pretrained(path, modelOptions);
        loaded.push(visionModel);
        requireIo(textModel, 'onnx/text_model.onnx', ['input_ids'], ['text_embeds'], dir);
        requireIo(visionModel, 'onnx/vision_model.onnx', ['pixel_values'], ['image_embeds'], dir);
      }
      const blank = new RawImage(new Uint8ClampedArray(8 * 8 * 3).fill(128), 8, 8, 3);
      const blankPixels = (await processor([blank])).pixel_values as Tensor;
      const scale =
        options.logitScale ??
        (joint ? await measureLogitScale(joint, tokenizer, processor, dir) : splitLogitScale(path));
      return new ClipClassifier(
        folder,
        tokenizer,
        processor,
        joint,
        textModel,
        visionModel,
        scale,
        options.batchSize ?? 16,
        blankPixels,
        preprocessing,
        pilConfig,
      );
    } catch (error) {
      for (const m of loaded) await m.dispose();
      if (error instanceof ClassifierError) throw error;
      const message = (error as Error).message;
      if (device === 'cuda' && /cuda|shared library/i.test(message)) {
        throw new ClassifierError(
          `"cuda": onnxruntime-node could not use its CUDA provider on this host (${message}); it needs the opt-in install and CUDA 12 + cuDNN 9 (see README "CUDA"); use the device "cpu"`,
          { cause: error, field: 'device' },
        );
      }
      throw new ClassifierError(`${show(dir)}: could not load the CLIP model: ${message}`, {
        field: 'classifierDir',
        cause: error,
      });
    }
  }

  private check(): void {
    if (this.disposed) throw new ClassifierError('classifier used after dispose()');
  }

  /** Normalised text embeddings t̂ of `prompts` (cached per prompt). */
  async embedTexts(prompts: readonly string[]): Promise<Float32Array[]> {
    this.check();
    const todo = [...new Set(prompts.filter((p) => !this.textCache.has(p)))];
    if (todo.length) {
      const inputs = this.tokenizer(todo, { padding: true, truncation: true });
      let out: Tensor;
      if (this.joint) {
        out = (await this.joint({ ...inputs, pixel_values: this.blankPixels })).text_embeds as Tensor;
      } else {
        out = (await (this.textModel as PreTrainedModel)(inputs)).text_embeds as Tensor;
      }
      rows(out).forEach((r, i) => {
        this.textCache.set(todo[i] as string, normalize(r));
      });
    }
    return prompts.map((p) => this.textCache.get(p) as Float32Array);
  }

  /** Class embeddings ĉ_c: each class's prompt ensemble averaged in embedding space, renormalised. */
  async classEmbeddings(attribute: Attribute, profession?: string): Promise<Float32Array[]> {
    const prompts = resolvePrompts(attribute, profession);
    const flat = await this.embedTexts(prompts.flat());
    let at = 0;
    return prompts.map((ps) => {
      const vs = flat.slice(at, at + ps.length);
      at += ps.length;
      return ensemble(vs);
    });
  }

  /**
   * pixel_values for `images` as the folder's preprocessor_config.json prescribes: through
   * transformers.js' own processor, or (preprocessing 'pil') exactly as transformers' Python
   * CLIPImageProcessor with PIL computes them.
   */
  async preprocess(images: readonly ImageInput[]): Promise<Tensor> {
    this.check();
    const raws = await Promise.all(images.map((img, i) => toRawImage(img, i)));
    if (this.pilConfig) {
      const { dims, data } = pilPreprocess(
        raws.map((r) => {
          const rgb = r.rgb();
          return { width: rgb.width, height: rgb.height, data: rgb.data };
        }),
        this.pilConfig,
      );
      return new Tensor('float32', data, dims);
    }
    return (await this.processor(raws)).pixel_values as Tensor;
  }

  /** Normalised image embeddings v̂, `batchSize` images per model run. */
  async embedImages(images: readonly ImageInput[]): Promise<Float32Array[]> {
    this.check();
    const out: Float32Array[] = [];
    for (let start = 0; start < images.length; start += this.batchSize) {
      const pixel_values = await this.preprocess(images.slice(start, start + this.batchSize));
      let embeds: Tensor;
      if (this.joint) {
        const text = this.tokenizer([''], { padding: true, truncation: true });
        embeds = (await this.joint({ ...text, pixel_values })).image_embeds as Tensor;
      } else {
        embeds = (await (this.visionModel as PreTrainedModel)({ pixel_values })).image_embeds as Tensor;
      }
      for (const r of rows(embeds)) out.push(normalize(r));
    }
    return out;
  }

  /** Classify images into the attribute's classes. */
  async classify(
    images: readonly ImageInput[],
    attribute: Attribute,
    options: ClassifyOptions = {},
  ): Promise<ImageClassification[]> {
    const { threshold } = options;
    if (threshold !== undefined && !(Number.isFinite(threshold) && threshold > 0 && threshold <= 1)) {
      throw new ClassifierError(`${show(threshold)} must be a probability in (0, 1]`, { field: 'threshold' });
    }
    validateAttribute(attribute);
    if (images.length === 0) return [];
    const classes = await this.classEmbeddings(attribute, options.profession);
    const embeds = await this.embedImages(images);
    return embeds.map((v) => classifyEmbedding(v, classes, attribute, this.logitScale, threshold));
  }

  async dispose(): Promise<void> {
    if (this.disposed) return;
    this.disposed = true;
    for (const m of [this.joint, this.textModel, this.visionModel]) if (m) await m.dispose();
  }
}

/** z_c = s · v̂·ĉ_c, p = softmax(z), argmax, threshold. */
export function classifyEmbedding(
  image: Float32Array,
  classes: readonly Float32Array[],
  attribute: Attribute,
  logitScale: number,
  threshold?: number,
): ImageClassification {
  const z = classes.map((c) => logitScale * dot(image, c));
  const p = softmax(z);
  const best = argmax(p);
  const probabilities: Record<string, number> = {};
  attribute.classes.forEach((c, i) => {
    probabilities[c.name] = p[i] as number;
  });
  const label = (attribute.classes[best] as { name: string }).name;
  if (threshold !== undefined && (p[best] as number) < threshold)
    return { kind: 'unclear', label, probabilities, threshold };
  return { kind: 'label', label, probabilities };
}

/** Decode an image file (PNG, JPEG, WebP, ...) to 8-bit RGB, as the classifier reads it. */
export async function readImageFile(path: string): Promise<RgbImage> {
  const raw = (await toRawImage(path, 0)).rgb();
  return {
    width: raw.width,
    height: raw.height,
    data: new Uint8Array(raw.data.buffer, raw.data.byteOffset, raw.data.byteLength),
  };
}

async function toRawImage(img: ImageInput, index: number): Promise<RawImage> {
  if (typeof img === 'string') {
    if (!existsSync(img)) throw new ClassifierError(`image ${show(img)}: file not found`);
    try {
      return await RawImage.fromBlob(new Blob([readFileSync(img)]));
    } catch (cause) {
      throw new ClassifierError(`image ${show(img)}: cannot be decoded as an image (${(cause as Error).message})`, {
        cause,
      });
    }
  }
  const { width, height, data } = img;
  if (!Number.isInteger(width) || !Number.isInteger(height) || width < 1 || height < 1) {
    throw new ClassifierError(`images[${index}]: size ${show(width)}×${show(height)} must be positive integers`);
  }
  if (!(data instanceof Uint8Array || data instanceof Uint8ClampedArray) || data.length !== width * height * 3) {
    throw new ClassifierError(
      `images[${index}]: data must be ${width}×${height}×3 = ${width * height * 3} RGB bytes (got ${data?.length ?? show(data)})`,
    );
  }
  return new RawImage(new Uint8ClampedArray(data.buffer, data.byteOffset, data.length), width, height, 3);
}

/**
 * s for a joint model, read off its own outputs: logits_per_image[i][j] = s · v̂_i·t̂_j. Uses the
 * probe pair with the largest |cos| (a few texts × a few synthetic images) for precision.
 */
async function measureLogitScale(
  model: PreTrainedModel,
  tokenizer: PreTrainedTokenizer,
  processor: ImageProcessor,
  dir: string,
): Promise<number> {
  const texts = ['a photo of a woman', 'a photo of a man', 'a photo', 'image of female', 'image of male'];
  const size = 16;
  const images = [0, 1, 2, 3].map((k) => {
    const data = new Uint8ClampedArray(size * size * 3);
    for (let y = 0; y < size; y++)
      for (let x = 0; x < size; x++) {
        const o = (y * size + x) * 3;
        data[o] = k === 0 ? 230 : 20 + ((x * 13 + k * 50) % 200);
        data[o + 1] = k === 1 ? 230 : 20 + ((y * 11 + k * 30) % 200);
        data[o + 2] = k === 2 ? 230 : 20 + (((x + y) * 7 + k * 70) % 200);
      }
    return new RawImage(data, size, size, 3);
  });
  const out = await model({ ...tokenizer(texts, { padding: true, truncation: true }), ...(await processor(images)) });
  const t = rows(out.text_embeds as Tensor).map(normalize);
  const v = rows(out.image_embeds as Tensor).map(normalize);
  const logits = out.logits_per_image as Tensor;
  const L = logits.data as Float32Array;
  const nt = (logits.dims as number[])[1] as number;
  let best = { cos: 0, logit: 0 };
  v.forEach((vi, i) => {
    t.forEach((tj, j) => {
      const cos = dot(vi, tj);
      if (Math.abs(cos) > Math.abs(best.cos)) best = { cos, logit: L[i * nt + j] as number };
    });
  });
  if (Math.abs(best.cos) < 1e-3) {
    throw new ClassifierError(
      `${show(dir)}: cannot read the logit scale off the model's outputs (all probe similarities ≈ 0); pass logitScale`,
      { field: 'classifierDir' },
    );
  }
  const s = best.logit / best.cos;
  if (!(s > 0) || !Number.isFinite(s))
    throw new ClassifierError(`${show(dir)}: the model's logit scale ${s} is not positive`, { field: 'classifierDir' });
  return s;
}

function splitLogitScale(path: string): number {
  const config = JSON.parse(readFileSync(join(path, 'config.json'), 'utf8')) as {
    time_debias?: { logit_scale?: unknown };
  };
  const s = config.time_debias?.logit_scale;
  return typeof s === 'number' && s > 0 ? s : 100;
}
