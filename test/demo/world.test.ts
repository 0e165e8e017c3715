import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { ClipClassifier, type RgbImage } from '../../src/classify/clip.js';
import { genderAttribute } from '../../src/classify/labels.js';
import { DEMO_DESIGN, LATENT } from '../../src/demo/design.js';
import { findProfession, PROFESSIONS } from '../../src/demo/professions.js';
import { demoWords } from '../../src/demo/words.js';
import { buildDemoWorld, type DemoWorld, ensureDemoWorld } from '../../src/demo/world.js';
import { noise } from '../../src/generate/rng.js';
import { createScheduler } from '../../src/generate/schedulers/index.js';
import { Session, tensor } from '../../src/runtime/ort.js';
import { ClipTextEncoder, encodePrompts } from '../../src/text/encoder.js';
import { ClipTokenizer } from '../../src/text/tokenizer.js';

const cache = mkdtempSync(join(tmpdir(), 'demo-world-test-'));
after(() => rmSync(cache, { recursive: true, force: true }));

function listFiles(dir: string): string[] {
  const out: string[] = [];
  const walk = (p: string) => {
    for (const name of readdirSync(p)) {
      const full = join(p, name);
      if (statSync(full).isDirectory()) walk(full);
      else out.push(relative(dir, full));
    }
  };
  walk(dir);
  return out.sort();
}

function hashes(dir: string): Record<string, string> {
  return Object.fromEntries(
    listFiles(dir).map((f) => [
      f,
      createHash('sha256')
        .update(readFileSync(join(dir, f)))
        .digest('hex'),
    ]),
  );
}

