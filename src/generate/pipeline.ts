/**
 * Text-to-image over a diffusers / Optimum ONNX Stable Diffusion folder, as diffusers'
 * OnnxStableDiffusionPipeline.__call__ does it (style.md: one class owns the visible denoising loop):
 *
 *   0. check inputs (request.ts: height/width multiples of 8, steps ≥ 1, seeds or latents)
 *   1. encode prompt and negative prompt (CLIP, 77 tokens; longer prompts truncated with a warning);
 *      an in-memory edit applies to these rows (request `textTransform`, edit/text-transform.ts)
 *   2. x_T = init_noise_sigma · z, z from each image's own seed (rng.ts) or the given latents
 *   3. for t in scheduler.timesteps:
 *        ε_u, ε_c = UNet(scale(x_t) twice, t, [uncond; cond])           (classifier-free guidance)
 *        ε = ε_u + g (ε_c − ε_u)          (g ≤ 1: no unconditional pass, ε = ε_c)
 *        x ← scheduler.step(ε, t, x)
 *   4. image = clip(VAE_decoder(x / 0.18215) / 2 + 0.5, 0, 1) · 255, rounded            (unet.ts)
 *
 * Sessions (text encoder, UNet, VAE decoder) are created once in `create` and reused; `dispose()`
 * releases them. The UNet's and VAE's input names and dtypes are read from the sessions (unet.ts);
 * the VAE scale factor and the native size from the folder (model-geometry.ts); what a call returns
 * is described in result.ts.
 */
import { readFileSync } from 'node:fs';
import { basename } from 'node:path';
import pLimit from 'p-limit';
import { openSdModel, type SdModel } from '../model/folder.js';
import { type Device, RuntimeError, Session, type SessionTuning } from '../runtime/ort.js';
import { ClipTextEncoder } from '../text/encoder.js';
import { ClipTokenizer } from '../text/tokenizer.js';
import { GenerationError, show } from '../util/errors.js';
import { type NativeSize, nativeSizeWarning, type VaeScale } from './geometry.js';
import { type ModelGeometry, readModelGeometry } from './model-geometry.js';
import { type GenerateRequest, type NormalizedRequest, normalizeRequest } from './request.js';
import type { EditIdentity, GeneratedImage, GenerateResult, ImageRecord, ModelIdentity } from './result.js';
import { batchNoiseSource, GaussianStream, noise, STREAM } from './rng.js';
import {
  createScheduler,
  parseSchedulerConfigJson,
  type Scheduler,
  type SchedulerConfigJson,
  stableDiffusionSchedulerConfig,
} from './schedulers/index.js';
import { checkVae, decodeLatents, describeUnet, LATENT_CHANNELS, runUnet, type UnetInfo } from './unet.js';

export type { GenerateRequest, ProgressEvent, TextSideEdit } from './request.js';
export { normalizeRequest } from './request.js';
export type {
  EditIdentity,
  GeneratedImage,
  GenerateResult,
  GenerateTiming,
  ImageRecord,
  ModelIdentity,
} from './result.js';
export { LATENT_CHANNELS, VAE_SCALING_FACTOR } from './unet.js';

export interface PipelineOptions {
  device?: Device;
  /** Intra-op threads per session (0/undefined: onnxruntime decides). */
  threads?: number;
  /** Session memory and optimization settings (default: src/runtime's measured defaults); for benchmarks. */
  tuning?: SessionTuning;
}

export class StableDiffusionPipeline {
  private readonly unetInfo: UnetInfo;
  private disposed = false;

  private constructor(
    readonly model: SdModel,
    readonly tokenizer: ClipTokenizer,
    readonly textEncoder: ClipTextEncoder,
    private readonly unet: Session,
    private readonly vae: Session,
    /** The model's scheduler config after diffusers' Stable Diffusion corrections. */
    readonly schedulerConfig: SchedulerConfigJson,
    /** Warnings from loading (scheduler config corrections). */
    readonly loadWarnings: string[],
    readonly options: PipelineOptions,
    /** f, the native size and the latent scaling factor, each with how it was decided (model-geometry.ts). */
    readonly geometry: ModelGeometry,
  ) {
    this.unetInfo = describeUnet(unet, model.files.unet);
  }

