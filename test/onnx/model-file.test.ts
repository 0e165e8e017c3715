import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, symlinkSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { GraphBuilder } from '../../src/onnx/build.js';
import {
  bytesToFloat32,
  float32ToBytes,
  getInitializer,
  openOnnxModel,
  readTensorBytes,
  readTensorFloat32,
} from '../../src/onnx/model-file.js';
import { DataType, decodeModel, encodeModel } from '../../src/onnx/proto.js';
import { ModelFormatError } from '../../src/util/errors.js';
import { fromHalf, toHalf } from '../../src/util/half.js';
import { randomFloats, rewriteModel, setExternalEntry, tempDir } from './helpers.js';

const tmp = tempDir('onnx-read');
after(tmp.cleanup);

const W = randomFloats(12, 1);
const B = randomFloats(4, 2);
const H = randomFloats(6, 3);

/** y = x·W + B with W [3,4]; an unused float16 H [2,3] and int64 S [2]. */
function builder(): GraphBuilder {
  const g = new GraphBuilder();
  g.input('x', 'float32', [1, 3]);
  g.initializer('W', 'float32', [3, 4], W);
  g.initializer('B', 'float32', [4], B);
  g.initializer('H', 'float16', [2, 3], H);
  g.initializer('S', 'int64', [2], [7, -3]);
  const y = g.node('MatMul', ['x', 'W'], ['y0'], {}, '/proj/MatMul');
  g.node('Add', [y, 'B'], ['y'], {}, '/proj/Add');
  g.output('y', 'float32', [1, 4]);
  return g;
}

function save(name: string, options: Parameters<GraphBuilder['save']>[2] = {}): string {
  const dir = join(tmp.dir, name);
  builder().save(dir, 'model.onnx', options);
  return join(dir, 'model.onnx');
}

function sameFloats(a: Float32Array, b: Float32Array): void {
  assert.equal(a.length, b.length);
  assert.deepEqual(Array.from(a), Array.from(b));
}

