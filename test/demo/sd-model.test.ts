import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { after, describe, test } from 'node:test';
import {
  buildTinySdModel,
  resolveTinySdOptions,
  SD1_SITE_LAYOUT,
  sd1AlphasCumprod,
  TINY_SD_VERSION,
  type TinySdManifest,
  type TinySdOptions,
} from '../../src/demo/sd-model.js';
import { DATA_TYPE_NAMES, decodeModel, type NodeProto, type TensorProto, toNumber } from '../../src/onnx/proto.js';
import { Session, type Tensor, tensor } from '../../src/runtime/ort.js';
import { UsageError } from '../../src/util/errors.js';
import { fromHalf, toHalf } from '../../src/util/half.js';

const root = mkdtempSync(join(tmpdir(), 'tiny-sd-test-'));
after(() => rmSync(root, { recursive: true, force: true }));
let counter = 0;
function build(options: TinySdOptions = {}): { dir: string; m: TinySdManifest } {
  const dir = join(root, `m${counter++}`);
  return { dir, m: buildTinySdModel(dir, options) };
}

function listFiles(dir: string): string[] {
  const out: string[] = [];
  const walk = (p: string) => {
    for (const name of readdirSync(p)) {
      const full = join(p, name);
      if (statSync(full).isDirectory()) walk(full);
      else out.push(relative(dir, full));
    }
  };
  walk(dir);
  return out.sort();
}

function floats(type: string, values: number[], dims: number[]): Tensor {
  return type === 'float16'
    ? tensor('float16', toHalf(values), dims)
    : tensor('float32', Float32Array.from(values), dims);
}

function asNumbers(t: Tensor): number[] {
  return t.type === 'float16' ? Array.from(fromHalf(t.data as Uint16Array)) : Array.from(t.data as Float32Array);
}

function promptIds(m: TinySdManifest, words: string[]): number[] {
  const vocab = JSON.parse(readFileSync(join(dirOf.get(m) as string, 'tokenizer/vocab.json'), 'utf8')) as Record<
    string,
    number
  >;
  const ids = [m.bosTokenId, ...words.map((w) => vocab[`${w}</w>`] as number), m.eosTokenId];
  while (ids.length < 77) ids.push(m.padTokenId);
  return ids;
}
const dirOf = new Map<TinySdManifest, string>();

function readGraph(path: string): { node: NodeProto[]; initializer: TensorProto[]; opset: number } {
  const model = decodeModel(readFileSync(path));
  assert.ok(model.graph);
  return {
    node: model.graph.node ?? [],
    initializer: model.graph.initializer ?? [],
    opset: toNumber(model.opsetImport?.[0]?.version as number),
  };
}