  /** The VAE's scale factor f (image side / latent side) and how it was decided (geometry.ts). */
  get vaeScale(): VaeScale {
    return this.geometry.vaeScale;
  }

  /** The default image size — what the model was made for — and how it was decided (geometry.ts). */
  get nativeSize(): NativeSize {
    return this.geometry.nativeSize;
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
      const geometry = await readModelGeometry(model, { vae });
      return new StableDiffusionPipeline(model, tokenizer, textEncoder, unet, vae, config, warnings, options, geometry);
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

  private checkLive(): void {
    if (this.disposed) throw new GenerationError('pipeline used after dispose()');
  }

  async generate(request: GenerateRequest): Promise<GenerateResult> {
    this.checkLive();
    const t0 = performance.now();
    const r = this.normalize(request);
    const warnings = [...this.loadWarnings];
    const given = request.height !== undefined && request.width !== undefined;
    const sizeWarning = given ? null : nativeSizeWarning(this.nativeSize);
    if (sizeWarning) warnings.push(sizeWarning);

    // 1. text: [uncond; cond] rows, optionally edited (W′ = W M applied as e ↦ M e)
    const tText = performance.now();
    const cond = this.tokenizer.encode(r.prompt);
    const uncond = this.tokenizer.encode(r.negativePrompt);
    for (const [what, text, enc] of [
      ['prompt', r.prompt, cond],
      ['negative prompt', r.negativePrompt, uncond],
    ] as const) {
      if (enc.truncated) {
        warnings.push(
          `The ${what} is longer than CLIP's ${this.tokenizer.maxLength} tokens; this part was truncated: ${show(this.tokenizer.truncatedPart(text))}`,
        );
      }
    }
    const encoded = await this.textEncoder.encode(r.guided ? [uncond.ids, cond.ids] : [cond.ids]);
    const L = encoded.length;
    const d = encoded.d;
    const hidden = r.textTransform ? r.textTransform.apply(encoded.lastHiddenState, d) : encoded.lastHiddenState;
    const edit: EditIdentity | null = r.textTransform
      ? { kind: 'text-transform', sha256: r.textTransform.sha256 }
      : null;
    const textMs = performance.now() - tText;

    // 2. the images and their batches
    const n = r.count;
    const f = this.vaeScale.factor;
    const latentShape = [LATENT_CHANNELS, r.height / f, r.width / f];
    const per = LATENT_CHANNELS * (r.height / f) * (r.width / f);
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
            const out = await runUnet(this.unet, this.unetInfo, this.model.files.unet, {
              sample,
              sampleDims: [B, ...latentShape],
              t,
              hidden: ehs,
              hiddenDims: [B, L, d],
            });
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
          // 4. decode one image at a time (as OnnxStableDiffusionPipeline does)
          const tDecode = performance.now();
          for (let k = 0; k < b; k++) {
            const img = indices[k] as number;
            const latents = x.slice(k * per, (k + 1) * per);
            const rgb = await decodeLatents(
              this.vae,
              this.model.files.vaeDecoder,
              latents,
              this.geometry.vaeScalingFactor,
              r.height,
              r.width,
              f,
            );
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
      size: {
        height: r.height,
        width: r.width,
        decidedBy: given ? 'given' : this.nativeSize.source,
        detail: given ? 'height and width given' : this.nativeSize.detail,
      },
      vaeScale: this.vaeScale,
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

  private normalize(request: GenerateRequest): NormalizedRequest {
    return normalizeRequest(request, { ...this.nativeSize, vaeScale: this.vaeScale.factor });
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
// The loop's small pieces

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

function range(from: number, to: number): number[] {
  return Array.from({ length: Math.max(0, to - from) }, (_, i) => from + i);
}
