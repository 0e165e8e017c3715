import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { buildTinySdModel } from '../../src/demo/sd-model.js';
import {
  maxThreads,
  SESSION_MEMORY_DEFAULTS,
  Session,
  type SessionTuning,
  tensor,
  validateThreads,
} from '../../src/runtime/ort.js';
import { UsageError } from '../../src/util/errors.js';

const root = mkdtempSync(join(tmpdir(), 'ort-test-'));
after(() => rmSync(root, { recursive: true, force: true }));

test('memory options (arena, memory pattern, pre-packing) change where tensors live, not the results', async () => {
  assert.deepEqual({ ...SESSION_MEMORY_DEFAULTS }, { memArena: true, memPattern: false, prepack: true });
  buildTinySdModel(root, { d: 16 });
  const feeds = () => ({
    sample: tensor(
      'float32',
      Float32Array.from({ length: 2 * 4 * 8 * 8 }, (_, i) => Math.sin(i)),
      [2, 4, 8, 8],
    ),
    timestep: tensor('float32', Float32Array.from([500, 500]), [2]),
    encoder_hidden_states: tensor(
      'float32',
      Float32Array.from({ length: 2 * 77 * 16 }, (_, i) => Math.cos(i)),
      [2, 77, 16],
    ),
  });
  const outputs: Float32Array[] = [];
  const variants: SessionTuning[] = [
    {},
    { memArena: true, memPattern: true },
    { memArena: false, memPattern: false, prepack: false },
    { optimization: 'extended' },
  ];
  for (const tuning of variants) {
    const s = await Session.create(join(root, 'unet', 'model.onnx'), { ...tuning, threads: 1 });
    try {
      // twice: the second run is the one that uses the memory pattern
      await s.run(feeds());
      const out = (await s.run(feeds())).out_sample?.data as Float32Array;
      outputs.push(out);
    } finally {
      await s.dispose();
    }
  }
  const first = outputs[0] as Float32Array;
  for (const [k, out] of outputs.entries()) {
    assert.equal(out.length, first.length);
    for (let i = 0; i < out.length; i++) {
      assert.ok(Math.abs((out[i] as number) - (first[i] as number)) <= 1e-5, `variant ${k}, element ${i}`);
    }
  }
});

test('intra-op threads: an integer from 0 to 4 × the CPUs; more is refused before onnxruntime starts a thread', async () => {
  const max = maxThreads();
  assert.equal(max % 4, 0);
  assert.equal(validateThreads(undefined), undefined);
  assert.equal(validateThreads(0), 0);
  assert.equal(validateThreads(max), max);
  for (const bad of [-1, 1.5, '2', max + 1, 100000]) {
    assert.throws(
      () => validateThreads(bad),
      (e: Error) => e instanceof UsageError && (e as UsageError).field === 'threads',
      String(bad),
    );
  }
  assert.throws(
    () => validateThreads(100000),
    /threads: 100000 is more than \d+ \(rule: at most 4 × the \d+ CPUs here/,
  );
  // the session refuses it before loading anything (the model path does not even exist)
  await assert.rejects(
    Session.create(join(tmpdir(), 'no-such-model.onnx'), { threads: 100000 }),
    (e: Error) => e instanceof UsageError && /^threads: 100000 is more than/.test(e.message),
  );
});