/** Run every part of the folder once with inputs of the session's own dtypes; check outputs. */
async function runAllParts(dir: string, m: TinySdManifest, batch = 2): Promise<void> {
  const T = m.options.precision;
  const latent = m.options.latentSize;
  // text encoder
  const te = await Session.create(join(dir, 'text_encoder/model.onnx'), { threads: 1 });
  try {
    assert.deepEqual(
      te.inputs.map((i) => [i.name, i.type]),
      [['input_ids', m.options.idsType]],
    );
    assert.deepEqual(
      te.outputs.map((o) => [o.name, o.type]),
      [
        ['last_hidden_state', T],
        ['pooler_output', T],
      ],
    );
    const ids = [...promptIds(m, ['a', 'photo', 'of', 'a', 'doctor']), ...promptIds(m, ['a', 'nurse'])];
    const feed =
      m.options.idsType === 'int32'
        ? tensor('int32', Int32Array.from(ids), [2, 77])
        : tensor('int64', BigInt64Array.from(ids.map(BigInt)), [2, 77]);
    const out = await te.run({ input_ids: feed });
    const last = out.last_hidden_state as Tensor;
    const pooled = out.pooler_output as Tensor;
    assert.deepEqual(last.dims, [2, 77, m.d]);
    assert.deepEqual(pooled.dims, [2, m.d]);
    assert.equal(last.type, T);
    // pooler_output is the row at the EOS position (argmax of the ids): position 6 and 3
    const lh = asNumbers(last);
    const po = asNumbers(pooled);
    for (const [b, eos] of [
      [0, 6],
      [1, 3],
    ] as const) {
      for (let k = 0; k < m.d; k++) assert.equal(po[b * m.d + k], lh[(b * 77 + eos) * m.d + k]);
    }
    assert.ok(lh.every(Number.isFinite));
  } finally {
    await te.dispose();
  }
  // UNet
  const unet = await Session.create(join(dir, 'unet/model.onnx'), { threads: 1 });
  try {
    const tsType = m.options.timestep === 'int64[b]' ? 'int64' : T;
    assert.deepEqual(
      unet.inputs.map((i) => [i.name, i.type]),
      [
        ['sample', T],
        ['timestep', tsType],
        ['encoder_hidden_states', T],
      ],
    );
    assert.deepEqual(unet.input('timestep')?.shape, m.options.timestep === 'scalar' ? [] : ['batch']);
    assert.deepEqual(
      unet.outputs.map((o) => [o.name, o.type]),
      [['out_sample', T]],
    );
    const n = batch * 4 * latent * latent;
    const sample = floats(
      T,
      Array.from({ length: n }, (_, i) => Math.sin(i * 0.37)),
      [batch, 4, latent, latent],
    );
    const ehs = floats(
      T,
      Array.from({ length: batch * 77 * m.d }, (_, i) => Math.cos(i * 0.11)),
      [batch, 77, m.d],
    );
    const timestep =
      m.options.timestep === 'scalar'
        ? floats(T, [501], [])
        : m.options.timestep === 'int64[b]'
          ? tensor('int64', BigInt64Array.from(Array.from({ length: batch }, () => 501n)), [batch])
          : floats(
              T,
              Array.from({ length: batch }, () => 501),
              [batch],
            );
    const out = (await unet.run({ sample, timestep, encoder_hidden_states: ehs })).out_sample as Tensor;
    assert.deepEqual(out.dims, [batch, 4, latent, latent]);
    assert.equal(out.type, T);
    const v = asNumbers(out);
    assert.ok(v.every(Number.isFinite));
    assert.ok(v.some((x) => x !== 0));
  } finally {
    await unet.dispose();
  }
  // VAE decoder / encoder
  const dec = await Session.create(join(dir, 'vae_decoder/model.onnx'), { threads: 1 });
  try {
    const z = floats(
      T,
      Array.from({ length: batch * 4 * latent * latent }, (_, i) => Math.sin(i)),
      [batch, 4, latent, latent],
    );
    const img = (await dec.run({ latent_sample: z })).sample as Tensor;
    assert.deepEqual(img.dims, [batch, 3, 8 * latent, 8 * latent]);
    assert.equal(img.type, T);
    assert.ok(asNumbers(img).every((x) => x >= -1 && x <= 1));
  } finally {
    await dec.dispose();
  }
  const enc = await Session.create(join(dir, 'vae_encoder/model.onnx'), { threads: 1 });
  try {
    const x = floats(
      T,
      Array.from({ length: batch * 3 * 64 * latent * latent }, (_, i) => Math.sin(i * 0.01)),
      [batch, 3, 8 * latent, 8 * latent],
    );
    const lat = (await enc.run({ sample: x })).latent_sample as Tensor;
    assert.deepEqual(lat.dims, [batch, 4, latent, latent]);
    assert.equal(lat.type, T);
  } finally {
    await enc.dispose();
  }
}

const VARIANTS: [string, TinySdOptions][] = [
  ['diffusers fp32 (weights.pb, int32 ids, float[b] timestep)', {}],
  ['optimum fp32 (model.onnx_data, int64 ids, scalar timestep, opset 18)', { flavor: 'optimum' }],
  ['diffusers fp16', { precision: 'float16' }],
  ['optimum fp16 with identity path', { flavor: 'optimum', precision: 'float16', identityPath: true }],
  ['SD2-style d=1024, pad "!"', { sd2: true, sites: 4 }],
  [
    'inline weights, int64[b] timestep, int64 ids',
    { externalData: 'inline', timestep: 'int64[b]', idsType: 'int64', sites: 3 },
  ],
  ['2 sites, latent 4', { sites: 2, latentSize: 4 }],
];

describe('buildTinySdModel: every variant loads in onnxruntime-node and runs', () => {
  for (const [label, options] of VARIANTS) {
    test(label, async () => {
      const { dir, m } = build(options);
      dirOf.set(m, dir);
      assert.deepEqual(listFiles(dir), m.files);
      await runAllParts(dir, m);
    });
  }
});

