import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import {
  planSd14Unet,
  SD14_UNET_CONFIG,
  SD14_UNET_PARAMETERS,
  scaledSd14Config,
  sd14UnetParameterCountFormula,
  writeSd14Unet,
} from '../../src/demo/sd14-unet.js';
import { locateSites } from '../../src/model/sites.js';
import { openOnnxModel } from '../../src/onnx/model-file.js';
import { Session, tensor } from '../../src/runtime/ort.js';
import { UsageError } from '../../src/util/errors.js';

const root = mkdtempSync(join(tmpdir(), 'sd14-unet-test-'));
after(() => rmSync(root, { recursive: true, force: true }));

const SITE_BLOCKS = [
  'down_blocks.0.attentions.0',
  'down_blocks.0.attentions.1',
  'down_blocks.1.attentions.0',
  'down_blocks.1.attentions.1',
  'down_blocks.2.attentions.0',
  'down_blocks.2.attentions.1',
  'mid_block.attentions.0',
  'up_blocks.1.attentions.0',
  'up_blocks.1.attentions.1',
  'up_blocks.1.attentions.2',
  'up_blocks.2.attentions.0',
  'up_blocks.2.attentions.1',
  'up_blocks.2.attentions.2',
  'up_blocks.3.attentions.0',
  'up_blocks.3.attentions.1',
  'up_blocks.3.attentions.2',
];

