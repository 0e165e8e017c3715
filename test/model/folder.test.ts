import assert from 'node:assert/strict';
import { cpSync, mkdirSync, readFileSync, rmSync, symlinkSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { buildTinySdModel, type TinySdOptions } from '../../src/demo/sd-model.js';
import { openSdModel } from '../../src/model/folder.js';
import { locateSites } from '../../src/model/sites.js';
import { ModelFormatError } from '../../src/util/errors.js';
import { setExternalEntry, tempDir } from '../onnx/helpers.js';

const tmp = tempDir('folder');
after(tmp.cleanup);
let counter = 0;

function tiny(options: TinySdOptions = {}) {
  const dir = join(tmp.dir, `sd${counter++}`);
  const manifest = buildTinySdModel(dir, options);
  return { dir, manifest };
}

describe('openSdModel on the tiny real-format folders', () => {
  const variants: { label: string; options: TinySdOptions; expect: Record<string, unknown> }[] = [
    {
      label: 'diffusers, weights.pb, fp32, int32 ids',
      options: {},
      expect: { format: 'diffusers-onnx', precision: 'float32', d: 32, idsType: 'int32', ext: ['weights.pb'] },
    },
    {
      label: 'optimum, model.onnx_data, int64 ids, scalar timestep',
      options: { flavor: 'optimum' },
      expect: { format: 'optimum-onnx', precision: 'float32', d: 32, idsType: 'int64', ext: ['model.onnx_data'] },
    },
    {
      label: 'diffusers fp16 inline',
      options: { precision: 'float16', externalData: 'inline' },
      expect: { format: 'diffusers-onnx', precision: 'float16', d: 32, idsType: 'int32', ext: [] },
    },
    {
      label: 'SD2-style d = 1024, Identity on encoder_hidden_states',
      options: { sd2: true, identityPath: true },
      expect: { format: 'diffusers-onnx', precision: 'float32', d: 1024, idsType: 'int32', ext: ['weights.pb'] },
    },
    {
      label: 'optimum fp16 with weights.pb named data and int32 ids',
      options: { flavor: 'optimum', precision: 'float16', externalData: 'weights.pb', idsType: 'int32' },
      expect: { format: 'optimum-onnx', precision: 'float16', d: 32, idsType: 'int32', ext: ['weights.pb'] },
    },
  ];
  for (const v of variants) {
    test(v.label, () => {
      const { dir, manifest } = tiny(v.options);
      const model = openSdModel(dir);
      assert.equal(model.kind, 'sd-model');
      assert.equal(model.format, v.expect.format);
      assert.equal(model.precision, v.expect.precision);
      assert.equal(model.d, v.expect.d);
      assert.equal(model.idsType, v.expect.idsType);
      assert.deepEqual(
        model.unetExternalData.map((f) => f.location),
        v.expect.ext,
      );
      assert.equal(model.files.unet, join(dir, 'unet', 'model.onnx'));
      assert.equal(model.components.tokenizer, join(dir, 'tokenizer'));
      assert.equal(model.tokenizerLayout, 'vocab.json+merges.txt');
      assert.ok(model.files.vaeEncoder);
      // the sites are exactly the builder's to_k/to_v, by structure
      const sites = locateSites(model);
      const expected = manifest.sites.flatMap((s) => [
        { name: `${s.module}.to_k`, initializer: s.toK.initializer, node: s.toK.node, out: s.width },
        { name: `${s.module}.to_v`, initializer: s.toV.initializer, node: s.toV.node, out: s.width },
      ]);
      assert.equal(sites.length, 32);
      assert.deepEqual(
        sites.map((s) => ({ name: s.name, initializer: s.initializer, node: s.nodeName, out: s.out })),
        expected,
      );
      assert.ok(sites.every((s) => s.layout === 'transposed' && s.d === model.d && s.dtype === v.expect.precision));
    });
  }
});

describe('openSdModel refuses bad folders with the path in the message', () => {
  test('missing folder, a file instead of a folder', () => {
    assert.throws(
      () => openSdModel(join(tmp.dir, 'absent')),
      (e: Error) => e instanceof ModelFormatError && e.message.includes('absent') && /does not exist/.test(e.message),
    );
    const file = join(tmp.dir, 'a-file');
    writeFileSync(file, 'x');
    assert.throws(
      () => openSdModel(file),
      (e: Error) => e instanceof ModelFormatError && /is not a folder/.test(e.message),
    );
  });

  const missing: [string, RegExp][] = [
    ['model_index.json', /model_index\.json/],
    ['unet/model.onnx', /unet.*model\.onnx.*does not exist/],
    ['text_encoder/model.onnx', /text_encoder.*does not exist/],
    ['vae_decoder/model.onnx', /vae_decoder.*does not exist/],
    ['scheduler/scheduler_config.json', /scheduler_config\.json.*does not exist/],
    ['tokenizer/merges.txt', /neither vocab\.json \+ merges\.txt nor tokenizer\.json/],
    ['unet/weights.pb', /weights\.pb.*does not exist/],
  ];
  for (const [file, pattern] of missing) {
    test(`missing ${file}`, () => {
      const { dir } = tiny();
      rmSync(join(dir, file));
      assert.throws(
        () => openSdModel(dir),
        (e: Error) => e instanceof ModelFormatError && pattern.test(e.message),
        file,
      );
    });
  }

  test('a UNet or text encoder that is not an ONNX file', () => {
    const { dir } = tiny();
    writeFileSync(join(dir, 'unet', 'model.onnx'), 'definitely not protobuf \x00\xff\xff\xff');
    assert.throws(
      () => openSdModel(dir),
      (e: Error) => e instanceof ModelFormatError && /unet.*model\.onnx.*is not an ONNX model/.test(e.message),
    );
    const second = tiny().dir;
    writeFileSync(
      join(second, 'text_encoder', 'model.onnx'),
      Buffer.from([0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f, 1, 2, 3]),
    );
    assert.throws(
      () => openSdModel(second),
      (e: Error) => e instanceof ModelFormatError && /text_encoder.*is not an ONNX model/.test(e.message),
    );
  });

  test('truncated UNet external data', () => {
    const { dir } = tiny();
    const size = readFileSync(join(dir, 'unet', 'weights.pb')).byteLength;
    truncateSync(join(dir, 'unet', 'weights.pb'), size - 100);
    assert.throws(
      () => openSdModel(dir),
      (e: Error) => e instanceof ModelFormatError && /runs past the end/.test(e.message) && /truncated/.test(e.message),
    );
  });

  test("UNet external data location absolute, with '..', or a symlink out of the folder", () => {
    const cases: [string, (dir: string) => string, RegExp][] = [
      ['absolute', (dir) => join(dir, 'unet', 'weights.pb'), /absolute/],
      ['dotdot', () => '../unet/weights.pb', /'\.\.'/],
      [
        'symlink',
        (dir) => {
          cpSync(join(dir, 'unet', 'weights.pb'), join(dir, 'outside.pb'));
          symlinkSync(join(dir, 'outside.pb'), join(dir, 'unet', 'link.pb'));
          return 'link.pb';
        },
        /outside the model folder/,
      ],
    ];
    for (const [label, location, pattern] of cases) {
      const { dir } = tiny();
      const unet = join(dir, 'unet', 'model.onnx');
      const loc = location(dir);
      // point the first external initializer at the bad location
      const first = openSdModel(dir).unet.initializers.find((t) => t.storage.kind === 'external');
      setExternalEntry(unet, first?.name ?? '', 'location', loc);
      assert.throws(
        () => openSdModel(dir),
        (e: Error) => e instanceof ModelFormatError && pattern.test(e.message),
        label,
      );
    }
  });

  test('text width mismatch between the text encoder and the UNet', () => {
    const { dir } = tiny({ d: 32 });
    const other = tiny({ d: 48 }).dir;
    cpSync(join(other, 'text_encoder'), join(dir, 'text_encoder'), { recursive: true });
    assert.throws(
      () => openSdModel(dir),
      (e: Error) =>
        e instanceof ModelFormatError &&
        /text width mismatch/.test(e.message) &&
        /48/.test(e.message) &&
        /32/.test(e.message),
    );
  });

  test('tokenizer.json alone is accepted', () => {
    const { dir } = tiny();
    rmSync(join(dir, 'tokenizer', 'merges.txt'));
    rmSync(join(dir, 'tokenizer', 'vocab.json'));
    mkdirSync(join(dir, 'tokenizer'), { recursive: true });
    writeFileSync(join(dir, 'tokenizer', 'tokenizer.json'), '{}');
    assert.equal(openSdModel(dir).tokenizerLayout, 'tokenizer.json');
  });
});