describe('folder layout and config files', () => {
  test('diffusers flavour: model_index.json, tokenizer, scheduler as the export script writes them', () => {
    const { dir, m } = build({ sites: 2 });
    const index = JSON.parse(readFileSync(join(dir, 'model_index.json'), 'utf8'));
    assert.equal(index._class_name, 'OnnxStableDiffusionPipeline');
    for (const part of ['text_encoder', 'unet', 'vae_decoder', 'vae_encoder'])
      assert.deepEqual(index[part], ['diffusers', 'OnnxRuntimeModel']);
    assert.deepEqual(index.tokenizer, ['transformers', 'CLIPTokenizer']);
    assert.deepEqual(index.scheduler, ['diffusers', 'PNDMScheduler']);
    assert.deepEqual(index.safety_checker, [null, null]);
    assert.deepEqual(index.feature_extractor, [null, null]);
    const sched = JSON.parse(readFileSync(join(dir, 'scheduler/scheduler_config.json'), 'utf8'));
    assert.deepEqual(
      {
        beta_start: sched.beta_start,
        beta_end: sched.beta_end,
        beta_schedule: sched.beta_schedule,
        num_train_timesteps: sched.num_train_timesteps,
        steps_offset: sched.steps_offset,
        skip_prk_steps: sched.skip_prk_steps,
        set_alpha_to_one: sched.set_alpha_to_one,
        timestep_spacing: sched.timestep_spacing,
        prediction_type: sched.prediction_type,
        clip_sample: sched.clip_sample,
      },
      {
        beta_start: 0.00085,
        beta_end: 0.012,
        beta_schedule: 'scaled_linear',
        num_train_timesteps: 1000,
        steps_offset: 1,
        skip_prk_steps: true,
        set_alpha_to_one: false,
        timestep_spacing: 'leading',
        prediction_type: 'epsilon',
        clip_sample: false,
      },
    );
    const merges = readFileSync(join(dir, 'tokenizer/merges.txt'), 'utf8').split('\n');
    assert.equal(merges[0], '#version: 0.2');
    const cfg = JSON.parse(readFileSync(join(dir, 'tokenizer/tokenizer_config.json'), 'utf8'));
    assert.equal(cfg.model_max_length, 77);
    assert.equal(cfg.tokenizer_class, 'CLIPTokenizer');
    assert.equal(cfg.bos_token.content, '<|startoftext|>');
    assert.equal(cfg.eos_token.content, '<|endoftext|>');
    assert.equal(cfg.pad_token.content, '<|endoftext|>');
    assert.equal(m.padToken, '<|endoftext|>');
    assert.equal(m.padTokenId, m.eosTokenId);
    const vocab = JSON.parse(readFileSync(join(dir, 'tokenizer/vocab.json'), 'utf8')) as Record<string, number>;
    assert.equal(Object.keys(vocab).length, m.vocabSize);
    assert.equal(vocab['doctor</w>'] !== undefined, true);
    assert.equal(vocab['<|endoftext|>'], m.vocabSize - 1);
  });

  test('SD2 variant pads with "!" (id 0) and uses d = 1024', () => {
    const { dir, m } = build({ sd2: true, sites: 1 });
    assert.equal(m.d, 1024);
    assert.equal(m.padToken, '!');
    assert.equal(m.padTokenId, 0);
    const special = JSON.parse(readFileSync(join(dir, 'tokenizer/special_tokens_map.json'), 'utf8'));
    assert.equal(special.pad_token, '!');
  });

  test('optimum flavour: StableDiffusionPipeline model_index, config.json per model, model.onnx_data', () => {
    const { dir, m } = build({ flavor: 'optimum', sites: 2 });
    const index = JSON.parse(readFileSync(join(dir, 'model_index.json'), 'utf8'));
    assert.equal(index._class_name, 'StableDiffusionPipeline');
    assert.deepEqual(index.unet, ['diffusers', 'UNet2DConditionModel']);
    assert.deepEqual(index.text_encoder, ['transformers', 'CLIPTextModel']);
    for (const f of [
      'unet/config.json',
      'text_encoder/config.json',
      'vae_decoder/config.json',
      'vae_encoder/config.json',
      'unet/model.onnx_data',
    ]) {
      assert.ok(m.files.includes(f), f);
    }
    const unetCfg = JSON.parse(readFileSync(join(dir, 'unet/config.json'), 'utf8'));
    assert.equal(unetCfg.cross_attention_dim, m.d);
    assert.equal(readGraph(join(dir, 'unet/model.onnx')).opset, 18);
  });
});