/** Standard normal CDF (Abramowitz–Stegun 7.1.26 erf, |error| < 1.5e-7). */
function Phi(x: number): number {
  const z = Math.abs(x) / Math.SQRT2;
  const t = 1 / (1 + 0.3275911 * z);
  const erf =
    1 -
    ((((1.061405429 * t - 1.453152027) * t + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t * Math.exp(-z * z);
  return x >= 0 ? 0.5 * (1 + erf) : 0.5 * (1 - erf);
}

describe('ensureDemoWorld: cached, atomic, deterministic', () => {
  test('builds once into <cache>/<hash>, then serves the cache', () => {
    const a = ensureDemoWorld({ cacheDir: cache });
    assert.equal(a.kind, 'demo-world');
    assert.equal(a.built, true);
    assert.equal(a.root, join(cache, a.hash.slice(0, 16)));
    for (const f of [
      'model/model_index.json',
      'model/unet/model.onnx',
      'model/unet/weights.pb',
      'classifier/onnx/model.onnx',
      'world.json',
    ]) {
      assert.ok(existsSync(join(a.root, f)), f);
    }
    assert.equal(a.model.sites.length, 16);
    assert.equal(a.model.d, DEMO_DESIGN.d);
    assert.equal(a.model.options.design, DEMO_DESIGN.name);
    const b = ensureDemoWorld({ cacheDir: cache });
    assert.equal(b.built, false);
    assert.equal(b.root, a.root);
    // no temporary folders are left behind
    assert.deepEqual(
      readdirSync(cache).filter((n) => n.includes('.tmp-')),
      [],
    );
    const fp16 = ensureDemoWorld({ cacheDir: cache, precision: 'float16' });
    assert.notEqual(fp16.root, a.root);
  });

  test('same generator version → byte-identical folders', () => {
    const d1 = mkdtempSync(join(tmpdir(), 'demo-world-a-'));
    const d2 = mkdtempSync(join(tmpdir(), 'demo-world-b-'));
    try {
      buildDemoWorld(d1);
      buildDemoWorld(d2);
      const h1 = hashes(d1);
      assert.ok(Object.keys(h1).length >= 15);
      assert.deepEqual(h1, hashes(d2));
    } finally {
      rmSync(d1, { recursive: true, force: true });
      rmSync(d2, { recursive: true, force: true });
    }
  });
});

describe('the designed world', () => {
  let world: DemoWorld;
  let tok: ClipTokenizer;
  let enc: ClipTextEncoder;
  let unet: Session;
  before(async () => {
    world = ensureDemoWorld({ cacheDir: cache });
    tok = await ClipTokenizer.fromFolder(join(world.modelDir, 'tokenizer'));
    enc = await ClipTextEncoder.create(join(world.modelDir, 'text_encoder/model.onnx'), { threads: 1 });
    unet = await Session.create(join(world.modelDir, 'unet/model.onnx'), { threads: 1 });
  });
  after(async () => {
    await enc?.dispose();
    await unet?.dispose();
  });

  test('every demo word is one token; professions table is graded and documented', () => {
    for (const w of demoWords()) assert.equal(tok.encode(w).length, 3, w);
    assert.ok(PROFESSIONS.length >= 24);
    for (const p of ['doctor', 'nurse', 'CEO', 'engineer', 'teacher', 'cashier', 'librarian', 'carpenter']) {
      assert.ok(findProfession(p), p);
    }
    const offsets = PROFESSIONS.map((p) => p.offset);
    assert.ok(offsets.filter((o) => o <= -1.04).length >= 4, 'strongly male (≤ 15 %) professions');
    assert.ok(offsets.filter((o) => o >= 1.04).length >= 4, 'strongly female (≥ 85 %) professions');
    assert.ok(offsets.filter((o) => Math.abs(o) < 0.6).length >= 4, 'mild professions');
  });

  test('text encoder: causal summary, EOS/padding rows carry the prompt, the gender axis orders prompts', async () => {
    const d = world.model.d;
    const prompts = [
      'a photo of a woman',
      'a photo of a man',
      'a nurse',
      'a carpenter',
      'a writer',
      'a photo of a dog',
    ];
    const encoded = await encodePrompts(tok, enc, prompts);
    /** The gender readout of row j: c_j[1] − c_j[d−1] (see design.ts). */
    const g = (e: (typeof encoded)[number], j: number) =>
      (e.hidden[j * d + 1] as number) - (e.hidden[j * d + d - 1] as number);
    for (const e of encoded) {
      const eos = e.length - 1;
      // causal: the BOS row is the same for every prompt; rows after EOS equal the EOS row (SD 1.x pads with EOS)
      assert.ok(Math.abs(g(e, 0)) < 1e-6);
      for (let j = eos + 1; j < 77; j++)
        for (let k = 0; k < d; k++) assert.equal(e.hidden[j * d + k], e.hidden[eos * d + k]);
    }
    const gEos = encoded.map((e) => g(e, e.length - 1));
    const [woman, man, nurse, carpenter, writer, dog] = gEos as [number, number, number, number, number, number];
    assert.ok(woman > nurse && nurse > writer && writer > dog - 1e-6 && dog < 1e-6 && dog > -1e-6);
    assert.ok(writer > 0 && carpenter < 0 && man < carpenter);
    // the readout is linear in the designed offsets to within the norm's small nonlinearity
    const scale = nurse / (findProfession('nurse')?.offset as number);
    assert.ok(Math.abs(carpenter / scale - (findProfession('carpenter')?.offset as number)) < 0.05);
  });

  test('classifier (transformers.js, local files) reads the warmth: all three label styles', async () => {
    const clf = await ClipClassifier.load(world.classifierDir, { threads: 1 });
    try {
      const solid = (r: number, gg: number, b: number): RgbImage => {
        const data = new Uint8Array(64 * 64 * 3);
        for (let i = 0; i < 64 * 64; i++) data.set([r, gg, b], i * 3);
        return { width: 64, height: 64, data };
      };
      const images = [solid(220, 140, 60), solid(60, 140, 220), solid(140, 120, 120), solid(118, 120, 122)];
      for (const style of ['woman-man', 'female-male', 'image-of'] as const) {
        const res = await clf.classify(images, genderAttribute(style), { profession: 'construction worker' });
        assert.deepEqual(
          res.map((r) => r.label),
          ['female', 'male', 'female', 'male'],
          style,
        );
      }
    } finally {
      await clf.dispose();
    }
  });

  /**
   * Sample the UNet with the model's own scheduler (PNDM), classifier-free guidance and the seeds'
   * initial latents, all prompts in one batch; return per prompt each seed's spatial mean of the
   * gender latent channel — the property the decoder turns into warmth (the full generate → decode →
   * classify path at 100 seeds is measured by the demo benchmark, bench/demo.ts).
   */
  async function genderMeans(prompts: string[], seeds: number, steps: number): Promise<number[][]> {
    const d = world.model.d;
    const encoded = await encodePrompts(tok, enc, ['', ...prompts]);
    const unc = encoded[0]?.hidden as Float32Array;
    const L = 4 * 8 * 8;
    const B = seeds * prompts.length;
    const ehs = new Float32Array(2 * B * 77 * d);
    let lat: Float32Array = new Float32Array(B * L);
    for (let p = 0; p < prompts.length; p++) {
      for (let s = 0; s < seeds; s++) {
        const k = p * seeds + s;
        ehs.set(unc, k * 77 * d);
        ehs.set(encoded[p + 1]?.hidden as Float32Array, (B + k) * 77 * d);
        lat.set(noise(s, [1, 4, 8, 8]), k * L);
      }
    }
    const cfg = JSON.parse(readFileSync(join(world.modelDir, 'scheduler/scheduler_config.json'), 'utf8'));
    const sch = createScheduler('pndm', cfg);
    sch.setTimesteps(steps);
    const w = world.generation.guidance;
    for (const t of sch.timesteps) {
      const x = new Float32Array(2 * B * L);
      x.set(lat, 0);
      x.set(lat, B * L);
      const out = await unet.run({
        sample: tensor('float32', x, [2 * B, 4, 8, 8]),
        timestep: tensor('float32', new Float32Array(2 * B).fill(t), [2 * B]),
        encoder_hidden_states: tensor('float32', ehs, [2 * B, 77, d]),
      });
      const e = out.out_sample?.data as Float32Array;
      const eps = new Float32Array(B * L);
      for (let i = 0; i < B * L; i++) eps[i] = (e[i] as number) + w * ((e[B * L + i] as number) - (e[i] as number));
      lat = sch.step(eps, t, lat).prevSample;
    }
    const c = LATENT.gender * 64;
    return prompts.map((_, p) =>
      Array.from({ length: seeds }, (_, s) => {
        let a = 0;
        for (let i = 0; i < 64; i++) a += lat[(p * seeds + s) * L + c + i] as number;
        return a / 64;
      }),
    );
  }

  test('the latent property follows the prompt: gendered prompts decided, professions graded as designed', async () => {
    const names = ['carpenter', 'doctor', 'baker', 'teacher', 'nurse'];
    const profs = names.map((n) => findProfession(n) as NonNullable<ReturnType<typeof findProfession>>);
    const seeds = 32;
    const [female, male, ...rest] = await genderMeans(
      ['a female doctor', 'a male doctor', ...profs.map((p) => `${p.article} ${p.profession}`)],
      seeds,
      6,
    );
    const share = (v: number[]) => v.filter((x) => x > 0).length / v.length;
    assert.ok(share(female as number[]) >= 0.95, `a female doctor: ${share(female as number[])}`);
    assert.ok(share(male as number[]) <= 0.05, `a male doctor: ${share(male as number[])}`);
    const shares = rest.map(share);
    profs.forEach((p, i) => {
      // 32 seeds: binomial sd ≤ 0.09; allow 3 sd around the design Φ(offset)
      assert.ok(
        Math.abs((shares[i] as number) - Phi(p.offset)) < 0.27,
        `${p.profession}: ${shares[i]} vs Φ(${p.offset})`,
      );
    });
    assert.deepEqual(
      [...shares].sort((a, b) => a - b),
      shares,
      `shares in offset order: ${shares}`,
    );
    assert.ok((shares[0] as number) <= 0.15 && (shares[4] as number) >= 0.85, `span: ${shares}`);
  });
});
