/**
 * "pil" preprocessing against pixels PIL itself made (fixtures/make_pil_fixtures.py, run by hand
 * with Debian's python3-pil; its output pil-preprocess.json is committed): the resized uint8 image
 * bit for bit, the pixel_values to ≤ 1e-6.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import {
  centerCrop,
  parseImageProcessorConfig,
  pilPreprocess,
  pilResize,
  type Rgb8,
  resizeOutputSize,
} from '../../src/classify/preprocess-pil.js';
import { ClassifierError } from '../../src/util/errors.js';

const here = dirname(fileURLToPath(import.meta.url));

interface FixtureCase {
  name: string;
  width: number;
  height: number;
  processor: Record<string, unknown>;
  input: { base64?: string; pattern?: number };
  inputSha256: string;
  resized: { width: number; height: number; sha256: string; base64?: string };
  pixelValues: { dims: number[]; sha256: string; base64?: string; stride?: number; sampleBase64?: string };
}

const fixtures = JSON.parse(readFileSync(join(here, 'fixtures', 'pil-preprocess.json'), 'utf8')) as {
  pillow: string;
  cases: FixtureCase[];
};

/** make_pil_fixtures.py's pattern(): integer arithmetic, so both languages make the same bytes. */
function pattern(width: number, height: number, seed: number): Rgb8 {
  const data = new Uint8Array(width * height * 3);
  for (let y = 0; y < height; y++)
    for (let x = 0; x < width; x++)
      for (let c = 0; c < 3; c++) {
        let v = (x * x * 7 + y * y * 3 + x * y * 5 + c * 85 + seed * 29 + ((x * 31) ^ (y * 17))) % 256;
        const block = ((x >> 3) + (y >> 3) + c + seed) % 5;
        if (block === 0) v = 255;
        else if (block === 1) v = 0;
        data[(y * width + x) * 3 + c] = v;
      }
  return { width, height, data };
}

const bytes = (b64: string) => new Uint8Array(Buffer.from(b64, 'base64'));
const floats = (b64: string) => {
  const b = Buffer.from(b64, 'base64');
  return new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
};
const sha = (a: ArrayBufferView) =>
  createHash('sha256')
    .update(new Uint8Array(a.buffer, a.byteOffset, a.byteLength))
    .digest('hex');

function inputOf(c: FixtureCase): Rgb8 {
  const img =
    c.input.base64 !== undefined
      ? { width: c.width, height: c.height, data: bytes(c.input.base64) }
      : pattern(c.width, c.height, c.input.pattern as number);
  assert.equal(sha(img.data), c.inputSha256, `${c.name}: input bytes`);
  return img;
}