describe('openOnnxModel: where initializer bytes live', () => {
  test('inline raw_data: absolute payload offsets inside model.onnx', () => {
    const path = save('inline');
    const file = openOnnxModel(path);
    const bytes = readFileSync(path);
    assert.equal(file.initializers.length, 4);
    const w = getInitializer(file, 'W');
    assert.equal(w.dtype, 'float32');
    assert.deepEqual(w.dims, [3, 4]);
    assert.equal(w.byteLength, 48);
    assert.equal(w.storage.kind, 'raw');
    if (w.storage.kind !== 'raw') return;
    // the recorded range holds exactly the tensor's little-endian bytes
    assert.deepEqual(
      new Uint8Array(bytes.subarray(w.storage.offset, w.storage.offset + w.storage.length)),
      new Uint8Array(W.buffer),
    );
    sameFloats(readTensorFloat32(file, w), W);
    const h = getInitializer(file, 'H');
    assert.equal(h.dtype, 'float16');
    sameFloats(readTensorFloat32(file, h), fromHalf(toHalf(H)));
    const s = getInitializer(file, 'S');
    assert.deepEqual(Array.from(new BigInt64Array(readTensorBytes(file, s).buffer)), [7n, -3n]);
    assert.equal(file.externalFiles.length, 0);
  });

  test('external data: location/offset/length, reads only the tensor range', () => {
    const path = save('external', { externalData: { location: 'weights.pb', threshold: 0, align: 16 } });
    const file = openOnnxModel(path);
    assert.equal(file.externalFiles.length, 1);
    assert.equal(file.externalFiles[0]?.location, 'weights.pb');
    assert.equal(file.externalFiles[0]?.tensors, 4);
    const w = getInitializer(file, 'W');
    assert.equal(w.storage.kind, 'external');
    if (w.storage.kind !== 'external') return;
    assert.equal(w.storage.path, join(tmp.dir, 'external', 'weights.pb'));
    assert.equal(w.storage.length, 48);
    sameFloats(readTensorFloat32(file, w), W);
    const b = getInitializer(file, 'B');
    assert.equal(b.storage.kind === 'external' && b.storage.offset % 16, 0);
    sameFloats(readTensorFloat32(file, b), B);
    sameFloats(readTensorFloat32(file, getInitializer(file, 'H')), fromHalf(toHalf(H)));
  });

  test('external data in a subfolder, length omitted (taken from dims)', () => {
    const dir = join(tmp.dir, 'subfolder');
    const g = builder();
    const { model, external } = g.toModel({ externalData: { location: 'data/w.bin', threshold: 0 } });
    mkdirSync(join(dir, 'data'), { recursive: true });
    writeFileSync(join(dir, 'model.onnx'), model);
    writeFileSync(join(dir, 'data', 'w.bin'), external as Uint8Array);
    rewriteModel(join(dir, 'model.onnx'), (m) => {
      const t = m.graph?.initializer?.find((x) => x.name === 'W');
      if (t?.externalData) t.externalData = t.externalData.filter((e) => e.key !== 'length');
    });
    const file = openOnnxModel(join(dir, 'model.onnx'));
    sameFloats(readTensorFloat32(file, getInitializer(file, 'W')), W);
  });

  test('typed fields: float_data and int32_data (float16 bit patterns)', () => {
    const path = save('typed');
    rewriteModel(path, (m) => {
      for (const t of m.graph?.initializer ?? []) {
        const raw = t.rawData as Uint8Array;
        if (t.name === 'W') t.floatData = Array.from(bytesToFloat32(raw, DataType.FLOAT));
        else if (t.name === 'H') t.int32Data = Array.from(new Uint16Array(Uint8Array.from(raw).buffer));
        else if (t.name === 'S') t.int64Data = [7, -3];
        else continue;
        t.rawData = new Uint8Array(0);
      }
    });
    const file = openOnnxModel(path);
    const w = getInitializer(file, 'W');
    assert.deepEqual(w.storage, { kind: 'typed', field: 'float_data', count: 12 });
    sameFloats(readTensorFloat32(file, w), W);
    const h = getInitializer(file, 'H');
    assert.deepEqual(h.storage, { kind: 'typed', field: 'int32_data', count: 6 });
    sameFloats(readTensorFloat32(file, h), fromHalf(toHalf(H)));
    assert.deepEqual(Array.from(new BigInt64Array(readTensorBytes(file, getInitializer(file, 'S')).buffer)), [7n, -3n]);
  });

  test('the result is JSON-serializable per initializer', () => {
    const file = openOnnxModel(save('json', { externalData: { location: 'model.onnx_data', threshold: 0 } }));
    const json = JSON.parse(JSON.stringify(file.initializers));
    assert.equal(json[0].storage.kind, 'external');
    assert.equal(json[0].storage.location, 'model.onnx_data');
  });

  test('float32 ⇄ bytes of float16/bfloat16/float64', () => {
    const x = Float32Array.from([0, 1, -2.5, 65504, 1e-3, 3.140625]);
    for (const dt of [DataType.FLOAT, DataType.DOUBLE]) sameFloats(bytesToFloat32(float32ToBytes(x, dt), dt), x);
    sameFloats(bytesToFloat32(float32ToBytes(x, DataType.FLOAT16), DataType.FLOAT16), fromHalf(toHalf(x)));
    const bf = bytesToFloat32(float32ToBytes(x, DataType.BFLOAT16), DataType.BFLOAT16);
    for (let i = 0; i < x.length; i++)
      assert.ok(Math.abs((bf[i] as number) - (x[i] as number)) <= Math.abs(x[i] as number) / 128);
    assert.throws(() => bytesToFloat32(new Uint8Array(8), DataType.INT64), ModelFormatError);
  });
});

