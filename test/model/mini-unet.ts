/**
 * Small cross-attention graphs for the site locator's unit tests, built with GraphBuilder: the
 * exporter's structure (MatMul with an anonymous [d, out] weight reading encoder_hidden_states,
 * Q·Kᵀ → Softmax → ·V), and the variants the locator must handle or refuse.
 */
import { GraphBuilder } from '../../src/onnx/build.js';
import { randomFloats } from '../onnx/helpers.js';

export interface MiniSite {
  module: string;
  out: number;
}

export interface MiniUnetOptions {
  d: number;
  sites: MiniSite[];
  /** 'matmul' (exporter, [d, out]), 'gemm' (transB = 1, [out, d]) or 'gemm-t' (transB = 0, [d, out]). */
  op?: 'matmul' | 'gemm' | 'gemm-t';
  /** How encoder_hidden_states reaches the projections. */
  path?: 'direct' | 'identity' | 'cast' | 'layernorm';
  /** Name nodes like the exporter (default) or '/MatMul_<n>'. */
  names?: boolean;
  /** Pack K and V into one weight: followed by Split, or fed to a fused MultiHeadAttention. */
  packed?: 'split' | 'mha';
  precision?: 'float32' | 'float16';
  seq?: number;
  seed?: number;
}

/** Write a mini UNet to dir/model.onnx (+ weights.pb when external). Returns torch-layout K/V weights per site name. */
export function buildMiniUnet(
  dir: string,
  o: MiniUnetOptions,
  save: Parameters<GraphBuilder['save']>[2] = {},
): Map<string, Float32Array> {
  const g = new GraphBuilder();
  const T = o.precision ?? 'float32';
  const seq = o.seq ?? 4;
  const names = o.names ?? true;
  let seed = o.seed ?? 100;
  let anon = 500;
  const torch = new Map<string, Float32Array>();
  g.input('sample', T, [1, seq, 'c']);
  g.input('encoder_hidden_states', T, [1, seq, o.d]);
  let ehs = 'encoder_hidden_states';
  if (o.path === 'identity') ehs = g.node('Identity', [ehs], 1, {}, '/ehs/Identity');
  if (o.path === 'cast') ehs = g.node('Cast', [ehs], 1, { to: T === 'float16' ? 10 : 1 }, '/ehs/Cast');
  if (o.path === 'layernorm') {
    const scale = g.initializer('ln.w', T, [o.d], new Float32Array(o.d).fill(1));
    ehs = g.node('LayerNormalization', [ehs, scale], 1, { axis: -1 }, '/ehs/LayerNorm');
  }
  const ehs2d =
    o.op === 'gemm' || o.op === 'gemm-t'
      ? g.node('Reshape', [ehs, g.initializer('shape2d', 'int64', [2], [seq, o.d])], 1, {}, '/ehs/Reshape')
      : ehs;

  /** A projection of ehs with torch weight W [out, d]; returns its [1, seq, out] output. */
  const project = (scope: string, proj: string, out: number, key: string): string => {
    const W = randomFloats(out * o.d, seed++);
    torch.set(key, W);
    const nodeName = names
      ? `${scope}/${proj}/${o.op === 'gemm' || o.op === 'gemm-t' ? 'Gemm' : 'MatMul'}`
      : `/MatMul_${anon}`;
    if (o.op === 'gemm') {
      const w = g.initializer(`onnx::Gemm_${anon++}`, T, [out, o.d], W);
      const y = g.node('Gemm', [ehs2d, w], 1, { transB: 1 }, nodeName);
      return g.node(
        'Reshape',
        [y, g.initializer(`shape3d_${anon++}`, 'int64', [3], [1, seq, out])],
        1,
        {},
        `${scope}/${proj}/Reshape`,
      );
    }
    const Wt = new Float32Array(out * o.d);
    for (let j = 0; j < out; j++) for (let i = 0; i < o.d; i++) Wt[i * out + j] = W[j * o.d + i] as number;
    if (o.op === 'gemm-t') {
      const w = g.initializer(`onnx::Gemm_${anon++}`, T, [o.d, out], Wt);
      const y = g.node('Gemm', [ehs2d, w], 1, {}, nodeName);
      return g.node(
        'Reshape',
        [y, g.initializer(`shape3d_${anon++}`, 'int64', [3], [1, seq, out])],
        1,
        {},
        `${scope}/${proj}/Reshape`,
      );
    }
    const w = g.initializer(`onnx::MatMul_${anon++}`, T, [o.d, out], Wt);
    return g.node('MatMul', [ehs, w], 1, {}, nodeName);
  };

  for (const site of o.sites) {
    const scope = `/${site.module.replace(/\.(attentions|transformer_blocks)\./g, '/$1.').replace(/\.attn2$/, '/attn2')}`;
    const qW = randomFloats(site.out * site.out, seed++);
    const q = g.node(
      'MatMul',
      ['sample', g.initializer(`onnx::MatMul_${anon++}`, T, [site.out, site.out], qW)],
      1,
      {},
      `${scope}/to_q/MatMul`,
    );
    let k: string;
    let v: string;
    if (o.packed) {
      const kv = project(scope, 'to_kv', 2 * site.out, `${site.module}.to_kv`);
      if (o.packed === 'mha') {
        const kv5 = g.node(
          'Reshape',
          [kv, g.initializer(`kvshape_${anon++}`, 'int64', [5], [1, seq, 1, 2, site.out])],
          1,
          {},
          `${scope}/Reshape_kv`,
        );
        const outName = `${site.module}.out`;
        g.nodes.push({
          name: `${scope}/MultiHeadAttention`,
          opType: 'MultiHeadAttention',
          domain: 'com.microsoft',
          input: [q, kv5, ''],
          output: [outName],
          attribute: [{ name: 'num_heads', type: 2, i: 1 }],
        });
        g.output(outName, T, [1, seq, site.out]);
        continue;
      }
      const halves = g.node('Split', [kv], [`${scope}/k`, `${scope}/v`], { axis: -1 }, `${scope}/Split`);
      k = halves;
      v = `${scope}/v`;
    } else {
      k = project(scope, 'to_k', site.out, `${site.module}.to_k`);
      v = project(scope, 'to_v', site.out, `${site.module}.to_v`);
    }
    const kt = g.node('Transpose', [k], 1, { perm: [0, 2, 1] }, `${scope}/Transpose`);
    const scores = g.node('MatMul', [q, kt], 1, {}, `${scope}/MatMul`);
    const p = g.node('Softmax', [scores], 1, { axis: -1 }, `${scope}/Softmax`);
    const outName = `${site.module}.out`;
    g.node('MatMul', [p, v], [outName], {}, `${scope}/MatMul_1`);
    g.output(outName, T, [1, seq, site.out]);
    // expose K and V themselves for checks of the stored layout
    g.output(k, T, [1, seq, site.out]);
    g.output(v, T, [1, seq, site.out]);
  }
  g.save(dir, 'model.onnx', save);
  return torch;
}

export const SD_LIKE_SITES: MiniSite[] = [
  { module: 'down_blocks.0.attentions.0.transformer_blocks.0.attn2', out: 8 },
  { module: 'mid_block.attentions.0.transformer_blocks.0.attn2', out: 16 },
  { module: 'up_blocks.3.attentions.2.transformer_blocks.0.attn2', out: 8 },
];
