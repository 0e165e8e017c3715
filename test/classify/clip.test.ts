import assert from 'node:assert/strict';
import { copyFileSync, existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { encode } from 'fast-png';
import { ClipClassifier, inspectClassifierFolder } from '../../src/classify/clip.js';
import { attributeFromLabels, genderAttribute, validateAttribute } from '../../src/classify/labels.js';
import { CLIP_MEAN, CLIP_STD } from '../../src/demo/clip-model.js';

import { env } from '../../src/runtime/transformers.js';
import { ClassifierError, UsageError } from '../../src/util/errors.js';
import { directImage, directText, makeTinyClip, S, type TinyClip, testImage } from './fixtures.js';

/** onnxruntime-node's CUDA provider library sits next to its binding when the opt-in install was made. */
const CUDA_INSTALLED = existsSync(
  join(
    dirname(createRequire(import.meta.url).resolve('onnxruntime-node')),
    '..',
    'bin',
    'napi-v6',
    process.platform,
    process.arch,
    'libonnxruntime_providers_cuda.so',
  ),
);

function softmax(z: number[]): number[] {
  const m = Math.max(...z);
  const e = z.map((x) => Math.exp(x - m));
  const s = e.reduce((a, b) => a + b, 0);
  return e.map((x) => x / s);
}
const dot = (a: number[], b: number[]) => a.reduce((s, x, i) => s + x * b[i]!, 0);
function normalize(x: number[]) {
  const n = Math.hypot(...x);
  return x.map((v) => v / n);
}

describe('ClipClassifier on the tiny CLIP-format model', () => {
  let tiny: TinyClip;
  let clf: ClipClassifier;
  const images = [0, 1, 2, 3, 4].map((k) => testImage(k));
  before(async () => {
    tiny = makeTinyClip('both');
    clf = await ClipClassifier.load(tiny.dir, { batchSize: 2, threads: 1 });
  });
  after(async () => {
    await clf.dispose();
    tiny.cleanup();
  });

  test('reads the logit scale off the joint model', () => {
    assert.equal(clf.folder.variant, 'joint');
    assert.ok(Math.abs(clf.logitScale - 20) < 1e-4, `logit scale ${clf.logitScale}`);
  });

  test('probabilities equal the direct computation (cosine × logit scale, softmax) to 1e-5', async () => {
    const labels = ['a photo of a woman', 'a photo of a man', 'a photo of a cat'];
    const attr = attributeFromLabels(labels);
    const got = await clf.classify(images, attr);
    const texts = labels.map((l) => directText(tiny.spec, l));
    images.forEach((img, i) => {
      const v = directImage(tiny.spec, img.data);
      const p = softmax(texts.map((t) => 20 * dot(v, t)));
      const r = got[i]!;
      assert.equal(r.kind, 'label');
      labels.forEach((l, c) => {
        assert.ok(Math.abs(r.probabilities[l]! - p[c]!) < 1e-5, `image ${i} ${l}: ${r.probabilities[l]} vs ${p[c]}`);
      });
      assert.equal(r.label, labels[p.indexOf(Math.max(...p))]);
    });
    // the classes must differ across images for the test to mean something
    assert.ok(new Set(got.map((r) => r.label)).size >= 2, 'test images should not all get the same label');
  });

  test('batched results equal one-at-a-time results', async () => {
    const attr = genderAttribute('woman-man');
    const batch = await clf.classify(images, attr);
    for (let i = 0; i < images.length; i++) {
      const [single] = await clf.classify([images[i]!], attr);
      for (const c of ['female', 'male'])
        assert.ok(Math.abs(batch[i]!.probabilities[c]! - single!.probabilities[c]!) < 1e-6);
    }
  });

  test('prompt ensembles are averaged in embedding space and renormalised', async () => {
    const attr = validateAttribute({
      name: 'gender',
      classes: [
        { name: 'female', prompts: ['a photo of a woman', 'image of female'] },
        { name: 'male', prompts: ['a photo of a man', 'image of male', 'a male doctor'] },
      ],
    });
    const got = await clf.classify(images, attr);
    const cls = attr.classes.map((c) => {
      const ts = c.prompts.map((p) => directText(tiny.spec, p));
      return normalize(ts[0]!.map((_, k) => ts.reduce((s, t) => s + t[k]!, 0) / ts.length));
    });
    images.forEach((img, i) => {
      const v = directImage(tiny.spec, img.data);
      const p = softmax(cls.map((c) => 20 * dot(v, c)));
      assert.ok(Math.abs(got[i]!.probabilities.female! - p[0]!) < 1e-5);
    });
  });

  test('{profession} label prompts take the profession; missing profession is an error', async () => {
    const attr = genderAttribute('female-male');
    const got = await clf.classify([images[0]!], attr, { profession: 'nurse' });
    const v = directImage(tiny.spec, images[0]!.data);
    const p = softmax(['a female nurse', 'a male nurse'].map((l) => 20 * dot(v, directText(tiny.spec, l))));
    assert.ok(Math.abs(got[0]!.probabilities.female! - p[0]!) < 1e-5);
    await assert.rejects(
      clf.classify([images[0]!], attr),
      (e: Error) => e instanceof ClassifierError && /\{profession\}/.test(e.message),
    );
  });

  test('threshold marks low-confidence images unclear (off by default)', async () => {
    const attr = attributeFromLabels(['a photo of a woman', 'a photo of a man']);
    const plain = await clf.classify(images, attr);
    assert.ok(plain.every((r) => r.kind === 'label'));
    const tops = plain.map((r) => Math.max(...Object.values(r.probabilities)));
    const cut = [...tops].sort((a, b) => a - b)[2]!;
    const thresholded = await clf.classify(images, attr, { threshold: cut });
    for (const [i, r] of thresholded.entries()) assert.equal(r.kind, tops[i]! < cut ? 'unclear' : 'label');
    assert.ok(thresholded.some((r) => r.kind === 'unclear'));
    await assert.rejects(clf.classify(images, attr, { threshold: 1.5 }), ClassifierError);
  });

  test('the split text/vision variant gives the same probabilities', async () => {
    const dir2 = join(tiny.dir, '..', 'split');
    // same folder without the joint model → split variant
    const { mkdirSync } = await import('node:fs');
    mkdirSync(join(dir2, 'onnx'), { recursive: true });
    for (const f of [
      'config.json',
      'preprocessor_config.json',
      'tokenizer.json',
      'tokenizer_config.json',
      'onnx/text_model.onnx',
      'onnx/vision_model.onnx',
    ]) {
      copyFileSync(join(tiny.dir, f), join(dir2, f));
    }
    const split = await ClipClassifier.load(dir2);
    try {
      assert.equal(split.folder.variant, 'split');
      assert.equal(split.logitScale, 20); // config.json time_debias.logit_scale
      const attr = genderAttribute();
      const a = await clf.classify(images, attr);
      const b = await split.classify(images, attr);
      for (const [i, r] of a.entries())
        assert.ok(Math.abs(r.probabilities.female! - b[i]!.probabilities.female!) < 1e-5);
    } finally {
      await split.dispose();
    }
  });

  test('image files classify like the same pixels in memory', async () => {
    const path = join(tiny.dir, '..', 'img.png');
    writeFileSync(path, encode({ width: S, height: S, data: images[1]!.data, channels: 3, depth: 8 }));
    const attr = genderAttribute();
    const [fromFile] = await clf.classify([path], attr);
    const [fromMemory] = await clf.classify([images[1]!], attr);
    assert.ok(Math.abs(fromFile!.probabilities.female! - fromMemory!.probabilities.female!) < 1e-6);
    await assert.rejects(clf.classify([join(tiny.dir, 'nope.png')], attr), /file not found/);
  });

  test('preprocessing follows preprocessor_config.json: resize shortest edge, center crop, rescale, normalize', async () => {
    // 48 × 72 (H × W): resize shortest edge 48 → 32 gives 32 × 48, center crop 32 keeps columns 8..39.
    // Left third red, middle third green, right third blue (in the original's 24-column thirds).
    const H = 48;
    const W = 72;
    const data = new Uint8Array(H * W * 3);
    for (let y = 0; y < H; y++)
      for (let x = 0; x < W; x++) {
        const c = x < 24 ? 0 : x < 48 ? 1 : 2;
        data[(y * W + x) * 3 + c] = 200;
        data[(y * W + x) * 3 + ((c + 1) % 3)] = 30;
      }
    const t = await clf.preprocess([{ width: W, height: H, data }]);
    assert.deepEqual(t.dims, [1, 3, S, S]);
    const px = t.data as Float32Array;
    const at = (c: number, y: number, x: number) => px[c * S * S + y * S + x]!;
    const norm = (c: number, v: number) => (v / 255 - CLIP_MEAN[c]!) / CLIP_STD[c]!;
    // resized columns: red 0..15, green 16..31, blue 32..47 → cropped: red 0..7, green 8..23, blue 24..31
    // Away from the colour edges and the last row/column (where the bicubic resampler rings).
    const tol = 1.5 / 255 / 0.26;
    for (const y of [0, 10, 30]) {
      assert.ok(Math.abs(at(0, y, 2) - norm(0, 200)) < tol, `red at ${y}`);
      assert.ok(Math.abs(at(1, y, 2) - norm(1, 30)) < tol);
      assert.ok(Math.abs(at(2, y, 2) - norm(2, 0)) < tol);
      assert.ok(Math.abs(at(1, y, 15) - norm(1, 200)) < tol, `green at ${y}: ${at(1, y, 15)}`);
      assert.ok(Math.abs(at(2, y, 29) - norm(2, 200)) < tol, `blue at ${y}`);
      assert.ok(Math.abs(at(0, y, 29) - norm(0, 30)) < tol);
    }
  });

  test('an image already S × S passes unresampled: pixel_values = (x/255 − mean)/std exactly', async () => {
    const img = testImage(3);
    const px = (await clf.preprocess([img])).data as Float32Array;
    let worst = 0;
    for (let c = 0; c < 3; c++)
      for (let i = 0; i < S * S; i++) {
        const expected = (img.data[i * 3 + c]! / 255 - CLIP_MEAN[c]!) / CLIP_STD[c]!;
        worst = Math.max(worst, Math.abs(px[c * S * S + i]! - expected));
      }
    assert.ok(worst < 1e-5, `max deviation ${worst}`);
  });

  test('bad image inputs are named', async () => {
    await assert.rejects(
      clf.classify([{ width: 4, height: 4, data: new Uint8Array(10) }], genderAttribute()),
      /images\[0\].*48 RGB bytes/,
    );
  });
});

describe('--preprocess pil: the classifier sees the pixels PIL makes', () => {
  // The demo case of fixtures/pil-preprocess.json: a 64 × 64 image (what the demo model renders),
  // resized by Pillow to the tiny CLIP's 32 × 32.
  const fixture = (
    JSON.parse(readFileSync(join(import.meta.dirname, 'fixtures', 'pil-preprocess.json'), 'utf8')) as {
      cases: {
        name: string;
        width: number;
        height: number;
        input: { base64: string };
        resized: { base64: string };
        pixelValues: { base64: string };
      }[];
    }
  ).cases.find((c) => c.name.startsWith('demo 64x64'))!;
  const raw = (b64: string) => new Uint8Array(Buffer.from(b64, 'base64'));
  const image = { width: fixture.width, height: fixture.height, data: raw(fixture.input.base64) };
  let tiny: TinyClip;
  let pil: ClipClassifier;
  let transformers: ClipClassifier;
  before(async () => {
    tiny = makeTinyClip('joint');
    pil = await ClipClassifier.load(tiny.dir, { threads: 1, preprocess: 'pil' });
    transformers = await ClipClassifier.load(tiny.dir, { threads: 1 });
  });
  after(async () => {
    await pil.dispose();
    await transformers.dispose();
    tiny.cleanup();
  });

  test('pixel_values equal the fixture made by PIL to 1e-6; the default stays transformers.js', async () => {
    assert.equal(pil.preprocessing, 'pil');
    assert.equal(transformers.preprocessing, 'transformers');
    const b = Buffer.from(fixture.pixelValues.base64, 'base64');
    const want = new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
    const got = (await pil.preprocess([image])).data as Float32Array;
    assert.equal(got.length, want.length);
    let worst = 0;
    for (let i = 0; i < want.length; i++) worst = Math.max(worst, Math.abs(got[i]! - want[i]!));
    assert.ok(worst <= 1e-6, `max |Δ| ${worst}`);
    // transformers.js resizes without antialiasing: its pixels differ
    const other = (await transformers.preprocess([image])).data as Float32Array;
    let moved = 0;
    for (let i = 0; i < want.length; i++) moved = Math.max(moved, Math.abs(other[i]! - want[i]!));
    assert.ok(moved > 0.1, `transformers.js pixels should differ from PIL's on a textured image (max |Δ| ${moved})`);
  });

  test("probabilities equal the model's direct computation on PIL's resized pixels (1e-5), from memory and from a file", async () => {
    const labels = ['a photo of a woman', 'a photo of a man', 'a photo of a cat'];
    const attr = attributeFromLabels(labels);
    const v = directImage(tiny.spec, raw(fixture.resized.base64));
    const p = softmax(labels.map((l) => 20 * dot(v, directText(tiny.spec, l))));
    const path = join(tiny.dir, '..', 'pil-input.png');
    writeFileSync(path, encode({ width: image.width, height: image.height, data: image.data, channels: 3, depth: 8 }));
    for (const input of [image, path]) {
      const [r] = await pil.classify([input], attr);
      labels.forEach((l, c) => {
        assert.ok(Math.abs(r!.probabilities[l]! - p[c]!) < 1e-5, `${l}: ${r!.probabilities[l]} vs ${p[c]}`);
      });
    }
  });

  test('an unknown preprocessing is refused, naming the flag and the valid values', async () => {
    await assert.rejects(
      ClipClassifier.load(tiny.dir, { preprocess: 'opencv' as 'pil' }),
      (e: Error) => e instanceof UsageError && /^preprocess: "opencv" .*valid: transformers, pil/.test(e.message),
    );
  });
});

describe('classifier folders are checked before loading, strictly locally', () => {
  let tiny: TinyClip;
  let calls: string[];
  const savedFetch = env.fetch;
  const savedGlobal = globalThis.fetch;
  before(() => {
    tiny = makeTinyClip('joint');
    calls = [];
    const spy = (async (input: unknown) => {
      calls.push(String(input));
      throw new Error('network access attempted');
    }) as typeof fetch;
    env.fetch = spy;
    globalThis.fetch = spy;
  });
  after(() => {
    env.fetch = savedFetch;
    globalThis.fetch = savedGlobal;
    tiny.cleanup();
  });

  test('a missing file is named, nothing is fetched', async () => {
    rmSync(join(tiny.dir, 'tokenizer.json'));
    await assert.rejects(
      ClipClassifier.load(tiny.dir),
      (e: Error) => e instanceof ClassifierError && /missing tokenizer\.json/.test(e.message),
    );
    rmSync(join(tiny.dir, 'onnx', 'model.onnx'));
    await assert.rejects(ClipClassifier.load(tiny.dir), /missing tokenizer\.json, onnx\/model\.onnx/);
    assert.deepEqual(calls, []);
  });

  test('a hub id or URL is refused without network access', async () => {
    await assert.rejects(
      ClipClassifier.load('openai/clip-vit-base-patch32'),
      (e: Error) => e instanceof ClassifierError && /does not exist.*local folder/.test(e.message),
    );
    await assert.rejects(ClipClassifier.load('https://huggingface.co/openai/clip-vit-base-patch32'), /is a URL/);
    assert.equal(env.allowRemoteModels, false);
    assert.deepEqual(calls, []);
  });

  test('a classifier without the needed inputs is refused', async () => {
    const t2 = makeTinyClip('split');
    try {
      copyFileSync(join(t2.dir, 'onnx', 'text_model.onnx'), join(t2.dir, 'onnx', 'model.onnx'));
      await assert.rejects(
        ClipClassifier.load(t2.dir),
        (e: Error) => e instanceof ClassifierError && /lacks the inputs pixel_values/.test(e.message),
      );
    } finally {
      t2.cleanup();
    }
    assert.deepEqual(calls, []);
  });

  test('--device cuda without the CUDA provider is a clear error, not a silent CPU fallback', {
    skip: CUDA_INSTALLED ? 'this host has the CUDA provider' : false,
  }, async () => {
    const ok = makeTinyClip('joint');
    try {
      await assert.rejects(
        ClipClassifier.load(ok.dir, { device: 'cuda' }),
        (e: Error) =>
          e instanceof UsageError && e.field === 'device' && /^device: "cuda": .*CUDA provider/.test(e.message),
      );
    } finally {
      ok.cleanup();
    }
    await assert.rejects(ClipClassifier.load(tiny.dir, { device: 'tpu' as never }), /valid devices are cpu, cuda/);
  });

  test('a non-CLIP config is refused', () => {
    const t3 = makeTinyClip('joint');
    try {
      writeFileSync(join(t3.dir, 'config.json'), JSON.stringify({ model_type: 'siglip' }));
      assert.throws(() => inspectClassifierFolder(t3.dir), /model_type is "siglip"/);
    } finally {
      t3.cleanup();
    }
  });

  test('label definitions are validated', () => {
    assert.throws(() => attributeFromLabels([]), /at least 2 classes/);
    assert.throws(() => attributeFromLabels(['a photo of a woman']), /at least 2 classes/);
    assert.throws(() => attributeFromLabels(['a photo of a woman', '  ']), /non-empty string/);
    assert.throws(
      () =>
        validateAttribute({
          name: 'g',
          classes: [
            { name: 'x', prompts: [] },
            { name: 'y', prompts: ['b'] },
          ],
        }),
      /at least one label prompt/,
    );
    assert.throws(
      () =>
        validateAttribute({
          name: 'g',
          classes: [
            { name: 'x', prompts: ['a'] },
            { name: 'x', prompts: ['b'] },
          ],
        }),
      /appears twice/,
    );
    assert.throws(() => genderAttribute('nope' as never), /valid styles are woman-man, female-male, image-of/);
  });
});