describe('UNet cross-attention sites have the exporter structure', () => {
  test('default layout: 16 sites, anonymous transposed [d, out] weights fed by encoder_hidden_states', () => {
    const { dir, m } = build();
    assert.equal(m.sites.length, 16);
    assert.deepEqual(
      m.sites.map((s) => s.width),
      SD1_SITE_LAYOUT.map((s) => s.width),
    );
    const graph = readGraph(join(dir, 'unet/model.onnx'));
    const inits = new Map(graph.initializer.map((t) => [t.name, t]));
    const nodes = new Map(graph.node.map((n) => [n.name, n]));
    const anonNames = new Set<string>();
    for (const site of m.sites) {
      assert.match(
        site.module,
        /^(down_blocks\.\d|mid_block|up_blocks\.\d)(\.attentions\.\d)\.transformer_blocks\.0\.attn2$/,
      );
      for (const proj of [site.toK, site.toV]) {
        const node = nodes.get(proj.node);
        assert.ok(node, proj.node);
        assert.equal(node.opType, 'MatMul');
        assert.equal(node.input?.[0], 'encoder_hidden_states');
        assert.equal(node.input?.[1], proj.initializer);
        assert.match(proj.initializer, /^onnx::MatMul_\d+$/);
        anonNames.add(proj.initializer);
        const t = inits.get(proj.initializer);
        assert.ok(t);
        assert.deepEqual(
          (t.dims ?? []).map((x) => toNumber(x)),
          [m.d, site.width],
        );
        assert.equal(DATA_TYPE_NAMES[t.dataType as number], 'float32');
        // large enough to go to weights.pb with the default 1 KB threshold
        assert.equal(t.dataLocation, 1);
        assert.equal(t.externalData?.find((e) => e.key === 'location')?.value, 'weights.pb');
      }
      const expectedNode = `/${site.module.replace(/\.(attentions|transformer_blocks)\./g, '/$1.').replace(/\.attn2$/, '/attn2')}/to_k/MatMul`;
      assert.equal(site.toK.node, expectedNode);
    }
    assert.equal(anonNames.size, 32, 'every site has its own anonymous initializers');
    assert.equal(m.sites[0]?.toK.node, '/down_blocks.0/attentions.0/transformer_blocks.0/attn2/to_k/MatMul');
    // attn1 (self-attention) is never fed by encoder_hidden_states
    for (const n of graph.node) {
      if (n.name?.includes('/attn1/')) assert.ok(!n.input?.includes('encoder_hidden_states'), n.name as string);
    }
    for (const name of [
      '/conv_in/Conv',
      '/conv_out/Conv',
      '/mid_block/attentions.0/transformer_blocks.0/attn2/to_v/MatMul',
    ]) {
      assert.ok(nodes.has(name), name);
    }
  });

  test('identityPath feeds to_k/to_v through an Identity node', () => {
    const { dir, m } = build({ identityPath: true, sites: 2 });
    const graph = readGraph(join(dir, 'unet/model.onnx'));
    const k = graph.node.find((n) => n.name === m.sites[0]?.toK.node);
    const id = graph.node.find((n) => n.output?.[0] === k?.input?.[0]);
    assert.equal(id?.opType, 'Identity');
    assert.deepEqual(id?.input, ['encoder_hidden_states']);
  });

  test('fp16 stores float16 initializers', () => {
    const { dir, m } = build({ precision: 'float16', sites: 1 });
    const graph = readGraph(join(dir, 'unet/model.onnx'));
    const t = graph.initializer.find((x) => x.name === m.sites[0]?.toV.initializer);
    assert.equal(DATA_TYPE_NAMES[t?.dataType as number], 'float16');
    const floatInits = graph.initializer.filter((x) => x.dataType === 1).map((x) => String(x.name));
    // only the timestep table and its clip bounds (float32 index arithmetic) stay float32
    assert.ok(
      floatInits.every(
        (n) => n.startsWith('/time_proj') || n === 'time_proj.alphas_cumprod' || n.startsWith('/decoder'),
      ),
      floatInits.join(','),
    );
  });
});

