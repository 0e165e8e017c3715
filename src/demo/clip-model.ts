/**
 * A tiny CLIP classifier folder in the transformers.js layout (mission.md §3), with designed weights.
 *
 * The folder holds exactly what a real export holds and what `@huggingface/transformers` reads:
 *
 *     config.json                 model_type "clip", text_config / vision_config, projection_dim,
 *                                 logit_scale_init_value
 *     preprocessor_config.json    CLIPImageProcessor: resize shortest edge, center crop, rescale 1/255,
 *                                 normalize with CLIP's mean/std, convert to RGB
 *     tokenizer.json              CLIP BPE over the spec's words (src/text/bpe-files.ts)
 *     tokenizer_config.json       CLIPTokenizer, model_max_length 77, pad = <|endoftext|>
 *     onnx/model.onnx             inputs  input_ids int64 [text_batch_size, sequence_length],
 *                                         attention_mask int64 [text_batch_size, sequence_length],
 *                                         pixel_values float32 [image_batch_size, 3, S, S]
 *                                 outputs logits_per_image [image_batch_size, text_batch_size],
 *                                         logits_per_text  [text_batch_size, image_batch_size],
 *                                         text_embeds [text_batch_size, p], image_embeds [image_batch_size, p]
 *     onnx/text_model.onnx        (optional split variant) input_ids, attention_mask → text_embeds
 *     onnx/vision_model.onnx      (optional split variant) pixel_values → image_embeds
 *
 * The towers are deliberately simple but the contract is CLIP's:
 *
 *   notation
 *     V          vocabulary size; t_j the j-th token of a prompt, m_j ∈ {0,1} its attention mask
 *     e          text hidden width; E ∈ R^{V×e} the token table (row = spec.tokenVector(token))
 *     P_T        text projection e × p (identity when not given, p = e)
 *     S, g       image side and pooling grid (S divisible by g); x the normalised pixels [3, S, S]
 *     f(x)       per-channel means over the g×g cells, flattened channel-major: F = 3·g² features
 *     W_I, b_I   image map F × p and bias p
 *     s          logit scale, exp(logit_scale)
 *
 *   (1) text:   u = (Σ_j m_j E[t_j]) / max(1, Σ_j m_j),   t = P_Tᵀ u,    t̂ = t / ||t||
 *   (2) image:  v = W_Iᵀ f(x) + b_I,                                     v̂ = v / ||v||
 *   (3) logits_per_text = s · T̂ V̂ᵀ,  logits_per_image = its transpose   (text_embeds = t̂, image_embeds = v̂)
 *
 * as in Hugging Face's CLIPModel, whose text_embeds/image_embeds are the normalised projections and
 * whose logits are the scaled cosine similarities. The split models output the unnormalised
 * projections t and v, as CLIPTextModelWithProjection / CLIPVisionModelWithProjection do.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { GraphBuilder } from '../onnx/build.js';
import { BOS_TOKEN, type BpeVocab, buildWordVocab, clipTokenizerJson, EOS_TOKEN } from '../text/bpe-files.js';
import { ModelFormatError } from '../util/errors.js';

/** CLIP's image normalisation (OpenAI CLIP, also in every CLIPImageProcessor config). */
export const CLIP_MEAN: readonly [number, number, number] = Object.freeze([
  0.48145466, 0.4578275, 0.40821073,
]) as readonly [number, number, number];
export const CLIP_STD: readonly [number, number, number] = Object.freeze([
  0.26862954, 0.26130258, 0.27577711,
]) as readonly [number, number, number];

export interface ClipModelSpec {
  /** Vocabulary words; each becomes one token (`buildWordVocab`). */
  words: readonly string[];
  /** Text hidden width e (length of every token vector). */
  textHidden: number;
  /**
   * The vector E[token] ∈ R^e for a vocabulary entry, given its vocabulary string (a word token
   * looks like "nurse</w>"; specials are "<|startoftext|>" / "<|endoftext|>"; byte symbols and
   * partial merges also appear). Return undefined for a zero vector.
   */
  tokenVector: (token: string, id: number) => readonly number[] | undefined;
  /** P_T, e rows × p columns. Default: identity (p = e). */
  textProjection?: readonly (readonly number[])[];
  /** Image side S after preprocessing (resize shortest edge + center crop). Default 32. */
  imageSize?: number;
  /** Pooling grid g (S % g === 0). Default 1: the three channel means. */
  imageGrid?: number;
  /** W_I, F = 3·g² rows × p columns; row index = channel·g² + row·g + col. */
  imageProjection: readonly (readonly number[])[];
  /** b_I, length p. Default zeros. */
  imageBias?: readonly number[];
  /** s = exp(logit_scale). Default 100 (CLIP's trained, clamped value). */
  logitScale?: number;
  /** Which ONNX files to write: the joint model (default), the split text/vision pair, or both. */
  variant?: 'joint' | 'split' | 'both';
}

