/**
 * Image geometry read from the model (src/generate/geometry.ts): the VAE's scale factor from its
 * config or measured by a decode, the native size from unet/config.json, model_index.json, the UNet
 * graph or the SD 1.x / 2.x-768 fallback — on the rules and on tiny model folders, among them a
 * diffusers-style one whose VAE has scale factor 2.
 */
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { buildTinySdModel } from '../../src/demo/sd-model.js';
import {
  decideNativeSize,
  type NativeSizeInput,
  nativeSizeWarning,
  probeVaeScale,
  vaeScaleFromConfig,
} from '../../src/generate/geometry.js';
import { declaredSampleSize } from '../../src/generate/model-geometry.js';
import { normalizeRequest, StableDiffusionPipeline } from '../../src/generate/pipeline.js';
import { GenerationError, ModelFormatError } from '../../src/util/errors.js';

const root = mkdtempSync(join(tmpdir(), 'td-geometry-'));
after(() => rmSync(root, { recursive: true, force: true }));

const f8 = { factor: 8, source: 'vae-config' as const, detail: '' };
const none: NativeSizeInput = {
  unetConfig: null,
  modelIndex: null,
  unetSampleShape: ['batch', 4, 'height', 'width'],
  vaeScale: f8,
  textWidth: 768,
  predictionType: 'epsilon',
};

describe('the rules', () => {
  it("VAE scale factor from config: 2^(len(block_out_channels) − 1), as diffusers' vae_scale_factor", () => {
    assert.equal(vaeScaleFromConfig({ block_out_channels: [128, 256, 512, 512] }, 'v')?.factor, 8);
    assert.equal(vaeScaleFromConfig({ block_out_channels: [32, 64] }, 'v')?.factor, 2);
    assert.equal(vaeScaleFromConfig({ scaling_factor: 0.18215 }, 'v'), null);
    assert.equal(vaeScaleFromConfig(null, 'v'), null);
    assert.throws(() => vaeScaleFromConfig({ block_out_channels: 4 }, 'v'), ModelFormatError);
  });

  it('native size: unet sample_size × f, then model_index.json, then the UNet graph, then the fallback', () => {
    const full: NativeSizeInput = {
      ...none,
      unetConfig: { sample_size: 96 },
      modelIndex: { _time_debias: { native_size: [64, 64] } },
      unetSampleShape: [2, 4, 32, 48],
    };
    assert.deepEqual(
      [decideNativeSize(full).height, decideNativeSize(full).width, decideNativeSize(full).source],
      [768, 768, 'unet-config'],
    );
    const rect = decideNativeSize({ ...full, unetConfig: { sample_size: [64, 96] } });
    assert.deepEqual([rect.height, rect.width], [512, 768]);
    const index = decideNativeSize({ ...full, unetConfig: {} });
    assert.deepEqual([index.height, index.width, index.source], [64, 64, 'model-index']);
    const graph = decideNativeSize({ ...full, unetConfig: null, modelIndex: { _class_name: 'x' } });
    assert.deepEqual([graph.height, graph.width, graph.source], [256, 384, 'unet-graph']);
    assert.equal(nativeSizeWarning(graph), null);
    const sd1 = decideNativeSize(none);
    assert.deepEqual([sd1.height, sd1.width, sd1.source], [512, 512, 'fallback']);
    assert.match(nativeSizeWarning(sd1) ?? '', /image size 512 × 512 is a guess .*; set height and width if the model/);
    // the caller names the parameters as its user knows them
    assert.match(nativeSizeWarning(sd1, (f) => `--${f}`) ?? '', /; set --height and --width if the model/);
    const sd2 = decideNativeSize({ ...none, textWidth: 1024, predictionType: 'v_prediction' });
    assert.deepEqual([sd2.height, sd2.source], [768, 'fallback']);
    assert.match(sd2.detail, /SD 2\.x-768/);
    assert.equal(decideNativeSize({ ...none, textWidth: 1024 }).height, 512, 'SD 2.x base (epsilon) is 512');
    assert.throws(() => decideNativeSize({ ...none, unetConfig: { sample_size: 'big' } }), /sample_size: "big"/);
  });

  it('the measured scale factor is remembered per VAE digest; a non-uniform scale is refused', async () => {
    let decodes = 0;
    const decode = async (h: number, w: number) => {
      decodes++;
      return { height: 4 * h, width: 4 * w };
    };
    const digest = `test-${Date.now()}`;
    assert.equal((await probeVaeScale(digest, 'vae', decode)).factor, 4);
    assert.equal((await probeVaeScale(digest, 'vae', decode)).factor, 4);
    assert.equal(decodes, 1);
    await assert.rejects(
      probeVaeScale(`${digest}-b`, 'vae', async (h, w) => ({ height: 8 * h, width: 4 * w })),
      /not the same power-of-2 scale on both sides/,
    );
  });

  it('sizes are multiples of the scale factor; latents are checked against it, naming both shapes and f', () => {
    const g = { height: 16, width: 16, vaeScale: 2 };
    assert.equal(normalizeRequest({ prompt: 'x', seeds: [0], height: 18, width: 18 }, g).height, 18);
    assert.throws(
      () => normalizeRequest({ prompt: 'x', seeds: [0], height: 17 }, g),
      (e: Error) => e instanceof GenerationError && /^height: 17 is not a positive multiple of 2/.test(e.message),
    );
    const ok = { shape: [1, 4, 8, 8], data: new Float32Array(256) };
    assert.equal(normalizeRequest({ prompt: 'x', latents: ok }, g).count, 1);
    assert.throws(
      () => normalizeRequest({ prompt: 'x', latents: { shape: [1, 4, 2, 2], data: new Float32Array(16) } }, g),
      /latents: shape \[1, 4, 2, 2\] does not match \[n, 4, 8, 8\]: n images of 16 × 16 with this model's VAE scale factor 2/,
    );
  });

  it("without a model (the CLI's first check) a size need only be a positive integer; no scale factor is claimed", () => {
    assert.equal(normalizeRequest({ prompt: 'x', seeds: [0], height: 12, width: 20 }).height, 12);
    for (const bad of [0, -8, 2.5]) {
      assert.throws(
        () => normalizeRequest({ prompt: 'x', seeds: [0], height: bad }),
        (e: Error) =>
          e instanceof GenerationError &&
          e.message === `height: ${bad} is not a positive integer` &&
          !/scale factor/.test(e.message),
      );
    }
  });
});

