/**
 * Text-to-image over a diffusers / Optimum ONNX Stable Diffusion folder, as diffusers'
 * OnnxStableDiffusionPipeline does it (style.md: one class owns the visible denoising loop):
 *
 *   1. encode prompt and negative prompt (CLIP, 77 tokens; longer prompts truncated with a warning)
 *   2. check inputs (height/width multiples of 8, steps ≥ 1, seeds or latents)
 *   3. x_T = init_noise_sigma · z, z from each image's own seed (rng.ts) or the given latents
 *   4. for t in scheduler.timesteps:
 *        ε_u, ε_c = UNet(scale(x_t) twice, t, [uncond; cond])           (classifier-free guidance)
 *        ε = ε_u + g (ε_c − ε_u)          (g ≤ 1: no unconditional pass, ε = ε_c)
 *        x ← scheduler.step(ε, t, x)
 *   5. image = clip(VAE_decoder(x / 0.18215) / 2 + 0.5, 0, 1) · 255, rounded
 *
 * Sessions (text encoder, UNet, VAE decoder) are created once in `create` and reused; `dispose()`
 * releases them. UNet input names and dtypes are read from the session: `timestep` float [b] (the
 * diffusers export), a float scalar (Optimum) or int64 [b] (older Optimum); float32 or float16 I/O.
 *
 * Edited UNets in memory (for tuning, where edits change between probes):
 *   - `textTransform` M (d × d, row-major): a TIME edit of ALL cross-attention to_k/to_v sites is
 *     W′_s = W_s M for one M (src/edit/solve.ts), so W′_s c = W_s (M c): the pipeline feeds M e for
 *     every row e of encoder_hidden_states (uncond and cond) to the original UNet. In Stable
 *     Diffusion's UNet encoder_hidden_states reaches nothing but the attn2 to_k/to_v projections, so
 *     this is exactly the edited model, and switching edits costs one d × d × 77 product per prompt.
 *   - `setUnetOverrides(map)`: for edits of a SUBSET of sites, the UNet session is re-created from the
 *     model's bytes with those initializers replaced in memory (other weights stay in their external
 *     data file, read by onnxruntime from the model folder). Costs one session creation per edit.
 */
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { basename, dirname } from 'node:path';
import pLimit from 'p-limit';
import { openSdModel, type SdModel } from '../model/folder.js';
import { float32ToBytes, getInitializer } from '../onnx/model-file.js';
import { encodeModel, type TensorProto } from '../onnx/proto.js';
import { type Device, RuntimeError, Session, type SessionTuning, type Tensor, tensor } from '../runtime/ort.js';
import { ClipTextEncoder } from '../text/encoder.js';
import { ClipTokenizer } from '../text/tokenizer.js';
import { GenerationError, ModelFormatError, show } from '../util/errors.js';
import { fromHalf, toHalf } from '../util/half.js';
import { batchNoiseSource, GaussianStream, noise, STREAM, validateSeed } from './rng.js';
import {
  createScheduler,
  isSchedulerId,
  parseSchedulerConfigJson,
  SCHEDULER_IDS,
  type Scheduler,
  type SchedulerConfigJson,
  type SchedulerId,
  stableDiffusionSchedulerConfig,
} from './schedulers/index.js';

/** The VAE latent scale of Stable Diffusion 1.x/2.x (OnnxStableDiffusionPipeline divides by it). */
export const VAE_SCALING_FACTOR = 0.18215;
export const LATENT_CHANNELS = 4;