export interface ClipFolderInfo {
  kind: 'clip-folder';
  dir: string;
  files: string[];
  vocabSize: number;
  projectionDim: number;
  imageSize: number;
  imageGrid: number;
  logitScale: number;
}

interface Resolved {
  bpe: BpeVocab;
  vocabSize: number;
  e: number;
  p: number;
  S: number;
  g: number;
  F: number;
  table: Float32Array; // V × e
  projT: Float32Array; // e × p
  projI: Float32Array; // F × p
  biasI: Float32Array; // p
  scale: number;
}

function matrix(name: string, rows: readonly (readonly number[])[], r: number, c: number): Float32Array {
  if (rows.length !== r) throw new ModelFormatError(`${name}: ${rows.length} rows, expected ${r}`);
  const out = new Float32Array(r * c);
  rows.forEach((row, i) => {
    if (row.length !== c) throw new ModelFormatError(`${name}: row ${i} has ${row.length} entries, expected ${c}`);
    row.forEach((v, j) => {
      if (!Number.isFinite(v)) throw new ModelFormatError(`${name}: entry [${i}][${j}] = ${v} is not finite`);
      out[i * c + j] = v;
    });
  });
  return out;
}

function resolve(spec: ClipModelSpec): Resolved {
  const e = spec.textHidden;
  if (!Number.isInteger(e) || e < 1) throw new ModelFormatError(`textHidden: ${e} must be a positive integer`);
  const S = spec.imageSize ?? 32;
  const g = spec.imageGrid ?? 1;
  if (!Number.isInteger(S) || S < 1) throw new ModelFormatError(`imageSize: ${S} must be a positive integer`);
  if (!Number.isInteger(g) || g < 1 || S % g !== 0)
    throw new ModelFormatError(`imageGrid: ${g} must divide imageSize ${S}`);
  const F = 3 * g * g;
  const bpe = buildWordVocab(spec.words);
  const vocabSize = Object.keys(bpe.vocab).length;
  const table = new Float32Array(vocabSize * e);
  for (const [token, id] of Object.entries(bpe.vocab)) {
    const v = spec.tokenVector(token, id);
    if (v === undefined) continue;
    if (v.length !== e)
      throw new ModelFormatError(`tokenVector(${JSON.stringify(token)}): length ${v.length}, expected ${e}`);
    for (let k = 0; k < e; k++) {
      const x = v[k] as number;
      if (!Number.isFinite(x))
        throw new ModelFormatError(`tokenVector(${JSON.stringify(token)})[${k}] = ${x} is not finite`);
      table[id * e + k] = x;
    }
  }
  let p = e;
  let projT: Float32Array;
  if (spec.textProjection) {
    p = spec.textProjection[0]?.length ?? 0;
    if (p < 1) throw new ModelFormatError('textProjection: must have at least one column');
    projT = matrix('textProjection', spec.textProjection, e, p);
  } else {
    projT = new Float32Array(e * e);
    for (let i = 0; i < e; i++) projT[i * e + i] = 1;
  }
  const projI = matrix('imageProjection', spec.imageProjection, F, p);
  const biasI = new Float32Array(p);
  if (spec.imageBias) {
    if (spec.imageBias.length !== p)
      throw new ModelFormatError(`imageBias: length ${spec.imageBias.length}, expected ${p}`);
    biasI.set(spec.imageBias);
  }
  const scale = spec.logitScale ?? 100;
  if (!(scale > 0) || !Number.isFinite(scale))
    throw new ModelFormatError(`logitScale: ${scale} must be a positive number`);
  return { bpe, vocabSize, e, p, S, g, F, table, projT, projI, biasI, scale };
}

const FLOAT = 1;