describe('openOnnxModel: refuses bad input before reading', () => {
  const externalModel = (name: string): string =>
    save(name, { externalData: { location: 'weights.pb', threshold: 0 } });

  test('missing file', () => {
    assert.throws(
      () => openOnnxModel(join(tmp.dir, 'nope', 'model.onnx')),
      (e: Error) => e instanceof ModelFormatError && /does not exist/.test(e.message) && e.message.includes('nope'),
    );
  });

  test('not an ONNX file: garbage, text, empty, a model without a graph', () => {
    const dir = join(tmp.dir, 'garbage');
    mkdirSync(dir, { recursive: true });
    const cases: [string, Uint8Array][] = [
      ['random.onnx', Uint8Array.from({ length: 256 }, (_, i) => (i * 97 + 13) & 0xff)],
      ['text.onnx', new TextEncoder().encode('this is not a model\n')],
      ['empty.onnx', new Uint8Array(0)],
      ['nograph.onnx', encodeModel({ irVersion: 8, producerName: 'x' })],
      ['truncated.onnx', readFileSync(save('tobetruncated')).subarray(0, 40)],
    ];
    for (const [name, bytes] of cases) {
      writeFileSync(join(dir, name), bytes);
      assert.throws(
        () => openOnnxModel(join(dir, name)),
        (e: Error) =>
          e instanceof ModelFormatError && e.message.includes(name) && /not an ONNX model|empty/.test(e.message),
        name,
      );
    }
  });

  test('truncated external data (offset + length past the end)', () => {
    const path = externalModel('trunc');
    const file = openOnnxModel(path);
    const last = file.initializers.reduce((a, b) =>
      a.storage.kind === 'external' && b.storage.kind === 'external' && b.storage.offset > a.storage.offset ? b : a,
    );
    truncateSync(join(tmp.dir, 'trunc', 'weights.pb'), file.externalFiles[0]!.size - 3);
    assert.throws(
      () => openOnnxModel(path),
      (e: Error) =>
        e instanceof ModelFormatError && /runs past the end/.test(e.message) && e.message.includes(last.name),
    );
  });

  test('missing external data file', () => {
    const path = externalModel('missingext');
    setExternalEntry(path, 'W', 'location', 'other.bin');
    assert.throws(
      () => openOnnxModel(path),
      (e: Error) => e instanceof ModelFormatError && /other\.bin.*does not exist/.test(e.message),
    );
  });

  test('absolute location, even to a real file', () => {
    const path = externalModel('abs');
    setExternalEntry(path, 'W', 'location', join(tmp.dir, 'abs', 'weights.pb'));
    assert.throws(
      () => openOnnxModel(path),
      (e: Error) => e instanceof ModelFormatError && /absolute/.test(e.message),
    );
    setExternalEntry(path, 'W', 'location', 'C:\\weights.pb');
    assert.throws(
      () => openOnnxModel(path),
      (e: Error) => e instanceof ModelFormatError && /absolute/.test(e.message),
    );
  });

  test("location with '..', even when it comes back inside", () => {
    const path = externalModel('dotdot');
    setExternalEntry(path, 'W', 'location', '../dotdot/weights.pb');
    assert.throws(
      () => openOnnxModel(path),
      (e: Error) => e instanceof ModelFormatError && /'\.\.'/.test(e.message),
    );
    setExternalEntry(path, 'W', 'location', 'sub\\..\\weights.pb');
    assert.throws(
      () => openOnnxModel(path),
      (e: Error) => e instanceof ModelFormatError && /'\.\.'/.test(e.message),
    );
  });

  test('symlink resolving outside the folder is refused; inside is fine', () => {
    const path = externalModel('symlink');
    const outside = join(tmp.dir, 'outside.pb');
    writeFileSync(outside, readFileSync(join(tmp.dir, 'symlink', 'weights.pb')));
    symlinkSync(outside, join(tmp.dir, 'symlink', 'escape.pb'));
    symlinkSync('weights.pb', join(tmp.dir, 'symlink', 'inside.pb'));
    setExternalEntry(path, 'W', 'location', 'inside.pb');
    sameFloats(readTensorFloat32(openOnnxModel(path), getInitializer(openOnnxModel(path), 'W')), W);
    setExternalEntry(path, 'W', 'location', 'escape.pb');
    assert.throws(
      () => openOnnxModel(path),
      (e: Error) => e instanceof ModelFormatError && /outside the model folder/.test(e.message),
    );
  });

  test('declared length that does not match the dims, bad offset text', () => {
    const path = externalModel('badlen');
    setExternalEntry(path, 'W', 'length', '44');
    assert.throws(
      () => openOnnxModel(path),
      (e: Error) => e instanceof ModelFormatError && /does not match dims/.test(e.message),
    );
    setExternalEntry(path, 'W', 'length', '48');
    setExternalEntry(path, 'W', 'offset', '-4');
    assert.throws(
      () => openOnnxModel(path),
      (e: Error) => e instanceof ModelFormatError && /non-negative integer/.test(e.message),
    );
  });

  test('decoding keeps views into the file buffer (no copy of raw_data)', () => {
    const file = openOnnxModel(save('views'));
    const t = decodeModel(file.bytes).graph?.initializer?.[0];
    assert.equal(t?.rawData?.buffer, file.bytes.buffer);
    const again = file.graph.initializer?.[0]?.rawData;
    assert.equal(again?.buffer, file.bytes.buffer);
  });
});