export interface PipelineOptions {
  device?: Device;
  /** Intra-op threads per session (0/undefined: onnxruntime decides). */
  threads?: number;
  /** Session memory and optimization settings (default: src/runtime's measured defaults); for benchmarks. */
  tuning?: SessionTuning;
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
   * An all-site TIME edit applied to the text side: encoder_hidden_states rows e become M e. A plain
   * Float32Array is M (d × d, row-major); see TextTransform for the forms that keep a small edit's
   * precision (Δ = M − I) or its low rank (Δ = Uᵀ Z, cheaper when r < d).
   */
  textTransform?: Float32Array | TextTransform;
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

/** The text-side form of an all-site edit W′ = W M (src/edit/solve.ts gives M, Δ = M − I and, for Woodbury, U and Z). */
export type TextTransform =
  | { kind: 'matrix'; M: Float32Array }
  | { kind: 'delta'; delta: Float32Array }
  | { kind: 'low-rank'; rank: number; u: Float32Array; z: Float32Array };

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

export type EditIdentity =
  | { kind: 'text-transform'; sha256: string }
  | { kind: 'unet-overrides'; initializers: number; sha256: string };

export interface GeneratedImage {
  width: number;
  height: number;
  /** RGB, 8 bits per channel, row-major HWC. */
  rgb: Uint8Array;
  record: ImageRecord;
  /** [4 · h/8 · w/8] final latents, when asked for. */
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
  warnings: string[];
  timing: GenerateTiming;
}

interface UnetInfo {
  sampleType: 'float32' | 'float16';
  hiddenType: 'float32' | 'float16';
  timestep: { type: string; rank: number; fixedOne: boolean };
  output: string;
}

export class StableDiffusionPipeline {
  private unet: Session;
  private unetInfo: UnetInfo;
  private unetEdit: EditIdentity | null = null;
  private disposed = false;

  private constructor(
    readonly model: SdModel,
    readonly tokenizer: ClipTokenizer,
    readonly textEncoder: ClipTextEncoder,
    unet: Session,
    private readonly vae: Session,
    /** The model's scheduler config after diffusers' Stable Diffusion corrections. */
    readonly schedulerConfig: SchedulerConfigJson,
    /** Warnings from loading (scheduler config corrections). */
    readonly loadWarnings: string[],
    readonly options: PipelineOptions,
    readonly vaeScalingFactor: number,
    /** Default image size: the UNet's sample_size × 8 when the folder says it, else 512. */
    readonly defaultSize: number,
  ) {
    this.unet = unet;
    this.unetInfo = describeUnet(unet, model.files.unet);
  }

  /** Open a model folder and create its sessions once. */
  static async create(modelDir: string, options: PipelineOptions = {}): Promise<StableDiffusionPipeline> {
    const model = openSdModel(modelDir);
    const schedulerPath = `${model.components.scheduler}/scheduler_config.json`;
    const { config, warnings } = stableDiffusionSchedulerConfig(
      parseSchedulerConfigJson(readFileSync(schedulerPath, 'utf8'), schedulerPath),
    );
    const tokenizer = await ClipTokenizer.fromFolder(model.components.tokenizer);
    const sessionOptions = { ...options.tuning, device: options.device, threads: options.threads };
    const opened: { dispose(): Promise<void> }[] = [];
    try {
      const textEncoder = await ClipTextEncoder.create(model.files.textEncoder, sessionOptions);
      opened.push(textEncoder);
      const unet = await Session.create(model.files.unet, { ...sessionOptions, label: `unet ${model.files.unet}` });
      opened.push(unet);
      // The VAE runs once per image between UNet loops: its idle threads must not spin against the UNet.
      const vae = await Session.create(model.files.vaeDecoder, {
        ...sessionOptions,
        allowSpinning: false,
        label: `vae_decoder ${model.files.vaeDecoder}`,
      });
      opened.push(vae);
      checkVae(vae, model.files.vaeDecoder);
      const vaeConfig = readJsonIfExists(
        `${model.components.vae_decoder ?? dirname(model.files.vaeDecoder)}/config.json`,
      );
      const unetConfig = readJsonIfExists(`${model.components.unet}/config.json`);
      const scaling = typeof vaeConfig?.scaling_factor === 'number' ? vaeConfig.scaling_factor : VAE_SCALING_FACTOR;
      const sampleSize = typeof unetConfig?.sample_size === 'number' ? unetConfig.sample_size : null;
      const staticSample = unet.input('sample')?.shape;
      const staticSize = typeof staticSample?.[2] === 'number' ? staticSample[2] : null;
      const defaultSize = 8 * (sampleSize ?? staticSize ?? 64);
      return new StableDiffusionPipeline(
        model,
        tokenizer,
        textEncoder,
        unet,
        vae,
        config,
        warnings,
        options,
        scaling,
        defaultSize,
      );
    } catch (error) {
      for (const s of opened.reverse()) await s.dispose();
      if (options.device === 'cuda' && error instanceof RuntimeError && error.field !== 'device') {
        // onnxruntime-node lists a CUDA backend on Linux x64 even when the provider libraries are not
        // installed; the session creation then fails. Say what to do instead of the loader's text.
        const cause = error.message.split('\n')[0]?.slice(0, 300);
        throw new RuntimeError(
          `"cuda": onnxruntime-node could not start the CUDA execution provider (it needs the CUDA ` +
            `install of onnxruntime-node, CUDA 12 and cuDNN 9; see README "CUDA"); use the device "cpu" (${cause})`,
          { cause: error, field: 'device' },
        );
      }
      throw error;
    }
  }

