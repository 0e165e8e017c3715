import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { GraphBuilder } from '../../src/onnx/build.js';
import { graphIo, readModelIo } from '../../src/onnx/io.js';
import { openOnnxModel } from '../../src/onnx/model-file.js';
import { ModelFormatError } from '../../src/util/errors.js';
import { randomFloats, rewriteModel, tempDir } from './helpers.js';

const tmp = tempDir('onnx-io');
after(tmp.cleanup);

function model(name: string, big = false): string {
  const g = new GraphBuilder();
  g.input('input_ids', 'int64', ['batch', 77]);
  g.initializer('E', 'float32', [big ? 4096 : 8, 16], randomFloats((big ? 4096 : 8) * 16, 1));
  g.node('Gather', ['E', 'input_ids'], ['last_hidden_state'], {}, '/Gather');
  g.output('last_hidden_state', 'float32', ['batch', 77, 16]);
  const dir = join(tmp.dir, name);
  g.save(dir, 'model.onnx', { opset: 18 });
  return join(dir, 'model.onnx');
}

describe('readModelIo', () => {
  test('inputs and outputs with dtypes and shapes, opset, without decoding initializers', () => {
    const path = model('plain', true);
    const io = readModelIo(path);
    assert.deepEqual(io.inputs, [{ name: 'input_ids', dtype: 'int64', shape: ['batch', 77] }]);
    assert.deepEqual(io.outputs, [{ name: 'last_hidden_state', dtype: 'float32', shape: ['batch', 77, 16] }]);
    assert.equal(io.opset, 18);
    assert.equal(io.irVersion, 8);
    // the same as from the decoded graph
    assert.deepEqual(graphIo(openOnnxModel(path).graph), { inputs: io.inputs, outputs: io.outputs });
  });

  test('initializers listed among the inputs (older IR) are not inputs', () => {
    const path = model('old-ir');
    rewriteModel(path, (m) => {
      m.graph?.input?.push({
        name: 'E',
        type: { tensorType: { elemType: 1, shape: { dim: [{ dimValue: 8 }, { dimValue: 16 }] } } },
      });
    });
    assert.deepEqual(
      readModelIo(path).inputs.map((i) => i.name),
      ['input_ids'],
    );
  });

  test('missing, empty and non-ONNX files are ModelFormatErrors naming the file', () => {
    assert.throws(
      () => readModelIo(join(tmp.dir, 'absent.onnx')),
      (e: Error) => e instanceof ModelFormatError && e.message.includes('absent.onnx'),
    );
    for (const [name, bytes] of [
      ['empty.onnx', new Uint8Array(0)],
      ['text.onnx', new TextEncoder().encode('hello, I am not a model')],
      ['cut.onnx', Uint8Array.from([0x3a, 0xff, 0xff, 0x01, 0x0a])],
    ] as const) {
      writeFileSync(join(tmp.dir, name), bytes);
      assert.throws(
        () => readModelIo(join(tmp.dir, name)),
        (e: Error) => e instanceof ModelFormatError && e.message.includes(name),
        name,
      );
    }
  });
});
