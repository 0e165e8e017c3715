import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { buildClipFolder } from '../../src/demo/clip-model.js';
import { Session } from '../../src/runtime/ort.js';
import { G, makeTinyClip, P, S, tinySpec } from './fixtures.js';

test('buildClipFolder writes the transformers.js layout with a config consistent with the graph', async () => {
  const t = makeTinyClip('both');
  try {
    const config = JSON.parse(readFileSync(join(t.dir, 'config.json'), 'utf8'));
    assert.equal(config.model_type, 'clip');
    assert.equal(config.projection_dim, P);
    assert.ok(Math.abs(config.logit_scale_init_value - Math.log(20)) < 1e-12);
    assert.equal(config.text_config.vocab_size, Object.keys(t.bpe.vocab).length);
    assert.equal(config.vision_config.image_size, S);
    assert.equal(config.vision_config.patch_size, S / G);
    const pre = JSON.parse(readFileSync(join(t.dir, 'preprocessor_config.json'), 'utf8'));
    assert.deepEqual(pre.size, { shortest_edge: S });
    assert.deepEqual(pre.crop_size, { height: S, width: S });
    assert.equal(pre.do_convert_rgb, true);
    const joint = await Session.create(join(t.dir, 'onnx', 'model.onnx'), { label: 'clip' });
    try {
      assert.deepEqual(
        joint.inputs.map((i) => [i.name, i.type, i.shape]),
        [
          ['input_ids', 'int64', ['text_batch_size', 'sequence_length']],
          ['attention_mask', 'int64', ['text_batch_size', 'sequence_length']],
          ['pixel_values', 'float32', ['image_batch_size', 3, S, S]],
        ],
      );
      assert.deepEqual(
        joint.outputs.map((o) => o.name),
        ['logits_per_image', 'logits_per_text', 'text_embeds', 'image_embeds'],
      );
    } finally {
      await joint.dispose();
    }
    for (const f of ['text_model.onnx', 'vision_model.onnx']) {
      const s = await Session.create(join(t.dir, 'onnx', f));
      assert.ok(s.outputs.length === 1);
      await s.dispose();
    }
  } finally {
    t.cleanup();
  }
});

test('buildClipFolder is deterministic and validates its spec', () => {
  const a = makeTinyClip('joint');
  const b = makeTinyClip('joint');
  try {
    for (const f of ['config.json', 'tokenizer.json', 'onnx/model.onnx']) {
      assert.deepEqual(readFileSync(join(a.dir, f)), readFileSync(join(b.dir, f)), f);
    }
    assert.throws(
      () => buildClipFolder(join(a.dir, 'x'), tinySpec({ imageGrid: 5 })),
      /imageGrid: 5 must divide imageSize 32/,
    );
    assert.throws(
      () => buildClipFolder(join(a.dir, 'x'), tinySpec({ imageProjection: [[1]] })),
      /imageProjection: 1 rows, expected 12/,
    );
    assert.throws(
      () => buildClipFolder(join(a.dir, 'x'), tinySpec({ tokenVector: () => [1, 2] })),
      /length 2, expected 5/,
    );
  } finally {
    a.cleanup();
    b.cleanup();
  }
});
