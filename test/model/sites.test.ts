import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { locateSites, moduleFromNodeName, readSiteWeight, toStoredBytes } from '../../src/model/sites.js';
import { forwardClosure, indexGraph, keepsFeatureAxis, traceBack } from '../../src/onnx/graph.js';
import { bytesToFloat32, openOnnxModel } from '../../src/onnx/model-file.js';
import { DataType } from '../../src/onnx/proto.js';
import { Session, tensor } from '../../src/runtime/ort.js';
import { EditError, ModelFormatError } from '../../src/util/errors.js';
import { fromHalf, toHalf } from '../../src/util/half.js';
import { randomFloats, tempDir } from '../onnx/helpers.js';
import { buildMiniUnet, type MiniUnetOptions, SD_LIKE_SITES } from './mini-unet.js';

const tmp = tempDir('sites');
after(tmp.cleanup);
let counter = 0;

function mini(o: MiniUnetOptions, save: Parameters<typeof buildMiniUnet>[2] = {}) {
  const dir = join(tmp.dir, `m${counter++}`);
  const torch = buildMiniUnet(dir, o, save);
  const unet = openOnnxModel(join(dir, 'model.onnx'));
  return { dir, torch, unet, model: { unet, d: o.d } };
}

describe('moduleFromNodeName', () => {
  test('exporter node names give the diffusers module and projection', () => {
    assert.deepEqual(moduleFromNodeName('/down_blocks.1/attentions.0/transformer_blocks.0/attn2/to_k/MatMul'), {
      module: 'down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k',
      projection: 'to_k',
    });
    assert.deepEqual(
      moduleFromNodeName('/mid_block/attentions.0/transformer_blocks.0/attn2/to_v/MatMul_1')?.module,
      'mid_block.attentions.0.transformer_blocks.0.attn2.to_v',
    );
    assert.equal(moduleFromNodeName('/MatMul_12'), undefined);
    assert.equal(moduleFromNodeName('/down_blocks.0/attentions.0/transformer_blocks.0/attn2/to_q/MatMul'), undefined);
  });
});

describe('graph tracing', () => {
  test('producers, consumers, forward closure through row-preserving ops, trace back', () => {
    const { unet } = mini({ d: 12, sites: SD_LIKE_SITES.slice(0, 1), path: 'identity' });
    const index = indexGraph(unet.graph);
    assert.ok(index.inputs.has('encoder_hidden_states') && index.inputs.has('sample'));
    assert.equal(index.producers.get('/ehs/Identity_output_0')?.opType, 'Identity');
    assert.equal(index.consumers.get('/ehs/Identity_output_0')?.length, 2);
    const derived = forwardClosure(index, 'encoder_hidden_states', keepsFeatureAxis);
    assert.deepEqual([...derived], ['encoder_hidden_states', '/ehs/Identity_output_0']);
    assert.equal(
      traceBack(index, '/ehs/Identity_output_0', (n) => n.opType === 'Identity'),
      'encoder_hidden_states',
    );
    assert.equal(keepsFeatureAxis({ opType: 'Transpose', attribute: [{ name: 'perm', ints: [0, 2, 1] }] }), false);
    assert.equal(keepsFeatureAxis({ opType: 'Transpose', attribute: [{ name: 'perm', ints: [1, 0, 2] }] }), true);
    assert.equal(keepsFeatureAxis({ opType: 'Transpose' }), false);
  });
});

