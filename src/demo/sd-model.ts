/**
 * The tiny real-format Stable Diffusion model builder: writes a complete diffusers-ONNX (or Optimum)
 * layout model folder in well under a second, deterministic for given options. Used by tests of
 * every area and, with designed weights, by the demo world (src/demo/world.ts).
 *
 * What the folder holds (as the exporters write it, mission.md §3):
 *   model_index.json, tokenizer/{vocab.json, merges.txt, special_tokens_map.json, tokenizer_config.json},
 *   text_encoder/model.onnx, unet/model.onnx (+ weights.pb | model.onnx_data), vae_decoder/model.onnx,
 *   vae_encoder/model.onnx, scheduler/scheduler_config.json; the Optimum flavour adds each model's
 *   config.json and feature_extractor/preprocessor_config.json.
 *
 * The graphs, scaled down but with the exporter's structure:
 *   text encoder  ids → token embedding Gather + position embedding Gather → causal mix (MatMul with
 *                 a lower-triangular matrix: row j sees tokens 0..j) → final layer norm →
 *                 last_hidden_state; pooler_output = the row at argmax(ids) (the EOS), as CLIP.
 *   UNet          conv_in → for each cross-attention site: a resnet (SiLU, conv1, optional
 *                 conv_shortcut) and a Transformer2D (proj_in, transformer_blocks.0 with norm1/attn1
 *                 (self), norm2/attn2 (cross: to_k/to_v read encoder_hidden_states through anonymous
 *                 transposed `onnx::MatMul_<n>` weights), norm3/ff), proj_out); sites run at SD's
 *                 resolution levels (down_blocks.i at 1/2^i, mid_block at 1/8, up_blocks.i at
 *                 1/2^(3−i)) with stride-2 downsampler convs and nearest-resize upsamplers between
 *                 them → conv_out = the predicted data mean μ → the Gaussian ε-head below → out_sample.
 *   VAE           decoder post_quant_conv → conv_in → 3 × (nearest ×2 upsample + conv) → conv_out →
 *                 tanh; encoder the mirror (stride-2 convs) → quant_conv → the mean half.
 *
 * The ε-head (notation: x_t = sample, ᾱ_t = alphas_cumprod[t] of the SD 1.x schedule, μ = conv_out
 * output, n = h·w latent pixels; the data are modelled as Gaussian x_0 ~ N(μ, Σ) with, per channel,
 * variance s_∥² = n σ_c² along the spatial-mean direction and s_⊥,c² across the rest):
 *   (1) r = x_t − √ᾱ_t μ,   m = spatial mean of r,   r_⊥ = r − m
 *   (2) ε̂ = b(s_∥) m + b(s_⊥) r_⊥,   b(s) = √(1−ᾱ_t) / (ᾱ_t s² + 1 − ᾱ_t)
 * which is exactly E[ε | x_t] for that Gaussian (x̂_0 = μ + s²√ᾱ (ᾱ s² + 1 − ᾱ)⁻¹ (x_t − √ᾱ μ),
 * ε̂ = (x_t − √ᾱ x̂_0)/√(1−ᾱ)). A deterministic sampler then maps x_T to about μ + (per-seed noise
 * shaped by σ and s_⊥), and classifier-free guidance acts on μ exactly as on real SD's prediction.
 * ᾱ_t comes from a Gather on the timestep (linear interpolation between integer steps).
 *
 * Weights: seeded random by default (per-parameter streams, so overriding one parameter never
 * shifts another); `design.param` may supply any parameter (the demo world's hand-set weights).
 */
import { createHash } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { type AttrValue, GraphBuilder } from '../onnx/build.js';
import { BOS_TOKEN, type BpeVocab, buildWordVocab, EOS_TOKEN } from '../text/bpe-files.js';
import { show, UsageError } from '../util/errors.js';
import { mulberry32 } from '../util/random.js';
import { demoWords } from './words.js';

// ---------------------------------------------------------------------------------------------
// Options and manifest
// ---------------------------------------------------------------------------------------------

export type TinySdFlavor = 'diffusers' | 'optimum';
export type TinySdPrecision = 'float32' | 'float16';
export type TinySdExternalData = 'weights.pb' | 'model.onnx_data' | 'inline';
export type TinySdTimestep = 'float[b]' | 'scalar' | 'int64[b]';

/** One text cross-attention site: its Transformer2D module (e.g. "down_blocks.1.attentions.0") and width. */
export interface TinySiteSpec {
  block: string;
  width: number;
}

/** A parameter the builder asks for: `key` names it like a diffusers/transformers module path. */
export interface ParamRequest {
  /** e.g. "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight" */
  key: string;
  /** ONNX layout of the stored tensor: MatMul weights are [in, out] (torch's transposed), convs [out, in, kh, kw]. */
  dims: number[];
}

/** Hand-set weights (phase 2: the demo world). `name` is recorded in the manifest. */
export interface TinySdDesign {
  name: string;
  /** Return the parameter's values (float32, ONNX layout, dims as asked) or undefined for the seeded random default. */
  param(req: ParamRequest): Float32Array | undefined;
}

export interface TinySdOptions {
  /** 'diffusers' (the diffusers ONNX export script's layout, default) or 'optimum'. */
  flavor?: TinySdFlavor;
  /** Text width d (CLIP hidden size). Default 32; 1024 with `sd2`. */
  d?: number;
  /** SD 2.x conventions: pad token "!", linear proj_in/proj_out, d = 1024 unless given. */
  sd2?: boolean;
  /** 'float32' (default) or 'float16' (float16 inputs, outputs and initializers). */
  precision?: TinySdPrecision;
  /** External data file of the UNet: 'weights.pb' (diffusers default), 'model.onnx_data' (Optimum default) or 'inline'. */
  externalData?: TinySdExternalData;
  /** Initializers of at least this many bytes go to the external data file (default 1024, as onnx's saver). */
  externalThreshold?: number;
  /** `input_ids` element type: int32 (diffusers default) or int64 (Optimum default). */
  idsType?: 'int32' | 'int64';
  /** UNet `timestep`: float [b] (diffusers default), scalar float (Optimum default), or int64 [b]. */
  timestep?: TinySdTimestep;
  /** Cross-attention sites: a count (the first n of the SD 1.x-like layout) or explicit specs. Default 16. */
  sites?: number | TinySiteSpec[];
  /** Attention heads per site (each width must divide by it). Default 2. */
  heads?: number;
  /** Feed `encoder_hidden_states` to the attn2 projections through an Identity node (as some exports do). Default false. */
  identityPath?: boolean;
  /** Latent size the folder advertises (unet sample_size): images are `vaeScale`× it. Default 8 (64×64 images). */
  latentSize?: number;
  /**
   * The VAE's scale factor f (a power of 2 ≥ 2): log2 f up-/downsamplers, and in Optimum's VAE
   * config.json 1 + log2 f block_out_channels (diffusers: f = 2^(len − 1)). Default 8, as SD.
   */
  vaeScale?: number;
  /**
   * Declare the native image size in model_index.json (`"_time_debias": {"native_size": [h, w]}`,
   * a key diffusers ignores) — the diffusers layout has no unet/config.json to say it. Default true.
   */
  declareNativeSize?: boolean;
  /** Vocabulary words (each one token). Default: the demo world's words. */
  words?: readonly string[];
  /** Seed of the random weights. Default 0. */
  seed?: number;
  /** Hand-set weights for some or all parameters. */
  design?: TinySdDesign;
}

