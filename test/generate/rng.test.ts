import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { batchNoiseSource, GaussianStream, noise, philox4x32, validateSeed } from '../../src/generate/rng.js';

const hex = (words: number[]) => words.map((w) => w.toString(16).padStart(8, '0')).join(' ');

describe('Philox4x32-10', () => {
  it('reproduces the Random123 known-answer vectors', () => {
    assert.equal(hex(philox4x32([0, 0, 0, 0], [0, 0])), '6627e8d5 e169c58d bc57ac4c 9b00dbd8');
    const ones = 0xffffffff;
    assert.equal(hex(philox4x32([ones, ones, ones, ones], [ones, ones])), '408f276d 41c83b0e a20bc7c6 6d5451fd');
    assert.equal(
      hex(philox4x32([0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344], [0xa4093822, 0x299f31d0])),
      'd16cfe09 94fdcceb 5001e420 24126ea1',
    );
  });
});

describe('seeded Gaussian noise', () => {
  it('is standard normal: mean ≈ 0, variance ≈ 1, tails as expected', () => {
    const z = noise(0, [4, 64, 64 * 2]);
    let sum = 0;
    let sq = 0;
    let beyond2 = 0;
    for (const v of z) {
      sum += v;
      sq += v * v;
      if (Math.abs(v) > 2) beyond2++;
    }
    const n = z.length;
    assert.ok(Math.abs(sum / n) < 0.01, `mean ${sum / n}`);
    assert.ok(Math.abs(sq / n - 1) < 0.02, `variance ${sq / n}`);
    assert.ok(Math.abs(beyond2 / n - 0.0455) < 0.004, `P(|z|>2) ${beyond2 / n}`);
  });
  it('is a pure function of (seed, stream): same values every call, different seeds and streams differ', () => {
    assert.deepEqual(noise(42, [2, 3]), noise(42, [2, 3]));
    assert.notDeepEqual(noise(42, [6]), noise(43, [6]));
    assert.notDeepEqual(noise(42, [6], 0), noise(42, [6], 1));
    // seeds above 2^32 use the high key word
    assert.notDeepEqual(noise(2 ** 32, [4]), noise(0, [4]));
  });
  it('drawing in pieces equals drawing at once; a prefix is a prefix', () => {
    const s = new GaussianStream(9);
    const pieces = [...s.next(3), ...s.next(5), ...s.next(1)];
    assert.deepEqual(Float32Array.from(pieces), noise(9, [9]));
    assert.deepEqual(noise(9, [5]), noise(9, [16]).subarray(0, 5));
  });
  it('a batch noise source gives each image its own stream, whatever the batch', () => {
    const together = batchNoiseSource([new GaussianStream(1, 1), new GaussianStream(2, 1)])(8);
    const alone = batchNoiseSource([new GaussianStream(2, 1)])(4);
    assert.deepEqual(together.subarray(4), alone);
    assert.throws(() => batchNoiseSource([new GaussianStream(1), new GaussianStream(2)])(5), /does not split/);
  });
  it('has stored values (portable: these must not change across machines or versions)', () => {
    const z = Array.from(noise(0, [4]));
    const expected = [0.991137683391571, -0.9246625900268555, -0.6176089644432068, -0.48206859827041626];
    assert.deepEqual(z, expected);
  });
  it('rejects seeds that are not non-negative safe integers', () => {
    for (const bad of [-1, 1.5, Number.NaN, 2 ** 53, '3'])
      assert.throws(() => validateSeed(bad), /GenerationError: seeds: .* is not a seed/);
  });
});