  get identity(): ModelIdentity {
    return {
      name: basename(this.model.dir),
      dir: this.model.dir,
      format: this.model.format,
      precision: this.model.precision,
      d: this.model.d,
    };
  }

  /** The edit held by the UNet session (null: the model's own weights). */
  get unetEditIdentity(): EditIdentity | null {
    return this.unetEdit;
  }

  /**
   * Replace the UNet session by one whose named initializers hold `overrides` (float32 values in the
   * initializer's own layout and dims; converted to its dtype), built in memory; null restores the
   * model's own weights. The previous session is disposed.
   */
  async setUnetOverrides(overrides: ReadonlyMap<string, Float32Array> | null): Promise<void> {
    this.checkLive();
    const path = this.model.files.unet;
    let session: Session;
    let edit: EditIdentity | null = null;
    if (!overrides || overrides.size === 0) {
      session = await Session.create(path, { ...this.sessionOptions(), label: `unet ${path}` });
    } else {
      const file = this.model.unet;
      const graph = file.graph;
      const initializers = [...(graph.initializer ?? [])] as TensorProto[];
      const hash = createHash('sha256');
      for (const [name, values] of [...overrides].sort((a, b) => (a[0] < b[0] ? -1 : 1))) {
        const info = getInitializer(file, name);
        if (values.length !== info.elementCount) {
          throw new GenerationError(
            `unetOverrides: ${show(name)} has ${info.elementCount} values [${info.dims.join(', ')}] but ${values.length} were given`,
          );
        }
        const raw = float32ToBytes(values, info.dataType, name);
        hash.update(name).update(raw);
        initializers[info.index] = { name, dims: info.dims, dataType: info.dataType, rawData: raw };
      }
      const bytes = encodeModel({ ...file.model, graph: { ...graph, initializer: initializers } });
      session = await Session.create(bytes, {
        ...this.sessionOptions(),
        label: `unet ${path} (${overrides.size} initializers replaced in memory)`,
        externalDataFolder: file.dir,
      });
      edit = { kind: 'unet-overrides', initializers: overrides.size, sha256: hash.digest('hex') };
    }
    const old = this.unet;
    this.unet = session;
    this.unetInfo = describeUnet(session, path);
    this.unetEdit = edit;
    await old.dispose();
  }

  private sessionOptions() {
    return { ...this.options.tuning, device: this.options.device, threads: this.options.threads };
  }

  private checkLive(): void {
    if (this.disposed) throw new GenerationError('pipeline used after dispose()');
  }

