import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import {
  BOS_TOKEN,
  buildWordVocab,
  clipTokenizerJson,
  EOS_TOKEN,
  mergesFromMergesTxt,
  mergesTxt,
  writeClipTokenizerFolder,
} from '../../src/text/bpe-files.js';
import { assertPrompt, CLIP_CONTEXT_LENGTH, ClipTokenizer } from '../../src/text/tokenizer.js';
import { ModelFormatError, UsageError } from '../../src/util/errors.js';
import { clipVocab, skipWithoutClip, tempDir } from './clip-vocab.js';

const BOS = 49406;
const EOS = 49407;

/** Prompts with case, punctuation, contractions, digits, non-ASCII and extra whitespace. */
const VARIED_PROMPTS = [
  'a photo of a cat',
  'A  Photo OF an astronaut, riding a horse on Mars!!',
  "the nurse's cat isn't 12 years old",
  'Café crème brûlée — 3D render',
  '  leading and trailing spaces  ',
  'a male CEO',
  '',
];

describe('ClipTokenizer on the real CLIP vocabulary', { skip: skipWithoutClip }, () => {
  const tmp = tempDir('tokenizer');
  let sd1: ClipTokenizer;
  let sd2: ClipTokenizer;
  let fromJson: ClipTokenizer;

  before(async () => {
    const bpe = clipVocab();
    writeClipTokenizerFolder(join(tmp.dir, 'sd1'), bpe);
    writeClipTokenizerFolder(join(tmp.dir, 'sd2'), bpe, { padToken: '!' });
    writeClipTokenizerFolder(join(tmp.dir, 'json'), bpe, { layout: 'tokenizer-json' });
    [sd1, sd2, fromJson] = await Promise.all([
      ClipTokenizer.fromFolder(join(tmp.dir, 'sd1')),
      ClipTokenizer.fromFolder(join(tmp.dir, 'sd2')),
      ClipTokenizer.fromFolder(join(tmp.dir, 'json')),
    ]);
  });
  after(tmp.cleanup);

  test('"a photo of a cat" gives CLIP\'s ids, padded to 77 with <|endoftext|> (SD 1.x)', () => {
    const e = sd1.encode('a photo of a cat');
    assert.equal(e.ids.length, 77);
    assert.deepEqual(e.ids.slice(0, 7), [BOS, 320, 1125, 539, 320, 2368, EOS]);
    assert.deepEqual(e.ids.slice(7), new Array(70).fill(EOS));
    assert.deepEqual(e.tokens.slice(0, 8), [
      BOS_TOKEN,
      'a</w>',
      'photo</w>',
      'of</w>',
      'a</w>',
      'cat</w>',
      EOS_TOKEN,
      EOS_TOKEN,
    ]);
    assert.equal(e.length, 7);
    assert.equal(e.truncated, false);
    assert.equal(sd1.layout, 'diffusers');
    assert.deepEqual(
      { bos: sd1.bosId, eos: sd1.eosId, pad: sd1.padId, vocab: sd1.vocabSize, max: sd1.maxLength },
      { bos: BOS, eos: EOS, pad: EOS, vocab: 49408, max: 77 },
    );
  });

  test('a longer prompt matches the known CLIP ids', () => {
    // "a photo of an astronaut riding a horse on mars" as CLIP tokenises it.
    const e = sd1.encode('a photo of an astronaut riding a horse on mars');
    assert.deepEqual(e.ids.slice(0, e.length), [BOS, 320, 1125, 539, 550, 18376, 6765, 320, 4558, 525, 7496, EOS]);
  });

  test('SD 2.x pads with "!" (id 0) and keeps the same prompt ids', () => {
    const a = sd1.encode('a photo of a cat');
    const b = sd2.encode('a photo of a cat');
    assert.equal(sd2.padId, 0);
    assert.deepEqual(b.ids.slice(0, 7), a.ids.slice(0, 7));
    assert.deepEqual(b.ids.slice(7), new Array(70).fill(0));
    assert.equal(b.tokens[7], '!');
  });

  test('over-long prompts are cut to 77 with EOS last and reported as truncated', () => {
    const words = Array.from({ length: 100 }, (_, i) => ['cat', 'dog', 'tree', 'house'][i % 4]).join(' ');
    const e = sd1.encode(words);
    const full = sd1.tokenize(words);
    assert.equal(full.length, 100);
    assert.equal(e.ids.length, 77);
    assert.equal(e.length, 77);
    assert.equal(e.truncated, true);
    assert.equal(e.ids[0], BOS);
    assert.equal(e.ids[76], EOS);
    assert.deepEqual(e.tokens.slice(1, 76), full.slice(0, 75));
  });

  test('75 words fit exactly (77 with BOS/EOS); 76 words are truncated', () => {
    const fit = sd1.encode(new Array(75).fill('cat').join(' '));
    assert.equal(fit.length, 77);
    assert.equal(fit.truncated, false);
    assert.equal(fit.ids[76], EOS);
    const over = sd1.encode(new Array(76).fill('cat').join(' '));
    assert.equal(over.truncated, true);
    assert.deepEqual(over.ids, fit.ids);
  });

  test('empty and whitespace-only prompts give the unconditional ids (BOS, EOS, padding)', () => {
    for (const text of ['', '   ', '\n\t']) {
      const e = sd1.encode(text);
      assert.equal(e.length, 2, JSON.stringify(text));
      assert.deepEqual(e.ids, [BOS, ...new Array(76).fill(EOS)]);
      assert.deepEqual(sd2.encode(text).ids, [BOS, EOS, ...new Array(75).fill(0)]);
    }
  });

  test('a tokenizer.json folder gives the same ids as the vocab.json + merges.txt folder', () => {
    assert.equal(fromJson.layout, 'tokenizer-json');
    assert.equal(fromJson.vocabSize, sd1.vocabSize);
    for (const prompt of VARIED_PROMPTS) {
      assert.deepEqual(fromJson.encode(prompt), sd1.encode(prompt), prompt);
    }
  });

  test('a tokenizer.json with merges as [left, right] arrays (newer format) reads the same', async () => {
    const json = clipTokenizerJson(clipVocab());
    const model = json.model as { merges: (string | string[])[] };
    model.merges = model.merges.map((m) => (m as string).split(' '));
    const dir = join(tmp.dir, 'json-array-merges');
    mkdirSync(dir);
    writeFileSync(join(dir, 'tokenizer.json'), JSON.stringify(json));
    writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify({ model_max_length: 77, pad_token: '!' }));
    const t = await ClipTokenizer.fromFolder(dir);
    for (const prompt of VARIED_PROMPTS) assert.deepEqual(t.encode(prompt), sd2.encode(prompt), prompt);
  });

  test('idOf / tokenOf look up the vocabulary', () => {
    assert.equal(sd1.idOf('a</w>'), 320);
    assert.equal(sd1.idOf('an</w>'), 550);
    assert.equal(sd1.idOf(EOS_TOKEN), EOS);
    assert.equal(sd1.idOf('!'), 0);
    assert.equal(sd1.idOf('not-a-token</w>'), undefined);
    assert.equal(sd1.tokenOf(2368), 'cat</w>');
    assert.throws(() => sd1.tokenOf(49408), UsageError);
  });
});