/** Text tower, eq. (1); returns the unnormalised projection t [tb, p]. */
function textTower(b: GraphBuilder, r: Resolved): string {
  const ids = b.input('input_ids', 'int64', ['text_batch_size', 'sequence_length']);
  const mask = b.input('attention_mask', 'int64', ['text_batch_size', 'sequence_length']);
  const table = b.initializer('text_model.embeddings.token_embedding.weight', 'float32', [r.vocabSize, r.e], r.table);
  const tokens = b.node(
    'Gather',
    [table, ids],
    ['/text_model/embeddings/token_embedding/Gather_output_0'],
    { axis: 0 },
    '/text_model/embeddings/token_embedding/Gather',
  );
  const m = b.node('Cast', [mask], ['/text_model/Cast_output_0'], { to: FLOAT }, '/text_model/Cast');
  const axis2 = b.initializer('/text_model/Constant_axis2', 'int64', [1], [2]);
  const axis1 = b.initializer('/text_model/Constant_axis1', 'int64', [1], [1]);
  const m3 = b.node('Unsqueeze', [m, axis2], ['/text_model/Unsqueeze_output_0'], {}, '/text_model/Unsqueeze');
  const masked = b.node('Mul', [tokens, m3], ['/text_model/Mul_output_0'], {}, '/text_model/Mul');
  const sum = b.node(
    'ReduceSum',
    [masked, axis1],
    ['/text_model/ReduceSum_output_0'],
    { keepdims: 0 },
    '/text_model/ReduceSum',
  );
  const count = b.node(
    'ReduceSum',
    [m, axis1],
    ['/text_model/ReduceSum_1_output_0'],
    { keepdims: 1 },
    '/text_model/ReduceSum_1',
  );
  const one = b.initializer('/text_model/Constant_one', 'float32', [], [1]);
  const safe = b.node('Max', [count, one], ['/text_model/Max_output_0'], {}, '/text_model/Max');
  const mean = b.node('Div', [sum, safe], ['/text_model/Div_output_0'], {}, '/text_model/Div');
  const proj = b.initializer('text_projection.weight_T', 'float32', [r.e, r.p], r.projT);
  return b.node('MatMul', [mean, proj], ['/text_projection/MatMul_output_0'], {}, '/text_projection/MatMul');
}

/** Image tower, eq. (2); returns the unnormalised projection v [ib, p]. */
function visionTower(b: GraphBuilder, r: Resolved): string {
  const pix = b.input('pixel_values', 'float32', ['image_batch_size', 3, r.S, r.S]);
  const k = r.S / r.g;
  const pooled = b.node(
    'AveragePool',
    [pix],
    ['/vision_model/AveragePool_output_0'],
    { kernel_shape: [k, k], strides: [k, k] },
    '/vision_model/AveragePool',
  );
  const flat = b.node('Flatten', [pooled], ['/vision_model/Flatten_output_0'], { axis: 1 }, '/vision_model/Flatten');
  const w = b.initializer('visual_projection.weight_T', 'float32', [r.F, r.p], r.projI);
  const bias = b.initializer('visual_projection.bias', 'float32', [r.p], r.biasI);
  const mm = b.node('MatMul', [flat, w], ['/visual_projection/MatMul_output_0'], {}, '/visual_projection/MatMul');
  return b.node('Add', [mm, bias], ['/visual_projection/Add_output_0'], {}, '/visual_projection/Add');
}

/** x / max(||x||₂, 1e-12) along axis 1. */
function l2normalize(b: GraphBuilder, x: string, prefix: string): string {
  const norm = b.node(
    'ReduceL2',
    [x],
    [`${prefix}/ReduceL2_output_0`],
    { axes: [1], keepdims: 1 },
    `${prefix}/ReduceL2`,
  );
  const eps = b.initializer(`${prefix}/Constant_eps`, 'float32', [], [1e-12]);
  const safe = b.node('Max', [norm, eps], [`${prefix}/Max_output_0`], {}, `${prefix}/Max`);
  return b.node('Div', [x, safe], [`${prefix}/Div_output_0`], {}, `${prefix}/Div`);
}

function jointGraph(r: Resolved): GraphBuilder {
  const b = new GraphBuilder('clip_joint');
  const t = textTower(b, r);
  const v = visionTower(b, r);
  const tn = l2normalize(b, t, '/text_norm');
  const vn = l2normalize(b, v, '/image_norm');
  b.node('Identity', [tn], ['text_embeds'], {}, '/text_embeds/Identity');
  b.node('Identity', [vn], ['image_embeds'], {}, '/image_embeds/Identity');
  const vt = b.node('Transpose', [vn], ['/Transpose_output_0'], { perm: [1, 0] }, '/Transpose');
  const cos = b.node('MatMul', [tn, vt], ['/MatMul_output_0'], {}, '/MatMul');
  const scale = b.initializer('logit_scale_exp', 'float32', [], [r.scale]);
  b.node('Mul', [cos, scale], ['logits_per_text'], {}, '/Mul');
  b.node('Transpose', ['logits_per_text'], ['logits_per_image'], { perm: [1, 0] }, '/Transpose_1');
  b.output('logits_per_image', 'float32', ['image_batch_size', 'text_batch_size']);
  b.output('logits_per_text', 'float32', ['text_batch_size', 'image_batch_size']);
  b.output('text_embeds', 'float32', ['text_batch_size', r.p]);
  b.output('image_embeds', 'float32', ['image_batch_size', r.p]);
  return b;
}

function textGraph(r: Resolved): GraphBuilder {
  const b = new GraphBuilder('clip_text');
  const t = textTower(b, r);
  b.node('Identity', [t], ['text_embeds'], {}, '/text_embeds/Identity');
  b.output('text_embeds', 'float32', ['text_batch_size', r.p]);
  return b;
}

