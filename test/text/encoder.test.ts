import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { GraphBuilder } from '../../src/onnx/build.js';
import { RuntimeError } from '../../src/runtime/ort.js';
import { buildWordVocab } from '../../src/text/bpe-files.js';
import { ClipTextEncoder, encodePrompts } from '../../src/text/encoder.js';
import { ClipTokenizer } from '../../src/text/tokenizer.js';
import { ModelFormatError, UsageError } from '../../src/util/errors.js';
import { fromHalf, toHalf } from '../../src/util/half.js';
import { tempDir } from './clip-vocab.js';

const L = 77;
const D = 8;
const WORDS = ['a', 'an', 'photo', 'of', 'nurse', 'male', 'female', 'doctor', 'cat'];
const BPE = buildWordVocab(WORDS);
const V = Object.keys(BPE.vocab).length;

/** Deterministic table values (a small LCG), so that every token row and position differs. */
function table(rows: number, cols: number, seed: number): Float32Array {
  const out = new Float32Array(rows * cols);
  let s = seed >>> 0;
  for (let i = 0; i < out.length; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = (s / 2 ** 32) * 2 - 1;
  }
  return out;
}
const TOKEN_EMBEDDING = table(V, D, 1);
const POSITION_EMBEDDING = table(L, D, 2);

interface EncoderSpec {
  ids: 'int32' | 'int64';
  float?: 'float32' | 'float16';
  pooled?: boolean;
  attentionMask?: boolean;
  batch?: number | string;
  sequence?: number | string;
  idsName?: string;
  hiddenName?: string;
}

/**
 * A tiny text encoder in the exporters' I/O format: last_hidden_state[b, t] = E[ids[b, t]] + P[t]
 * (token embedding + position embedding, CLIP's first layer), pooler_output = mean over t.
 */
function buildTextEncoder(dir: string, name: string, spec: EncoderSpec): string {
  const float = spec.float ?? 'float32';
  const g = new GraphBuilder('text_encoder');
  const idsName = spec.idsName ?? 'input_ids';
  const hiddenName = spec.hiddenName ?? 'last_hidden_state';
  g.input(idsName, spec.ids, [spec.batch ?? 'batch', spec.sequence ?? 'sequence']);
  if (spec.attentionMask) g.input('attention_mask', spec.ids, [spec.batch ?? 'batch', spec.sequence ?? 'sequence']);
  const tok = g.initializer('text_model.embeddings.token_embedding.weight', float, [V, D], TOKEN_EMBEDDING);
  const pos = g.initializer('text_model.embeddings.position_embedding.weight', float, [L, D], POSITION_EMBEDDING);
  const gathered = g.node('Gather', [tok, idsName], 1, { axis: 0 }, '/text_model/embeddings/token_embedding/Gather');
  let hidden = g.node('Add', [gathered, pos], 1, {}, '/text_model/embeddings/Add');
  if (spec.attentionMask) {
    const maskF = g.node('Cast', ['attention_mask'], 1, { to: float === 'float16' ? 10 : 1 }, '/mask/Cast');
    const axes = g.initializer('mask_axes', 'int64', [1], [2]);
    const mask3 = g.node('Unsqueeze', [maskF, axes], 1, {}, '/mask/Unsqueeze');
    hidden = g.node('Mul', [hidden, mask3], 1, {}, '/mask/Mul');
  }
  g.node('Identity', [hidden], [hiddenName], {}, '/text_model/final_layer_norm/Identity');
  g.output(hiddenName, float, [spec.batch ?? 'batch', spec.sequence ?? 'sequence', D]);
  if (spec.pooled ?? true) {
    g.node('ReduceMean', [hiddenName], ['pooler_output'], { axes: [1], keepdims: 0 }, '/text_model/ReduceMean');
    g.output('pooler_output', float, [spec.batch ?? 'batch', D]);
  }
  g.save(dir, `${name}.onnx`, { opset: 14 });
  return join(dir, `${name}.onnx`);
}