describe("ClipTokenizer rules from the model's config", () => {
  const tmp = tempDir('tokenizer-rules');
  const words = ['a', 'an', 'photo', 'of', 'nurse', 'male', 'female', 'doctor'];
  const bpe = buildWordVocab(words);
  after(tmp.cleanup);

  test('a project word vocabulary gives one token per word', async () => {
    const dir = join(tmp.dir, 'words');
    const files = writeClipTokenizerFolder(dir, bpe);
    assert.deepEqual(files, ['merges.txt', 'special_tokens_map.json', 'tokenizer_config.json', 'vocab.json']);
    const t = await ClipTokenizer.fromFolder(dir);
    const e = t.encode('A photo of a female nurse');
    assert.deepEqual(e.tokens.slice(0, e.length), [
      BOS_TOKEN,
      'a</w>',
      'photo</w>',
      'of</w>',
      'a</w>',
      'female</w>',
      'nurse</w>',
      EOS_TOKEN,
    ]);
    assert.equal(
      e.ids.slice(e.length).every((id) => id === t.eosId),
      true,
    );
    // An unknown word falls back to byte-level pieces, never to an unknown token.
    assert.ok(t.tokenize('zebra').length > 1);
  });

  test('model_max_length from tokenizer_config.json sets the padded length', async () => {
    const dir = join(tmp.dir, 'short');
    writeClipTokenizerFolder(dir, bpe, { modelMaxLength: 8 });
    const t = await ClipTokenizer.fromFolder(dir);
    assert.equal(t.maxLength, 8);
    const e = t.encode('a photo of a nurse');
    assert.equal(e.ids.length, 8);
    assert.equal(e.length, 7);
    const long = t.encode('a photo of a male nurse of a doctor');
    assert.equal(long.truncated, true);
    assert.deepEqual(long.tokens, [
      BOS_TOKEN,
      'a</w>',
      'photo</w>',
      'of</w>',
      'a</w>',
      'male</w>',
      'nurse</w>',
      EOS_TOKEN,
    ]);
  });

  test('special_tokens_map.json alone gives the pad token; no config means CLIP defaults', async () => {
    const dir = join(tmp.dir, 'map-only');
    writeClipTokenizerFolder(dir, bpe, { padToken: '!' });
    rmSync(join(dir, 'tokenizer_config.json'));
    const t = await ClipTokenizer.fromFolder(dir);
    assert.equal(t.padId, 0);
    assert.equal(t.maxLength, CLIP_CONTEXT_LENGTH);
    rmSync(join(dir, 'special_tokens_map.json'));
    const bare = await ClipTokenizer.fromFolder(dir);
    assert.equal(bare.padId, bare.eosId);
    assert.equal(bare.encode('a nurse').ids.length, 77);
  });

  test('the "no limit" model_max_length sentinel means CLIP\'s 77', async () => {
    const dir = join(tmp.dir, 'sentinel');
    writeClipTokenizerFolder(dir, bpe);
    const config = JSON.parse(readFileSync(join(dir, 'tokenizer_config.json'), 'utf8'));
    writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify({ ...config, model_max_length: 1e30 }));
    assert.equal((await ClipTokenizer.fromFolder(dir)).maxLength, 77);
  });

  test('fromBpe builds an in-memory tokenizer with the same ids as its folder', async () => {
    const dir = join(tmp.dir, 'memory');
    writeClipTokenizerFolder(dir, bpe, { padToken: '!' });
    const a = ClipTokenizer.fromBpe(bpe, { padToken: '!' });
    const b = await ClipTokenizer.fromFolder(dir);
    assert.deepEqual(a.encode('a male doctor'), b.encode('a male doctor'));
    assert.equal(a.layout, 'in-memory');
  });

  test('merges.txt round-trips through mergesTxt / mergesFromMergesTxt', () => {
    const text = mergesTxt(bpe.merges);
    assert.ok(text.startsWith('#version: 0.2\n'));
    assert.deepEqual(mergesFromMergesTxt(text), bpe.merges);
    assert.deepEqual(mergesFromMergesTxt(text.replaceAll('\n', '\r\n')), bpe.merges);
  });
});