function visionGraph(r: Resolved): GraphBuilder {
  const b = new GraphBuilder('clip_vision');
  const v = visionTower(b, r);
  b.node('Identity', [v], ['image_embeds'], {}, '/image_embeds/Identity');
  b.output('image_embeds', 'float32', ['image_batch_size', r.p]);
  return b;
}

function writeJson(path: string, value: unknown): void {
  writeFileSync(path, `${JSON.stringify(value, null, 2)}\n`);
}

/**
 * Write a transformers.js-layout CLIP folder for `spec` into `dir` (created if needed; existing
 * files of the same names are overwritten). Deterministic: same spec → same bytes.
 */
export function buildClipFolder(dir: string, spec: ClipModelSpec): ClipFolderInfo {
  const r = resolve(spec);
  const variant = spec.variant ?? 'joint';
  mkdirSync(join(dir, 'onnx'), { recursive: true });
  const files: string[] = [];
  const bos = r.bpe.vocab[BOS_TOKEN] as number;
  const eos = r.bpe.vocab[EOS_TOKEN] as number;
  writeJson(join(dir, 'config.json'), {
    _name_or_path: 'time-debias/tiny-clip',
    architectures: ['CLIPModel'],
    model_type: 'clip',
    projection_dim: r.p,
    // The graph multiplies by s = exp(logit_scale); CLIP stores logit_scale in log space.
    logit_scale_init_value: Math.log(r.scale),
    initializer_factor: 1.0,
    text_config: {
      model_type: 'clip_text_model',
      vocab_size: r.vocabSize,
      hidden_size: r.e,
      projection_dim: r.p,
      max_position_embeddings: 77,
      num_hidden_layers: 0,
      num_attention_heads: 1,
      bos_token_id: bos,
      eos_token_id: eos,
      pad_token_id: eos,
    },
    vision_config: {
      model_type: 'clip_vision_model',
      image_size: r.S,
      patch_size: r.S / r.g,
      num_channels: 3,
      hidden_size: r.F,
      projection_dim: r.p,
      num_hidden_layers: 0,
      num_attention_heads: 1,
    },
    time_debias: {
      note: 'tiny designed CLIP-format model built by src/demo/clip-model.ts',
      text_tower: 'masked mean of token vectors, linear projection',
      image_tower: `per-channel means over a ${r.g}x${r.g} grid of the normalised pixels, affine map`,
      logit_scale: r.scale,
    },
    transformers_version: '4.40.0',
  });
  files.push('config.json');
  writeJson(join(dir, 'preprocessor_config.json'), {
    image_processor_type: 'CLIPImageProcessor',
    feature_extractor_type: 'CLIPFeatureExtractor',
    processor_class: 'CLIPProcessor',
    do_convert_rgb: true,
    do_resize: true,
    size: { shortest_edge: r.S },
    resample: 3,
    do_center_crop: true,
    crop_size: { height: r.S, width: r.S },
    do_rescale: true,
    rescale_factor: 1 / 255,
    do_normalize: true,
    image_mean: [...CLIP_MEAN],
    image_std: [...CLIP_STD],
  });
  files.push('preprocessor_config.json');
  writeJson(join(dir, 'tokenizer.json'), clipTokenizerJson(r.bpe));
  files.push('tokenizer.json');
  writeJson(join(dir, 'tokenizer_config.json'), {
    tokenizer_class: 'CLIPTokenizer',
    model_max_length: 77,
    bos_token: BOS_TOKEN,
    eos_token: EOS_TOKEN,
    unk_token: EOS_TOKEN,
    pad_token: EOS_TOKEN,
    do_lower_case: true,
    add_prefix_space: false,
    clean_up_tokenization_spaces: false,
    errors: 'replace',
  });
  files.push('tokenizer_config.json');
  const onnxDir = join(dir, 'onnx');
  if (variant === 'joint' || variant === 'both') {
    jointGraph(r).save(onnxDir, 'model.onnx', { opset: 14 });
    files.push('onnx/model.onnx');
  }
  if (variant === 'split' || variant === 'both') {
    textGraph(r).save(onnxDir, 'text_model.onnx', { opset: 14 });
    visionGraph(r).save(onnxDir, 'vision_model.onnx', { opset: 14 });
    files.push('onnx/text_model.onnx', 'onnx/vision_model.onnx');
  }
  return {
    kind: 'clip-folder',
    dir,
    files,
    vocabSize: r.vocabSize,
    projectionDim: r.p,
    imageSize: r.S,
    imageGrid: r.g,
    logitScale: r.scale,
  };
}

/** The normalised value a channel takes for an 8-bit value (rescale 1/255, then (x − mean)/std). */
export function normalizedChannel(channel: 0 | 1 | 2, value8bit: number): number {
  return (value8bit / 255 - (CLIP_MEAN[channel] as number)) / (CLIP_STD[channel] as number);
}