  async generate(request: GenerateRequest): Promise<GenerateResult> {
    this.checkLive();
    const t0 = performance.now();
    const r = this.normalize(request);
    const warnings = [...this.loadWarnings];

    // 1. text: [uncond; cond] rows, optionally transformed by M
    const tText = performance.now();
    const cond = this.tokenizer.encode(r.prompt);
    const uncond = this.tokenizer.encode(r.negativePrompt);
    for (const [what, text, enc] of [
      ['prompt', r.prompt, cond],
      ['negative prompt', r.negativePrompt, uncond],
    ] as const) {
      if (enc.truncated) {
        const dropped = this.tokenizer
          .tokenize(text)
          .slice(this.tokenizer.maxLength - 2)
          .join('')
          .replaceAll('</w>', ' ')
          .trim();
        warnings.push(
          `The ${what} is longer than CLIP's ${this.tokenizer.maxLength} tokens; this part was truncated: ${show(dropped)}`,
        );
      }
    }
    const encoded = await this.textEncoder.encode(r.guided ? [uncond.ids, cond.ids] : [cond.ids]);
    const L = encoded.length;
    const d = encoded.d;
    let hidden = encoded.lastHiddenState;
    let textEdit: EditIdentity | null = null;
    if (r.textTransform) {
      hidden = applyTextTransform(r.textTransform, hidden, d);
      textEdit = { kind: 'text-transform', sha256: textTransformHash(r.textTransform) };
    }
    const textMs = performance.now() - tText;
    if (this.unetEdit && textEdit) {
      throw new GenerationError('textTransform: cannot be combined with UNet overrides; apply one edit at a time');
    }
    const edit = textEdit ?? this.unetEdit;

    // 2. the images and their batches
    const n = r.count;
    const latentShape = [LATENT_CHANNELS, r.height / 8, r.width / 8];
    const per = LATENT_CHANNELS * (r.height / 8) * (r.width / 8);
    const batches: number[][] = [];
    for (let i = 0; i < n; i += r.batchSize) batches.push(range(i, Math.min(n, i + r.batchSize)));
    const records: ImageRecord[] = range(0, n).map((index) => ({
      index,
      seed: r.seeds ? (r.seeds[index] as number) : null,
      latentsSource: r.latents ? 'given' : 'seed',
      prompt: r.prompt,
      negativePrompt: r.negativePrompt,
      steps: r.steps,
      scheduler: r.scheduler,
      guidance: r.guidance,
      eta: r.eta,
      width: r.width,
      height: r.height,
      model: this.identity,
      edit,
      promptTruncated: cond.truncated,
    }));

    const timing = { unetMs: 0, unetCalls: 0, loopMs: 0, decodeMs: 0 };
    const images: GeneratedImage[] = new Array(n);
    let decoded = 0;
    let stepsDone = 0;
    const loopLength = this.makeScheduler(r);
    loopLength.setTimesteps(r.steps);
    const stepsTotal = loopLength.timesteps.length * batches.length;
    const limit = pLimit(r.concurrency);
    await Promise.all(
      batches.map((indices, batchNo) =>
        limit(async () => {
          const b = indices.length;
          const tLoop = performance.now();
          const scheduler = this.makeScheduler(r);
          scheduler.setTimesteps(r.steps);
          // x_T = init σ · z, z from each image's own seed (or the given latents)
          let x: Float32Array = new Float32Array(b * per);
          indices.forEach((img, k) => {
            const z = r.latents
              ? r.latents.data.subarray(img * per, (img + 1) * per)
              : noise(r.seeds?.[img] as number, [1, ...latentShape], STREAM.latents);
            x.set(z, k * per);
          });
          const sigma = scheduler.initNoiseSigma;
          for (let i = 0; i < x.length; i++) x[i] = (x[i] as number) * sigma;
          const noiseSource = scheduler.stochastic
            ? batchNoiseSource(indices.map((img) => new GaussianStream(r.seeds?.[img] ?? img, STREAM.schedulerNoise)))
            : undefined;
          const ehs = this.hiddenStatesFor(hidden, b, r.guided, L, d);
          const B = r.guided ? 2 * b : b;
          const timesteps = scheduler.timesteps;
          for (let step = 0; step < timesteps.length; step++) {
            const t = timesteps[step] as number;
            const input = scheduler.scaleModelInput(x, t);
            const sample = r.guided ? concatTwice(input) : input;
            const tUnet = performance.now();
            const out = await this.runUnet(sample, [B, ...latentShape], t, ehs, [B, L, d]);
            timing.unetMs += performance.now() - tUnet;
            timing.unetCalls += 1;
            const eps = r.guided ? guide(out, b * per, r.guidance) : out;
            x = scheduler.step(eps, t, x, { noise: noiseSource }).prevSample;
            stepsDone += 1;
            r.onProgress?.({
              kind: 'step',
              batch: batchNo,
              step: step + 1,
              steps: timesteps.length,
              images: indices,
              done: stepsDone,
              total: stepsTotal,
            });
          }
          timing.loopMs += performance.now() - tLoop;
          // 5. decode one image at a time (as OnnxStableDiffusionPipeline does)
          const tDecode = performance.now();
          for (let k = 0; k < b; k++) {
            const img = indices[k] as number;
            const latents = x.slice(k * per, (k + 1) * per);
            const rgb = await this.decode(latents, r.height, r.width);
            images[img] = {
              width: r.width,
              height: r.height,
              rgb,
              record: records[img] as ImageRecord,
              ...(r.returnLatents ? { latents } : {}),
            };
            decoded += 1;
            r.onProgress?.({ kind: 'image', index: img, done: decoded, total: n });
          }
          timing.decodeMs += performance.now() - tDecode;
        }),
      ),
    );
    return {
      kind: 'generation',
      images,
      warnings,
      timing: { totalMs: performance.now() - t0, textMs, ...timing },
    };
  }

