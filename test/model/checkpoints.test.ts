/**
 * Checkpoint key maps and layouts: all 16 SD 1.x cross-attention sites × K/V (and SD 2.x's, the same
 * UNet layout at d = 1024) map CompVis ↔ diffusers both ways to the exact real keys; diffusers,
 * sharded and single-file fixtures open with their sites; pickle checkpoints are refused with why.
 */
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { buildTinySdModel } from '../../src/demo/sd-model.js';
import {
  compvisToDiffusers,
  detectModelKind,
  diffusersToCompvis,
  openCheckpoint,
} from '../../src/model/checkpoints.js';
import { ModelFormatError } from '../../src/util/errors.js';
import { tempDir } from '../onnx/helpers.js';
import { buildDiffusersFixture, buildSingleFileFixture } from './checkpoint-fixtures.js';

const tmp = tempDir('checkpoints');
after(tmp.cleanup);

/** The 16 text cross-attention modules of SD 1.x / 2.x and their CompVis blocks (diffusers' converter). */
const SD_BLOCKS: [string, string][] = [
  ['down_blocks.0.attentions.0', 'input_blocks.1.1'],
  ['down_blocks.0.attentions.1', 'input_blocks.2.1'],
  ['down_blocks.1.attentions.0', 'input_blocks.4.1'],
  ['down_blocks.1.attentions.1', 'input_blocks.5.1'],
  ['down_blocks.2.attentions.0', 'input_blocks.7.1'],
  ['down_blocks.2.attentions.1', 'input_blocks.8.1'],
  ['mid_block.attentions.0', 'middle_block.1'],
  ['up_blocks.1.attentions.0', 'output_blocks.3.1'],
  ['up_blocks.1.attentions.1', 'output_blocks.4.1'],
  ['up_blocks.1.attentions.2', 'output_blocks.5.1'],
  ['up_blocks.2.attentions.0', 'output_blocks.6.1'],
  ['up_blocks.2.attentions.1', 'output_blocks.7.1'],
  ['up_blocks.2.attentions.2', 'output_blocks.8.1'],
  ['up_blocks.3.attentions.0', 'output_blocks.9.1'],
  ['up_blocks.3.attentions.1', 'output_blocks.10.1'],
  ['up_blocks.3.attentions.2', 'output_blocks.11.1'],
];

describe('CompVis ↔ diffusers key map', () => {
  test('all 16 SD 1.x / 2.x sites × K/V, both ways', () => {
    let count = 0;
    for (const [diffusers, compvis] of SD_BLOCKS) {
      for (const p of ['to_k', 'to_v'] as const) {
        const name = `${diffusers}.transformer_blocks.0.attn2.${p}`;
        const key = `model.diffusion_model.${compvis}.transformer_blocks.0.attn2.${p}.weight`;
        assert.equal(diffusersToCompvis(name), key);
        assert.deepEqual(compvisToDiffusers(key), { name, projection: p });
        count++;
      }
    }
    assert.equal(count, 32);
  });
  test('non-sites are not mapped', () => {
    for (const key of [
      'model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_k.weight',
      'model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_q.weight',
      'model.diffusion_model.input_blocks.3.1.transformer_blocks.0.attn2.to_k.weight', // a downsampler slot
      'cond_stage_model.transformer.text_model.embeddings.token_embedding.weight',
    ]) {
      assert.equal(compvisToDiffusers(key), undefined, key);
    }
  });
});

describe('checkpoint layouts', () => {
  const onnx = join(tmp.dir, 'onnx');
  buildTinySdModel(onnx, { d: 16 });
  test('diffusers (one file and sharded) and single file (SD 1.x, SD 2.x keys) open with all 32 sites', () => {
    const diff = join(tmp.dir, 'diffusers');
    const shard = join(tmp.dir, 'sharded');
    const single = join(tmp.dir, 'sd1.safetensors');
    const single2 = join(tmp.dir, 'sd2.safetensors');
    buildDiffusersFixture(onnx, diff);
    buildDiffusersFixture(onnx, shard, { sharded: true, dtype: 'F16' });
    buildSingleFileFixture(onnx, single);
    buildSingleFileFixture(onnx, single2, { sd2: true, dtype: 'BF16' });
    const expected = SD_BLOCKS.flatMap(([b]) => ['to_k', 'to_v'].map((p) => `${b}.transformer_blocks.0.attn2.${p}`));
    for (const [path, kind, keyMap, dtype, files] of [
      [diff, 'diffusers-safetensors', 'diffusers', 'F32', 1],
      [shard, 'diffusers-safetensors', 'diffusers', 'F16', 2],
      [single, 'single-file', 'compvis-sd1', 'F32', 1],
      [single2, 'single-file', 'compvis-sd2', 'BF16', 1],
    ] as const) {
      assert.equal(detectModelKind(path), kind);
      const c = openCheckpoint(path);
      assert.equal(c.keyMap, keyMap);
      assert.equal(c.d, 16);
      assert.equal(c.unetFiles.length, files);
      assert.deepEqual(
        c.sites.map((s) => s.name),
        expected,
      );
      assert.ok(c.sites.every((s) => s.dtype === dtype));
      assert.ok(c.tokenEmbedding, 'token embedding found');
    }
  });
  test('pickle checkpoints are refused, saying why and what to do', () => {
    const ckpt = join(tmp.dir, 'model.ckpt');
    writeFileSync(ckpt, 'not really pickle');
    assert.throws(
      () => detectModelKind(ckpt),
      (e: unknown) => e instanceof ModelFormatError && /pickle/.test(e.message) && /safetensors/.test(e.message),
    );
    const folder = join(tmp.dir, 'binfolder');
    mkdirSync(join(folder, 'unet'), { recursive: true });
    writeFileSync(join(folder, 'unet', 'diffusion_pytorch_model.bin'), 'x');
    assert.throws(() => detectModelKind(folder), /pickle/);
  });
  test('a safetensors file without CompVis UNet keys is refused', () => {
    // a diffusers UNet file given as a single file
    buildDiffusersFixture(onnx, join(tmp.dir, 'd2'));
    assert.throws(
      () => openCheckpoint(join(tmp.dir, 'd2', 'unet', 'diffusion_pytorch_model.safetensors')),
      /no key starts with "model.diffusion_model."/,
    );
  });
});
