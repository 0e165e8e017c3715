/**
 * PyTorch-side checkpoints with the same weights as a tiny ONNX SD model (src/demo/sd-model.ts), in
 * the exact real layouts and key names:
 *
 *   diffusers folder   model_index.json, unet/config.json, unet/diffusion_pytorch_model.safetensors
 *                      (or 2 shards + diffusion_pytorch_model.safetensors.index.json),
 *                      text_encoder/model.safetensors, tokenizer/ (copied)
 *   single file        model.diffusion_model.* (CompVis), cond_stage_model.* (SD 1.x or SD 2.x keys),
 *                      first_stage_model.* (a VAE decoy)
 *
 * The cross-attention weights are the ONNX model's (torch layout [out, d]); decoys beside them
 * (attn1 K/V, attn2 Q, conv_in) must come through `apply` byte for byte.
 */
import { cpSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fromFloat32, type TensorToWrite, writeSafetensors } from '../../src/formats/safetensors.js';
import { diffusersToCompvis, TOKEN_EMBEDDING_KEYS } from '../../src/model/checkpoints.js';
import { openSdModel } from '../../src/model/folder.js';
import { locateSites, readSiteWeight } from '../../src/model/sites.js';
import { getInitializer, openOnnxModel, readTensorFloat32 } from '../../src/onnx/model-file.js';
import { randomFloats } from '../onnx/helpers.js';

export type FixtureDtype = 'F32' | 'F16' | 'BF16';

export interface FixtureWeights {
  d: number;
  /** site name → W [out, d] float32 (the ONNX model's). */
  sites: Map<string, { W: Float32Array; out: number }>;
  /** token embedding [V, d] */
  tokenEmbedding: { values: Float32Array; vocab: number };
}

export function readFixtureWeights(onnxDir: string): FixtureWeights {
  const model = openSdModel(onnxDir);
  const sites = new Map<string, { W: Float32Array; out: number }>();
  for (const s of locateSites(model)) sites.set(s.name, { W: readSiteWeight(model, s), out: s.out });
  const te = openOnnxModel(model.files.textEncoder);
  const init = getInitializer(te, TOKEN_EMBEDDING_KEYS.diffusers);
  return {
    d: model.d,
    sites,
    tokenEmbedding: { values: readTensorFloat32(te, init), vocab: init.dims[0] as number },
  };
}

function tensor(name: string, values: Float32Array, shape: number[], dtype: FixtureDtype): TensorToWrite {
  return { name, dtype, shape, data: fromFloat32(values, dtype, name) };
}

/** The UNet tensors under diffusers names: sites + decoys, in a mixed order (as real files sort keys). */
function unetTensors(w: FixtureWeights, dtype: FixtureDtype): TensorToWrite[] {
  const out: TensorToWrite[] = [tensor('conv_in.weight', randomFloats(4 * 4 * 9, 1), [4, 4, 3, 3], dtype)];
  let seed = 10;
  for (const [name, { W, out: o }] of w.sites) {
    out.push(tensor(`${name}.weight`, W, [o, w.d], dtype));
    if (name.endsWith('to_k')) {
      const module = name.replace(/\.attn2\.to_k$/, '');
      out.push(tensor(`${module}.attn2.to_q.weight`, randomFloats(o * o, seed++), [o, o], dtype));
      out.push(tensor(`${module}.attn1.to_k.weight`, randomFloats(o * o, seed++), [o, o], dtype));
    }
  }
  return out;
}

export function buildDiffusersFixture(
  onnxDir: string,
  dir: string,
  options: { dtype?: FixtureDtype; sharded?: boolean } = {},
): void {
  const dtype = options.dtype ?? 'F32';
  const w = readFixtureWeights(onnxDir);
  mkdirSync(join(dir, 'unet'), { recursive: true });
  mkdirSync(join(dir, 'text_encoder'), { recursive: true });
  writeFileSync(
    join(dir, 'model_index.json'),
    JSON.stringify({ _class_name: 'StableDiffusionPipeline', unet: ['diffusers', 'UNet2DConditionModel'] }),
  );
  writeFileSync(join(dir, 'unet', 'config.json'), JSON.stringify({ cross_attention_dim: w.d }));
  const tensors = unetTensors(w, dtype);
  if (options.sharded) {
    const half = Math.ceil(tensors.length / 2);
    const shards = [tensors.slice(0, half), tensors.slice(half)];
    const map: Record<string, string> = {};
    shards.forEach((ts, i) => {
      const file = `diffusion_pytorch_model-0000${i + 1}-of-00002.safetensors`;
      writeSafetensors(join(dir, 'unet', file), ts);
      for (const t of ts) map[t.name] = file;
    });
    writeFileSync(
      join(dir, 'unet', 'diffusion_pytorch_model.safetensors.index.json'),
      JSON.stringify({ metadata: { total_size: 0 }, weight_map: map }, null, 2),
    );
  } else {
    writeSafetensors(join(dir, 'unet', 'diffusion_pytorch_model.safetensors'), tensors, { format: 'pt' });
  }
  writeSafetensors(join(dir, 'text_encoder', 'model.safetensors'), [
    tensor(TOKEN_EMBEDDING_KEYS.diffusers, w.tokenEmbedding.values, [w.tokenEmbedding.vocab, w.d], dtype),
  ]);
  cpSync(join(onnxDir, 'tokenizer'), join(dir, 'tokenizer'), { recursive: true });
}

export function buildSingleFileFixture(
  onnxDir: string,
  file: string,
  options: { dtype?: FixtureDtype; sd2?: boolean; withTextEncoder?: boolean } = {},
): void {
  const dtype = options.dtype ?? 'F32';
  const w = readFixtureWeights(onnxDir);
  const tensors: TensorToWrite[] = [];
  if (options.withTextEncoder ?? true) {
    tensors.push(
      tensor(
        TOKEN_EMBEDDING_KEYS[options.sd2 ? 'compvis-sd2' : 'compvis-sd1'],
        w.tokenEmbedding.values,
        [w.tokenEmbedding.vocab, w.d],
        dtype,
      ),
    );
  }
  tensors.push(tensor('first_stage_model.decoder.conv_in.weight', randomFloats(8 * 4 * 9, 2), [8, 4, 3, 3], dtype));
  for (const t of unetTensors(w, dtype)) {
    const m = /^(.*)\.attn2\.to_([kv])\.weight$/.exec(t.name);
    if (m) tensors.push({ ...t, name: diffusersToCompvis(t.name.replace(/\.weight$/, '')) });
    else if (t.name === 'conv_in.weight') tensors.push({ ...t, name: 'model.diffusion_model.input_blocks.0.0.weight' });
    else {
      // decoys at the CompVis path of their module
      const site = t.name.replace(/\.(attn1\.to_k|attn2\.to_q)\.weight$/, '.attn2.to_k');
      const key = diffusersToCompvis(site).replace(
        /attn2\.to_k\.weight$/,
        t.name.endsWith('attn1.to_k.weight') ? 'attn1.to_k.weight' : 'attn2.to_q.weight',
      );
      tensors.push({ ...t, name: key });
    }
  }
  writeSafetensors(file, tensors, { format: 'pt' });
}
