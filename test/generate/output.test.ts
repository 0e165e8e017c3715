import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { decode } from 'fast-png';
import { contactSheet } from '../../src/generate/grid.js';
import { parseNpy } from '../../src/generate/npy.js';
import { writeGenerationRun } from '../../src/generate/output.js';
import type { GenerateResult, ImageRecord } from '../../src/generate/pipeline.js';
import { encodePng, imagePng, parametersText, readPngText } from '../../src/generate/png.js';
import { parseSeedList } from '../../src/generate/rng.js';
import { OutputError } from '../../src/util/errors.js';

const root = mkdtempSync(join(tmpdir(), 'td-out-'));
after(() => rmSync(root, { recursive: true, force: true }));

function record(index: number, seed: number | null, prompt = 'a photo of a doctor'): ImageRecord {
  return {
    index,
    seed,
    latentsSource: seed === null ? 'given' : 'seed',
    prompt,
    negativePrompt: 'blurry',
    steps: 25,
    scheduler: 'pndm',
    guidance: 7.5,
    eta: 0,
    width: 16,
    height: 8,
    model: { name: 'tiny', dir: '/m/tiny', format: 'diffusers-onnx', precision: 'float32', d: 32 },
    edit: null,
    promptTruncated: false,
  };
}

function solid(width: number, height: number, rgb: [number, number, number]): Uint8Array {
  const out = new Uint8Array(width * height * 3);
  for (let i = 0; i < width * height; i++) out.set(rgb, 3 * i);
  return out;
}

describe('PNG with parameters', () => {
  it('round-trips pixels and the parameters (tEXt for Latin-1, iTXt for other text)', () => {
    const rgb = Uint8Array.from({ length: 16 * 8 * 3 }, (_, i) => (i * 7) % 256);
    const latin = imagePng({ width: 16, height: 8, rgb, record: record(0, 3, 'un café') });
    const decoded = decode(latin);
    assert.equal(decoded.width, 16);
    assert.equal(decoded.channels, 3);
    assert.deepEqual(decoded.data, rgb);
    const text = readPngText(latin);
    assert.equal(
      text.parameters,
      'un café\nNegative prompt: blurry\nSteps: 25, Sampler: pndm, CFG scale: 7.5, Seed: 3, Size: 16x8, Model: tiny, ' +
        'Model format: diffusers-onnx, Precision: float32, Noise: Philox4x32-10 Box-Muller',
    );
    assert.deepEqual(JSON.parse(text['time-debias'] as string), record(0, 3, 'un café'));
    const cyrillic = readPngText(imagePng({ width: 16, height: 8, rgb, record: record(0, 3, 'врач') }));
    assert.match(cyrillic.parameters as string, /^врач\n/);
    assert.equal(JSON.parse(cyrillic['time-debias'] as string).prompt, 'врач');
  });
  it('names given latents and an active edit', () => {
    const r = { ...record(1, null), edit: { kind: 'text-transform' as const, sha256: 'ab'.repeat(32) } };
    assert.match(parametersText(r), /Seed: given latents/);
    assert.match(parametersText(r), /Edit: text-transform sha256:abababababababab/);
  });
  it('refuses a wrong pixel count', () => {
    assert.throws(() => encodePng({ width: 2, height: 2, rgb: new Uint8Array(5) }), /5 bytes for 2 × 2 RGB/);
  });
});

