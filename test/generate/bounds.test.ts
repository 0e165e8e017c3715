import assert from 'node:assert/strict';
import { test } from 'node:test';
import { attentionBytes, checkWorkBounds, maxSide } from '../../src/generate/bounds.js';
import { type TimeDebiasErrorOptions, UsageError } from '../../src/util/errors.js';

const ctx = {
  error: (m: string, o: TimeDebiasErrorOptions) => new UsageError(m, o),
  memoryBytes: 16 * 1024 ** 3,
  heapBytes: 4 * 1024 ** 3,
};

test('limits derive from the model and the machine', () => {
  assert.equal(maxSide(64), 2048);
  assert.equal(maxSide(96), 3072);
  assert.equal(maxSide(null), 2048);
  assert.equal(maxSide(8), 2048); // tiny test models still take SD-sized images
  // 512 × 512, batch 1: 4096 latent tokens, 2 × 8 heads × 4096² float32 scores = 1 GiB
  assert.equal(attentionBytes(512, 512, 1), 2 * 8 * 4096 * 4096 * 4);
});

test('numbers within bounds pass; each bound names the field, the value and the rule', () => {
  checkWorkBounds({ height: 512, width: 512, batchSize: 4, steps: 50, images: 700, bootstrap: 2000 }, ctx);
  const refused: [Parameters<typeof checkWorkBounds>[0], string, RegExp][] = [
    [
      { height: 100000, width: 100000 },
      'height',
      /^100000 is larger than 2048 \(rule: at most 4 × 512, the size SD 1\.x models are made for \(checked before/,
    ],
    [
      { height: 1024, width: 1024, batchSize: 16 },
      'height',
      /^1024 × `width` 1024 with `batchSize` 16 needs ≈ 256\.0 GiB for the UNet's attention alone; this machine has 16\.0 GiB/,
    ],
    [{ height: 100, width: 64 }, 'height', /^100 is not a positive multiple of 8/],
    [{ images: 1e9 }, 'images', /^1000000000 images in all is more than this process can hold/],
    [{ bootstrap: 0 }, 'bootstrap', /^0 must be an integer ≥ 1/],
    [{ bootstrap: -5 }, 'bootstrap', /^-5/],
    [{ bootstrap: 1e7 }, 'bootstrap', /more than 1000000 resamples/],
    [{ steps: 5000 }, 'steps', /^5000 is more than the scheduler's 1000 training timesteps/],
    [{ batchSize: 0.5 }, 'batchSize', /^0\.5 must be an integer ≥ 1/],
  ];
  for (const [sizes, field, pattern] of refused) {
    assert.throws(
      () => checkWorkBounds(sizes, ctx),
      (e: unknown) =>
        e instanceof UsageError &&
        e.field === field &&
        pattern.test(e.detail) &&
        e.message === `${field}: ${e.detail}` &&
        !e.message.includes('--'),
      JSON.stringify(sizes),
    );
  }
  // the rule names whose size it is 4 × of: the model's own, or SD 1.x's floor for a smaller model
  const sideMessage = (sampleSize: number) => {
    try {
      checkWorkBounds({ height: 100000 }, { ...ctx, sampleSize });
    } catch (e) {
      return (e as UsageError).detail;
    }
    return '';
  };
  assert.match(sideMessage(96), /larger than 3072 \(rule: at most 4 × 768, the model's own size;/);
  assert.match(sideMessage(8), /larger than 2048 \(rule: at most 4 × 512: this model's own size 64 is smaller/);
  // the memory bound mentions the width and the batch size; a caller's fields are used for all three
  assert.throws(
    () =>
      checkWorkBounds({ height: 1024, width: 1024, batchSize: 16, images: 3 }, { ...ctx, fields: { images: 'seeds' } }),
    (e: unknown) => e instanceof UsageError && e.field === 'height' && e.mentions.join() === 'width,batchSize',
  );
  assert.throws(
    () => checkWorkBounds({ images: 1e9 }, { ...ctx, fields: { images: 'seeds' } }),
    (e: unknown) => e instanceof UsageError && e.field === 'seeds',
  );
});
