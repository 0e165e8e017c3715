import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, unlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { buildTinySdModel, TINY_SD_VERSION, type TinySdManifest, type TinySdOptions } from '../../src/demo/sd-model.js';
import { applyTextTransform, textSideEdit } from '../../src/edit/text-transform.js';
import { type GenerateRequest, type GenerateResult, StableDiffusionPipeline } from '../../src/generate/pipeline.js';
import { noise } from '../../src/generate/rng.js';
import { exportEditedModel } from '../../src/model/export.js';
import { openSdModel } from '../../src/model/folder.js';
import { locateSites, readSiteWeight } from '../../src/model/sites.js';
import { GenerationError, ModelFormatError, RuntimeError, UsageError } from '../../src/util/errors.js';
import { cornerSlices, PIPELINE_REFERENCE_REQUEST } from './pipeline-reference.js';

const root = mkdtempSync(join(tmpdir(), 'td-gen-'));
after(() => rmSync(root, { recursive: true, force: true }));

function model(name: string, options: TinySdOptions = {}): { dir: string; manifest: TinySdManifest } {
  const dir = join(root, name);
  return { dir, manifest: buildTinySdModel(dir, options) };
}

const base: GenerateRequest = { prompt: 'a photo of a doctor', steps: 4, height: 64, width: 64, guidance: 7.5 };

function latentsOf(r: GenerateResult): Float32Array[] {
  return r.images.map((img) => img.latents as Float32Array);
}

/** The model with W′ = W M on every to_k/to_v site, exported to `outDir`, opened as a pipeline. */
async function exportedEdit(dir: string, outDir: string, M: Float32Array): Promise<StableDiffusionPipeline> {
  const model = openSdModel(dir);
  const d = model.d;
  const weights = new Map<string, Float32Array>();
  for (const site of locateSites(model)) {
    const W = readSiteWeight(model, site); // torch layout [out, d]
    const edited = new Float32Array(site.out * d);
    for (let o = 0; o < site.out; o++) {
      for (let i = 0; i < d; i++) {
        let s = 0;
        for (let j = 0; j < d; j++) s += (W[o * d + j] as number) * (M[j * d + i] as number);
        edited[o * d + i] = s;
      }
    }
    weights.set(site.name, edited);
  }
  await exportEditedModel({ model, weights, outDir });
  return StableDiffusionPipeline.create(outDir, { threads: 1 });
}

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs((a[i] as number) - (b[i] as number)));
  return m;
}