/** Normalized options (JSON-serializable; the design is recorded by name). */
export interface TinySdResolvedOptions {
  flavor: TinySdFlavor;
  d: number;
  sd2: boolean;
  precision: TinySdPrecision;
  externalData: TinySdExternalData;
  externalThreshold: number;
  idsType: 'int32' | 'int64';
  timestep: TinySdTimestep;
  sites: TinySiteSpec[];
  heads: number;
  identityPath: boolean;
  latentSize: number;
  vaeScale: number;
  declareNativeSize: boolean;
  words: string[];
  seed: number;
  design: string | null;
  opset: number;
}

export interface TinySdSite {
  /** diffusers module of the cross-attention, e.g. "down_blocks.0.attentions.0.transformer_blocks.0.attn2". */
  module: string;
  /** Output width of to_k / to_v (= the site's channel width). */
  width: number;
  heads: number;
  toK: { node: string; initializer: string; shape: [number, number] };
  toV: { node: string; initializer: string; shape: [number, number] };
}

export interface TinySdManifest {
  kind: 'tiny-sd';
  /** Builder version: bumps whenever the bytes it writes change for the same options. */
  version: number;
  options: TinySdResolvedOptions;
  d: number;
  vocabSize: number;
  padToken: string;
  padTokenId: number;
  bosTokenId: number;
  eosTokenId: number;
  sites: TinySdSite[];
  /** Files written, relative to the folder, sorted. */
  files: string[];
}

export const TINY_SD_VERSION = 2;

/** SD 1.x's cross-attention layout (mission.md §1), scaled down: 320/640/1280 → 8/16/32. */
export const SD1_SITE_LAYOUT: readonly TinySiteSpec[] = Object.freeze([
  { block: 'down_blocks.0.attentions.0', width: 8 },
  { block: 'down_blocks.0.attentions.1', width: 8 },
  { block: 'down_blocks.1.attentions.0', width: 16 },
  { block: 'down_blocks.1.attentions.1', width: 16 },
  { block: 'down_blocks.2.attentions.0', width: 32 },
  { block: 'down_blocks.2.attentions.1', width: 32 },
  { block: 'mid_block.attentions.0', width: 32 },
  { block: 'up_blocks.1.attentions.0', width: 32 },
  { block: 'up_blocks.1.attentions.1', width: 32 },
  { block: 'up_blocks.1.attentions.2', width: 32 },
  { block: 'up_blocks.2.attentions.0', width: 16 },
  { block: 'up_blocks.2.attentions.1', width: 16 },
  { block: 'up_blocks.2.attentions.2', width: 16 },
  { block: 'up_blocks.3.attentions.0', width: 8 },
  { block: 'up_blocks.3.attentions.1', width: 8 },
  { block: 'up_blocks.3.attentions.2', width: 8 },
]);

/** CLIP's context length. */
export const MAX_LENGTH = 77;
/** Latent channels of SD's VAE. */
export const LATENT_CHANNELS = 4;
/** SD 1.x training schedule (scheduler_config.json). */
export const SD1_SCHEDULE = Object.freeze({
  beta_start: 0.00085,
  beta_end: 0.012,
  beta_schedule: 'scaled_linear',
  num_train_timesteps: 1000,
});