/** last_hidden_state computed here in float32 (or with float16 rounding of the operands and result). */
function expected(ids: readonly number[], float: 'float32' | 'float16' = 'float32'): Float32Array {
  const round =
    float === 'float16'
      ? (x: ArrayLike<number>) => fromHalf(toHalf(x))
      : (x: ArrayLike<number>) => Float32Array.from(x);
  const E = round(TOKEN_EMBEDDING);
  const P = round(POSITION_EMBEDDING);
  const out = new Float32Array(ids.length * D);
  ids.forEach((id, t) => {
    for (let k = 0; k < D; k++) out[t * D + k] = Math.fround((E[id * D + k] as number) + (P[t * D + k] as number));
  });
  return round(out);
}

function assertClose(actual: Float32Array, wanted: Float32Array, rel: number, abs: number, what: string): void {
  assert.equal(actual.length, wanted.length, `${what}: length`);
  for (let i = 0; i < actual.length; i++) {
    const a = actual[i] as number;
    const w = wanted[i] as number;
    if (Math.abs(a - w) > abs + rel * Math.abs(w)) assert.fail(`${what}[${i}]: ${a} vs ${w}`);
  }
}

function meanOverPositions(hidden: Float32Array): Float32Array {
  const out = new Float32Array(D);
  for (let t = 0; t < L; t++)
    for (let k = 0; k < D; k++) out[k] = (out[k] as number) + (hidden[t * D + k] as number) / L;
  return out;
}