describe('contact sheet', () => {
  it('lays cells out in columns with padding, frames and captions', () => {
    const cells = [0, 1, 2].map((i) => ({
      width: 10,
      height: 6,
      rgb: solid(10, 6, [i * 100, 50, 50]),
      label: `seed ${i}`,
    }));
    cells[1] = { ...cells[1]!, mark: [255, 0, 0] } as (typeof cells)[number];
    const sheet = contactSheet(cells, { columns: 2, padding: 2, markWidth: 1 });
    // width = pad + 2 × (10 + 2 + pad); height = pad + 2 × (6 + 2 + caption 11 + pad)
    assert.equal(sheet.width, 2 + 2 * 14);
    assert.equal(sheet.height, 2 + 2 * (8 + 11 + 2));
    const px = (x: number, y: number) =>
      Array.from(sheet.rgb.subarray(3 * (y * sheet.width + x), 3 * (y * sheet.width + x) + 3));
    assert.deepEqual(px(2 + 1, 2 + 1), [0, 50, 50]); // cell 0's first pixel
    assert.deepEqual(px(2 + 14, 2), [255, 0, 0]); // cell 1's frame
    assert.deepEqual(px(2 + 14 + 1, 2 + 1), [100, 50, 50]);
    assert.deepEqual(px(0, 0), [255, 255, 255]);
    // some caption ink under cell 0
    let ink = 0;
    for (let y = 2 + 8; y < 2 + 19; y++) for (let x = 2; x < 14; x++) if (px(x, y)[0] === 0 && px(x, y)[1] === 0) ink++;
    assert.ok(ink > 10, `caption pixels ${ink}`);
    assert.throws(() => contactSheet([]), /no images/);
    assert.throws(
      () => contactSheet([cells[0]!, { width: 3, height: 3, rgb: new Uint8Array(27) }]),
      /all cells must be 10 × 6/,
    );
  });
});

describe('writing a run', () => {
  const result = (withLatents: boolean): GenerateResult => ({
    kind: 'generation',
    images: [0, 1].map((i) => ({
      width: 16,
      height: 8,
      rgb: solid(16, 8, [i * 200, 0, 0]),
      record: record(i, 10 + i),
      ...(withLatents ? { latents: Float32Array.from({ length: 4 * 2 * 1 }, (_, k) => i + k / 10) } : {}),
    })),
    size: { height: 8, width: 16, decidedBy: 'given', detail: 'height and width given' },
    vaeScale: {
      factor: 8,
      source: 'vae-config',
      detail: 'vae_decoder/config.json block_out_channels has 4 entries: 2^3',
    },
    warnings: ['a warning'],
    timing: { totalMs: 1, textMs: 0, unetMs: 0, unetCalls: 0, loopMs: 0, decodeMs: 0 },
  });
  it('writes PNGs, the sidecar, latents.npy and the grid; never overwrites', () => {
    const dir = join(root, 'run');
    const written = writeGenerationRun(dir, result(true), { grid: true, saveLatents: true, extra: { command: ['x'] } });
    assert.deepEqual(written.images, ['00000-10.png', '00001-11.png']);
    for (const f of [...written.images, 'generation.json', 'latents.npy', 'grid.png'])
      assert.ok(existsSync(join(dir, f)), f);
    const sidecar = JSON.parse(readFileSync(join(dir, 'generation.json'), 'utf8'));
    assert.equal(sidecar.kind, 'generation-run');
    assert.equal(sidecar.images[1].record.seed, 11);
    assert.deepEqual(sidecar.warnings, ['a warning']);
    assert.equal(sidecar.size.decidedBy, 'given');
    assert.equal(sidecar.vaeScale.factor, 8);
    const npy = parseNpy(readFileSync(join(dir, 'latents.npy')));
    assert.deepEqual(npy.shape, [2, 4, 1, 2]);
    assert.equal(npy.data[8], 1);
    assert.throws(
      () => writeGenerationRun(dir, result(true)),
      (e: Error) => e instanceof OutputError && /already exists/.test(e.message),
    );
    assert.throws(
      () => writeGenerationRun(join(root, 'run2'), result(false), { saveLatents: true }),
      /did not return latents/,
    );
  });
});

describe('seed lists', () => {
  it('parses seeds and inclusive ranges, keeps order, refuses duplicates and junk', () => {
    assert.deepEqual(parseSeedList('0-3'), [0, 1, 2, 3]);
    assert.deepEqual(parseSeedList('5, 0-1,9'), [5, 0, 1, 9]);
    assert.throws(() => parseSeedList('1-3,2'), /seed 2 appears twice/);
    assert.throws(() => parseSeedList('3-1'), /runs backwards/);
    assert.throws(() => parseSeedList('a'), /GenerationError: seeds: "a" is not a seed or a range/);
  });
});