describe('determinism', () => {
  test('same options give byte-identical files; another seed changes the weights', () => {
    const hashAll = (dir: string, files: string[]) =>
      Object.fromEntries(
        files.map((f) => [
          f,
          createHash('sha256')
            .update(readFileSync(join(dir, f)))
            .digest('hex'),
        ]),
      );
    for (const options of [{}, { flavor: 'optimum', precision: 'float16' }] as TinySdOptions[]) {
      const a = build(options);
      const b = build(options);
      assert.deepEqual(hashAll(a.dir, a.m.files), hashAll(b.dir, b.m.files));
    }
    const a = build({ sites: 2 });
    const c = build({ sites: 2, seed: 7 });
    const ha = hashAll(a.dir, a.m.files);
    const hc = hashAll(c.dir, c.m.files);
    assert.notEqual(ha['unet/weights.pb'], hc['unet/weights.pb']);
    assert.equal(ha['tokenizer/vocab.json'], hc['tokenizer/vocab.json']);
  });

  test('the bytes are pinned per builder version (bump TINY_SD_VERSION when they change)', () => {
    // Other areas key stored goldens on TINY_SD_VERSION (test/generate/fixtures): a change of the
    // builder's output without a version bump would silently invalidate them.
    const PINNED: Record<number, Record<string, string>> = {
      1: {
        '{}': '85e6bf2f353e0650e65395ab81194fedfdc3e673a177ec42ab091df9db331621',
        '{"flavor":"optimum","precision":"float16"}':
          'df418b847bd770c86aba0d5d6bc0ffcc02f8d37de9a06ddf7cc07145e3f9a7dc',
      },
      // 2: the diffusers layout's model_index.json declares the native size (_time_debias)
      2: {
        '{}': '09de65344360031c1b48484e644fdaed70db7d5b128c5c1ad7e093575a8b6134',
        '{"flavor":"optimum","precision":"float16"}':
          'df418b847bd770c86aba0d5d6bc0ffcc02f8d37de9a06ddf7cc07145e3f9a7dc',
      },
    };
    const pins = PINNED[TINY_SD_VERSION];
    assert.ok(pins, `no pinned digests for TINY_SD_VERSION ${TINY_SD_VERSION}: add them`);
    for (const [key, want] of Object.entries(pins)) {
      const { dir, m } = build(JSON.parse(key) as TinySdOptions);
      const h = createHash('sha256');
      for (const f of m.files) {
        h.update(f);
        h.update(readFileSync(join(dir, f)));
      }
      assert.equal(
        h.digest('hex'),
        want,
        `tiny SD builder output for ${key} changed: bump TINY_SD_VERSION in src/demo/sd-model.ts and pin the new digests here`,
      );
    }
  });

  test('builds in well under a second', () => {
    const t0 = performance.now();
    build();
    assert.ok(performance.now() - t0 < 1000);
  });
});

describe('designed weights hook and the schedule', () => {
  test('design.param overrides exactly the parameters it returns', () => {
    const a = build({ sites: 1 });
    const key = 'unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_v.weight';
    let asked: number[] | undefined;
    const b = build({
      sites: 1,
      design: {
        name: 'test-design',
        param: (req) => {
          if (req.key !== key) return undefined;
          asked = req.dims;
          return new Float32Array(req.dims[0]! * req.dims[1]!).fill(0.25);
        },
      },
    });
    assert.deepEqual(asked, [32, 8]);
    assert.equal(b.m.options.design, 'test-design');
    const read = (dir: string, name: string) => {
      const t = readGraph(join(dir, 'unet/model.onnx')).initializer.find((x) => x.name === name);
      const off = Number(t?.externalData?.find((e) => e.key === 'offset')?.value);
      const len = Number(t?.externalData?.find((e) => e.key === 'length')?.value);
      const buf = readFileSync(join(dir, 'unet/weights.pb')).subarray(off, off + len);
      return new Float32Array(buf.buffer.slice(buf.byteOffset, buf.byteOffset + len));
    };
    assert.ok(read(b.dir, b.m.sites[0]!.toV.initializer).every((x) => x === 0.25));
    assert.deepEqual(read(a.dir, a.m.sites[0]!.toK.initializer), read(b.dir, b.m.sites[0]!.toK.initializer));
    assert.throws(
      () =>
        build({
          sites: 1,
          design: { name: 'bad', param: (req) => (req.key === key ? new Float32Array(3) : undefined) },
        }),
      /has 3 values/,
    );
  });

  test('alphas_cumprod follows the SD 1.x scaled_linear schedule', () => {
    const ac = sd1AlphasCumprod();
    assert.equal(ac.length, 1000);
    assert.ok(Math.abs((ac[0] as number) - (1 - 0.00085)) < 1e-12);
    assert.ok(Math.abs((ac[999] as number) - 0.0047) < 2e-4);
  });

  test('bad options are rejected with the argument named', () => {
    assert.throws(
      () => resolveTinySdOptions({ flavor: 'onnx' as never }),
      (e: Error) => e instanceof UsageError && /flavor/.test(e.message),
    );
    assert.throws(() => resolveTinySdOptions({ sites: 0 }), /sites: 0/);
    assert.throws(() => resolveTinySdOptions({ sites: [{ block: 'down.0', width: 8 }] }), /sites\[0\]\.block/);
    assert.throws(() => resolveTinySdOptions({ heads: 3 }), /not divisible by heads = 3/);
    assert.throws(() => resolveTinySdOptions({ words: ['two words'] }), /words/);
  });
});