  private makeScheduler(r: NormalizedRequest): Scheduler {
    return createScheduler(r.scheduler, this.schedulerConfig, r.schedulerOverrides, { eta: r.eta });
  }

  /** encoder_hidden_states for a batch of b images: [uncond × b; cond × b] (or [cond × b]). */
  private hiddenStatesFor(hidden: Float32Array, b: number, guided: boolean, L: number, d: number): Float32Array {
    const rows = L * d;
    const out = new Float32Array((guided ? 2 : 1) * b * rows);
    const cond = guided ? hidden.subarray(rows, 2 * rows) : hidden.subarray(0, rows);
    for (let k = 0; k < b; k++) {
      if (guided) {
        out.set(hidden.subarray(0, rows), k * rows);
        out.set(cond, (b + k) * rows);
      } else out.set(cond, k * rows);
    }
    return out;
  }

  private async runUnet(
    sample: Float32Array,
    sampleDims: number[],
    t: number,
    hidden: Float32Array,
    hiddenDims: number[],
  ): Promise<Float32Array> {
    const info = this.unetInfo;
    const B = sampleDims[0] as number;
    const feeds: Record<string, Tensor> = {
      sample: floatTensor(info.sampleType, sample, sampleDims),
      timestep: timestepTensor(info.timestep, t, B),
      encoder_hidden_states: floatTensor(info.hiddenType, hidden, hiddenDims),
    };
    const out = await this.unet.run(feeds, [info.output]);
    const result = out[info.output] as Tensor;
    const values = tensorToFloat32(result, `unet ${info.output}`);
    if (values.length !== sample.length) {
      throw new ModelFormatError(
        `unet ${show(this.model.files.unet)}: ${info.output} has shape [${result.dims.join(', ')}]; expected [${sampleDims.join(', ')}]`,
      );
    }
    return values;
  }

  /** VAE decoder on one image's latents → RGB bytes: clip(x/2 + 0.5, 0, 1) · 255, rounded half to even. */
  private async decode(latents: Float32Array, height: number, width: number): Promise<Uint8Array> {
    const scaled = new Float32Array(latents.length);
    for (let i = 0; i < scaled.length; i++) scaled[i] = (latents[i] as number) / this.vaeScalingFactor;
    const input = this.vae.inputs[0] as { name: string; type: string };
    const dims = [1, LATENT_CHANNELS, height / 8, width / 8];
    const out = await this.vae.run({ [input.name]: floatTensor(input.type as 'float32', scaled, dims) });
    const name = this.vae.outputs[0]?.name as string;
    const image = out[name] as Tensor;
    const values = tensorToFloat32(image, `vae_decoder ${name}`);
    if (values.length !== 3 * height * width) {
      throw new ModelFormatError(
        `vae_decoder ${show(this.model.files.vaeDecoder)}: ${name} has shape [${image.dims.join(', ')}]; expected [1, 3, ${height}, ${width}]`,
      );
    }
    const plane = height * width;
    const rgb = new Uint8Array(3 * plane);
    for (let p = 0; p < plane; p++) {
      for (let c = 0; c < 3; c++) {
        const v = Math.min(1, Math.max(0, (values[c * plane + p] as number) / 2 + 0.5));
        rgb[3 * p + c] = roundHalfEven(v * 255);
      }
    }
    return rgb;
  }

