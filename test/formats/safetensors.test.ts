/**
 * safetensors: round trip, every header rule (a clear error naming the file and the rule), dtype
 * conversion with round to nearest even, and the streaming copy with patches (chunks smaller than a
 * tensor, tensors across chunk boundaries, the source hash).
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { appendFileSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import {
  bfloat16Bits,
  encodeHeader,
  fromFloat32,
  readSafetensorsHeader,
  readTensorData,
  streamCopyWithPatches,
  toFloat32,
  writeSafetensors,
} from '../../src/formats/safetensors.js';
import { ModelFormatError } from '../../src/util/errors.js';
import { halfBitsToFloat } from '../../src/util/half.js';
import { randomFloats, tempDir } from '../onnx/helpers.js';

const tmp = tempDir('safetensors');
after(tmp.cleanup);
let n = 0;
const path = () => join(tmp.dir, `f${n++}.safetensors`);

/** A file from a raw header object and data bytes. */
function raw(header: unknown, data: Uint8Array, lengthOverride?: bigint): string {
  const p = path();
  const json = Buffer.from(JSON.stringify(header));
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(lengthOverride ?? BigInt(json.byteLength));
  writeFileSync(p, Buffer.concat([len, json, data]));
  return p;
}

function rejects(p: string, rule: RegExp): void {
  assert.throws(
    () => readSafetensorsHeader(p),
    (e: unknown) => e instanceof ModelFormatError && e.message.includes(p) && rule.test(e.message),
  );
}

describe('safetensors header rules', () => {
  const ok = {
    a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] },
    b: { dtype: 'F16', shape: [2, 1], data_offsets: [8, 12] },
  };
  test('a valid file reads back, metadata and all', () => {
    const p = path();
    const a = Float32Array.of(1, -2.5);
    writeSafetensors(p, [{ name: 'a', dtype: 'F32', shape: [2], data: fromFloat32(a, 'F32') }], {
      format: 'pt',
      x: 'y',
    });
    const h = readSafetensorsHeader(p);
    assert.deepEqual(h.metadata, { format: 'pt', x: 'y' });
    assert.equal(h.headerLength % 8, 0);
    assert.deepEqual(Array.from(toFloat32(readTensorData(h, 'a'), 'F32')), [1, -2.5]);
    assert.doesNotThrow(() => readSafetensorsHeader(raw(ok, new Uint8Array(12))));
  });
  test('truncated file, header length past the end, over 100 MB', () => {
    rejects(raw(ok, new Uint8Array(10)), /truncated/);
    rejects(raw(ok, new Uint8Array(12), 10_000n), /runs past the end/);
    rejects(raw(ok, new Uint8Array(12), 200_000_000n), /at most 100000000/);
    const p = path();
    writeFileSync(p, Buffer.from([1, 2, 3]));
    rejects(p, /8-byte header length/);
  });
  test('overlapping, gapped, trailing bytes', () => {
    rejects(
      raw(
        {
          a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] },
          b: { dtype: 'F32', shape: [1], data_offsets: [4, 8] },
        },
        new Uint8Array(8),
      ),
      /overlap/,
    );
    rejects(
      raw(
        {
          a: { dtype: 'F32', shape: [1], data_offsets: [0, 4] },
          b: { dtype: 'F32', shape: [1], data_offsets: [8, 12] },
        },
        new Uint8Array(12),
      ),
      /gap/,
    );
    rejects(raw({ a: { dtype: 'F32', shape: [1], data_offsets: [0, 4] } }, new Uint8Array(6)), /trailing bytes/);
  });
  test('unknown dtype, shape × dtype ≠ range, bad JSON, non-string metadata', () => {
    rejects(
      raw({ a: { dtype: 'F128', shape: [1], data_offsets: [0, 16] } }, new Uint8Array(16)),
      /dtype "F128" is unknown/,
    );
    rejects(raw({ a: { dtype: 'F32', shape: [3], data_offsets: [0, 8] } }, new Uint8Array(8)), /needs 12/);
    rejects(
      raw({ __metadata__: { n: 1 }, a: { dtype: 'U8', shape: [1], data_offsets: [0, 1] } }, new Uint8Array(1)),
      /must be strings/,
    );
    const p = path();
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(3n);
    writeFileSync(p, Buffer.concat([len, Buffer.from('{x]')]));
    rejects(p, /not valid JSON/);
  });
  test('encodeHeader refuses a size mismatch', () => {
    assert.throws(() => encodeHeader([{ name: 'a', dtype: 'F32', shape: [2], byteLength: 4 }]), /needs 8/);
  });
});