describe('ClipTokenizer errors name the path and the rule', () => {
  const tmp = tempDir('tokenizer-errors');
  const bpe = buildWordVocab(['cat', 'dog']);
  after(tmp.cleanup);

  const rejects = async (dir: string, pattern: RegExp) =>
    assert.rejects(ClipTokenizer.fromFolder(dir), (e: unknown) => {
      assert.ok(e instanceof ModelFormatError, `expected ModelFormatError, got ${e}`);
      assert.match(e.message, pattern);
      return true;
    });

  test('missing folder', async () => {
    const missing = join(tmp.dir, 'nope');
    await rejects(missing, new RegExp(`${missing.replaceAll('/', '\\/')}.*does not exist`));
  });

  test('a file instead of a folder', async () => {
    const file = join(tmp.dir, 'file.txt');
    writeFileSync(file, 'x');
    await rejects(file, /is not a directory/);
  });

  test('empty folder: neither layout', async () => {
    const dir = join(tmp.dir, 'empty');
    mkdirSync(dir);
    await rejects(dir, /neither vocab\.json \+ merges\.txt .* nor tokenizer\.json/);
  });

  test('vocab.json without merges.txt names merges.txt', async () => {
    const dir = join(tmp.dir, 'no-merges');
    writeClipTokenizerFolder(dir, bpe);
    rmSync(join(dir, 'merges.txt'));
    await rejects(dir, /merges\.txt" is missing/);
  });

  test('vocab.json that is not JSON', async () => {
    const dir = join(tmp.dir, 'bad-json');
    writeClipTokenizerFolder(dir, bpe);
    writeFileSync(join(dir, 'vocab.json'), '{"a": 1,');
    await rejects(dir, /vocab\.json" is not valid JSON/);
  });

  test('vocab.json without <|endoftext|>', async () => {
    const dir = join(tmp.dir, 'no-eos');
    writeClipTokenizerFolder(dir, bpe);
    const vocab = JSON.parse(readFileSync(join(dir, 'vocab.json'), 'utf8'));
    delete vocab[EOS_TOKEN];
    writeFileSync(join(dir, 'vocab.json'), JSON.stringify(vocab));
    await rejects(dir, /EOS token "<\|endoftext\|>" is not in the vocabulary/);
  });

  test('a pad token that is not in the vocabulary', async () => {
    const dir = join(tmp.dir, 'bad-pad');
    writeClipTokenizerFolder(dir, bpe);
    writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify({ pad_token: '<pad>' }));
    await rejects(dir, /pad token "<pad>" is not in the vocabulary/);
  });

  test('model_max_length that is not an integer ≥ 2', async () => {
    const dir = join(tmp.dir, 'bad-length');
    writeClipTokenizerFolder(dir, bpe);
    writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify({ model_max_length: 1.5 }));
    await rejects(dir, /model_max_length is 1\.5/);
  });

  test('a tokenizer.json that is not a BPE model', async () => {
    const dir = join(tmp.dir, 'wordpiece');
    mkdirSync(dir);
    writeFileSync(join(dir, 'tokenizer.json'), JSON.stringify({ model: { type: 'WordPiece', vocab: {} } }));
    await rejects(dir, /model\.type is "WordPiece"; a CLIP tokenizer is a BPE model/);
  });
});

describe('assertPrompt', () => {
  test('accepts a prompt with words', () => {
    assert.doesNotThrow(() => assertPrompt('source', 'a nurse'));
  });
  test('rejects empty, whitespace-only and non-string prompts, naming the argument', () => {
    for (const value of ['', '   ', '\t\n', undefined, 3]) {
      assert.throws(
        () => assertPrompt('destination', value),
        (e: unknown) => e instanceof UsageError && e.field === 'destination' && e.message.startsWith('destination: '),
        String(value),
      );
    }
  });
});
