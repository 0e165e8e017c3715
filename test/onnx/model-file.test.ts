import assert from 'node:assert/strict';
import {
  mkdirSync,
  readFileSync,
  renameSync,
  rmSync,
  symlinkSync,
  truncateSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import type onnxProto from 'onnx-proto';
import { bulkTensorBytes, GraphBuilder, type InlineBulk, writeInlineModel } from '../../src/onnx/build.js';
import {
  bytesToFloat32,
  float32ToBytes,
  getInitializer,
  openOnnxModel,
  readTensorBytes,
  readTensorFloat32,
} from '../../src/onnx/model-file.js';
import { DataType, decodeModel, encodeModel, onnx } from '../../src/onnx/proto.js';
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

/** The tiny model cut 8 bytes into W's raw_data payload. */
function truncatedInsidePayload(): Uint8Array {
  const path = save('cutpayload');
  const w = getInitializer(openOnnxModel(path), 'W');
  assert.equal(w.storage.kind, 'raw');
  return readFileSync(path).subarray(0, (w.storage.kind === 'raw' ? w.storage.offset : 0) + 8);
}

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
      // cut inside W's raw_data payload: the payload is skipped, the enclosing lengths still tell
      ['truncated-payload.onnx', truncatedInsidePayload()],
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
});

describe('openOnnxModel: positioned reads, the file is never held', () => {
  test('a 128 MiB inline model: arrayBuffers grow by far less than the file; tensors read by position', () => {
    const path = join(tmp.dir, 'big', 'model.onnx');
    const bulk: InlineBulk = { prefix: 'unet.weight', count: 64, dims: [1024, 1024] };
    const { size, names } = writeInlineModel(path, builder(), bulk);
    assert.ok(size > 128 * 2 ** 20);
    try {
      const before = process.memoryUsage().arrayBuffers;
      const file = openOnnxModel(path);
      const grown = process.memoryUsage().arrayBuffers - before;
      // the old reader kept the whole file (≥ size); the structure here is a few KB plus read buffers
      assert.ok(grown < size / 16, `arrayBuffers grew by ${grown} bytes opening a ${size}-byte model`);
      assert.equal(file.initializers.length, 4 + bulk.count);
      assert.equal(file.size, size);
      const big = getInitializer(file, names[37] as string);
      assert.deepEqual(big.storage.kind, 'raw');
      const bytes = readTensorBytes(file, big);
      assert.equal(bytes.buffer.byteLength, 2 * 2 ** 20, 'a buffer of the tensor alone');
      assert.deepEqual(bytes, bulkTensorBytes(bulk, 37));
      sameFloats(readTensorFloat32(file, getInitializer(file, 'W')), W);
      // no raw_data payload was decoded
      assert.ok((file.graph.initializer ?? []).every((t) => (t.rawData?.byteLength ?? 0) === 0));
    } finally {
      rmSync(join(tmp.dir, 'big'), { recursive: true, force: true });
    }
  });

  test('the decoded model is the file decoded whole minus top-level raw_data; If branches stay whole', () => {
    const path = save('nested');
    const branchData = randomFloats(4, 9);
    const branch = (name: string, op: string): onnxProto.onnx.IGraphProto => ({
      name,
      node: [{ opType: op, input: ['y', `${name}.c`], output: [`${name}.out`], name: `/${name}/${op}` }],
      initializer: [
        { name: `${name}.c`, dims: [4], dataType: DataType.FLOAT, rawData: new Uint8Array(branchData.buffer) },
      ],
      output: [{ name: `${name}.out`, type: { tensorType: { elemType: DataType.FLOAT, shape: { dim: [] } } } }],
    });
    rewriteModel(path, (m) => {
      const g = m.graph as onnxProto.onnx.GraphProto;
      g.input.push({ name: 'cond', type: { tensorType: { elemType: DataType.BOOL, shape: { dim: [] } } } });
      g.node.push({
        opType: 'If',
        name: '/if',
        input: ['cond'],
        output: ['z'],
        attribute: [
          { name: 'then_branch', type: 5, g: branch('then', 'Add') },
          { name: 'else_branch', type: 5, g: branch('else', 'Sub') },
        ],
      });
      g.output.push({
        name: 'z',
        type: { tensorType: { elemType: DataType.FLOAT, shape: { dim: [{ dimValue: 1 }, { dimValue: 4 }] } } },
      });
      g.valueInfo.push({
        name: 'y0',
        type: { tensorType: { elemType: DataType.FLOAT, shape: { dim: [{ dimValue: 1 }, { dimValue: 4 }] } } },
      });
    });
    const file = openOnnxModel(path);
    const whole = decodeModel(readFileSync(path));
    for (const t of whole.graph?.initializer ?? [])
      if (t.rawData?.byteLength) delete (t as { rawData?: unknown }).rawData;
    const plain = (m: onnxProto.onnx.ModelProto) => onnx.ModelProto.toObject(m, { longs: String, bytes: Array });
    assert.deepEqual(plain(file.model), plain(whole));
    assert.equal(file.graph, file.model.graph);
    // the branches' own initializers are not top-level ones: decoded with their values, as before
    assert.deepEqual(
      file.initializers.map((i) => i.name),
      ['W', 'B', 'H', 'S'],
    );
    const ifNode = file.graph.node?.find((n) => n.opType === 'If');
    const thenInit = ifNode?.attribute?.find((a) => a.name === 'then_branch')?.g?.initializer?.[0];
    sameFloats(bytesToFloat32(thenInit?.rawData as Uint8Array, DataType.FLOAT), branchData);
    sameFloats(readTensorFloat32(file, getInitializer(file, 'B')), B);
  });

  test('a model file changed or replaced after opening is refused when a raw tensor is read', () => {
    const path = save('changed');
    const file = openOnnxModel(path);
    const w = getInitializer(file, 'W');
    sameFloats(readTensorFloat32(file, w), W);
    const later = new Date(Date.now() + 60_000);
    utimesSync(path, later, later);
    assert.throws(
      () => readTensorBytes(file, w),
      (e: Error) =>
        e instanceof ModelFormatError && /changed since it was opened/.test(e.message) && e.message.includes(path),
    );
    const copy = `${path}.new`;
    writeFileSync(copy, readFileSync(path));
    renameSync(copy, path);
    assert.throws(
      () => readTensorBytes(file, w),
      (e: Error) => e instanceof ModelFormatError && /another file/.test(e.message),
    );
    rmSync(path);
    assert.throws(
      () => readTensorBytes(file, w),
      (e: Error) => e instanceof ModelFormatError && /can no longer be read/.test(e.message),
    );
    sameFloats(readTensorFloat32(openOnnxModel(save('changed')), w), W);
  });
});