describe(`"pil" preprocessing reproduces Pillow ${fixtures.pillow} + transformers' CLIPImageProcessor`, () => {
  for (const c of fixtures.cases) {
    test(c.name, () => {
      const img = inputOf(c);
      const config = parseImageProcessorConfig(c.processor, c.name);
      // 1. PIL's resize, bit for bit
      const size = config.doResize ? resizeOutputSize(img.width, img.height, config.size) : img;
      assert.deepEqual([size.width, size.height], [c.resized.width, c.resized.height]);
      const resized = pilResize(img, size.width, size.height, config.resample);
      if (c.resized.base64 !== undefined) {
        const want = bytes(c.resized.base64);
        let differ = 0;
        for (let i = 0; i < want.length; i++) if (resized.data[i] !== want[i]) differ++;
        assert.equal(differ, 0, `${differ} of ${want.length} resized bytes differ from PIL's`);
      }
      assert.equal(sha(resized.data as Uint8Array), c.resized.sha256, 'resized bytes (sha256)');
      // 2–4. crop, rescale, normalize: pixel_values to ≤ 1e-6
      const { dims, data } = pilPreprocess([img], config);
      assert.deepEqual(dims, [1, ...c.pixelValues.dims]);
      const [, H, W] = c.pixelValues.dims as [number, number, number];
      let worst = 0;
      if (c.pixelValues.base64 !== undefined) {
        const want = floats(c.pixelValues.base64);
        assert.equal(want.length, data.length);
        for (let i = 0; i < want.length; i++)
          worst = Math.max(worst, Math.abs((data[i] as number) - (want[i] as number)));
      } else {
        const stride = c.pixelValues.stride as number;
        const want = floats(c.pixelValues.sampleBase64 as string);
        const hs = Math.ceil(H / stride);
        const ws = Math.ceil(W / stride);
        assert.equal(want.length, 3 * hs * ws);
        for (let ch = 0; ch < 3; ch++)
          for (let y = 0; y < hs; y++)
            for (let x = 0; x < ws; x++) {
              const got = data[ch * H * W + y * stride * W + x * stride] as number;
              const exp = want[(ch * hs + y) * ws + x] as number;
              worst = Math.max(worst, Math.abs(got - exp));
            }
      }
      assert.ok(worst <= 1e-6, `max |Δ pixel_values| = ${worst}`);
      // The float32 arithmetic follows numpy's: the whole tensor is bit-identical.
      assert.equal(sha(data), c.pixelValues.sha256, 'pixel_values (sha256 of the float32 bytes)');
    });
  }

  test('shrinking antialiases: a one-pixel checkerboard halves to flat grey', () => {
    const n = 16;
    const data = new Uint8Array(n * n * 3);
    for (let y = 0; y < n; y++)
      for (let x = 0; x < n; x++) data.fill((x + y) % 2 ? 255 : 0, (y * n + x) * 3, (y * n + x + 1) * 3);
    const out = pilResize({ width: n, height: n, data }, 8, 8, 3);
    // interior pixels: the stretched bicubic kernel averages the two phases to 127/128
    for (let y = 2; y < 6; y++)
      for (let x = 2; x < 6; x++) assert.ok(Math.abs((out.data[(y * 8 + x) * 3] as number) - 127.5) <= 1);
  });

  test('center crop floors the offset and zero-pads an image smaller than the crop', () => {
    const img = pattern(5, 4, 1);
    const crop = centerCrop(img, 3, 2); // top ⌊1/2⌋ = 0, left ⌊3/2⌋ = 1
    assert.deepEqual([crop.width, crop.height], [2, 3]);
    assert.deepEqual([...crop.data.subarray(0, 6)], [...img.data.subarray(3, 9)]);
    const padded = centerCrop({ width: 1, height: 1, data: new Uint8Array([9, 9, 9]) }, 3, 3);
    assert.deepEqual(
      [...padded.data],
      [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9, 9, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
    );
  });

  test('processor configs: int sizes as transformers reads them; unsupported settings named', () => {
    const c = parseImageProcessorConfig({ size: 224, crop_size: 224 }, 'p.json');
    assert.deepEqual(c.size, { kind: 'shortest-edge', shortestEdge: 224 });
    assert.deepEqual(c.crop, { height: 224, width: 224 });
    assert.equal(c.resample, 3);
    assert.throws(
      () => parseImageProcessorConfig({ resample: 0 }, 'p.json'),
      (e: Error) => e instanceof ClassifierError && /p\.json: resample 0 is not a supported PIL filter/.test(e.message),
    );
    assert.throws(
      () => parseImageProcessorConfig({ image_processor_type: 'SiglipImageProcessor' }, 'p.json'),
      /image_processor_type "SiglipImageProcessor" is not CLIPImageProcessor/,
    );
    assert.throws(
      () => parseImageProcessorConfig({ image_std: [1, 0, 1] }, 'p.json'),
      /image_std .* 3 positive numbers/,
    );
    assert.throws(() => pilResize(pattern(4, 4, 0), 2, 2, 0), /resample: 0 is not a PIL filter/);
  });
});
