import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { writeJsonAtomic } from '../../src/util/atomic.js';
import { floatToHalfBits, fromHalf, halfBitsToFloat, toHalf } from '../../src/util/half.js';

test('writeJsonAtomic replaces the file and leaves no temporary file', () => {
  const dir = mkdtempSync(join(tmpdir(), 'atomic-'));
  try {
    const path = join(dir, 'sub', 'state.json');
    writeJsonAtomic(path, { a: 1 });
    writeJsonAtomic(path, { a: 2, b: [1, 2] });
    assert.deepEqual(JSON.parse(readFileSync(path, 'utf8')), { a: 2, b: [1, 2] });
    assert.deepEqual(readdirSync(join(dir, 'sub')), ['state.json']);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('float16 conversion: known bit patterns and round trip', () => {
  assert.equal(floatToHalfBits(1), 0x3c00);
  assert.equal(floatToHalfBits(-2), 0xc000);
  assert.equal(floatToHalfBits(65504), 0x7bff);
  assert.equal(floatToHalfBits(1e6), 0x7c00);
  assert.equal(floatToHalfBits(2 ** -24), 0x0001);
  assert.equal(floatToHalfBits(0.1), 0x2e66);
  assert.equal(halfBitsToFloat(0x3555), 0.333251953125);
  assert.ok(Number.isNaN(halfBitsToFloat(0x7e00)));
  const values = Float32Array.from([0, 1, -1, 0.5, 3.140625, -1024, 6.103515625e-5]);
  assert.deepEqual(Array.from(fromHalf(toHalf(values))), Array.from(values));
  // round to nearest even at a tie: 1 + 2^-11 is halfway between 1 and 1 + 2^-10 → 1
  assert.equal(floatToHalfBits(1 + 2 ** -11), 0x3c00);
  assert.equal(floatToHalfBits(1 + 3 * 2 ** -11), 0x3c02);
});