/** ᾱ_t = Π_{s≤t} (1 − β_s), β = linspace(√β_start, √β_end, T)² (scaled_linear), in float64. */
export function sd1AlphasCumprod(): Float64Array {
  const T = SD1_SCHEDULE.num_train_timesteps;
  const a = Math.sqrt(SD1_SCHEDULE.beta_start);
  const b = Math.sqrt(SD1_SCHEDULE.beta_end);
  const out = new Float64Array(T);
  let prod = 1;
  for (let t = 0; t < T; t++) {
    const beta = (a + ((b - a) * t) / (T - 1)) ** 2;
    prod *= 1 - beta;
    out[t] = prod;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Option normalization (one place: defaults, then validation)
// ---------------------------------------------------------------------------------------------

export function resolveTinySdOptions(options: TinySdOptions = {}): TinySdResolvedOptions {
  const flavor = options.flavor ?? 'diffusers';
  if (flavor !== 'diffusers' && flavor !== 'optimum') {
    throw new UsageError(`flavor: ${show(flavor)} is not a known flavor; use 'diffusers' or 'optimum'`);
  }
  const sd2 = options.sd2 ?? false;
  const d = options.d ?? (sd2 ? 1024 : 32);
  if (!Number.isInteger(d) || d < 4 || d > 4096) throw new UsageError(`d: ${show(d)} must be an integer in 4..4096`);
  const precision = options.precision ?? 'float32';
  if (precision !== 'float32' && precision !== 'float16') {
    throw new UsageError(`precision: ${show(precision)} must be 'float32' or 'float16'`);
  }
  const externalData = options.externalData ?? (flavor === 'optimum' ? 'model.onnx_data' : 'weights.pb');
  if (!['weights.pb', 'model.onnx_data', 'inline'].includes(externalData)) {
    throw new UsageError(`externalData: ${show(externalData)} must be 'weights.pb', 'model.onnx_data' or 'inline'`);
  }
  const externalThreshold = options.externalThreshold ?? 1024;
  if (!Number.isInteger(externalThreshold) || externalThreshold < 0) {
    throw new UsageError(`externalThreshold: ${show(externalThreshold)} must be a non-negative integer (bytes)`);
  }
  const idsType = options.idsType ?? (flavor === 'optimum' ? 'int64' : 'int32');
  if (idsType !== 'int32' && idsType !== 'int64')
    throw new UsageError(`idsType: ${show(idsType)} must be 'int32' or 'int64'`);
  const timestep = options.timestep ?? (flavor === 'optimum' ? 'scalar' : 'float[b]');
  if (!['float[b]', 'scalar', 'int64[b]'].includes(timestep)) {
    throw new UsageError(`timestep: ${show(timestep)} must be 'float[b]', 'scalar' or 'int64[b]'`);
  }
  const heads = options.heads ?? 2;
  if (!Number.isInteger(heads) || heads < 1) throw new UsageError(`heads: ${show(heads)} must be a positive integer`);
  let sites: TinySiteSpec[];
  const s = options.sites ?? SD1_SITE_LAYOUT.length;
  if (typeof s === 'number') {
    if (!Number.isInteger(s) || s < 1 || s > SD1_SITE_LAYOUT.length) {
      throw new UsageError(
        `sites: ${show(s)} must be an integer in 1..${SD1_SITE_LAYOUT.length} or a list of site specs`,
      );
    }
    sites = SD1_SITE_LAYOUT.slice(0, s).map((x) => ({ ...x }));
  } else {
    if (!Array.isArray(s) || s.length === 0)
      throw new UsageError(`sites: ${show(s)} must be a non-empty list of site specs`);
    const seen = new Set<string>();
    sites = s.map((spec, i) => {
      if (!/^(down_blocks\.\d+|mid_block|up_blocks\.\d+)\.attentions\.\d+$/.test(spec.block)) {
        throw new UsageError(
          `sites[${i}].block: ${show(spec.block)} must look like "down_blocks.<i>.attentions.<j>", "mid_block.attentions.<j>" or "up_blocks.<i>.attentions.<j>"`,
        );
      }
      if (seen.has(spec.block)) throw new UsageError(`sites[${i}].block: ${show(spec.block)} appears twice`);
      seen.add(spec.block);
      if (!Number.isInteger(spec.width) || spec.width < 1) {
        throw new UsageError(`sites[${i}].width: ${show(spec.width)} must be a positive integer`);
      }
      return { block: spec.block, width: spec.width };
    });
  }
  for (const [i, spec] of sites.entries()) {
    if (spec.width % heads !== 0) {
      throw new UsageError(`sites[${i}].width: ${spec.width} is not divisible by heads = ${heads}`);
    }
  }
  const latentSize = options.latentSize ?? 8;
  if (!Number.isInteger(latentSize) || latentSize < 1) {
    throw new UsageError(`latentSize: ${show(latentSize)} must be a positive integer`);
  }
  const vaeScale = options.vaeScale ?? 8;
  if (!Number.isInteger(vaeScale) || vaeScale < 2 || (vaeScale & (vaeScale - 1)) !== 0) {
    throw new UsageError(`vaeScale: ${show(vaeScale)} must be a power of 2, at least 2`);
  }
  const words = [...(options.words ?? demoWords())];
  for (const w of words) {
    if (typeof w !== 'string' || !/^[a-z0-9]+$/i.test(w)) {
      throw new UsageError(`words: ${show(w)} must be a single word of letters and digits`);
    }
  }
  const seed = options.seed ?? 0;
  if (!Number.isInteger(seed) || seed < 0 || seed > 0xffffffff) {
    throw new UsageError(`seed: ${show(seed)} must be an integer in 0..2^32-1`);
  }
  return {
    flavor,
    d,
    sd2,
    precision,
    externalData,
    externalThreshold,
    idsType,
    timestep,
    sites,
    heads,
    identityPath: options.identityPath ?? false,
    latentSize,
    vaeScale,
    declareNativeSize: options.declareNativeSize ?? true,
    words,
    seed,
    design: options.design?.name ?? null,
    opset: flavor === 'optimum' ? 18 : 14,
  };
}

// ---------------------------------------------------------------------------------------------
// Seeded parameters
// ---------------------------------------------------------------------------------------------

/** A 32-bit seed from a string and the model seed (FNV-1a, then mixed). */
function streamSeed(key: string, seed: number): number {
  let h = 0x811c9dc5 ^ seed;
  for (let i = 0; i < key.length; i++) {
    h ^= key.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  h ^= h >>> 16;
  h = Math.imul(h, 0x7feb352d);
  h ^= h >>> 15;
  return h >>> 0;
}

/** mulberry32 uniforms shifted by half a step into (0, 1) (Box–Muller takes their logarithm). */
function uniforms(seed: number): () => number {
  const next = mulberry32(seed);
  return () => next() + 0.5 / 4294967296;
}

/** Gaussian values N(0, std²) from a per-key stream (Box–Muller). */
export function seededNormal(key: string, seed: number, count: number, std = 1): Float32Array {
  const u = uniforms(streamSeed(key, seed));
  const out = new Float32Array(count);
  for (let i = 0; i < count; i += 2) {
    const r = Math.sqrt(-2 * Math.log(u()));
    const th = 2 * Math.PI * u();
    out[i] = r * Math.cos(th) * std;
    if (i + 1 < count) out[i + 1] = r * Math.sin(th) * std;
  }
  return out;
}

type Init = { kind: 'normal'; std: number } | { kind: 'const'; value: number };

class Params {
  constructor(
    private readonly seed: number,
    private readonly design: TinySdDesign | undefined,
  ) {}

  get(key: string, dims: number[], init: Init): Float32Array {
    const count = dims.reduce((a, b) => a * b, 1);
    const designed = this.design?.param({ key, dims: [...dims] });
    if (designed) {
      if (designed.length !== count) {
        throw new UsageError(
          `design ${show(this.design?.name)}: parameter ${key} has ${designed.length} values, dims [${dims}] need ${count}`,
        );
      }
      return designed;
    }
    if (init.kind === 'const') return new Float32Array(count).fill(init.value);
    return seededNormal(key, this.seed, count, init.std);
  }
}

// ---------------------------------------------------------------------------------------------
// Graph helpers: exporter-style node names, opset-aware ops
// ---------------------------------------------------------------------------------------------

class Net {
  readonly g = new GraphBuilder('main_graph');
  private readonly counts = new Map<string, number>();
  private anon: number;

  constructor(
    readonly T: 'float32' | 'float16',
    readonly opset: number,
    readonly params: Params,
    anonStart: number,
  ) {
    this.anon = anonStart;
  }

  /** Exporter-style node name: `${scope}/${op}`, then `${scope}/${op}_1`, ... */
  name(scope: string, op: string): string {
    const base = `${scope}/${op}`;
    const n = this.counts.get(base) ?? 0;
    this.counts.set(base, n + 1);
    return n === 0 ? base : `${base}_${n}`;
  }

  op(scope: string, opType: string, inputs: string[], attrs: Record<string, AttrValue> = {}): string {
    return this.g.node(opType, inputs, 1, attrs, this.name(scope, opType));
  }

  /** A float constant of the model's type. */
  fconst(name: string, dims: number[], data: ArrayLike<number>): string {
    return this.g.initializer(name, this.T, dims, data);
  }

  iconst(name: string, data: number[]): string {
    return this.g.initializer(name, 'int64', [data.length], data);
  }

  /** A parameter stored under its module name (biases, norms, convs). */
  named(key: string, name: string, dims: number[], init: Init): string {
    return this.g.initializer(name, this.T, dims, this.params.get(key, dims, init));
  }

  /** A MatMul weight stored as the exporter does: anonymous `onnx::MatMul_<n>`, transposed [in, out]. */
  anonymous(key: string, dims: [number, number], init: Init): string {
    const name = `onnx::MatMul_${this.anon++}`;
    return this.g.initializer(name, this.T, dims, this.params.get(key, dims, init));
  }

  /** Name of a constant in `scope`, exporter style: `${scope}/Constant_<k>_output_0`. */
  cname(scope: string): string {
    return `${this.name(scope, 'Constant')}_output_0`;
  }

  peekAnon(): number {
    return this.anon;
  }

  reduceMean(scope: string, x: string, axes: number[]): string {
    if (this.opset >= 18) {
      return this.g.node(
        'ReduceMean',
        [x, this.iconst(`${this.name(scope, 'Constant')}_output_0`, axes)],
        1,
        { keepdims: 1 },
        this.name(scope, 'ReduceMean'),
      );
    }
    return this.op(scope, 'ReduceMean', [x], { axes, keepdims: 1 });
  }

  /** LayerNorm over the last axis: one LayerNormalization node from opset 17, decomposed before (as older exports). */
  layerNorm(scope: string, key: string, x: string, width: number): string {
    const gamma = this.named(`${key}.weight`, `${key.replace(/^(unet|text)\./, '')}.weight`, [width], {
      kind: 'const',
      value: 1,
    });
    const beta = this.named(`${key}.bias`, `${key.replace(/^(unet|text)\./, '')}.bias`, [width], {
      kind: 'const',
      value: 0,
    });
    if (this.opset >= 17) {
      return this.g.node(
        'LayerNormalization',
        [x, gamma, beta],
        1,
        { axis: -1, epsilon: { float: 1e-5 } },
        this.name(scope, 'LayerNormalization'),
      );
    }
    const mean = this.reduceMean(scope, x, [-1]);
    const xc = this.op(scope, 'Sub', [x, mean]);
    const sq = this.op(scope, 'Pow', [xc, this.fconst(`${this.name(scope, 'Constant')}_output_0`, [], [2])]);
    const v = this.reduceMean(scope, sq, [-1]);
    const ve = this.op(scope, 'Add', [v, this.fconst(`${this.name(scope, 'Constant')}_output_0`, [], [1e-5])]);
    const sd = this.op(scope, 'Sqrt', [ve]);
    const y = this.op(scope, 'Div', [xc, sd]);
    const yg = this.op(scope, 'Mul', [y, gamma]);
    return this.op(scope, 'Add', [yg, beta]);
  }

  /** x @ W (+ b), W anonymous [in, out]. */
  linear(scope: string, key: string, x: string, inW: number, outW: number, bias: boolean, std?: number): string {
    const w = this.anonymous(`${key}.weight`, [inW, outW], { kind: 'normal', std: std ?? 1 / Math.sqrt(inW) });
    const y = this.g.node('MatMul', [x, w], 1, {}, `${scope}/MatMul`);
    if (!bias) return y;
    const b = this.named(`${key}.bias`, `${key.replace(/^(unet|text)\./, '')}.bias`, [outW], {
      kind: 'const',
      value: 0,
    });
    return this.g.node('Add', [b, y], 1, {}, `${scope}/Add`);
  }

  conv(scope: string, key: string, x: string, cin: number, cout: number, k: number, stride = 1, std?: number): string {
    const name = key.replace(/^(unet|vae_decoder|vae_encoder)\./, '');
    const w = this.named(`${key}.weight`, `${name}.weight`, [cout, cin, k, k], {
      kind: 'normal',
      std: std ?? 1 / Math.sqrt(cin * k * k),
    });
    const b = this.named(`${key}.bias`, `${name}.bias`, [cout], { kind: 'const', value: 0 });
    const p = (k - 1) >> 1;
    return this.g.node(
      'Conv',
      [x, w, b],
      1,
      { dilations: [1, 1], group: 1, kernel_shape: [k, k], pads: [p, p, p, p], strides: [stride, stride] },
      `${scope}/Conv`,
    );
  }

  silu(scope: string, x: string): string {
    const s = this.op(scope, 'Sigmoid', [x]);
    return this.op(scope, 'Mul', [x, s]);
  }
}

// ---------------------------------------------------------------------------------------------
// Text encoder
// ---------------------------------------------------------------------------------------------

function buildTextEncoder(o: TinySdResolvedOptions, vocabSize: number, params: Params): GraphBuilder {
  const net = new Net(o.precision, o.opset, params, 1000);
  const g = net.g;
  const d = o.d;
  const ids = g.input('input_ids', o.idsType, ['batch', 'sequence']);
  g.output('last_hidden_state', o.precision, ['batch', 'sequence', d]);
  g.output('pooler_output', o.precision, ['batch', d]);

  // Embeddings: token Gather + position Gather (position_ids buffer [1, 77]).
  const tokEmb = net.named(
    'text.embeddings.token_embedding.weight',
    'text_model.embeddings.token_embedding.weight',
    [vocabSize, d],
    {
      kind: 'normal',
      std: 1,
    },
  );
  const tok = g.node('Gather', [tokEmb, ids], 1, {}, '/text_model/embeddings/token_embedding/Gather');
  const posEmb = net.named(
    'text.embeddings.position_embedding.weight',
    'text_model.embeddings.position_embedding.weight',
    [MAX_LENGTH, d],
    {
      kind: 'normal',
      std: 0.1,
    },
  );
  const posIds = g.initializer(
    'text_model.embeddings.position_ids',
    'int64',
    [1, MAX_LENGTH],
    Array.from({ length: MAX_LENGTH }, (_, i) => i),
  );
  const pos = g.node('Gather', [posEmb, posIds], 1, {}, '/text_model/embeddings/position_embedding/Gather');
  const emb = g.node('Add', [tok, pos], 1, {}, '/text_model/embeddings/Add');

  // Causal mix: h_j = Σ_{i≤j} L[j,i] e_i — a lower-triangular matrix, so later tokens see earlier ones.
  const L = params.get('text.encoder.causal_mix', [MAX_LENGTH, MAX_LENGTH], { kind: 'const', value: 0 });
  let nonzero = false;
  for (let j = 0; j < MAX_LENGTH; j++) {
    for (let i = j + 1; i < MAX_LENGTH; i++) L[j * MAX_LENGTH + i] = 0; // causal: never look ahead
    for (let i = 0; i <= j; i++) if (L[j * MAX_LENGTH + i] !== 0) nonzero = true;
  }
  if (!nonzero) {
    // default: running mean (row j = mean of tokens 0..j)
    for (let j = 0; j < MAX_LENGTH; j++) for (let i = 0; i <= j; i++) L[j * MAX_LENGTH + i] = 1 / (j + 1);
  }
  const Lname = g.initializer('text_model.encoder.causal_mix', o.precision, [MAX_LENGTH, MAX_LENGTH], L);
  const mixed = g.node('MatMul', [Lname, emb], 1, {}, '/text_model/encoder/layers.0/self_attn/MatMul');
  // A per-token MLP-like residual projection (identity-initialised residual + small random linear).
  const proj = net.linear(
    '/text_model/encoder/layers.0/mlp/fc1',
    'text.encoder.layers.0.mlp.fc1',
    mixed,
    d,
    d,
    true,
    0.1 / Math.sqrt(d),
  );
  const res = g.node('Add', [mixed, proj], 1, {}, '/text_model/encoder/layers.0/Add');
  const last = net.layerNorm('/text_model/final_layer_norm', 'text.text_model.final_layer_norm', res, d);
  g.node('Identity', [last], ['last_hidden_state'], {}, '/text_model/Identity');

  // pooler_output = last_hidden_state[b, argmax(ids[b])] (the EOS position, as CLIP).
  const idsF = g.node('Cast', [ids], 1, { to: 1 }, '/text_model/Cast');
  const eos = g.node('ArgMax', [idsF], 1, { axis: -1, keepdims: 1 }, '/text_model/ArgMax'); // [b, 1]
  const eos3 = g.node('Unsqueeze', [eos, net.iconst(net.cname('/text_model'), [2])], 1, {}, '/text_model/Unsqueeze'); // [b,1,1]
  const idx = g.node('Expand', [eos3, net.iconst(net.cname('/text_model'), [1, 1, d])], 1, {}, '/text_model/Expand'); // [b,1,d]
  const picked = g.node('GatherElements', [last, idx], 1, { axis: 1 }, '/text_model/GatherElements'); // [b,1,d]
  g.node('Squeeze', [picked, net.iconst(net.cname('/text_model'), [1])], ['pooler_output'], {}, '/text_model/Squeeze');
  return g;
}

// ---------------------------------------------------------------------------------------------
// UNet
// ---------------------------------------------------------------------------------------------

function siteScope(block: string): { scope: string; resnet: string; index: number } {
  // "down_blocks.1.attentions.0" → scope "/down_blocks.1/attentions.0", resnet "/down_blocks.1/resnets.0"
  const m = /^(.*)\.attentions\.(\d+)$/.exec(block);
  const parent = (m?.[1] ?? block).replace(/\./g, '/').replace(/(blocks)\/(\d+)/, '$1.$2');
  const index = Number(m?.[2] ?? 0);
  return { scope: `/${parent}/attentions.${index}`, resnet: `/${parent}/resnets.${index}`, index };
}

/** Resolution level of a block: down_blocks.i → i, mid_block → 3, up_blocks.i → 3 − i (clamped at 0). */
function siteLevel(block: string): number {
  const m = /^(down|up)_blocks\.(\d+)/.exec(block);
  if (!m) return 3;
  const i = Number(m[2]);
  return m[1] === 'down' ? i : Math.max(0, 3 - i);
}

function attention(
  net: Net,
  scope: string,
  key: string,
  q_in: string,
  kv_in: string,
  width: number,
  kvWidth: number,
  heads: number,
): { out: string; toK: { node: string; initializer: string }; toV: { node: string; initializer: string } } {
  const g = net.g;
  const dh = width / heads;
  const wq = net.anonymous(`${key}.to_q.weight`, [width, width], { kind: 'normal', std: 1 / Math.sqrt(width) });
  const q = g.node('MatMul', [q_in, wq], 1, {}, `${scope}/to_q/MatMul`);
  const kInit = net.anonymous(`${key}.to_k.weight`, [kvWidth, width], { kind: 'normal', std: 1 / Math.sqrt(kvWidth) });
  const kNode = `${scope}/to_k/MatMul`;
  const k = g.node('MatMul', [kv_in, kInit], 1, {}, kNode);
  const vInit = net.anonymous(`${key}.to_v.weight`, [kvWidth, width], { kind: 'normal', std: 1 / Math.sqrt(kvWidth) });
  const vNode = `${scope}/to_v/MatMul`;
  const v = g.node('MatMul', [kv_in, vInit], 1, {}, vNode);
  const split = net.iconst(net.cname(scope), [0, -1, heads, dh]);
  const qh = net.op(scope, 'Transpose', [net.op(scope, 'Reshape', [q, split])], { perm: [0, 2, 1, 3] }); // [b,H,N,dh]
  const kt = net.op(scope, 'Transpose', [net.op(scope, 'Reshape', [k, split])], { perm: [0, 2, 3, 1] }); // [b,H,dh,M]
  const vh = net.op(scope, 'Transpose', [net.op(scope, 'Reshape', [v, split])], { perm: [0, 2, 1, 3] }); // [b,H,M,dh]
  const scores = net.op(scope, 'MatMul', [qh, kt]);
  const scaled = net.op(scope, 'Mul', [scores, net.fconst(net.cname(scope), [], [1 / Math.sqrt(dh)])]);
  const p = net.op(scope, 'Softmax', [scaled], { axis: -1 });
  const o = net.op(scope, 'MatMul', [p, vh]); // [b,H,N,dh]
  const merged = net.op(scope, 'Reshape', [
    net.op(scope, 'Transpose', [o], { perm: [0, 2, 1, 3] }),
    net.iconst(net.cname(scope), [0, -1, width]),
  ]);
  const out = net.linear(`${scope}/to_out.0`, `${key}.to_out.0`, merged, width, width, true, 0.3 / Math.sqrt(width));
  return { out, toK: { node: kNode, initializer: kInit }, toV: { node: vNode, initializer: vInit } };
}

function buildUnet(o: TinySdResolvedOptions, params: Params): { g: GraphBuilder; sites: TinySdSite[] } {
  const T = o.precision;
  const net = new Net(T, o.opset, params, 9000);
  const g = net.g;
  const C = LATENT_CHANNELS;
  const sample = g.input('sample', T, ['batch', C, 'height', 'width']);
  const timestep =
    o.timestep === 'scalar'
      ? g.input('timestep', T, [])
      : o.timestep === 'int64[b]'
        ? g.input('timestep', 'int64', ['batch'])
        : g.input('timestep', T, ['batch']);
  const ehsIn = g.input('encoder_hidden_states', T, ['batch', 'sequence', o.d]);
  g.output('out_sample', T, ['batch', C, 'height', 'width']);
  const ehs = o.identityPath ? g.node('Identity', [ehsIn], 1, {}, '/encoder_hidden_states/Identity') : ehsIn;

  // Timestep path: ᾱ_t by linear interpolation in the SD 1.x alphas_cumprod table.
  const tF = g.node('Cast', [timestep], 1, { to: 1 }, '/time_proj/Cast'); // float32
  const tC = g.node(
    'Clip',
    [
      tF,
      g.initializer(net.cname('/time_proj'), 'float32', [], [0]),
      g.initializer(net.cname('/time_proj'), 'float32', [], [999]),
    ],
    1,
    {},
    '/time_proj/Clip',
  );
  const t0 = g.node('Floor', [tC], 1, {}, '/time_proj/Floor');
  const frac = g.node('Sub', [tC, t0], 1, {}, '/time_proj/Sub');
  const i0 = g.node('Cast', [t0], 1, { to: 7 }, '/time_proj/Cast_1');
  const i1 = g.node(
    'Min',
    [
      g.node('Add', [i0, g.initializer(net.cname('/time_proj'), 'int64', [], [1])], 1, {}, '/time_proj/Add'),
      g.initializer(net.cname('/time_proj'), 'int64', [], [999]),
    ],
    1,
    {},
    '/time_proj/Min',
  );
  const table = g.initializer('time_proj.alphas_cumprod', 'float32', [1000], sd1AlphasCumprod());
  const a0 = g.node('Gather', [table, i0], 1, { axis: 0 }, '/time_proj/Gather');
  const a1 = g.node('Gather', [table, i1], 1, { axis: 0 }, '/time_proj/Gather_1');
  const abF = g.node(
    'Add',
    [a0, g.node('Mul', [frac, g.node('Sub', [a1, a0], 1, {}, '/time_proj/Sub_1')], 1, {}, '/time_proj/Mul')],
    1,
    {},
    '/time_proj/Add_1',
  );
  const abT = T === 'float32' ? abF : g.node('Cast', [abF], 1, { to: 10 }, '/time_proj/Cast_2');
  const ab = g.node('Reshape', [abT, net.iconst(net.cname('/time_proj'), [-1, 1, 1, 1])], 1, {}, '/time_proj/Reshape'); // [b|1,1,1,1]

  // conv_in → sites → conv_out = μ
  const first = o.sites[0]?.width ?? 8;
  let h = net.conv('/conv_in', 'unet.conv_in', sample, C, first, 3);
  let cur = first;
  const sites: TinySdSite[] = [];
  // Resolution levels as in SD: down_blocks.i at level i (i stride-2 downsamplings), mid_block at 3,
  // up_blocks.i at 3 − i; moving between levels runs the blocks' downsamplers (stride-2 conv) or
  // upsamplers (nearest resize to the stored size of that level, then conv).
  let level = 0;
  const levelShape = new Map<number, string>();
  const moveTo = (target: number) => {
    while (level < target) {
      const scope = `/down_blocks.${level}/downsamplers.0`;
      levelShape.set(level, net.op(scope, 'Shape', [h]));
      h = net.conv(`${scope}/conv`, `unet.down_blocks.${level}.downsamplers.0.conv`, h, cur, cur, 3, 2);
      level++;
    }
    while (level > target) {
      const scope = `/up_blocks.${3 - level}/upsamplers.0`;
      const saved = levelShape.get(level - 1) as string;
      const sizes = net.op(
        scope,
        'Concat',
        [
          net.op(scope, 'Slice', [
            net.op(scope, 'Shape', [h]),
            net.iconst(net.cname(scope), [0]),
            net.iconst(net.cname(scope), [2]),
          ]),
          net.op(scope, 'Slice', [saved, net.iconst(net.cname(scope), [2]), net.iconst(net.cname(scope), [4])]),
        ],
        { axis: 0 },
      );
      const up = g.node(
        'Resize',
        [h, '', '', sizes],
        1,
        { coordinate_transformation_mode: 'asymmetric', mode: 'nearest', nearest_mode: 'floor' },
        net.name(scope, 'Resize'),
      );
      h = net.conv(`${scope}/conv`, `unet.up_blocks.${3 - level}.upsamplers.0.conv`, up, cur, cur, 3);
      level--;
    }
  };
  for (const spec of o.sites) {
    const { scope, resnet } = siteScope(spec.block);
    moveTo(siteLevel(spec.block));
    const c = spec.width;
    const key = `unet.${spec.block}`;
    const rkey = key.replace(/attentions\.(\d+)$/, 'resnets.$1');
    // resnet: shortcut(h) + conv1(SiLU(h))
    const act = net.silu(`${resnet}/nonlinearity`, h);
    const conv1 = net.conv(`${resnet}/conv1`, `${rkey}.conv1`, act, cur, c, 3, 1, 0.3 / Math.sqrt(cur * 9));
    const sc = cur === c ? h : net.conv(`${resnet}/conv_shortcut`, `${rkey}.conv_shortcut`, h, cur, c, 1);
    const hr = g.node('Add', [sc, conv1], 1, {}, `${resnet}/Add`);
    // Transformer2D
    const shape = net.op(scope, 'Shape', [hr]);
    let x: string;
    let pin: string = hr;
    if (!o.sd2) pin = net.conv(`${scope}/proj_in`, `${key}.proj_in`, hr, c, c, 1);
    x = net.op(scope, 'Transpose', [net.op(scope, 'Reshape', [pin, net.iconst(net.cname(scope), [0, c, -1])])], {
      perm: [0, 2, 1],
    }); // [b, hw, c]
    if (o.sd2) x = net.linear(`${scope}/proj_in`, `${key}.proj_in`, x, c, c, true);
    const tb = `${scope}/transformer_blocks.0`;
    const tkey = `${key}.transformer_blocks.0`;
    const n1 = net.layerNorm(`${tb}/norm1`, `${tkey}.norm1`, x, c);
    const a1 = attention(net, `${tb}/attn1`, `${tkey}.attn1`, n1, n1, c, c, o.heads);
    x = net.op(tb, 'Add', [a1.out, x]);
    const n2 = net.layerNorm(`${tb}/norm2`, `${tkey}.norm2`, x, c);
    const a2 = attention(net, `${tb}/attn2`, `${tkey}.attn2`, n2, ehs, c, o.d, o.heads);
    x = net.op(tb, 'Add', [a2.out, x]);
    const n3 = net.layerNorm(`${tb}/norm3`, `${tkey}.norm3`, x, c);
    const f1 = net.linear(`${tb}/ff/net.0/proj`, `${tkey}.ff.net.0.proj`, n3, c, 2 * c, true);
    // GELU(x) = x · ½ (1 + erf(x/√2)), decomposed as the exporter writes it
    const ge = `${tb}/ff/net.0`;
    const erf = net.op(ge, 'Erf', [net.op(ge, 'Div', [f1, net.fconst(net.cname(ge), [], [Math.SQRT2])])]);
    const gelu = net.op(ge, 'Mul', [
      net.op(ge, 'Mul', [f1, net.op(ge, 'Add', [erf, net.fconst(net.cname(ge), [], [1])])]),
      net.fconst(net.cname(ge), [], [0.5]),
    ]);
    const f2 = net.linear(`${tb}/ff/net.2`, `${tkey}.ff.net.2`, gelu, 2 * c, c, true, 0.3 / Math.sqrt(2 * c));
    x = net.op(tb, 'Add', [f2, x]);
    if (o.sd2) x = net.linear(`${scope}/proj_out`, `${key}.proj_out`, x, c, c, true, 0.5 / Math.sqrt(c));
    let back = net.op(scope, 'Reshape', [net.op(scope, 'Transpose', [x], { perm: [0, 2, 1] }), shape]); // [b,c,h,w]
    if (!o.sd2) back = net.conv(`${scope}/proj_out`, `${key}.proj_out`, back, c, c, 1, 1, 0.5 / Math.sqrt(c));
    h = net.op(scope, 'Add', [back, hr]);
    cur = c;
    sites.push({
      module: `${spec.block}.transformer_blocks.0.attn2`,
      width: c,
      heads: o.heads,
      toK: { ...a2.toK, shape: [o.d, c] },
      toV: { ...a2.toV, shape: [o.d, c] },
    });
  }
  moveTo(0);
  const mu = net.conv('/conv_out', 'unet.conv_out', h, cur, C, 3, 1, 0.5 / Math.sqrt(cur * 9));

  // ε-head, equations (1)–(2) of the header.
  const hs = '/denoise';
  // σ_c² (variance of a channel's spatial mean) and s_⊥,c² (per-pixel variance around it)
  const varMean = net.named('unet.denoise.var_mean', 'denoise.var_mean', [1, C, 1, 1], { kind: 'const', value: 1 });
  const sPerp2 = net.named('unet.denoise.var_perp', 'denoise.var_perp', [1, C, 1, 1], { kind: 'const', value: 0.25 });
  const one = net.fconst(net.cname('/denoise'), [], [1]);
  const sqrtAb = net.op(hs, 'Sqrt', [ab]);
  const oneMinus = net.op(hs, 'Sub', [one, ab]);
  const sqrtOneMinus = net.op(hs, 'Sqrt', [oneMinus]);
  const r = net.op(hs, 'Sub', [sample, net.op(hs, 'Mul', [sqrtAb, mu])]);
  const m = net.reduceMean(hs, r, [2, 3]);
  const rPerp = net.op(hs, 'Sub', [r, m]);
  // n = h·w from the sample's shape
  const shp = net.op(hs, 'Shape', [sample]);
  const hw = net.op(
    hs,
    'ReduceProd',
    [net.op(hs, 'Slice', [shp, net.iconst(net.cname('/denoise'), [2]), net.iconst(net.cname('/denoise'), [4])])],
    { keepdims: 0 },
  );
  const n = net.op(hs, 'Cast', [hw], { to: T === 'float32' ? 1 : 10 });
  const sPar2 = net.op(hs, 'Mul', [varMean, n]); // s_∥² = n σ²
  const bOf = (s2: string) =>
    net.op(hs, 'Div', [sqrtOneMinus, net.op(hs, 'Add', [net.op(hs, 'Mul', [ab, s2]), oneMinus])]);
  const eps = net.op(hs, 'Add', [net.op(hs, 'Mul', [bOf(sPar2), m]), net.op(hs, 'Mul', [bOf(sPerp2), rPerp])]);
  g.node('Identity', [eps], ['out_sample'], {}, '/denoise/Identity');
  return { g, sites };
}

// ---------------------------------------------------------------------------------------------
// VAE
// ---------------------------------------------------------------------------------------------

const VAE_WIDTH = 8;

function buildVaeDecoder(o: TinySdResolvedOptions, params: Params): GraphBuilder {
  const net = new Net(o.precision, o.opset, params, 2000);
  const g = net.g;
  const z = g.input('latent_sample', o.precision, ['batch', LATENT_CHANNELS, 'latent_height', 'latent_width']);
  g.output('sample', o.precision, ['batch', 3, 'height', 'width']);
  let x = net.conv('/post_quant_conv', 'vae_decoder.post_quant_conv', z, LATENT_CHANNELS, LATENT_CHANNELS, 1);
  x = net.conv('/decoder/conv_in', 'vae_decoder.decoder.conv_in', x, LATENT_CHANNELS, VAE_WIDTH, 3);
  for (let i = 0; i < Math.log2(o.vaeScale); i++) {
    const s = `/decoder/up_blocks.${i}/upsamplers.0`;
    const roi = g.initializer(`${s}/Constant_output_0`, 'float32', [0], []);
    const scales = g.initializer(`${s}/Constant_1_output_0`, 'float32', [4], [1, 1, 2, 2]);
    x = g.node(
      'Resize',
      [x, roi, scales],
      1,
      { coordinate_transformation_mode: 'asymmetric', mode: 'nearest', nearest_mode: 'floor' },
      `${s}/Resize`,
    );
    x = net.conv(`${s}/conv`, `vae_decoder.decoder.up_blocks.${i}.upsamplers.0.conv`, x, VAE_WIDTH, VAE_WIDTH, 3);
  }
  x = net.conv('/decoder/conv_out', 'vae_decoder.decoder.conv_out', x, VAE_WIDTH, 3, 3);
  g.node('Tanh', [x], ['sample'], {}, '/decoder/Tanh');
  return g;
}

function buildVaeEncoder(o: TinySdResolvedOptions, params: Params): GraphBuilder {
  const net = new Net(o.precision, o.opset, params, 3000);
  const g = net.g;
  const img = g.input('sample', o.precision, ['batch', 3, 'height', 'width']);
  g.output('latent_sample', o.precision, ['batch', LATENT_CHANNELS, 'latent_height', 'latent_width']);
  let x = net.conv('/encoder/conv_in', 'vae_encoder.encoder.conv_in', img, 3, VAE_WIDTH, 3);
  for (let i = 0; i < Math.log2(o.vaeScale); i++) {
    x = net.conv(
      `/encoder/down_blocks.${i}/downsamplers.0/conv`,
      `vae_encoder.encoder.down_blocks.${i}.downsamplers.0.conv`,
      x,
      VAE_WIDTH,
      VAE_WIDTH,
      3,
      2,
    );
  }
  x = net.conv('/encoder/conv_out', 'vae_encoder.encoder.conv_out', x, VAE_WIDTH, 2 * LATENT_CHANNELS, 3);
  x = net.conv('/quant_conv', 'vae_encoder.quant_conv', x, 2 * LATENT_CHANNELS, 2 * LATENT_CHANNELS, 1);
  // latent_dist.mode(): the mean half of the moments
  g.node(
    'Slice',
    [x, net.iconst(net.cname(''), [0]), net.iconst(net.cname(''), [LATENT_CHANNELS]), net.iconst(net.cname(''), [1])],
    ['latent_sample'],
    {},
    '/Slice',
  );
  return g;
}

// ---------------------------------------------------------------------------------------------
// Config files
// ---------------------------------------------------------------------------------------------

function json(value: unknown): string {
  return `${JSON.stringify(value, null, 2)}\n`;
}

function addedToken(content: string): Record<string, unknown> {
  return { __type: 'AddedToken', content, lstrip: false, normalized: true, rstrip: false, single_word: false };
}

function tokenizerFiles(bpe: BpeVocab, padToken: string): Record<string, string> {
  const sortedVocab: Record<string, number> = {};
  for (const k of Object.keys(bpe.vocab).sort()) sortedVocab[k] = bpe.vocab[k] as number;
  return {
    'vocab.json': json(sortedVocab),
    'merges.txt': `#version: 0.2\n${bpe.merges.join('\n')}\n`,
    'special_tokens_map.json': json({
      bos_token: addedToken(BOS_TOKEN),
      eos_token: addedToken(EOS_TOKEN),
      pad_token: padToken === EOS_TOKEN ? addedToken(EOS_TOKEN) : padToken,
      unk_token: addedToken(EOS_TOKEN),
    }),
    'tokenizer_config.json': json({
      add_prefix_space: false,
      bos_token: addedToken(BOS_TOKEN),
      clean_up_tokenization_spaces: true,
      do_lower_case: true,
      eos_token: addedToken(EOS_TOKEN),
      errors: 'replace',
      model_max_length: MAX_LENGTH,
      pad_token: padToken === EOS_TOKEN ? addedToken(EOS_TOKEN) : padToken,
      tokenizer_class: 'CLIPTokenizer',
      unk_token: addedToken(EOS_TOKEN),
    }),
  };
}

function schedulerConfig(): Record<string, unknown> {
  return {
    _class_name: 'PNDMScheduler',
    _diffusers_version: '0.30.0',
    beta_end: SD1_SCHEDULE.beta_end,
    beta_schedule: SD1_SCHEDULE.beta_schedule,
    beta_start: SD1_SCHEDULE.beta_start,
    clip_sample: false,
    num_train_timesteps: SD1_SCHEDULE.num_train_timesteps,
    prediction_type: 'epsilon',
    set_alpha_to_one: false,
    skip_prk_steps: true,
    steps_offset: 1,
    timestep_spacing: 'leading',
    trained_betas: null,
  };
}

function modelIndex(o: TinySdResolvedOptions): Record<string, unknown> {
  if (o.flavor === 'diffusers') {
    // diffusers' convert_stable_diffusion_checkpoint_to_onnx.py: OnnxStableDiffusionPipeline.save_pretrained
    return {
      _class_name: 'OnnxStableDiffusionPipeline',
      _diffusers_version: '0.30.0',
      feature_extractor: [null, null],
      requires_safety_checker: false,
      safety_checker: [null, null],
      scheduler: ['diffusers', 'PNDMScheduler'],
      text_encoder: ['diffusers', 'OnnxRuntimeModel'],
      tokenizer: ['transformers', 'CLIPTokenizer'],
      unet: ['diffusers', 'OnnxRuntimeModel'],
      vae_decoder: ['diffusers', 'OnnxRuntimeModel'],
      vae_encoder: ['diffusers', 'OnnxRuntimeModel'],
      // this project's metadata (diffusers skips keys that start with "_"): the size the model was made for
      ...(o.declareNativeSize
        ? { _time_debias: { native_size: [o.latentSize * o.vaeScale, o.latentSize * o.vaeScale] } }
        : {}),
    };
  }
  // Optimum's exporter saves the source (PyTorch) pipeline's config: `model.save_config(output)`.
  return {
    _class_name: 'StableDiffusionPipeline',
    _diffusers_version: '0.30.0',
    feature_extractor: ['transformers', 'CLIPImageProcessor'],
    image_encoder: [null, null],
    requires_safety_checker: false,
    safety_checker: [null, null],
    scheduler: ['diffusers', 'PNDMScheduler'],
    text_encoder: ['transformers', 'CLIPTextModel'],
    tokenizer: ['transformers', 'CLIPTokenizer'],
    unet: ['diffusers', 'UNet2DConditionModel'],
    vae: ['diffusers', 'AutoencoderKL'],
  };
}

/** Optimum also writes each exported model's config.json (and the feature extractor). */
function optimumConfigs(
  o: TinySdResolvedOptions,
  vocabSize: number,
  padId: number,
  bosId: number,
  eosId: number,
): Record<string, Record<string, unknown>> {
  const blockWidths = [...new Set(o.sites.map((s) => s.width))];
  const vae = {
    _class_name: 'AutoencoderKL',
    _diffusers_version: '0.30.0',
    act_fn: 'silu',
    block_out_channels: new Array(1 + Math.log2(o.vaeScale)).fill(VAE_WIDTH),
    in_channels: 3,
    latent_channels: LATENT_CHANNELS,
    out_channels: 3,
    sample_size: o.latentSize * o.vaeScale,
    scaling_factor: 0.18215,
  };
  return {
    'text_encoder/config.json': {
      architectures: ['CLIPTextModel'],
      bos_token_id: bosId,
      eos_token_id: eosId,
      hidden_act: 'quick_gelu',
      hidden_size: o.d,
      intermediate_size: o.d,
      max_position_embeddings: MAX_LENGTH,
      model_type: 'clip_text_model',
      num_attention_heads: 1,
      num_hidden_layers: 1,
      pad_token_id: padId,
      projection_dim: o.d,
      torch_dtype: o.precision,
      vocab_size: vocabSize,
    },
    'unet/config.json': {
      _class_name: 'UNet2DConditionModel',
      _diffusers_version: '0.30.0',
      attention_head_dim: o.heads,
      block_out_channels: blockWidths,
      cross_attention_dim: o.d,
      in_channels: LATENT_CHANNELS,
      out_channels: LATENT_CHANNELS,
      sample_size: o.latentSize,
      use_linear_projection: o.sd2,
    },
    'vae_encoder/config.json': vae,
    'vae_decoder/config.json': vae,
    'feature_extractor/preprocessor_config.json': {
      crop_size: { height: 224, width: 224 },
      do_center_crop: true,
      do_convert_rgb: true,
      do_normalize: true,
      do_rescale: true,
      do_resize: true,
      image_mean: [0.48145466, 0.4578275, 0.40821073],
      image_processor_type: 'CLIPImageProcessor',
      image_std: [0.26862954, 0.26130258, 0.27577711],
      resample: 3,
      rescale_factor: 0.00392156862745098,
      size: { shortest_edge: 224 },
    },
  };
}

// ---------------------------------------------------------------------------------------------
// The builder
// ---------------------------------------------------------------------------------------------

/**
 * Write a complete tiny Stable Diffusion model folder into `dir` (created if missing; existing files
 * of the same names are overwritten). Deterministic: the same options give byte-identical files.
 */
export function buildTinySdModel(dir: string, options: TinySdOptions = {}): TinySdManifest {
  const o = resolveTinySdOptions(options);
  const params = new Params(o.seed, options.design);
  const bpe = buildWordVocab(o.words);
  const vocabSize = Object.keys(bpe.vocab).length;
  const padToken = o.sd2 ? '!' : EOS_TOKEN;
  const padTokenId = bpe.vocab[padToken] as number;
  const bosTokenId = bpe.vocab[BOS_TOKEN] as number;
  const eosTokenId = bpe.vocab[EOS_TOKEN] as number;

  const files = new Map<string, string | Uint8Array>();
  files.set('model_index.json', json(modelIndex(o)));
  for (const [name, text] of Object.entries(tokenizerFiles(bpe, padToken))) files.set(`tokenizer/${name}`, text);
  files.set('scheduler/scheduler_config.json', json(schedulerConfig()));

  const save = { opset: o.opset, irVersion: 8, producerName: 'pytorch' };
  files.set('text_encoder/model.onnx', buildTextEncoder(o, vocabSize, params).toModel(save).model);

  const { g: unet, sites } = buildUnet(o, params);
  if (o.externalData === 'inline') {
    files.set('unet/model.onnx', unet.toModel(save).model);
  } else {
    const { model, external } = unet.toModel({
      ...save,
      externalData: { location: o.externalData, threshold: o.externalThreshold },
    });
    files.set('unet/model.onnx', model);
    files.set(`unet/${o.externalData}`, external ?? new Uint8Array(0));
  }
  files.set('vae_decoder/model.onnx', buildVaeDecoder(o, params).toModel(save).model);
  files.set('vae_encoder/model.onnx', buildVaeEncoder(o, params).toModel(save).model);
  if (o.flavor === 'optimum') {
    for (const [name, cfg] of Object.entries(optimumConfigs(o, vocabSize, padTokenId, bosTokenId, eosTokenId)))
      files.set(name, json(cfg));
  }

  for (const [rel, content] of files) {
    const full = join(dir, rel);
    mkdirSync(join(full, '..'), { recursive: true });
    writeFileSync(full, content);
  }
  return {
    kind: 'tiny-sd',
    version: TINY_SD_VERSION,
    options: o,
    d: o.d,
    vocabSize,
    padToken,
    padTokenId,
    bosTokenId,
    eosTokenId,
    sites,
    files: [...files.keys()].sort(),
  };
}

/** sha256 of a string, for cache keys of callers (e.g. the demo world). */
export function sha256Hex(data: string | Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}