  private normalize(request: GenerateRequest): NormalizedRequest {
    return normalizeRequest(request, this.defaultSize);
  }

  async dispose(): Promise<void> {
    if (this.disposed) return;
    this.disposed = true;
    await this.textEncoder.dispose();
    await this.unet.dispose();
    await this.vae.dispose();
  }
}

// ---------------------------------------------------------------------------------------------
// Request validation (one place; messages name the flag, the value and the rule)

interface NormalizedRequest {
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
  textTransform: TextTransform | null;
  returnLatents: boolean;
  onProgress?: (event: ProgressEvent) => void;
}

export function normalizeRequest(request: GenerateRequest, defaultSize = 512): NormalizedRequest {
  if (typeof request.prompt !== 'string') throw new GenerationError(`--prompt: ${show(request.prompt)} is not text`);
  const negativePrompt = request.negativePrompt ?? '';
  if (typeof negativePrompt !== 'string') {
    throw new GenerationError(`--negative-prompt: ${show(negativePrompt)} is not text`);
  }
  const steps = request.steps ?? 25;
  if (!Number.isInteger(steps) || steps < 1)
    throw new GenerationError(`--steps: ${show(steps)} is not an integer >= 1`);
  const scheduler = request.scheduler ?? 'pndm';
  if (!isSchedulerId(scheduler)) {
    throw new GenerationError(
      `--scheduler: ${show(scheduler)} is not a known scheduler; valid schedulers are ${SCHEDULER_IDS.join(', ')}`,
    );
  }
  const eta = request.eta ?? 0;
  if (typeof eta !== 'number' || !Number.isFinite(eta) || eta < 0)
    throw new GenerationError(`--eta: ${show(eta)} is not a number >= 0`);
  if (eta !== 0 && scheduler !== 'ddim')
    throw new GenerationError(`--eta: ${show(eta)} applies to the ddim scheduler only, not ${scheduler}`);
  const guidance = request.guidance ?? 7.5;
  if (typeof guidance !== 'number' || !Number.isFinite(guidance)) {
    throw new GenerationError(`--guidance: ${show(guidance)} is not a number`);
  }
  const height = request.height ?? defaultSize;
  const width = request.width ?? defaultSize;
  for (const [flag, v] of [
    ['--height', height],
    ['--width', width],
  ] as const) {
    if (!Number.isInteger(v) || v < 8 || v % 8 !== 0) {
      throw new GenerationError(
        `${flag}: ${show(v)} is not a positive multiple of 8 (the VAE works on 8 × 8 pixel blocks)`,
      );
    }
  }
  const batchSize = request.batchSize ?? 1;
  if (!Number.isInteger(batchSize) || batchSize < 1) {
    throw new GenerationError(`--batch-size: ${show(batchSize)} is not an integer >= 1`);
  }
  const concurrency = request.concurrency ?? 1;
  if (!Number.isInteger(concurrency) || concurrency < 1) {
    throw new GenerationError(`concurrency: ${show(concurrency)} is not an integer >= 1`);
  }
  const seeds = request.seeds ? request.seeds.map((s) => validateSeed(s)) : null;
  let latents: NormalizedRequest['latents'] = null;
  let count: number;
  if (request.latents) {
    const shape = [...request.latents.shape];
    const expected = [LATENT_CHANNELS, height / 8, width / 8];
    if (shape.length !== 4 || shape.slice(1).some((s, i) => s !== expected[i]) || (shape[0] as number) < 1) {
      throw new GenerationError(
        `--latents: shape [${shape.join(', ')}] does not match [n, ${expected.join(', ')}] (n images of ${height} × ${width})`,
      );
    }
    if (request.latents.data.length !== shape.reduce((a, b) => a * b, 1)) {
      throw new GenerationError(`--latents: ${request.latents.data.length} values for shape [${shape.join(', ')}]`);
    }
    count = shape[0] as number;
    if (seeds && seeds.length !== count) {
      throw new GenerationError(`--seeds: ${seeds.length} seeds for ${count} latents; give one per image or none`);
    }
    latents = { shape, data: request.latents.data };
  } else {
    if (!seeds || seeds.length === 0)
      throw new GenerationError('--seeds: give at least one seed (or --latents FILE.npy)');
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
    textTransform:
      request.textTransform instanceof Float32Array
        ? { kind: 'matrix', M: request.textTransform }
        : (request.textTransform ?? null),
    returnLatents: request.returnLatents ?? false,
    onProgress: request.onProgress,
  };
}

// ---------------------------------------------------------------------------------------------
// Tensor handling

function describeUnet(unet: Session, path: string): UnetInfo {
  const where = show(path);
  const need = (name: string) => {
    const io = unet.input(name);
    if (!io) {
      throw new ModelFormatError(
        `unet ${where} has no input ${show(name)} (its inputs: ${unet.inputs.map((i) => i.name).join(', ')})`,
      );
    }
    return io;
  };
  const sample = need('sample');
  const timestep = need('timestep');
  const hidden = need('encoder_hidden_states');
  for (const io of [sample, hidden]) {
    if (io.type !== 'float32' && io.type !== 'float16') {
      throw new ModelFormatError(`unet ${where}: input ${io.name} is ${io.type}; expected float32 or float16`);
    }
  }
  if (!['float32', 'float16', 'int64', 'int32'].includes(timestep.type)) {
    throw new ModelFormatError(`unet ${where}: input timestep is ${timestep.type}; expected float32, float16 or int64`);
  }
  if (timestep.shape.length > 1) {
    throw new ModelFormatError(
      `unet ${where}: input timestep has shape [${timestep.shape.join(', ')}]; expected [] or [batch]`,
    );
  }
  const output = unet.outputs.find((o) => o.name === 'out_sample') ?? unet.outputs[0];
  if (!output) throw new ModelFormatError(`unet ${where} has no outputs`);
  return {
    sampleType: sample.type as 'float32' | 'float16',
    hiddenType: hidden.type as 'float32' | 'float16',
    timestep: { type: timestep.type, rank: timestep.shape.length, fixedOne: timestep.shape[0] === 1 },
    output: output.name,
  };
}

function checkVae(vae: Session, path: string): void {
  const input = vae.inputs[0];
  if (!input || vae.inputs.length !== 1 || (input.type !== 'float32' && input.type !== 'float16')) {
    throw new ModelFormatError(
      `vae_decoder ${show(path)}: expected one float input (latent_sample), found ${vae.inputs.map((i) => `${i.name} ${i.type}`).join(', ')}`,
    );
  }
  if (vae.outputs.length === 0) throw new ModelFormatError(`vae_decoder ${show(path)} has no outputs`);
}

function floatTensor(type: 'float32' | 'float16', data: Float32Array, dims: readonly number[]): Tensor {
  return type === 'float16' ? tensor('float16', toHalf(data), dims) : tensor('float32', data, dims);
}

/** The timestep as the UNet takes it: scalar or [B] (or [1]), float or int64 (truncated like numpy's astype). */
function timestepTensor(spec: UnetInfo['timestep'], t: number, B: number): Tensor {
  const dims = spec.rank === 0 ? [] : [spec.fixedOne ? 1 : B];
  const count = spec.rank === 0 ? 1 : (dims[0] as number);
  switch (spec.type) {
    case 'int64':
      return tensor('int64', new BigInt64Array(count).fill(BigInt(Math.trunc(t))), dims);
    case 'int32':
      return tensor('int32', new Int32Array(count).fill(Math.trunc(t)), dims);
    case 'float16':
      return tensor('float16', toHalf(new Float32Array(count).fill(t)), dims);
    default:
      return tensor('float32', new Float32Array(count).fill(t), dims);
  }
}

function tensorToFloat32(t: Tensor, what: string): Float32Array {
  if (t.type === 'float32') return t.data as Float32Array;
  if (t.type === 'float16') {
    return t.data instanceof Uint16Array ? fromHalf(t.data) : Float32Array.from(t.data as ArrayLike<number>);
  }
  throw new ModelFormatError(`${what} is ${t.type}; expected float32 or float16`);
}

function concatTwice(x: Float32Array): Float32Array {
  const out = new Float32Array(2 * x.length);
  out.set(x, 0);
  out.set(x, x.length);
  return out;
}

/** ε = ε_u + g (ε_c − ε_u) from the UNet output [ε_u (first half); ε_c (second half)]. */
function guide(out: Float32Array, half: number, g: number): Float32Array {
  const eps = new Float32Array(half);
  for (let i = 0; i < half; i++) {
    const u = out[i] as number;
    eps[i] = u + g * ((out[half + i] as number) - u);
  }
  return eps;
}

/**
 * Rows e (length d) of `hidden` [rows, d] → M e:
 *   matrix    M e                     (M row-major d × d)
 *   delta     e + Δ e                 (Δ = M − I, row-major d × d)
 *   low-rank  e + Uᵀ (Z e)            (U, Z row-major r × d: O(r d) per row instead of O(d²))
 * Sums in float64, results rounded to float32.
 */
export function applyTextTransform(t: Float32Array | TextTransform, hidden: Float32Array, d: number): Float32Array {
  const transform: TextTransform = t instanceof Float32Array ? { kind: 'matrix', M: t } : t;
  const check = (what: string, values: Float32Array, count: number, rule: string) => {
    if (values.length !== count) {
      throw new GenerationError(
        `textTransform: ${what} has ${values.length} values; the model's text width is d = ${d}, so ${rule} = ${count}`,
      );
    }
  };
  const rows = hidden.length / d;
  const out = new Float32Array(hidden.length);
  const e = new Float64Array(d);
  if (transform.kind === 'low-rank') {
    const r = transform.rank;
    if (!Number.isInteger(r) || r < 0)
      throw new GenerationError(`textTransform: rank ${show(r)} is not an integer >= 0`);
    check('U', transform.u, r * d, 'U must be r × d');
    check('Z', transform.z, r * d, 'Z must be r × d');
    const ze = new Float64Array(r);
    for (let row = 0; row < rows; row++) {
      for (let j = 0; j < d; j++) e[j] = hidden[row * d + j] as number;
      for (let k = 0; k < r; k++) {
        let sum = 0;
        for (let j = 0; j < d; j++) sum += (transform.z[k * d + j] as number) * (e[j] as number);
        ze[k] = sum;
      }
      for (let i = 0; i < d; i++) {
        let sum = e[i] as number;
        for (let k = 0; k < r; k++) sum += (transform.u[k * d + i] as number) * (ze[k] as number);
        out[row * d + i] = sum;
      }
    }
    return out;
  }
  const A = transform.kind === 'matrix' ? transform.M : transform.delta;
  check(
    transform.kind === 'matrix' ? 'M' : 'Δ',
    A,
    d * d,
    transform.kind === 'matrix' ? 'M must be d × d' : 'Δ must be d × d',
  );
  const plusIdentity = transform.kind === 'delta';
  for (let row = 0; row < rows; row++) {
    for (let j = 0; j < d; j++) e[j] = hidden[row * d + j] as number;
    for (let i = 0; i < d; i++) {
      let sum = plusIdentity ? (e[i] as number) : 0;
      const base = i * d;
      for (let j = 0; j < d; j++) sum += (A[base + j] as number) * (e[j] as number);
      out[row * d + i] = sum;
    }
  }
  return out;
}

function textTransformHash(t: TextTransform): string {
  const h = createHash('sha256').update(t.kind);
  const add = (a: Float32Array) => h.update(new Uint8Array(a.buffer, a.byteOffset, a.byteLength));
  if (t.kind === 'matrix') add(t.M);
  else if (t.kind === 'delta') add(t.delta);
  else {
    h.update(String(t.rank));
    add(t.u);
    add(t.z);
  }
  return h.digest('hex');
}

function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 ? 2 * Math.round(x / 2) : r;
}

function range(from: number, to: number): number[] {
  return Array.from({ length: Math.max(0, to - from) }, (_, i) => from + i);
}

function readJsonIfExists(path: string): Record<string, unknown> | null {
  if (!existsSync(path)) return null;
  try {
    const v = JSON.parse(readFileSync(path, 'utf8'));
    return v && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : null;
  } catch {
    return null;
  }
}