describe('dtype conversion', () => {
  test('F16 and BF16 round to nearest even; values come back exactly', () => {
    // 1 + 2^-8 is halfway between two bfloat16 values (1 and 1 + 2^-7): ties to even → 1.
    assert.equal(bfloat16Bits(new Uint32Array(Float32Array.of(1 + 2 ** -8).buffer)[0] as number), 0x3f80);
    assert.equal(bfloat16Bits(new Uint32Array(Float32Array.of(1 + 3 * 2 ** -8).buffer)[0] as number), 0x3f82);
    const v = randomFloats(1000, 3);
    for (const dtype of ['F32', 'F16', 'BF16'] as const) {
      const once = toFloat32(fromFloat32(v, dtype), dtype);
      const twice = toFloat32(fromFloat32(once, dtype), dtype);
      assert.deepEqual(twice, once, `${dtype} is idempotent`);
      const tol = dtype === 'F32' ? 0 : dtype === 'F16' ? 2 ** -11 : 2 ** -8;
      for (let i = 0; i < v.length; i++) {
        assert.ok(Math.abs((once[i] as number) - (v[i] as number)) <= tol * Math.abs(v[i] as number) + 1e-7);
      }
    }
  });
});

describe('dtype conversion: every binary16 value and every tie', () => {
  test('F16 decodes as the arithmetic definition for all 65536 bit patterns, at any byte offset', () => {
    const bits = new Uint16Array(65536).map((_, i) => i);
    const bytes = new Uint8Array(bits.byteLength + 1);
    bytes.set(new Uint8Array(bits.buffer), 1); // odd offset: no aligned view possible
    const viaTable = toFloat32(bytes.subarray(1), 'F16');
    const out = new Float32Array(65536);
    assert.equal(toFloat32(new Uint8Array(bits.buffer), 'F16', 'x', out), out, 'decodes into the given array');
    for (let h = 0; h < 65536; h++) {
      const want = halfBitsToFloat(h);
      assert.ok(Object.is(viaTable[h], Math.fround(want)), `bits 0x${h.toString(16)}: ${viaTable[h]} ≠ ${want}`);
      assert.ok(Object.is(out[h], viaTable[h]));
    }
  });
  test('F16 encodes every half exactly and every midpoint to the even neighbour (round to nearest even)', () => {
    // Finite positive halves in order are bit patterns 0..0x7bff; so are the negatives with the sign bit.
    const values: number[] = [];
    const want: number[] = [];
    for (const sign of [0, 0x8000]) {
      for (let h = 0; h <= 0x7bff; h++) {
        values.push(halfBitsToFloat(sign | h));
        want.push(sign | h);
        if (h < 0x7bff) {
          const a = halfBitsToFloat(sign | h);
          const b = halfBitsToFloat(sign | (h + 1));
          const mid = (a + b) / 2; // exact in float32: halves have 11 significant bits
          values.push(mid);
          want.push(sign | (h % 2 === 0 ? h : h + 1));
          values.push(mid + (b - a) / 1024); // just past the tie: the far neighbour
          want.push(sign | (h + 1));
        }
      }
    }
    values.push(65520, Number.POSITIVE_INFINITY, Number.NaN, 2 ** -25);
    want.push(0x7c00, 0x7c00, 0x7e00, 0); // overflow and ∞ → ∞, NaN → quiet NaN, 2^-25 (half of 2^-24) → 0, even
    const f = Float32Array.from(values);
    assert.deepEqual(Array.from(f), values.map(Math.fround), 'the test values are float32 values');
    const got = new Uint16Array(fromFloat32(f, 'F16').buffer);
    for (let i = 0; i < values.length; i++) {
      assert.equal(got[i], want[i], `${values[i]}: 0x${got[i]?.toString(16)} ≠ 0x${want[i]?.toString(16)}`);
    }
    // Into a given (odd-offset) array: the same bytes.
    const into = new Uint8Array(f.length * 2 + 1);
    fromFloat32(f, 'F16', 'x', into.subarray(1));
    assert.deepEqual(into.subarray(1), new Uint8Array(got.buffer));
  });
});