describe('on tiny model folders', () => {
  it('diffusers-style folder with a 2-block VAE (scale factor 2): read from its configs, renders at its native size', async () => {
    const dir = join(root, 'optimum-f2');
    buildTinySdModel(dir, { flavor: 'optimum', vaeScale: 2, latentSize: 8 });
    const p = await StableDiffusionPipeline.create(dir, { threads: 1 });
    try {
      assert.deepEqual([p.vaeScale.factor, p.vaeScale.source], [2, 'vae-config']);
      assert.deepEqual([p.nativeSize.height, p.nativeSize.width, p.nativeSize.source], [16, 16, 'unet-config']);
      const r = await p.generate({ prompt: 'a photo of a doctor', seeds: [0], steps: 2, returnLatents: true });
      assert.deepEqual([r.images[0]?.width, r.images[0]?.height], [16, 16]);
      assert.equal(r.images[0]?.latents?.length, 4 * 8 * 8);
      assert.equal(r.size.decidedBy, 'unet-config');
      assert.deepEqual(r.warnings, []);
      // its own latents go back in; a latent sized for factor 8 is refused with both shapes and the factor
      const again = await p.generate({
        prompt: 'a photo of a doctor',
        steps: 2,
        latents: { shape: [1, 4, 8, 8], data: new Float32Array(256) },
      });
      assert.equal(again.images[0]?.width, 16);
      await assert.rejects(
        p.generate({ prompt: 'a photo', steps: 2, latents: { shape: [1, 4, 2, 2], data: new Float32Array(16) } }),
        /shape \[1, 4, 2, 2\] does not match \[n, 4, 8, 8\].*VAE scale factor 2/,
      );
    } finally {
      await p.dispose();
    }
  });

  it('without configs: the factor is measured by a decode, the size is the SD 1.x fallback (a warning); declared sizes win', async () => {
    const bare = join(root, 'diffusers-f2-bare');
    buildTinySdModel(bare, { vaeScale: 2, latentSize: 4, declareNativeSize: false });
    const p = await StableDiffusionPipeline.create(bare, { threads: 1 });
    try {
      assert.deepEqual([p.vaeScale.factor, p.vaeScale.source], [2, 'decode-probe']);
      assert.deepEqual([p.nativeSize.height, p.nativeSize.source], [512, 'fallback']);
      const r = await p.generate({ prompt: 'a photo', seeds: [0], steps: 1, height: 8, width: 8 });
      assert.deepEqual([r.images[0]?.width, r.size.decidedBy], [8, 'given']);
      assert.ok(!r.warnings.some((w) => /is a guess/.test(w)), 'no size warning when the size is given');
    } finally {
      await p.dispose();
    }
    const declared = join(root, 'diffusers-declared');
    buildTinySdModel(declared, { latentSize: 4 });
    const q = await StableDiffusionPipeline.create(declared, { threads: 1 });
    try {
      assert.deepEqual([q.vaeScale.factor, q.vaeScale.source], [8, 'decode-probe']);
      assert.deepEqual([q.nativeSize.height, q.nativeSize.width, q.nativeSize.source], [32, 32, 'model-index']);
      const r = await q.generate({ prompt: 'a photo', seeds: [0], steps: 1 });
      assert.deepEqual([r.images[0]?.width, r.images[0]?.height, r.size.decidedBy], [32, 32, 'model-index']);
    } finally {
      await q.dispose();
    }
  });
});

describe('declaredSampleSize (bounds before a model is loaded)', () => {
  it('reads unet/config.json sample_size (a number, or the larger side of a pair); null when absent or invalid', () => {
    const root = mkdtempSync(join(tmpdir(), 'td-sample-size-'));
    try {
      const folder = (name: string, config?: unknown) => {
        const d = join(root, name);
        mkdirSync(join(d, 'unet'), { recursive: true });
        if (config !== undefined) writeFileSync(join(d, 'unet', 'config.json'), JSON.stringify(config));
        return d;
      };
      assert.equal(declaredSampleSize(folder('sd2', { sample_size: 96 })), 96);
      assert.equal(declaredSampleSize(folder('pair', { sample_size: [64, 96] })), 96);
      assert.equal(declaredSampleSize(folder('none')), null);
      assert.equal(declaredSampleSize(folder('bad', { sample_size: -3 })), null);
      assert.equal(declaredSampleSize(join(root, 'missing')), null);
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });
});
