import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { encodeNpy, parseNpy } from '../../src/generate/npy.js';

function npyWith(header: string, data: Uint8Array, version = 1): Uint8Array {
  const prefix = version === 1 ? 10 : 12;
  const total = Math.ceil((prefix + header.length + 1) / 64) * 64;
  const h = `${header}${' '.repeat(total - prefix - header.length - 1)}\n`;
  const out = new Uint8Array(total + data.length);
  out.set([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, version, 0]);
  const view = new DataView(out.buffer);
  if (version === 1) view.setUint16(8, h.length, true);
  else view.setUint32(8, h.length, true);
  for (let i = 0; i < h.length; i++) out[prefix + i] = h.charCodeAt(i);
  out.set(data, total);
  return out;
}

describe('.npy', () => {
  it('reads a file written by NumPy (np.save of arange(24, dtype="<f4").reshape(2, 3, 4))', () => {
    const a = parseNpy(readFileSync(new URL('./fixtures/numpy-arange-2x3x4.npy', import.meta.url)));
    assert.deepEqual(a.shape, [2, 3, 4]);
    assert.deepEqual(
      Array.from(a.data),
      Array.from({ length: 24 }, (_, i) => i),
    );
  });
  it('writes what it reads: version 1.0, 64-byte aligned header, 1-d shapes with a trailing comma', () => {
    const data = Float32Array.from([1.5, -2, 3.25, 0, 7, 8]);
    const bytes = encodeNpy({ shape: [1, 2, 3], data });
    assert.equal(bytes[6], 1);
    assert.equal((10 + (bytes[8] as number)) % 64, 0);
    assert.deepEqual(parseNpy(bytes), { shape: [1, 2, 3], data });
    const text = new TextDecoder().decode(encodeNpy({ shape: [3], data: new Float32Array(3) }).subarray(10, 70));
    assert.match(text, /'shape': \(3,\)/);
  });
  it('reads version 2.0 headers', () => {
    const data = new Uint8Array(new Float32Array([4, 5]).buffer);
    const a = parseNpy(npyWith("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }", data, 2));
    assert.deepEqual(Array.from(a.data), [4, 5]);
  });
  it('refuses other dtypes, Fortran order, wrong sizes and non-npy data with the reason', () => {
    const f32 = new Uint8Array(new Float32Array([1, 2]).buffer);
    assert.throws(
      () => parseNpy(npyWith("{'descr': '<f8', 'fortran_order': False, 'shape': (1,), }", new Uint8Array(8))),
      /float64 data; only little-endian float32/,
    );
    assert.throws(
      () => parseNpy(npyWith("{'descr': '>f4', 'fortran_order': False, 'shape': (2,), }", f32)),
      /big-endian float32/,
    );
    assert.throws(
      () => parseNpy(npyWith("{'descr': '<f4', 'fortran_order': True, 'shape': (2,), }", f32)),
      /Fortran-order/,
    );
    assert.throws(
      () => parseNpy(npyWith("{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }", f32)),
      /needs 12 data bytes but the file has 8/,
    );
    assert.throws(() => parseNpy(new TextEncoder().encode('hello world!')), /not a NumPy .npy file/);
  });
});
