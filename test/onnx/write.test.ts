import assert from 'node:assert/strict';
import { linkSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { GraphBuilder } from '../../src/onnx/build.js';
import {
  float32ToBytes,
  getInitializer,
  openOnnxModel,
  readTensorBytes,
  readTensorFloat32,
} from '../../src/onnx/model-file.js';
import { DataType, onnx } from '../../src/onnx/proto.js';
import { encodeVarint, lengthDelimitedHeader } from '../../src/onnx/wire.js';
import { applyWritePlan, cloneFile, planTensorWrites, saveModelWithReplacements } from '../../src/onnx/write.js';
import { Session, tensor } from '../../src/runtime/ort.js';
import { ModelFormatError, OutputError } from '../../src/util/errors.js';
import { fromHalf, toHalf } from '../../src/util/half.js';
import { checksums, randomFloats, rewriteModel, tempDir } from './helpers.js';

const tmp = tempDir('onnx-write');
after(tmp.cleanup);

const W = randomFloats(12, 11);
const B = randomFloats(4, 12);
const W2 = randomFloats(12, 13);

/** y = x·W + B, W [3,4], in float32 or float16. */
function builder(type: 'float32' | 'float16' = 'float32'): GraphBuilder {
  const g = new GraphBuilder();
  g.input('x', type, [1, 3]);
  g.initializer('W', type, [3, 4], W);
  g.initializer('B', type, [4], B);
  const y = g.node('MatMul', ['x', 'W'], ['y0'], {}, '/proj/MatMul');
  g.node('Add', [y, 'B'], ['y'], {}, '/proj/Add');
  g.output('y', type, [1, 4]);
  return g;
}

function save(name: string, type: 'float32' | 'float16', options: Parameters<GraphBuilder['save']>[2] = {}): string {
  const dir = join(tmp.dir, name);
  builder(type).save(dir, 'model.onnx', options);
  return join(dir, 'model.onnx');
}

/** Run y = x·W + B with onnxruntime and return y as float32. */
async function runModel(path: string, type: 'float32' | 'float16'): Promise<Float32Array> {
  const session = await Session.create(path, { label: 'test model' });
  try {
    const x = Float32Array.from([1, -2, 0.5]);
    const feed = type === 'float16' ? tensor('float16', toHalf(x), [1, 3]) : tensor('float32', x, [1, 3]);
    const out = await session.run({ x: feed });
    const data = out.y?.data as Float32Array | Uint16Array;
    return type === 'float16' ? fromHalf(data as Uint16Array) : Float32Array.from(data as Float32Array);
  } finally {
    await session.dispose();
  }
}

function expectedY(w: Float32Array, b: Float32Array): number[] {
  const x = [1, -2, 0.5];
  return [0, 1, 2, 3].map((j) => x.reduce((s, xi, i) => s + xi * (w[i * 4 + j] as number), 0) + (b[j] as number));
}

function assertClose(actual: Float32Array, expected: number[], tol: number): void {
  assert.equal(actual.length, expected.length);
  for (let i = 0; i < expected.length; i++) {
    assert.ok(
      Math.abs((actual[i] as number) - (expected[i] as number)) <= tol,
      `[${i}] ${actual[i]} vs ${expected[i]}`,
    );
  }
}

/** Byte positions where a and b differ (same length required). */
function diffRange(a: Uint8Array, b: Uint8Array): { first: number; last: number } | null {
  assert.equal(a.byteLength, b.byteLength);
  let first = -1;
  let last = -1;
  for (let i = 0; i < a.byteLength; i++) {
    if (a[i] !== b[i]) {
      if (first < 0) first = i;
      last = i;
    }
  }
  return first < 0 ? null : { first, last };
}

describe('saveModelWithReplacements', () => {
  test('external data: model.onnx byte-equal, data file patched only in the edited range, runs', async () => {
    const path = save('ext-src', 'float32', { externalData: { location: 'weights.pb', threshold: 0 } });
    const before = checksums(join(tmp.dir, 'ext-src'));
    const file = openOnnxModel(path);
    const w = getInitializer(file, 'W');
    const plan = saveModelWithReplacements(
      file,
      new Map([['W', float32ToBytes(W2, DataType.FLOAT)]]),
      join(tmp.dir, 'ext-out'),
    );
    assert.deepEqual(plan.touchedFiles, ['weights.pb']);
    assert.equal(plan.rebuiltModel, undefined);
    assert.deepEqual(readFileSync(join(tmp.dir, 'ext-out', 'model.onnx')), readFileSync(path));
    const d = diffRange(
      readFileSync(join(tmp.dir, 'ext-src', 'weights.pb')),
      readFileSync(join(tmp.dir, 'ext-out', 'weights.pb')),
    );
    assert.ok(d && w.storage.kind === 'external');
    if (!d || w.storage.kind !== 'external') return;
    assert.ok(d.first >= w.storage.offset && d.last < w.storage.offset + w.storage.length);
    const out = openOnnxModel(join(tmp.dir, 'ext-out', 'model.onnx'));
    assert.deepEqual(Array.from(readTensorFloat32(out, getInitializer(out, 'W'))), Array.from(W2));
    assert.deepEqual(Array.from(readTensorFloat32(out, getInitializer(out, 'B'))), Array.from(B));
    assertClose(await runModel(join(tmp.dir, 'ext-out', 'model.onnx'), 'float32'), expectedY(W2, B), 1e-5);
    assert.deepEqual(checksums(join(tmp.dir, 'ext-src')), before, 'input unchanged');
  });

  test('inline raw_data: same length, only the payload differs', async () => {
    const path = save('raw-src', 'float16');
    const file = openOnnxModel(path);
    const w = getInitializer(file, 'W');
    const newBytes = float32ToBytes(W2, DataType.FLOAT16);
    const plan = saveModelWithReplacements(file, new Map([['W', newBytes]]), join(tmp.dir, 'raw-out'));
    assert.deepEqual(plan.touchedFiles, ['model.onnx']);
    const d = diffRange(readFileSync(path), readFileSync(join(tmp.dir, 'raw-out', 'model.onnx')));
    assert.ok(d && w.storage.kind === 'raw');
    if (!d || w.storage.kind !== 'raw') return;
    assert.ok(d.first >= w.storage.offset && d.last < w.storage.offset + w.storage.length);
    const out = openOnnxModel(join(tmp.dir, 'raw-out', 'model.onnx'));
    assert.deepEqual(readTensorBytes(out, getInitializer(out, 'W')), newBytes);
    assertClose(
      await runModel(join(tmp.dir, 'raw-out', 'model.onnx'), 'float16'),
      expectedY(fromHalf(toHalf(W2)), fromHalf(toHalf(B))),
      2e-2,
    );
  });

  test('typed fields: the tensor is re-encoded as raw_data, length prefixes fixed, unknown fields kept', async () => {
    const dir = join(tmp.dir, 'typed-src');
    mkdirSync(dir, { recursive: true });
    // y = x·W + Cast(B16): W stored as float_data, B16 (float16) as int32_data bit patterns, with an
    // unknown field (99, varint) at the model, graph and tensor levels; assembled at wire level.
    const g = new GraphBuilder();
    g.input('x', 'float32', [1, 3]);
    const y0 = g.node('MatMul', ['x', 'W'], ['y0'], {}, '/proj/MatMul');
    const b32 = g.node('Cast', ['B16'], ['B32'], { to: DataType.FLOAT }, '/proj/Cast');
    g.node('Add', [y0, b32], ['y'], {}, '/proj/Add');
    g.output('y', 'float32', [1, 4]);
    const decoded = onnx.ModelProto.decode(g.toModel().model);
    const graph = decoded.graph as InstanceType<typeof onnx.GraphProto>;
    const unknown = Uint8Array.from([...encodeVarint(99 * 8), ...encodeVarint(12345)]);
    const typedW = onnx.TensorProto.encode({
      name: 'W',
      dims: [3, 4],
      dataType: DataType.FLOAT,
      floatData: Array.from(W),
    }).finish();
    const typedB = onnx.TensorProto.encode({
      name: 'B16',
      dims: [4],
      dataType: DataType.FLOAT16,
      int32Data: Array.from(toHalf(B)),
    }).finish();
    const tensorParts = [typedW, typedB].map((t) => Uint8Array.from([...t, ...unknown]));
    const graphBytes = Uint8Array.from([
      ...onnx.GraphProto.encode(graph).finish(),
      ...tensorParts.flatMap((t) => [...lengthDelimitedHeader(5, t.byteLength), ...t]),
      ...unknown,
    ]);
    decoded.graph = null;
    const modelBytes = Uint8Array.from([
      ...onnx.ModelProto.encode(decoded).finish(),
      ...lengthDelimitedHeader(7, graphBytes.byteLength),
      ...graphBytes,
      ...unknown,
    ]);
    writeFileSync(join(dir, 'model.onnx'), modelBytes);
    assertClose(await runModel(join(dir, 'model.onnx'), 'float32'), expectedY(W, fromHalf(toHalf(B))), 1e-5);

    const file = openOnnxModel(join(dir, 'model.onnx'));
    assert.equal(getInitializer(file, 'W').storage.kind, 'typed');
    assert.equal(getInitializer(file, 'B16').storage.kind, 'typed');
    // W takes 12 floats of float_data; the new W gets 48 bytes of raw_data (a different encoding length for B)
    const newB = randomFloats(4, 99);
    const replacements = new Map([
      ['W', float32ToBytes(W2, DataType.FLOAT)],
      ['B16', float32ToBytes(newB, DataType.FLOAT16)],
    ]);
    const plan = saveModelWithReplacements(file, replacements, join(tmp.dir, 'typed-out'));
    assert.ok(plan.rebuiltModel);
    const out = openOnnxModel(join(tmp.dir, 'typed-out', 'model.onnx'));
    assert.equal(getInitializer(out, 'W').storage.kind, 'raw');
    assert.deepEqual(Array.from(readTensorFloat32(out, getInitializer(out, 'W'))), Array.from(W2));
    assert.deepEqual(readTensorBytes(out, getInitializer(out, 'B16')), replacements.get('B16'));
    // unknown fields survive at every level: model, graph, and each rebuilt tensor (the file's own wire walk)
    const countUnknown = (fields: readonly { field: number }[]) => fields.filter((f) => f.field === 99).length;
    assert.equal(countUnknown(out.wire.modelFields), 1);
    assert.equal(countUnknown(out.wire.graphs[0]!.fields), 1);
    for (const t of out.wire.initializers) assert.equal(countUnknown(t.fields), 1, t.name);
    assertClose(
      await runModel(join(tmp.dir, 'typed-out', 'model.onnx'), 'float32'),
      expectedY(W2, fromHalf(toHalf(newB))),
      1e-5,
    );
  });

  test('a mixed plan: raw_data patch + typed splice in the same model', () => {
    const path = save('mixed-src', 'float32');
    rewriteModel(path, (m) => {
      const t = m.graph?.initializer?.find((x) => x.name === 'B');
      if (t) {
        t.floatData = Array.from(B);
        t.rawData = new Uint8Array(0);
      }
    });
    const file = openOnnxModel(path);
    const newB = randomFloats(4, 5);
    saveModelWithReplacements(
      file,
      new Map([
        ['W', float32ToBytes(W2, DataType.FLOAT)],
        ['B', float32ToBytes(newB, DataType.FLOAT)],
      ]),
      join(tmp.dir, 'mixed-out'),
    );
    const out = openOnnxModel(join(tmp.dir, 'mixed-out', 'model.onnx'));
    assert.deepEqual(Array.from(readTensorFloat32(out, getInitializer(out, 'W'))), Array.from(W2));
    assert.deepEqual(Array.from(readTensorFloat32(out, getInitializer(out, 'B'))), Array.from(newB));
  });

  test('errors: unknown name, wrong size, destination = source folder', () => {
    const path = save('err-src', 'float32', { externalData: { location: 'weights.pb', threshold: 0 } });
    const file = openOnnxModel(path);
    assert.throws(
      () => planTensorWrites(file, new Map([['nope', new Uint8Array(4)]])),
      (e: Error) => e instanceof ModelFormatError && /no initializer/.test(e.message),
    );
    assert.throws(
      () => planTensorWrites(file, new Map([['W', new Uint8Array(44)]])),
      (e: Error) => e instanceof ModelFormatError && /44 bytes given.*48/.test(e.message),
    );
    assert.throws(() => saveModelWithReplacements(file, new Map(), join(tmp.dir, 'err-src')), OutputError);
  });

  test('applyWritePlan refuses a hard-linked destination (it would modify the input)', () => {
    const path = save('link-src', 'float32', { externalData: { location: 'weights.pb', threshold: 0 } });
    const before = checksums(join(tmp.dir, 'link-src'));
    const file = openOnnxModel(path);
    const plan = planTensorWrites(file, new Map([['W', float32ToBytes(W2, DataType.FLOAT)]]));
    const dest = join(tmp.dir, 'link-out');
    mkdirSync(dest);
    cloneFile(path, join(dest, 'model.onnx'));
    linkSync(join(tmp.dir, 'link-src', 'weights.pb'), join(dest, 'weights.pb'));
    assert.throws(
      () => applyWritePlan(plan, dest, file.dir),
      (e: Error) => e instanceof OutputError && /hard links/.test(e.message),
    );
    assert.deepEqual(checksums(join(tmp.dir, 'link-src')), before);
  });
});