describe('ClipTextEncoder', () => {
  const tmp = tempDir('text-encoder');
  const tokenizer = ClipTokenizer.fromBpe(BPE);
  const prompts = ['a photo of a nurse', 'a female doctor', '', 'a male nurse', 'a cat'];
  const idsBatch = prompts.map((p) => tokenizer.encode(p).ids);
  const paths: Record<string, string> = {};
  before(() => {
    paths.int32 = buildTextEncoder(tmp.dir, 'int32', { ids: 'int32' });
    paths.int64 = buildTextEncoder(tmp.dir, 'int64', { ids: 'int64' });
    paths.fp16 = buildTextEncoder(tmp.dir, 'fp16', { ids: 'int32', float: 'float16' });
    paths.mask = buildTextEncoder(tmp.dir, 'mask', { ids: 'int64', attentionMask: true, pooled: false });
    paths.batch1 = buildTextEncoder(tmp.dir, 'batch1', { ids: 'int64', batch: 1, sequence: L });
  });
  after(tmp.cleanup);

  for (const dtype of ['int32', 'int64'] as const) {
    test(`reads the ${dtype} input_ids dtype from the session and returns [n, 77, d] float32`, async () => {
      const encoder = await ClipTextEncoder.create(paths[dtype] as string);
      try {
        assert.equal(encoder.idsDtype, dtype);
        assert.equal(encoder.hiddenDtype, 'float32');
        assert.equal(encoder.hasPooled, true);
        const out = await encoder.encode(idsBatch);
        assert.deepEqual({ n: out.n, length: out.length, d: out.d }, { n: prompts.length, length: L, d: D });
        assert.equal(out.lastHiddenState.length, prompts.length * L * D);
        idsBatch.forEach((ids, i) => {
          const rows = out.lastHiddenState.subarray(i * L * D, (i + 1) * L * D);
          assert.deepEqual(rows, expected(ids), `prompt ${i}`);
          assertClose(out.pooled!.subarray(i * D, (i + 1) * D), meanOverPositions(rows), 1e-5, 1e-6, `pooled ${i}`);
        });
      } finally {
        await encoder.dispose();
      }
    });
  }

  test('float16 outputs are converted to float32', async () => {
    const encoder = await ClipTextEncoder.create(paths.fp16 as string);
    try {
      assert.equal(encoder.hiddenDtype, 'float16');
      const out = await encoder.encode(idsBatch);
      assert.ok(out.lastHiddenState instanceof Float32Array);
      assert.ok(out.pooled instanceof Float32Array);
      idsBatch.forEach((ids, i) => {
        assertClose(
          out.lastHiddenState.subarray(i * L * D, (i + 1) * L * D),
          expected(ids, 'float16'),
          1e-3,
          1e-3,
          `fp16 ${i}`,
        );
      });
    } finally {
      await encoder.dispose();
    }
  });

  test('batches of maxBatch give the same result as one batch', async () => {
    const one = await ClipTextEncoder.create(paths.int32 as string);
    const small = await ClipTextEncoder.create(paths.int32 as string, { maxBatch: 2, threads: 1 });
    try {
      const a = await one.encode(idsBatch);
      const b = await small.encode(idsBatch);
      assert.deepEqual(b.lastHiddenState, a.lastHiddenState);
      // The mean over positions may sum in another order per batch size: float32 tolerance.
      assertClose(b.pooled!, a.pooled!, 1e-6, 1e-7, 'pooled');
    } finally {
      await one.dispose();
      await small.dispose();
    }
  });

  test('an attention_mask input is fed with ones (SD pipelines do not mask padding)', async () => {
    const encoder = await ClipTextEncoder.create(paths.mask as string);
    try {
      assert.equal(encoder.hasPooled, false);
      const out = await encoder.encode(idsBatch);
      assert.equal(out.pooled, undefined);
      assert.deepEqual(out.lastHiddenState.subarray(0, L * D), expected(idsBatch[0] as number[]));
    } finally {
      await encoder.dispose();
    }
  });

  test('a model with a fixed batch of 1 and length 77 runs one prompt at a time', async () => {
    const encoder = await ClipTextEncoder.create(paths.batch1 as string);
    try {
      assert.equal(encoder.declaredLength, L);
      const out = await encoder.encode(idsBatch.slice(0, 3));
      assert.equal(out.n, 3);
      assert.deepEqual(out.lastHiddenState.subarray(2 * L * D), expected(idsBatch[2] as number[]));
      await assert.rejects(
        encoder.encode([[1, 2, 3]]),
        (e: unknown) => e instanceof UsageError && /takes 77/.test(e.message),
      );
    } finally {
      await encoder.dispose();
    }
  });

  test('encodePrompts returns per-prompt ids, tokens and [77·d] hidden rows', async () => {
    const encoder = await ClipTextEncoder.create(paths.int64 as string);
    try {
      const encoded = await encodePrompts(tokenizer, encoder, prompts);
      assert.equal(encoded.length, prompts.length);
      encoded.forEach((e, i) => {
        const t = tokenizer.encode(prompts[i] as string);
        assert.equal(e.prompt, prompts[i]);
        assert.deepEqual(e.ids, t.ids);
        assert.deepEqual(e.tokens, t.tokens);
        assert.equal(e.length, t.length);
        assert.equal(e.truncated, false);
        assert.equal(e.d, D);
        assert.deepEqual(e.hidden, expected(t.ids));
      });
      assert.equal(encoded[2]?.length, 2); // the unconditional prompt ""
      assert.deepEqual(await encodePrompts(tokenizer, encoder, []), []);
    } finally {
      await encoder.dispose();
    }
  });

  test('bad ids are rejected with a UsageError naming the sequence', async () => {
    const encoder = await ClipTextEncoder.create(paths.int32 as string);
    try {
      await assert.rejects(encoder.encode([]), UsageError);
      await assert.rejects(
        encoder.encode([idsBatch[0] as number[], [1, 2]]),
        (e: unknown) => e instanceof UsageError && /idsBatch\[1\]: has 2 ids/.test(e.message),
      );
      const bad = [...(idsBatch[0] as number[])];
      bad[3] = 1.5;
      await assert.rejects(encoder.encode([bad]), (e: unknown) => e instanceof UsageError && /id 1\.5/.test(e.message));
    } finally {
      await encoder.dispose();
    }
    await assert.rejects(encoder.encode(idsBatch), RuntimeError);
  });

  test('models that are not SD text encoders are refused with the reason', async () => {
    const cases: [string, EncoderSpec, RegExp][] = [
      ['no-ids', { ids: 'int32', idsName: 'tokens' }, /has no input "input_ids" \(its inputs: tokens\)/],
      [
        'no-hidden',
        { ids: 'int32', hiddenName: 'hidden', pooled: false },
        /has no output "last_hidden_state" \(its outputs: hidden\)/,
      ],
    ];
    for (const [name, spec, pattern] of cases) {
      const path = buildTextEncoder(tmp.dir, name, spec);
      await assert.rejects(
        ClipTextEncoder.create(path),
        (e: unknown) => e instanceof ModelFormatError && pattern.test(e.message),
      );
    }
    const missing = join(tmp.dir, 'missing.onnx');
    await assert.rejects(
      ClipTextEncoder.create(missing),
      (e: unknown) => e instanceof ModelFormatError && e.message.includes(missing),
    );
    await assert.rejects(ClipTextEncoder.create(paths.int32 as string, { maxBatch: 0 }), UsageError);
  });
});