describe('locateSites', () => {
  test('exporter layout: MatMul with [d, out] weights, named after the diffusers modules', () => {
    const { model } = mini({ d: 12, sites: SD_LIKE_SITES });
    const sites = locateSites(model);
    assert.equal(sites.length, 6);
    assert.deepEqual(
      sites.map((s) => s.name),
      SD_LIKE_SITES.flatMap((s) => [`${s.module}.to_k`, `${s.module}.to_v`]),
    );
    for (const s of sites) {
      assert.equal(s.layout, 'transposed');
      assert.equal(s.opType, 'MatMul');
      assert.equal(s.d, 12);
      assert.match(s.initializer, /^onnx::MatMul_\d+$/);
      assert.deepEqual(s.storedDims, [12, s.out]);
    }
    assert.deepEqual(
      sites.map((s) => s.out),
      [8, 8, 16, 16, 8, 8],
    );
    // self-attention-like to_q (its activation is `sample`) is not a site
    assert.ok(!sites.some((s) => s.nodeName.includes('to_q')));
    // JSON-serializable
    assert.deepEqual(JSON.parse(JSON.stringify(sites)), sites);
  });

  for (const path of ['identity', 'cast'] as const) {
    test(`encoder_hidden_states through ${path}`, () => {
      assert.equal(locateSites(mini({ d: 12, sites: SD_LIKE_SITES, path }).model).length, 6);
    });
  }

  test("Gemm with transB = 1 is 'direct' [out, d]; transB = 0 is 'transposed'", () => {
    const direct = locateSites(mini({ d: 12, sites: SD_LIKE_SITES, op: 'gemm' }).model);
    assert.equal(direct.length, 6);
    for (const s of direct) {
      assert.equal(s.layout, 'direct');
      assert.deepEqual(s.storedDims, [s.out, 12]);
    }
    const t = locateSites(mini({ d: 12, sites: SD_LIKE_SITES, op: 'gemm-t' }).model);
    assert.ok(t.every((s) => s.layout === 'transposed' && s.opType === 'Gemm'));
  });

  test('unnamed nodes: names from the initializer, key/value from the graph (softmax side = value)', () => {
    const { model } = mini({ d: 12, sites: SD_LIKE_SITES, names: false });
    const sites = locateSites(model);
    assert.equal(sites.length, 6);
    assert.deepEqual(
      sites.map((s) => s.projection),
      ['to_k', 'to_v', 'to_k', 'to_v', 'to_k', 'to_v'],
    );
    for (const s of sites) assert.equal(s.name, `${s.initializer.replace(/[^A-Za-z0-9_.]+/g, '_')}.${s.projection}`);
  });

  test('no sites: the message says what was searched', () => {
    const { model } = mini({ d: 12, sites: SD_LIKE_SITES, path: 'layernorm' });
    assert.throws(
      () => locateSites(model),
      (e: Error) =>
        e instanceof ModelFormatError &&
        /no cross-attention sites found/.test(e.message) &&
        /MatMul\/Gemm/.test(e.message) &&
        /d = 12/.test(e.message),
    );
  });

  test('d mismatch: weights next to encoder_hidden_states without a dimension d', () => {
    const { unet } = mini({ d: 12, sites: SD_LIKE_SITES });
    assert.throws(
      () => locateSites({ unet, d: 20 }),
      (e: Error) => e instanceof ModelFormatError && /text width mismatch/.test(e.message) && /d = 20/.test(e.message),
    );
  });

  test('packed K/V: a Split after one projection is refused', () => {
    const { model } = mini({ d: 12, sites: SD_LIKE_SITES, packed: 'split', names: false });
    assert.throws(
      () => locateSites(model),
      (e: Error) =>
        e instanceof ModelFormatError && /packs the key and value/.test(e.message) && /Split/.test(e.message),
    );
  });

  test('packed K/V: a fused MultiHeadAttention taking packed key/value is refused', () => {
    const { model } = mini({ d: 12, sites: SD_LIKE_SITES, packed: 'mha', names: false });
    assert.throws(
      () => locateSites(model),
      (e: Error) => e instanceof ModelFormatError && /MultiHeadAttention/.test(e.message),
    );
  });

  test('packed K/V: a to_kv node name is refused', () => {
    const { model } = mini({ d: 12, sites: SD_LIKE_SITES, packed: 'split' });
    assert.throws(
      () => locateSites(model),
      (e: Error) => e instanceof ModelFormatError && /packed projection/.test(e.message),
    );
  });

  test('the UNet must have encoder_hidden_states', () => {
    const { unet } = mini({ d: 12, sites: SD_LIKE_SITES });
    const renamed = {
      ...unet,
      graph: { ...unet.graph, input: unet.graph.input?.filter((i) => i.name !== 'encoder_hidden_states') },
    };
    assert.throws(
      () => locateSites({ unet: { ...renamed, graph: renamed.graph } as typeof unet, d: 12 }),
      ModelFormatError,
    );
  });
});