describe('SD 1.4 UNet builder', () => {
  test('the full SD 1.4 config has 859,520,964 parameters in 686 tensors (counted from shapes, no weights written)', () => {
    const plan = planSd14Unet(SD14_UNET_CONFIG);
    assert.equal(plan.parameterCount, SD14_UNET_PARAMETERS);
    assert.equal(sd14UnetParameterCountFormula(SD14_UNET_CONFIG), SD14_UNET_PARAMETERS);
    assert.equal(plan.params.length, 686); // len(list(unet.parameters())) of diffusers' SD 1.4 UNet
    assert.equal(new Set(plan.params.map((p) => p.key)).size, plan.params.length);
    assert.deepEqual(
      plan.sites.map((s) => s.module),
      SITE_BLOCKS.map((b) => `${b}.transformer_blocks.0.attn2`),
    );
    assert.deepEqual(
      plan.sites.map((s) => s.width),
      [320, 320, 640, 640, 1280, 1280, 1280, 1280, 1280, 1280, 640, 640, 640, 320, 320, 320],
    );
    // a few shapes as in the diffusers state dict (ONNX layout: MatMul weights transposed)
    const byKey = new Map(plan.params.map((p) => [p.key, p]));
    assert.deepEqual(byKey.get('up_blocks.1.resnets.0.conv1.weight')?.dims, [1280, 2560, 3, 3]);
    assert.deepEqual(byKey.get('up_blocks.3.resnets.0.conv_shortcut.weight')?.dims, [320, 960, 1, 1]);
    assert.deepEqual(
      byKey.get('down_blocks.0.attentions.0.transformer_blocks.0.ff.net.0.proj.weight')?.dims,
      [320, 2560],
    );
    assert.deepEqual(byKey.get('mid_block.attentions.0.transformer_blocks.0.attn2.to_k.weight')?.dims, [768, 1280]);
    assert.deepEqual(byKey.get('time_embedding.linear_1.weight')?.dims, [1280, 320]);
  });

  test('the closed-form count agrees with the built graph at other widths and depths', () => {
    for (const divisor of [10, 20, 40]) {
      const cfg = scaledSd14Config(divisor);
      assert.equal(planSd14Unet(cfg).parameterCount, sd14UnetParameterCountFormula(cfg), `divisor ${divisor}`);
      const shallow = { ...cfg, layersPerBlock: 1 };
      assert.equal(planSd14Unet(shallow).parameterCount, sd14UnetParameterCountFormula(shallow));
    }
  });

  test('a scaled model writes as the exporter does, runs, and the site locator finds 16 attn2 sites × K/V', async () => {
    const cfg = scaledSd14Config(40, 16); // widths 8/16/32/32, d = 16
    const plan = planSd14Unet(cfg);
    const unetDir = join(root, 'm', 'unet');
    const written = writeSd14Unet(unetDir, plan, { seed: 3 });
    assert.equal(written.parameterCount, sd14UnetParameterCountFormula(cfg));
    assert.equal(statSync(join(unetDir, 'weights.pb')).size, written.weightBytes);
    const file = openOnnxModel(join(unetDir, 'model.onnx'));
    assert.ok(file.externalFiles.length === 1 && file.externalFiles[0]?.location === 'weights.pb');
    const sites = locateSites({ unet: file, d: 16 });
    assert.equal(sites.length, 32);
    for (const block of SITE_BLOCKS) {
      for (const proj of ['to_k', 'to_v'] as const) {
        const name = `${block}.transformer_blocks.0.attn2.${proj}`;
        const site = sites.find((s) => s.name === name);
        assert.ok(site, `site ${name}`);
        assert.equal(site.projection, proj);
        assert.equal(site.layout, 'transposed');
        assert.match(site.initializer, /^onnx::MatMul_\d+$/);
        assert.equal(
          site.nodeName,
          `/${block.replace(/\.(?=[a-z_])/g, '/')}/transformer_blocks.0/attn2/${proj}/MatMul`,
        );
      }
    }
    // same seed → same bytes; the weights are seeded per parameter
    const again = writeSd14Unet(join(root, 'm2', 'unet'), plan, { seed: 3 });
    assert.equal(again.weightBytes, written.weightBytes);
    assert.deepEqual(readFileSync(join(root, 'm2', 'unet', 'weights.pb')), readFileSync(join(unetDir, 'weights.pb')));

    const session = await Session.create(join(unetDir, 'model.onnx'), { threads: 1 });
    try {
      const h = 16;
      const n = 2 * 4 * h * h;
      const sample = Float32Array.from({ length: n }, (_, i) => Math.sin(i * 0.37));
      const ehs = Float32Array.from({ length: 2 * 77 * 16 }, (_, i) => Math.cos(i * 0.11));
      const out = await session.run({
        sample: tensor('float32', sample, [2, 4, h, h]),
        timestep: tensor('float32', Float32Array.from([961, 961]), [2]),
        encoder_hidden_states: tensor('float32', ehs, [2, 77, 16]),
      });
      const y = out.out_sample;
      assert.ok(y);
      assert.deepEqual(y.dims, [2, 4, h, h]);
      const values = y.data as Float32Array;
      assert.ok(values.every(Number.isFinite));
      assert.ok(values.some((v) => v !== 0));
      // the text reaches the output: changing encoder_hidden_states changes it
      const out2 = await session.run({
        sample: tensor('float32', sample, [2, 4, h, h]),
        timestep: tensor('float32', Float32Array.from([961, 961]), [2]),
        encoder_hidden_states: tensor(
          'float32',
          ehs.map((v) => -v),
          [2, 77, 16],
        ),
      });
      const v2 = out2.out_sample?.data as Float32Array;
      assert.ok(v2.some((v, i) => Math.abs(v - (values[i] as number)) > 1e-6));
    } finally {
      await session.dispose();
    }
  });

  test('aligned external data puts every large tensor at a multiple of the alignment', () => {
    const plan = planSd14Unet(scaledSd14Config(40, 16));
    const unetDir = join(root, 'aligned', 'unet');
    writeSd14Unet(unetDir, plan, { align: 4096 });
    const file = openOnnxModel(join(unetDir, 'model.onnx'));
    let external = 0;
    for (const init of file.initializers) {
      if (init.storage.kind !== 'external') continue;
      external += 1;
      assert.equal(init.storage.offset % 4096, 0, init.name);
    }
    assert.ok(external > 100);
  });

  test('configs that cannot be built are refused with the field and the rule', () => {
    assert.throws(() => scaledSd14Config(7), UsageError);
    assert.throws(() => planSd14Unet({ ...SD14_UNET_CONFIG, heads: 7 }), /heads: 7 must divide every width/);
    assert.throws(() => planSd14Unet({ ...SD14_UNET_CONFIG, normGroups: 24 }), /normGroups: 24 must divide/);
  });
});
