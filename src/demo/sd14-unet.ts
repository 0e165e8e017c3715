/**
 * Stable Diffusion 1.4's UNet (diffusers UNet2DConditionModel, CompVis/stable-diffusion-v1-4
 * unet/config.json) in its exact architecture with seeded random weights, written as the diffusers
 * ONNX export script writes it: unet/model.onnx (opset 14, graph only) + unet/weights.pb (every
 * initializer of ≥ 1024 bytes, external data). Used to benchmark rendering at real scale (bench/sd14.ts)
 * without shipping 3.4 GB of real weights; `scale` shrinks every width for fast tests.
 *
 * Architecture (c = block_out_channels = 320/640/1280/1280, T = 4·320 = 1280, d = 768, G = 32):
 *   time     t → [cos(t f), sin(t f)] (f_i = 10000^(−i/160), flip_sin_to_cos) → time_embedding
 *            linear_1 (320→T) → SiLU → linear_2 (T→T) = temb
 *   conv_in  4 → 320, 3×3
 *   down     3 × CrossAttnDownBlock2D + DownBlock2D: 2 × (ResnetBlock2D [+ Transformer2DModel]),
 *            downsamplers.0.conv (3×3, stride 2) except the last
 *   mid      ResnetBlock2D, Transformer2DModel, ResnetBlock2D
 *   up       UpBlock2D + 3 × CrossAttnUpBlock2D: 3 × (concat skip → ResnetBlock2D [+ Transformer2D]),
 *            upsamplers.0 (nearest ×2 Resize, conv 3×3) except the last
 *   out      conv_norm_out (GroupNorm) → SiLU → conv_out 320 → 4
 *   ResnetBlock2D(cin → c): GN(cin) → SiLU → conv1 → + time_emb_proj(SiLU(temb)) → GN(c) → SiLU → conv2,
 *            + conv_shortcut (1×1) when cin ≠ c; (x + h) / 1
 *   Transformer2DModel(c): GN(c, ε 1e-6) → proj_in (1×1 conv) → [b, hw, c] → BasicTransformerBlock:
 *            x += attn1(LN(x)) (self), x += attn2(LN(x), encoder_hidden_states) (cross, to_k/to_v
 *            d → c), x += ff(LN(x)) with GEGLU (proj c → 8c, halves h·GELU(g), net.2 4c → c);
 *            → [b, c, h, w] → proj_out (1×1 conv) → + residual. 8 heads of c/8.
 * GroupNorm is exported as torch does at opset 14 (Reshape [b, G, −1] → InstanceNormalization →
 * Reshape → Mul γ → Add β), LayerNorm decomposed (ReduceMean, Sub, Pow, Sqrt, Div), GELU through Erf,
 * linear layers on 3-D activations as MatMul with anonymous transposed `onnx::MatMul_<n>` weights
 * [in, out] plus a named bias, those on 2-D activations (time embedding) as Gemm transB = 1.
 *
 * The weights are never all in memory: `planSd14Unet` builds the graph and a list of parameter
 * specs (name, dims, init); `writeSd14Unet` writes model.onnx with external-data entries, then
 * streams each tensor into weights.pb, one tensor at a time, into a temporary folder renamed at the end.
 */
