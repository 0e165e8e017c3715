import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { renderInspection } from '../../src/cli/commands/inspect.js';
import { buildTinySdModel } from '../../src/demo/sd-model.js';
import { inspectModel } from '../../src/model/inspect.js';
import { tempDir } from '../onnx/helpers.js';

const tmp = tempDir('inspect');
after(tmp.cleanup);
const BIN = fileURLToPath(new URL('../../bin/time-debias.js', import.meta.url));

describe('inspectModel', () => {
  test('format, precision, d, the 32 sites of 16 layers, editable share, external data', () => {
    const dir = join(tmp.dir, 'sd');
    const manifest = buildTinySdModel(dir);
    const r = inspectModel(dir);
    assert.equal(r.kind, 'model-inspection');
    assert.equal(r.format, 'diffusers-onnx');
    assert.equal(r.precision, 'float32');
    assert.equal(r.d, 32);
    assert.equal(r.sites.length, 32);
    assert.equal(r.crossAttentionLayers, 16);
    const expectedEditable = manifest.sites.reduce((s, x) => s + 2 * x.width * 32, 0);
    assert.equal(r.editableParameters, expectedEditable);
    assert.ok(r.unetParameters > r.editableParameters);
    assert.equal(r.editableShare, r.editableParameters / r.unetParameters);
    assert.deepEqual(r.sites[0], {
      name: 'down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k',
      projection: 'to_k',
      shape: [8, 32],
      layout: 'transposed',
      dtype: 'float32',
      nodeName: '/down_blocks.0/attentions.0/transformer_blocks.0/attn2/to_k/MatMul',
      initializer: manifest.sites[0]?.toK.initializer,
    });
    assert.equal(r.externalData.length, 1);
    assert.equal(r.externalData[0]?.file, join('unet', 'weights.pb'));
    assert.ok((r.externalData[0]?.bytes ?? 0) > 0);
    assert.deepEqual(JSON.parse(JSON.stringify(r)), r, 'JSON-serializable');
    const text = renderInspection(r);
    assert.match(text, /Text width d\s+32/);
    assert.match(text, /32 key\/value projections in 16 text cross-attention layers/);
    assert.match(text, /up_blocks\.3\.attentions\.2\.transformer_blocks\.0\.attn2\.to_v\s+to_v\s+8 × 32/);
  });
});

describe('time-debias inspect (CLI)', () => {
  test('--json prints the library result; a missing folder exits 3 naming it', () => {
    const dir = join(tmp.dir, 'cli');
    buildTinySdModel(dir, { flavor: 'optimum', precision: 'float16' });
    const json = spawnSync(process.execPath, [BIN, 'inspect', dir, '--json'], { encoding: 'utf8' });
    assert.equal(json.status, 0, json.stderr);
    assert.deepEqual(JSON.parse(json.stdout), inspectModel(dir));
    const missing = spawnSync(process.execPath, [BIN, 'inspect', join(tmp.dir, 'nope')], { encoding: 'utf8' });
    assert.equal(missing.status, 3);
    assert.match(missing.stderr, /ModelFormatError: model folder ".*nope" does not exist/);
    assert.equal(missing.stdout, '');
  });
});
