/** Tokenizer and text encoder on the project's tiny real-format SD model folders (src/demo/sd-model.ts). */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { buildTinySdModel, type TinySdOptions } from '../../src/demo/sd-model.js';
import { ClipTextEncoder, encodePrompts } from '../../src/text/encoder.js';
import { ClipTokenizer } from '../../src/text/tokenizer.js';
import { tempDir } from './clip-vocab.js';

const FLAVORS: [string, TinySdOptions, { idsDtype: string; hiddenDtype: string; pad: 'eos' | 'bang' }][] = [
  ['diffusers SD 1.x', {}, { idsDtype: 'int32', hiddenDtype: 'float32', pad: 'eos' }],
  ['optimum', { flavor: 'optimum' }, { idsDtype: 'int64', hiddenDtype: 'float32', pad: 'eos' }],
  ['SD 2.x (pad "!", d = 1024)', { sd2: true }, { idsDtype: 'int32', hiddenDtype: 'float32', pad: 'bang' }],
  ['float16', { precision: 'float16' }, { idsDtype: 'int32', hiddenDtype: 'float16', pad: 'eos' }],
];

describe('text encoding of tiny SD model folders', () => {
  const tmp = tempDir('tiny-sd-text');
  after(tmp.cleanup);

  for (const [name, options, want] of FLAVORS) {
    test(name, async () => {
      const dir = join(tmp.dir, name.replace(/\W+/g, '-'));
      const manifest = buildTinySdModel(dir, options);
      const tokenizer = await ClipTokenizer.fromFolder(join(dir, 'tokenizer'));
      assert.deepEqual(
        { bos: tokenizer.bosId, eos: tokenizer.eosId, pad: tokenizer.padId, vocab: tokenizer.vocabSize },
        { bos: manifest.bosTokenId, eos: manifest.eosTokenId, pad: manifest.padTokenId, vocab: manifest.vocabSize },
      );
      assert.equal(tokenizer.padId, want.pad === 'bang' ? 0 : tokenizer.eosId);
      // Every word of the model's vocabulary is one token.
      for (const word of manifest.options.words) assert.equal(tokenizer.tokenize(word).length, 1, word);

      const encoder = await ClipTextEncoder.create(join(dir, 'text_encoder', 'model.onnx'), { threads: 1 });
      try {
        assert.equal(encoder.idsDtype, want.idsDtype);
        assert.equal(encoder.hiddenDtype, want.hiddenDtype);
        const [nurse, doctor, empty] = await encodePrompts(tokenizer, encoder, [
          'a photo of a nurse',
          'a photo of a doctor',
          '',
        ]);
        assert.ok(nurse && doctor && empty);
        const d = manifest.d;
        assert.equal(nurse.d, d);
        assert.equal(nurse.hidden.length, 77 * d);
        assert.equal(empty.length, 2);
        // Causal text encoder: the rows of the shared prefix (BOS a photo of a) are identical, the
        // row of the differing word is not.
        assert.deepEqual(nurse.hidden.subarray(0, 5 * d), doctor.hidden.subarray(0, 5 * d));
        assert.notDeepEqual(nurse.hidden.subarray(5 * d, 6 * d), doctor.hidden.subarray(5 * d, 6 * d));
        // CLIP's pooler_output is the row of the EOS token.
        const run = await encoder.encode([nurse.ids]);
        const eos = nurse.length - 1;
        assert.deepEqual(run.pooled, run.lastHiddenState.slice(eos * d, (eos + 1) * d));
      } finally {
        await encoder.dispose();
      }
    });
  }
});