import { closeSync, fsyncSync, mkdirSync, openSync, renameSync, rmSync, writeSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { type AttrValue, GraphBuilder } from '../onnx/build.js';
import { DataType, encodeModel, type TensorProto } from '../onnx/proto.js';
import { show, UsageError } from '../util/errors.js';
import { mulberry32 } from '../util/random.js';

/** The SD 1.x UNet hyper-parameters the builder takes (diffusers' names in comments). */
export interface Sd14UnetConfig {
  /** block_out_channels */
  blockOutChannels: readonly [number, number, number, number];
  /** layers_per_block */
  layersPerBlock: number;
  /** attention_head_dim (SD 1.x's name for the number of heads) */
  heads: number;
  /** cross_attention_dim: the text width d */
  crossAttentionDim: number;
  /** norm_num_groups */
  normGroups: number;
  /** in_channels = out_channels */
  latentChannels: number;
}

/** CompVis/stable-diffusion-v1-4 unet/config.json. */
export const SD14_UNET_CONFIG: Readonly<Sd14UnetConfig> = Object.freeze({
  blockOutChannels: [320, 640, 1280, 1280] as const,
  layersPerBlock: 2,
  heads: 8,
  crossAttentionDim: 768,
  normGroups: 32,
  latentChannels: 4,
});

/** SD 1.4's UNet parameter count (diffusers: sum(p.numel() for p in unet.parameters())). */
export const SD14_UNET_PARAMETERS = 859_520_964;

/** Bumps whenever the bytes written for the same config change (bench caches key on it). */
export const SD14_UNET_BUILDER_VERSION = 1;

/**
 * SD 1.4's geometry with every channel width divided by `divisor` (and the text width too, unless
 * `crossAttentionDim` is given); the group count shrinks so that the narrowest width still divides.
 */
export function scaledSd14Config(divisor: number, crossAttentionDim?: number): Sd14UnetConfig {
  if (!Number.isInteger(divisor) || divisor < 1 || 320 % divisor !== 0) {
    throw new UsageError(`divisor: ${show(divisor)} must be a positive integer that divides 320`);
  }
  const c0 = 320 / divisor;
  const groups = Math.min(32, c0);
  const base = SD14_UNET_CONFIG.blockOutChannels;
  return {
    blockOutChannels: base.map((c) => c / divisor) as unknown as Sd14UnetConfig['blockOutChannels'],
    layersPerBlock: 2,
    heads: 8,
    crossAttentionDim: crossAttentionDim ?? Math.max(8, Math.round(768 / divisor)),
    normGroups: c0 % groups === 0 ? groups : 1,
    latentChannels: 4,
  };
}

function validate(cfg: Sd14UnetConfig): void {
  const where = (what: string, v: unknown, rule: string) =>
    new UsageError(`sd14 unet config ${what}: ${show(v)} ${rule}`);
  if (cfg.blockOutChannels.length !== 4) throw where('blockOutChannels', cfg.blockOutChannels, 'must list 4 widths');
  for (const c of cfg.blockOutChannels) {
    if (!Number.isInteger(c) || c < 1)
      throw where('blockOutChannels', cfg.blockOutChannels, 'must be positive integers');
    if (c % cfg.normGroups !== 0) throw where('normGroups', cfg.normGroups, `must divide every width (${c})`);
    if (c % cfg.heads !== 0) throw where('heads', cfg.heads, `must divide every width (${c})`);
  }
  if (!Number.isInteger(cfg.layersPerBlock) || cfg.layersPerBlock < 1)
    throw where('layersPerBlock', cfg.layersPerBlock, 'must be an integer >= 1');
  if (!Number.isInteger(cfg.crossAttentionDim) || cfg.crossAttentionDim < 1)
    throw where('crossAttentionDim', cfg.crossAttentionDim, 'must be a positive integer');
  if (cfg.blockOutChannels[0] % 2 !== 0) throw where('blockOutChannels[0]', cfg.blockOutChannels[0], 'must be even');
}

/**
 * The parameter count in closed form, block by block (independent of the graph builder; the test
 * compares the two). With c = widths, T = 4 c₀, d = text width:
 *   resnet(i→o)   = 2i + 9io + o + To + o + 2o + 9o² + o + [i ≠ o](io + o)
 *   attention(c)  = 2c + c² + c (GN, proj_in) + 3·2c (LN) + 4c² + c (attn1) + 2c² + 2dc + c (attn2)
 *                   + 8c² + 8c + 4c² + c (GEGLU ff) + c² + c (proj_out)
 */
export function sd14UnetParameterCountFormula(cfg: Sd14UnetConfig): number {
  const [c0, , , c3] = cfg.blockOutChannels;
  const T = 4 * c0;
  const d = cfg.crossAttentionDim;
  const resnet = (i: number, o: number) =>
    2 * i + 9 * i * o + o + T * o + o + 2 * o + 9 * o * o + o + (i !== o ? i * o + o : 0);
  const attention = (c: number) =>
    2 * c +
    c * c +
    c +
    6 * c +
    4 * c * c +
    c +
    2 * c * c +
    2 * d * c +
    c +
    8 * c * c +
    8 * c +
    4 * c * c +
    c +
    c * c +
    c;
  const conv3 = (i: number, o: number) => 9 * i * o + o;
  let n = conv3(cfg.latentChannels, c0) + (c0 * T + T) + (T * T + T); // conv_in, time_embedding
  const L = cfg.layersPerBlock;
  const skips: number[] = [c0];
  let cur = c0;
  cfg.blockOutChannels.forEach((c, b) => {
    for (let l = 0; l < L; l++) {
      n += resnet(cur, c);
      if (b < 3) n += attention(c);
      cur = c;
      skips.push(c);
    }
    if (b < 3) {
      n += conv3(c, c);
      skips.push(c);
    }
  });
  n += 2 * resnet(c3, c3) + attention(c3);
  const reversed = [...cfg.blockOutChannels].reverse();
  reversed.forEach((c, u) => {
    for (let l = 0; l <= L; l++) {
      const skip = skips.pop() as number;
      n += resnet(cur + skip, c);
      if (u > 0) n += attention(c);
      cur = c;
    }
    if (u < 3) n += conv3(c, c);
  });
  n += 2 * c0 + conv3(c0, cfg.latentChannels); // conv_norm_out, conv_out
  return n;
}

// ---------------------------------------------------------------------------------------------
// The plan: graph + parameter specs
// ---------------------------------------------------------------------------------------------

export interface Sd14ParamSpec {
  /** Initializer name (module path, or `onnx::MatMul_<n>` for transposed linear weights). */
  name: string;
  /** diffusers state-dict key of the parameter (torch layout), e.g. "down_blocks.0.resnets.0.conv1.weight". */
  key: string;
  /** Stored dims (ONNX layout). */
  dims: number[];
  init: { kind: 'uniform'; std: number } | { kind: 'const'; value: number };
}

export interface Sd14Site {
  /** e.g. "down_blocks.0.attentions.0.transformer_blocks.0.attn2" */
  module: string;
  width: number;
  toK: { node: string; initializer: string };
  toV: { node: string; initializer: string };
}

export interface Sd14UnetPlan {
  config: Sd14UnetConfig;
  graph: GraphBuilder;
  params: Sd14ParamSpec[];
  /** Σ of the parameters' element counts, from their shapes. */
  parameterCount: number;
  sites: Sd14Site[];
}

const OPSET = 14;

class UnetNet {
  readonly g = new GraphBuilder('main_graph');
  readonly params: Sd14ParamSpec[] = [];
  private readonly counts = new Map<string, number>();
  private anon = 8000;

  name(scope: string, op: string): string {
    const base = `${scope}/${op}`;
    const n = this.counts.get(base) ?? 0;
    this.counts.set(base, n + 1);
    return n === 0 ? base : `${base}_${n}`;
  }

  op(scope: string, opType: string, inputs: string[], attrs: Record<string, AttrValue> = {}): string {
    return this.g.node(opType, inputs, 1, attrs, this.name(scope, opType));
  }

  cname(scope: string): string {
    return `${this.name(scope, 'Constant')}_output_0`;
  }

  fconst(scope: string, dims: number[], data: number[]): string {
    return this.g.initializer(this.cname(scope), 'float32', dims, data);
  }

  iconst(scope: string, data: number[]): string {
    return this.g.initializer(this.cname(scope), 'int64', [data.length], data);
  }

  param(name: string, key: string, dims: number[], init: Sd14ParamSpec['init']): string {
    this.params.push({ name, key, dims, init });
    return name;
  }

  conv(scope: string, module: string, x: string, cin: number, cout: number, k: number, stride = 1): string {
    const w = this.param(`${module}.weight`, `${module}.weight`, [cout, cin, k, k], {
      kind: 'uniform',
      std: 1 / Math.sqrt(cin * k * k),
    });
    const b = this.param(`${module}.bias`, `${module}.bias`, [cout], { kind: 'const', value: 0 });
    const p = (k - 1) >> 1;
    return this.g.node(
      'Conv',
      [x, w, b],
      1,
      { dilations: [1, 1], group: 1, kernel_shape: [k, k], pads: [p, p, p, p], strides: [stride, stride] },
      `${scope}/Conv`,
    );
  }

  /** x @ W (+ b) on a 3-D activation: MatMul with the anonymous transposed weight [in, out], then Add. */
  linear(scope: string, module: string, x: string, inW: number, outW: number, bias: boolean, std?: number): string {
    const w = this.param(`onnx::MatMul_${this.anon++}`, `${module}.weight`, [inW, outW], {
      kind: 'uniform',
      std: std ?? 1 / Math.sqrt(inW),
    });
    const y = this.g.node('MatMul', [x, w], 1, {}, `${scope}/MatMul`);
    if (!bias) return y;
    const b = this.param(`${module}.bias`, `${module}.bias`, [outW], { kind: 'const', value: 0 });
    return this.g.node('Add', [b, y], 1, {}, `${scope}/Add`);
  }

  /** A linear layer on a 2-D activation, as torch exports it: Gemm(x, W [out, in], b, transB = 1). */
  gemm(scope: string, module: string, x: string, inW: number, outW: number): string {
    const w = this.param(`${module}.weight`, `${module}.weight`, [outW, inW], {
      kind: 'uniform',
      std: 1 / Math.sqrt(inW),
    });
    const b = this.param(`${module}.bias`, `${module}.bias`, [outW], { kind: 'const', value: 0 });
    return this.g.node('Gemm', [x, w, b], 1, { alpha: { float: 1 }, beta: { float: 1 }, transB: 1 }, `${scope}/Gemm`);
  }

  silu(scope: string, x: string): string {
    return this.op(scope, 'Mul', [x, this.op(scope, 'Sigmoid', [x])]);
  }

  /** torch.nn.GroupNorm at opset 14: Reshape [b, G, −1] → InstanceNormalization → Reshape back → Mul γ → Add β. */
  groupNorm(scope: string, module: string, x: string, c: number, groups: number, eps: number): string {
    const shape = this.op(scope, 'Shape', [x]);
    const r = this.op(scope, 'Reshape', [x, this.iconst(scope, [0, groups, -1])]);
    const ones = this.fconst(scope, [groups], new Array(groups).fill(1));
    const zeros = this.fconst(scope, [groups], new Array(groups).fill(0));
    const inorm = this.op(scope, 'InstanceNormalization', [r, ones, zeros], { epsilon: { float: eps } });
    const back = this.op(scope, 'Reshape', [inorm, shape]);
    const gamma = this.param(`${module}.weight`, `${module}.weight`, [c, 1, 1], { kind: 'const', value: 1 });
    const beta = this.param(`${module}.bias`, `${module}.bias`, [c, 1, 1], { kind: 'const', value: 0 });
    return this.op(scope, 'Add', [this.op(scope, 'Mul', [back, gamma]), beta]);
  }

  /** torch.nn.LayerNorm over the last axis, decomposed as opset-14 exports write it. */
  layerNorm(scope: string, module: string, x: string, c: number): string {
    const mean = this.op(scope, 'ReduceMean', [x], { axes: [-1], keepdims: 1 });
    const xc = this.op(scope, 'Sub', [x, mean]);
    const sq = this.op(scope, 'Pow', [xc, this.fconst(scope, [], [2])]);
    const v = this.op(scope, 'ReduceMean', [sq], { axes: [-1], keepdims: 1 });
    const sd = this.op(scope, 'Sqrt', [this.op(scope, 'Add', [v, this.fconst(scope, [], [1e-5])])]);
    const y = this.op(scope, 'Div', [xc, sd]);
    const gamma = this.param(`${module}.weight`, `${module}.weight`, [c], { kind: 'const', value: 1 });
    const beta = this.param(`${module}.bias`, `${module}.bias`, [c], { kind: 'const', value: 0 });
    return this.op(scope, 'Add', [this.op(scope, 'Mul', [y, gamma]), beta]);
  }
}

function scopeOf(module: string): string {
  // "down_blocks.0.resnets.1" → "/down_blocks.0/resnets.1"
  return `/${module.replace(/\.(?=[a-z_])/g, '/')}`;
}

function resnet(net: UnetNet, module: string, x: string, temb: string, cin: number, c: number, cfg: Sd14UnetConfig) {
  const s = scopeOf(module);
  const G = cfg.normGroups;
  let h = net.groupNorm(`${s}/norm1`, `${module}.norm1`, x, cin, G, 1e-5);
  h = net.silu(`${s}/nonlinearity`, h);
  h = net.conv(`${s}/conv1`, `${module}.conv1`, h, cin, c, 3);
  const t = net.gemm(
    `${s}/time_emb_proj`,
    `${module}.time_emb_proj`,
    net.silu(`${s}/nonlinearity`, temb),
    4 * cfg.blockOutChannels[0],
    c,
  );
  const t4 = net.op(s, 'Unsqueeze', [net.op(s, 'Unsqueeze', [t, net.iconst(s, [2])]), net.iconst(s, [3])]);
  h = net.op(s, 'Add', [h, t4]);
  h = net.groupNorm(`${s}/norm2`, `${module}.norm2`, h, c, G, 1e-5);
  h = net.silu(`${s}/nonlinearity`, h);
  h = net.conv(`${s}/conv2`, `${module}.conv2`, h, c, c, 3);
  const sc = cin === c ? x : net.conv(`${s}/conv_shortcut`, `${module}.conv_shortcut`, x, cin, c, 1);
  return net.op(s, 'Div', [net.op(s, 'Add', [sc, h]), net.fconst(s, [], [1])]); // / output_scale_factor
}

function attention(
  net: UnetNet,
  module: string,
  x: string,
  context: string,
  c: number,
  kvWidth: number,
  heads: number,
): { out: string; toK: { node: string; initializer: string }; toV: { node: string; initializer: string } } {
  const s = scopeOf(module);
  const dh = c / heads;
  const q = net.linear(`${s}/to_q`, `${module}.to_q`, x, c, c, false);
  const k = net.linear(`${s}/to_k`, `${module}.to_k`, context, kvWidth, c, false);
  const kInit = net.params.at(-1)?.name as string;
  const v = net.linear(`${s}/to_v`, `${module}.to_v`, context, kvWidth, c, false);
  const vInit = net.params.at(-1)?.name as string;
  const split = (y: string, perm: number[]) =>
    net.op(s, 'Transpose', [net.op(s, 'Reshape', [y, net.iconst(s, [0, -1, heads, dh])])], { perm });
  const qh = split(q, [0, 2, 1, 3]); // [b, H, n, dh]
  const kt = split(k, [0, 2, 3, 1]); // [b, H, dh, m]
  const vh = split(v, [0, 2, 1, 3]); // [b, H, m, dh]
  const scores = net.op(s, 'Mul', [net.op(s, 'MatMul', [qh, kt]), net.fconst(s, [], [1 / Math.sqrt(dh)])]);
  const p = net.op(s, 'Softmax', [scores], { axis: -1 });
  const o = net.op(s, 'MatMul', [p, vh]);
  const merged = net.op(s, 'Reshape', [net.op(s, 'Transpose', [o], { perm: [0, 2, 1, 3] }), net.iconst(s, [0, -1, c])]);
  const out = net.linear(`${s}/to_out.0`, `${module}.to_out.0`, merged, c, c, true);
  return {
    out,
    toK: { node: `${s}/to_k/MatMul`, initializer: kInit },
    toV: { node: `${s}/to_v/MatMul`, initializer: vInit },
  };
}

/** Build the graph and the parameter list (no weight is generated). */
export function planSd14Unet(config: Sd14UnetConfig = SD14_UNET_CONFIG): Sd14UnetPlan {
  validate(config);
  const net = new UnetNet();
  const g = net.g;
  const cfg = config;
  const C = cfg.latentChannels;
  const [c0] = cfg.blockOutChannels;
  const T = 4 * c0;
  const sample = g.input('sample', 'float32', ['batch', C, 'height', 'width']);
  const timestep = g.input('timestep', 'float32', ['batch']);
  const ehs = g.input('encoder_hidden_states', 'float32', ['batch', 'sequence', cfg.crossAttentionDim]);
  g.output('out_sample', 'float32', ['batch', C, 'height', 'width']);
  const sites: Sd14Site[] = [];

  // time_proj: [cos(t f), sin(t f)], f_i = exp(−ln(10000) i / half)
  const half = c0 / 2;
  const freqs = Array.from({ length: half }, (_, i) => Math.exp((-Math.log(10000) * i) / half));
  const tp = '/time_proj';
  const targ = net.op(tp, 'Mul', [
    net.op(tp, 'Unsqueeze', [timestep, net.iconst(tp, [1])]),
    net.fconst(tp, [1, half], freqs),
  ]);
  const tproj = net.op(tp, 'Concat', [net.op(tp, 'Cos', [targ]), net.op(tp, 'Sin', [targ])], { axis: -1 });
  let temb = net.gemm('/time_embedding/linear_1', 'time_embedding.linear_1', tproj, c0, T);
  temb = net.silu('/time_embedding/act', temb);
  temb = net.gemm('/time_embedding/linear_2', 'time_embedding.linear_2', temb, T, T);

  let h = net.conv('/conv_in', 'conv_in', sample, C, c0, 3);
  const skips: { name: string; c: number }[] = [{ name: h, c: c0 }];
  let cur = c0;
  const L = cfg.layersPerBlock;
  cfg.blockOutChannels.forEach((c, b) => {
    for (let l = 0; l < L; l++) {
      h = resnet(net, `down_blocks.${b}.resnets.${l}`, h, temb, cur, c, cfg);
      if (b < 3) h = crossAttnTransformer(net, `down_blocks.${b}.attentions.${l}`, h, ehs, c, cfg, sites);
      cur = c;
      skips.push({ name: h, c });
    }
    if (b < 3) {
      const m = `down_blocks.${b}.downsamplers.0.conv`;
      h = net.conv(scopeOf(m), m, h, c, c, 3, 2);
      skips.push({ name: h, c });
    }
  });
  h = resnet(net, 'mid_block.resnets.0', h, temb, cur, cur, cfg);
  h = crossAttnTransformer(net, 'mid_block.attentions.0', h, ehs, cur, cfg, sites);
  h = resnet(net, 'mid_block.resnets.1', h, temb, cur, cur, cfg);
  const reversed = [...cfg.blockOutChannels].reverse();
  reversed.forEach((c, u) => {
    for (let l = 0; l <= L; l++) {
      const skip = skips.pop() as { name: string; c: number };
      const s = scopeOf(`up_blocks.${u}`);
      const cat = net.op(s, 'Concat', [h, skip.name], { axis: 1 });
      h = resnet(net, `up_blocks.${u}.resnets.${l}`, cat, temb, cur + skip.c, c, cfg);
      if (u > 0) h = crossAttnTransformer(net, `up_blocks.${u}.attentions.${l}`, h, ehs, c, cfg, sites);
      cur = c;
    }
    if (u < 3) {
      const s = scopeOf(`up_blocks.${u}.upsamplers.0`);
      const up = g.node(
        'Resize',
        [h, net.fconst(s, [0], []), net.fconst(s, [4], [1, 1, 2, 2])],
        1,
        { coordinate_transformation_mode: 'asymmetric', mode: 'nearest', nearest_mode: 'floor' },
        net.name(s, 'Resize'),
      );
      const m = `up_blocks.${u}.upsamplers.0.conv`;
      h = net.conv(scopeOf(m), m, up, c, c, 3);
    }
  });
  h = net.groupNorm('/conv_norm_out', 'conv_norm_out', h, c0, cfg.normGroups, 1e-5);
  h = net.silu('/conv_act', h);
  const out = net.conv('/conv_out', 'conv_out', h, c0, C, 3);
  g.node('Identity', [out], ['out_sample'], {}, '/Identity');
  const parameterCount = net.params.reduce((n, p) => n + p.dims.reduce((a, b) => a * b, 1), 0);
  return { config: cfg, graph: g, params: net.params, parameterCount, sites };
}

function crossAttnTransformer(
  net: UnetNet,
  module: string,
  x: string,
  ehs: string,
  c: number,
  cfg: Sd14UnetConfig,
  sites: Sd14Site[],
): string {
  const s = scopeOf(module);
  const shape = net.op(s, 'Shape', [x]);
  let h = net.groupNorm(`${s}/norm`, `${module}.norm`, x, c, cfg.normGroups, 1e-6);
  h = net.conv(`${s}/proj_in`, `${module}.proj_in`, h, c, c, 1);
  h = net.op(s, 'Transpose', [net.op(s, 'Reshape', [h, net.iconst(s, [0, c, -1])])], { perm: [0, 2, 1] }); // [b, hw, c]
  const bm = `${module}.transformer_blocks.0`;
  const bs = scopeOf(bm);
  const n1 = net.layerNorm(`${bs}/norm1`, `${bm}.norm1`, h, c);
  const a1 = attention(net, `${bm}.attn1`, n1, n1, c, c, cfg.heads);
  h = net.op(bs, 'Add', [a1.out, h]);
  const n2 = net.layerNorm(`${bs}/norm2`, `${bm}.norm2`, h, c);
  const a2 = attention(net, `${bm}.attn2`, n2, ehs, c, cfg.crossAttentionDim, cfg.heads);
  h = net.op(bs, 'Add', [a2.out, h]);
  const n3 = net.layerNorm(`${bs}/norm3`, `${bm}.norm3`, h, c);
  // GEGLU: proj → (x, gate) halves → x · GELU(gate), GELU(g) = g · ½ (1 + erf(g / √2))
  const ge = `${bs}/ff/net.0`;
  const proj = net.linear(`${ge}/proj`, `${bm}.ff.net.0.proj`, n3, c, 8 * c, true);
  const xs = net.op(ge, 'Slice', [proj, net.iconst(ge, [0]), net.iconst(ge, [4 * c]), net.iconst(ge, [-1])]);
  const gate = net.op(ge, 'Slice', [proj, net.iconst(ge, [4 * c]), net.iconst(ge, [8 * c]), net.iconst(ge, [-1])]);
  const erf = net.op(ge, 'Erf', [net.op(ge, 'Div', [gate, net.fconst(ge, [], [Math.SQRT2])])]);
  const gelu = net.op(ge, 'Mul', [
    net.op(ge, 'Mul', [gate, net.op(ge, 'Add', [erf, net.fconst(ge, [], [1])])]),
    net.fconst(ge, [], [0.5]),
  ]);
  const ff = net.linear(`${bs}/ff/net.2`, `${bm}.ff.net.2`, net.op(ge, 'Mul', [xs, gelu]), 4 * c, c, true);
  h = net.op(bs, 'Add', [ff, h]);
  // [b, hw, c] → [b, c, h, w]
  h = net.op(s, 'Reshape', [net.op(s, 'Transpose', [h], { perm: [0, 2, 1] }), shape]);
  h = net.conv(`${s}/proj_out`, `${module}.proj_out`, h, c, c, 1);
  sites.push({ module: `${bm}.attn2`, width: c, toK: a2.toK, toV: a2.toV });
  return net.op(s, 'Add', [h, x]);
}

// ---------------------------------------------------------------------------------------------
// Streaming writer
// ---------------------------------------------------------------------------------------------

/** A 32-bit stream seed from the parameter key and the model seed (FNV-1a, then mixed). */
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

/** Fill `out` with the parameter's values, elements [from, from + out.length) of its stream. */
function fillParam(p: Sd14ParamSpec, seed: number, out: Float32Array, next?: () => number): void {
  if (p.init.kind === 'const') {
    out.fill(p.init.value);
    return;
  }
  // uniform on [−√3 σ, √3 σ): mean 0, standard deviation σ
  const a = Math.sqrt(3) * p.init.std;
  const u = next ?? mulberry32(streamSeed(p.key, seed));
  for (let i = 0; i < out.length; i++) out[i] = (2 * u() - 1) * a;
}

export interface WriteSd14Options {
  /** Weight seed (default 0). */
  seed?: number;
  /** External data file name inside unet/ (default 'weights.pb', as the diffusers export script). */
  location?: string;
  /** Initializers of at least this many bytes go to the data file (default 1024, onnx's saver). */
  threshold?: number;
  /** Align each external tensor's offset to this many bytes (default 1: back to back, as onnx's saver). */
  align?: number;
}

export interface WriteSd14Result {
  dir: string;
  parameterCount: number;
  weightBytes: number;
  sites: Sd14Site[];
}

const CHUNK = 1 << 22; // floats per write (16 MiB)

/**
 * Write `unetDir` (= <model>/unet): model.onnx + the external data file, streaming the weights
 * (≤ 16 MiB in memory at a time). Written into `<unetDir>.partial-<pid>` and renamed at the end;
 * an existing `unetDir` is replaced.
 */
export function writeSd14Unet(unetDir: string, plan: Sd14UnetPlan, options: WriteSd14Options = {}): WriteSd14Result {
  const seed = options.seed ?? 0;
  const location = options.location ?? 'weights.pb';
  const threshold = options.threshold ?? 1024;
  const align = options.align ?? 1;
  if (!Number.isInteger(align) || align < 1) throw new UsageError(`align: ${show(align)} must be an integer >= 1`);
  const tmp = `${unetDir}.partial-${process.pid}`;
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(tmp, { recursive: true });
  try {
    // Layout: small parameters inline as raw_data, large ones at increasing offsets of the data file.
    const initializer: TensorProto[] = plan.graph.initializers.map((t) => ({
      name: t.name,
      dims: t.dims,
      dataType: t.dataType,
      rawData: t.bytes,
    }));
    const external: { spec: Sd14ParamSpec; offset: number; count: number }[] = [];
    let offset = 0;
    for (const spec of plan.params) {
      const count = spec.dims.reduce((a, b) => a * b, 1);
      if (count * 4 < threshold) {
        const values = new Float32Array(count);
        fillParam(spec, seed, values);
        initializer.push({
          name: spec.name,
          dims: spec.dims,
          dataType: DataType.FLOAT,
          rawData: new Uint8Array(values.buffer),
        });
        continue;
      }
      offset += (align - (offset % align)) % align;
      external.push({ spec, offset, count });
      initializer.push({
        name: spec.name,
        dims: spec.dims,
        dataType: DataType.FLOAT,
        dataLocation: 1, // EXTERNAL
        externalData: [
          { key: 'location', value: location },
          { key: 'offset', value: String(offset) },
          { key: 'length', value: String(count * 4) },
        ],
      });
      offset += count * 4;
    }
    const g = plan.graph;
    const model = encodeModel({
      irVersion: 8,
      producerName: 'pytorch',
      producerVersion: '1.13.1',
      opsetImport: [{ domain: '', version: OPSET }],
      graph: { name: g.name, node: g.nodes, input: g.inputs, output: g.outputs, initializer },
    });
    writeWhole(join(tmp, 'model.onnx'), model);
    // Stream the weights.
    const fd = openSync(join(tmp, location), 'w');
    try {
      const buf = new Float32Array(CHUNK);
      const bytes = new Uint8Array(buf.buffer);
      let at = 0;
      const zeros = new Uint8Array(Math.max(1, align));
      for (const { spec, offset: start, count } of external) {
        if (start > at) {
          writeAll(fd, zeros.subarray(0, start - at), at);
          at = start;
        }
        const u = spec.init.kind === 'uniform' ? mulberry32(streamSeed(spec.key, seed)) : undefined;
        for (let done = 0; done < count; done += CHUNK) {
          const n = Math.min(CHUNK, count - done);
          const view = buf.subarray(0, n);
          fillParam(spec, seed, view, u);
          writeAll(fd, bytes.subarray(0, n * 4), at);
          at += n * 4;
        }
      }
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    mkdirSync(dirname(unetDir), { recursive: true });
    rmSync(unetDir, { recursive: true, force: true });
    renameSync(tmp, unetDir);
    return { dir: unetDir, parameterCount: plan.parameterCount, weightBytes: offset, sites: plan.sites };
  } catch (error) {
    rmSync(tmp, { recursive: true, force: true });
    throw error;
  }
}

function writeAll(fd: number, bytes: Uint8Array, position: number): void {
  let done = 0;
  while (done < bytes.byteLength) done += writeSync(fd, bytes, done, bytes.byteLength - done, position + done);
}

function writeWhole(path: string, bytes: Uint8Array): void {
  const fd = openSync(path, 'w');
  try {
    writeAll(fd, bytes, 0);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}