describe('streaming copy with patches', () => {
  test('every byte but the patched tensors is copied; the source hash is of the whole file', async () => {
    const p = path();
    const names = ['a', 'b', 'c', 'd'];
    const tensors = names.map((name, i) => ({
      name,
      dtype: 'F32',
      shape: [37 + i, 5],
      data: fromFloat32(randomFloats((37 + i) * 5, i + 20), 'F32'),
    }));
    writeSafetensors(p, tensors);
    const h = readSafetensorsHeader(p);
    const out = join(tmp.dir, 'copy.safetensors');
    const seen: string[] = [];
    const res = await streamCopyWithPatches(
      h,
      out,
      new Set(['b', 'd']),
      (entry, bytes) => {
        seen.push(entry.name);
        const v = toFloat32(bytes, entry.dtype);
        return fromFloat32(
          v.map((x) => 2 * x),
          entry.dtype,
        );
      },
      { chunkBytes: 100 },
    );
    assert.deepEqual(seen, ['b', 'd']);
    const src = readFileSync(p);
    const dst = readFileSync(out);
    assert.equal(res.sourceSha256, createHash('sha256').update(src).digest('hex'));
    assert.equal(dst.byteLength, src.byteLength);
    const ho = readSafetensorsHeader(out);
    for (const name of names) {
      const a = toFloat32(readTensorData(h, name), 'F32');
      const b = toFloat32(readTensorData(ho, name), 'F32');
      assert.deepEqual(b, name === 'b' || name === 'd' ? a.map((x) => 2 * x) : a);
    }
    assert.deepEqual(dst.subarray(0, h.dataStart), src.subarray(0, h.dataStart), 'header bytes unchanged');
    const t = res.timeline;
    assert.ok(t.copied > 0 && t.hashed > 0 && t.patched > 0, JSON.stringify(t));
    assert.ok(t.copied <= t.written && t.written <= t.synced && t.synced <= t.total && t.hashed <= t.total);
  });
  test('a source that changes while it is copied is an error, not a copy', async () => {
    const p = path();
    writeSafetensors(p, [
      { name: 'a', dtype: 'F32', shape: [64], data: fromFloat32(randomFloats(64, 1), 'F32') },
      { name: 'b', dtype: 'F32', shape: [64], data: fromFloat32(randomFloats(64, 2), 'F32') },
    ]);
    const out = join(tmp.dir, 'changed.safetensors');
    await assert.rejects(
      streamCopyWithPatches(readSafetensorsHeader(p), out, new Set(['a']), (_e, bytes) => {
        appendFileSync(p, 'more'); // someone writes to the source meanwhile
        return bytes;
      }),
      (e: unknown) =>
        e instanceof ModelFormatError && e.message.includes(p) && /changed while it was copied/.test(e.message),
    );
  });
  test('refuses an existing output', async () => {
    const p = path();
    writeSafetensors(p, [{ name: 'a', dtype: 'U8', shape: [1], data: Uint8Array.of(1) }]);
    await assert.rejects(
      streamCopyWithPatches(readSafetensorsHeader(p), p, new Set(), (_e, b) => b),
      /EEXIST/,
    );
    assert.ok(existsSync(p));
  });
});