describe('readSiteWeight / toStoredBytes', () => {
  for (const op of ['matmul', 'gemm', 'gemm-t'] as const) {
    for (const precision of ['float32', 'float16'] as const) {
      test(`${op} ${precision}: torch layout [out, d], stored layout round trip, and W·c matches onnxruntime`, async () => {
        const { torch, model, dir } = mini(
          { d: 12, sites: SD_LIKE_SITES.slice(0, 1), op, precision },
          { externalData: { location: 'weights.pb', threshold: 64 } },
        );
        const sites = locateSites(model);
        const round = (x: Float32Array) => (precision === 'float16' ? fromHalf(toHalf(x)) : x);
        for (const site of sites) {
          const W = readSiteWeight(model, site);
          assert.deepEqual(Array.from(W), Array.from(round(torch.get(site.name) as Float32Array)), site.name);
          // toStoredBytes(readSiteWeight) gives back the stored tensor exactly
          const init = model.unet.initializerByName.get(site.initializer);
          const stored = toStoredBytes(site, W);
          assert.equal(stored.byteLength, init?.byteLength);
          assert.deepEqual(
            Array.from(bytesToFloat32(stored, site.dataType)),
            Array.from(readStored(model.unet, site.initializer)),
          );
        }
        // onnxruntime computes K = W c with the same W
        const session = await Session.create(join(dir, 'model.onnx'));
        try {
          const c = randomFloats(4 * 12, 77);
          const s = randomFloats(4 * 8, 78);
          const feed = (x: Float32Array, dims: number[]) =>
            precision === 'float16' ? tensor('float16', toHalf(x), dims) : tensor('float32', x, dims);
          const outs = await session.run({ encoder_hidden_states: feed(c, [1, 4, 12]), sample: feed(s, [1, 4, 8]) });
          const k = sites[0]!;
          const W = readSiteWeight(model, k);
          const kOut = outputOf(outs, sites, k.name, precision);
          const cr = round(c);
          for (let t = 0; t < 4; t++) {
            for (let j = 0; j < k.out; j++) {
              let sum = 0;
              for (let i = 0; i < 12; i++) sum += (W[j * 12 + i] as number) * (cr[t * 12 + i] as number);
              assert.ok(
                Math.abs(sum - (kOut[t * k.out + j] as number)) < (precision === 'float16' ? 2e-2 : 1e-5),
                `${t},${j}`,
              );
            }
          }
        } finally {
          await session.dispose();
        }
      });
    }
  }

  test('toStoredBytes refuses a weight of the wrong size', () => {
    const { model } = mini({ d: 12, sites: SD_LIKE_SITES.slice(0, 1) });
    const [site] = locateSites(model);
    assert.throws(
      () => toStoredBytes(site!, new Float32Array(7)),
      (e: Error) => e instanceof EditError && /expected out × d = 8 × 12 = 96/.test(e.message),
    );
    assert.equal(site!.dataType, DataType.FLOAT);
  });
});

/** The stored tensor read straight from the external data file (independent of the reader under test). */
function readStored(unet: ReturnType<typeof openOnnxModel>, name: string): Float32Array {
  const init = unet.initializerByName.get(name);
  if (init?.storage.kind !== 'external') throw new Error(`${name}: expected external data`);
  const { path, offset, length } = init.storage;
  return bytesToFloat32(readFileSync(path).subarray(offset, offset + length), init.dataType);
}

/** The K output of the first site: the graph output produced (directly or via Reshape) by its node. */
function outputOf(
  outs: Record<string, { data: unknown }>,
  sites: ReturnType<typeof locateSites>,
  name: string,
  precision: 'float32' | 'float16',
): Float32Array {
  const site = sites.find((s) => s.name === name);
  const key = Object.keys(outs).find((k) => site && k.startsWith(site.nodeName.replace(/\/(MatMul|Gemm)$/, '/')));
  const data = outs[key ?? '']?.data;
  if (!data) throw new Error(`no output for ${name}: ${Object.keys(outs).join(', ')}`);
  return precision === 'float16' ? fromHalf(data as Uint16Array) : (data as Float32Array);
}