describe('StableDiffusionPipeline on the tiny diffusers-layout model (fp32, weights.pb, int32 ids, float[b] timestep)', () => {
  let tiny: { dir: string; manifest: TinySdManifest };
  let p: StableDiffusionPipeline;
  before(async () => {
    tiny = model('diffusers');
    p = await StableDiffusionPipeline.create(tiny.dir, { threads: 1 });
  });
  after(async () => p?.dispose());

  it('is deterministic for fixed seeds, bitwise across runs, and matches the stored corner slices', async (t) => {
    const a = await p.generate({ ...base, seeds: [0, 1], returnLatents: true });
    const b = await p.generate({ ...base, seeds: [0, 1], returnLatents: true });
    assert.equal(a.images.length, 2);
    for (let i = 0; i < 2; i++) {
      assert.deepEqual(a.images[i]?.rgb, b.images[i]?.rgb);
      assert.deepEqual(a.images[i]?.latents, b.images[i]?.latents);
      assert.equal(a.images[i]?.rgb.length, 64 * 64 * 3);
    }
    assert.notDeepEqual(a.images[0]?.latents, a.images[1]?.latents);
    assert.equal(a.images[1]?.record.seed, 1);
    assert.equal(a.timing.unetCalls, 10); // 2 batches × (PNDM: 4 steps + the repeated timestep)

    const fixture = JSON.parse(readFileSync(new URL('./fixtures/pipeline-reference.json', import.meta.url), 'utf8'));
    if (fixture.tinySdVersion !== TINY_SD_VERSION) {
      // The builder's bytes changed (it bumps its version when they do): the golden no longer applies.
      t.diagnostic(
        `tiny SD builder version ${TINY_SD_VERSION} ≠ fixture's ${fixture.tinySdVersion}: regenerate with ` +
          '`node --import tsx test/generate/pipeline-reference.ts --write`',
      );
      return;
    }
    const ref = await p.generate({ ...PIPELINE_REFERENCE_REQUEST, returnLatents: true });
    const slices = cornerSlices(ref);
    for (const key of ['image', 'latents'] as const) {
      const got = slices[key];
      const want = fixture.slices[key] as number[];
      got.forEach((v, i) => {
        assert.ok(Math.abs(v - (want[i] as number)) <= 1e-2, `${key}[${i}] ${v} vs ${want[i]}`);
      });
    }
  });

  it('image k does not depend on batch size or concurrency', async () => {
    const one = await p.generate({ ...base, seeds: [3, 4, 5], batchSize: 1, returnLatents: true });
    const three = await p.generate({ ...base, seeds: [3, 4, 5], batchSize: 3, returnLatents: true });
    const conc = await p.generate({ ...base, seeds: [5, 3], batchSize: 1, concurrency: 2, returnLatents: true });
    const [l1, l3, lc] = [latentsOf(one), latentsOf(three), latentsOf(conc)];
    for (let i = 0; i < 3; i++) assert.ok(maxAbsDiff(l1[i] as Float32Array, l3[i] as Float32Array) < 1e-5);
    assert.deepEqual(lc[0], l1[2]);
    assert.deepEqual(lc[1], l1[0]);
    assert.equal(three.timing.unetCalls, 5);
    assert.equal(one.timing.unetCalls, 15);
  });

  it('guidance ≤ 1 skips the unconditional pass and changes the image; the negative prompt matters only with guidance', async () => {
    const calls: number[] = [];
    const guided = await p.generate({ ...base, seeds: [0], returnLatents: true });
    const unguided = await p.generate({
      ...base,
      seeds: [0],
      guidance: 1,
      returnLatents: true,
      onProgress: (e) => e.kind === 'step' && calls.push(e.step),
    });
    assert.ok(maxAbsDiff(latentsOf(guided)[0]!, latentsOf(unguided)[0]!) > 1e-3);
    assert.deepEqual(calls, [1, 2, 3, 4, 5]);
    const negative = await p.generate({
      ...base,
      seeds: [0],
      negativePrompt: 'a photo of a nurse',
      returnLatents: true,
    });
    assert.ok(maxAbsDiff(latentsOf(guided)[0]!, latentsOf(negative)[0]!) > 1e-3);
    const unguidedNegative = await p.generate({
      ...base,
      seeds: [0],
      guidance: 1,
      negativePrompt: 'a nurse',
      returnLatents: true,
    });
    assert.deepEqual(latentsOf(unguidedNegative)[0], latentsOf(unguided)[0]);
  });

  it('given latents reproduce the seeded image; the shape is checked', async () => {
    const seeded = await p.generate({ ...base, seeds: [7], returnLatents: true });
    const z = noise(7, [1, 4, 8, 8]);
    const given = await p.generate({ ...base, latents: { shape: [1, 4, 8, 8], data: z }, returnLatents: true });
    assert.deepEqual(given.images[0]?.latents, seeded.images[0]?.latents);
    assert.equal(given.images[0]?.record.seed, null);
    assert.equal(given.images[0]?.record.latentsSource, 'given');
    await assert.rejects(
      p.generate({ ...base, latents: { shape: [1, 4, 16, 16], data: new Float32Array(1024) } }),
      /latents: shape \[1, 4, 16, 16\] does not match \[n, 4, 8, 8\]/,
    );
  });

  it('textTransform: identity changes nothing, another M changes the image, and equals the edited weights W′ = W M', async () => {
    const d = p.model.d;
    const eye = new Float32Array(d * d);
    for (let i = 0; i < d; i++) eye[i * d + i] = 1;
    const plain = await p.generate({ ...base, seeds: [2], returnLatents: true });
    const same = await p.generate({ ...base, seeds: [2], textTransform: textSideEdit(eye), returnLatents: true });
    assert.ok(maxAbsDiff(latentsOf(plain)[0]!, latentsOf(same)[0]!) < 1e-5);
    assert.equal(same.images[0]?.record.edit?.kind, 'text-transform');

    // M = I + small seeded perturbation
    const M = Float32Array.from(eye);
    const r = noise(99, [d * d]);
    for (let i = 0; i < d * d; i++) M[i] = (M[i] as number) + 0.05 * (r[i] as number);
    const viaText = await p.generate({ ...base, seeds: [2], textTransform: textSideEdit(M), returnLatents: true });
    assert.ok(maxAbsDiff(latentsOf(plain)[0]!, latentsOf(viaText)[0]!) > 1e-3);

    // The same edit as weights, exported (model/export.ts): W′ = W M on every site, in a new folder.
    const edited = await exportedEdit(tiny.dir, join(root, 'edited-wm'), M);
    try {
      const viaWeights = await edited.generate({ ...base, seeds: [2], returnLatents: true });
      assert.ok(maxAbsDiff(latentsOf(viaText)[0]!, latentsOf(viaWeights)[0]!) < 2e-3);
      assert.equal(viaWeights.images[0]?.record.edit, null);
    } finally {
      await edited.dispose();
    }
    const restored = await p.generate({ ...base, seeds: [2], returnLatents: true });
    assert.deepEqual(latentsOf(restored)[0], latentsOf(plain)[0]);
    await assert.rejects(
      p.generate({ ...base, seeds: [2], textTransform: textSideEdit(new Float32Array(5)) }),
      /M must be d × d/,
    );

    // Δ = M − I and a rank-2 factorisation Uᵀ Z of Δ give the same rows as M
    const delta = M.map((v, i) => v - (eye[i] as number));
    const hidden = noise(5, [3 * d]);
    const viaM = applyTextTransform(M, hidden, d);
    const viaDelta = applyTextTransform({ kind: 'delta', delta }, hidden, d);
    assert.ok(maxAbsDiff(viaM, viaDelta) < 1e-5);
    const rank = 2;
    const u = noise(6, [rank * d]);
    const z = noise(7, [rank * d]);
    const lowRankDelta = new Float32Array(d * d);
    for (let i = 0; i < d; i++) {
      for (let j = 0; j < d; j++) {
        let sum = 0;
        for (let k = 0; k < rank; k++) sum += (u[k * d + i] as number) * (z[k * d + j] as number);
        lowRankDelta[i * d + j] = sum;
      }
    }
    const viaLowRank = applyTextTransform({ kind: 'low-rank', rank, u, z }, hidden, d);
    assert.ok(maxAbsDiff(viaLowRank, applyTextTransform({ kind: 'delta', delta: lowRankDelta }, hidden, d)) < 1e-4);
    assert.throws(() => applyTextTransform({ kind: 'low-rank', rank: 3, u, z }, hidden, d), /U must be r × d/);
  });

  it('every scheduler runs; long prompts are truncated with a warning', async () => {
    for (const scheduler of ['ddim', 'euler', 'euler-ancestral', 'lms', 'dpmpp-2m']) {
      const r = await p.generate({ ...base, seeds: [0], scheduler, returnLatents: true });
      assert.equal(r.images[0]?.record.scheduler, scheduler);
      assert.ok(r.images[0]?.latents?.every(Number.isFinite));
    }
    const long = await p.generate({ ...base, seeds: [0], steps: 1, prompt: Array(90).fill('doctor').join(' ') });
    assert.equal(long.images[0]?.record.promptTruncated, true);
    assert.match(long.warnings.join('\n'), /longer than CLIP's 77 tokens; this part was truncated/);
  });

  it('refuses bad inputs with the field, the value and the rule', async () => {
    await assert.rejects(p.generate({ ...base, seeds: [0], height: 60 }), (e: Error) => {
      assert.ok(e instanceof GenerationError);
      assert.match(e.message, /^height: 60 is not a positive multiple of 8/);
      return true;
    });
    await assert.rejects(p.generate({ ...base, seeds: [0], width: 0 }), /GenerationError: width: 0/);
    await assert.rejects(
      p.generate({ ...base, seeds: [0], scheduler: 'heun' }),
      /GenerationError: scheduler: "heun" is not a known scheduler; valid schedulers are pndm, ddim/,
    );
    await assert.rejects(
      p.generate({ ...base, seeds: [0], steps: 0 }),
      /GenerationError: steps: 0 is not an integer >= 1/,
    );
    await assert.rejects(p.generate({ ...base, seeds: [] }), /GenerationError: seeds: give at least one seed/);
    await assert.rejects(p.generate({ ...base, seeds: [-1] }), /GenerationError: seeds: -1 is not a seed/);
    await assert.rejects(
      p.generate({ ...base, seeds: [0], eta: 0.5 }),
      /GenerationError: eta: 0.5 applies to the ddim scheduler only/,
    );
  });
});

describe('model variants', () => {
  const variants: [string, TinySdOptions][] = [
    ['optimum: model.onnx_data, int64 ids, scalar timestep', { flavor: 'optimum' }],
    ['fp16 I/O and weights', { precision: 'float16' }],
    ['int64 [b] timestep', { timestep: 'int64[b]' }],
  ];
  for (const [name, options] of variants) {
    it(name, async () => {
      const m = model(name.replace(/\W+/g, '-'), options);
      const p = await StableDiffusionPipeline.create(m.dir, { threads: 1 });
      try {
        const a = await p.generate({ ...base, seeds: [0, 1], batchSize: 2, returnLatents: true });
        const b = await p.generate({ ...base, seeds: [1], returnLatents: true });
        assert.ok(a.images[0]?.latents?.every(Number.isFinite));
        assert.ok(
          maxAbsDiff(a.images[1]!.latents!, b.images[0]!.latents!) < (options.precision === 'float16' ? 2e-2 : 1e-5),
        );
        assert.equal(a.images[0]?.record.model.precision, options.precision ?? 'float32');
      } finally {
        await p.dispose();
      }
    });
  }
  it('a missing model part is named', async () => {
    const m = model('broken');
    unlinkSync(join(m.dir, 'vae_decoder', 'model.onnx'));
    await assert.rejects(StableDiffusionPipeline.create(m.dir), (e: Error) => {
      assert.ok(e instanceof ModelFormatError);
      assert.match(e.message, /vae_decoder/);
      return true;
    });
  });
  it('--device cuda without a working CUDA provider is an error, not a silent fallback', async (t) => {
    const m = model('cuda');
    let p: StableDiffusionPipeline | null = null;
    try {
      p = await StableDiffusionPipeline.create(m.dir, { device: 'cuda' });
    } catch (e) {
      // Not installed: a UsageError; installed but failing to start: a RuntimeError. Both name `device`.
      assert.ok(e instanceof UsageError || e instanceof RuntimeError, String(e));
      assert.equal(e.field, 'device');
      assert.match(e.message, /^device: "cuda": /);
      return;
    }
    await p.dispose();
    t.skip('CUDA works on this host');
  });
});
