import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  applyMerges,
  BOS_TOKEN,
  buildWordVocab,
  byteSymbolsInVocabOrder,
  bytesToUnicode,
  clipTokenizerJson,
  EOS_TOKEN,
  vocabFromMerges,
} from '../../src/text/bpe-files.js';
import { ClipTokenizer } from '../../src/text/tokenizer.js';
import { clipVocab, skipWithoutClip } from './clip-vocab.js';

/** Words where one word's merges fire inside another (suffixes, prefixes, shared letter pairs). */
const OVERLAPPING = [
  'a',
  'an',
  'the',
  'he',
  'she',
  'her',
  'here',
  'there',
  'male',
  'female',
  'man',
  'woman',
  'men',
  'women',
  'nurse',
  'nurses',
  'ceo',
  'data',
  'database',
  'café',
  'manager',
  'mechanic',
];

describe('bytesToUnicode', () => {
  test('is a bijection onto 256 printable characters; printable ASCII maps to itself', () => {
    const table = bytesToUnicode();
    assert.equal(new Set(table).size, 256);
    assert.equal(table['!'.charCodeAt(0)], '!');
    assert.equal(table['~'.charCodeAt(0)], '~');
    assert.equal(table[' '.charCodeAt(0)], 'Ġ'); // byte 32 → U+0120, as in GPT-2/CLIP
    assert.equal(byteSymbolsInVocabOrder()[0], '!');
  });
});

describe('buildWordVocab', () => {
  const bpe = buildWordVocab(OVERLAPPING);
  const ranks = new Map(bpe.merges.map((m, i) => [m, i]));

  test("every word is exactly one token, even when other words' merges fire inside it", () => {
    const tokenizer = ClipTokenizer.fromBpe(bpe);
    const table = bytesToUnicode();
    for (const word of OVERLAPPING) {
      // The token is the word's bytes in CLIP's byte-level alphabet ("café" → "cafÃ©</w>").
      const token = `${Array.from(new TextEncoder().encode(word), (b) => table[b]).join('')}</w>`;
      assert.deepEqual(tokenizer.tokenize(word), [token], word);
      assert.notEqual(tokenizer.idOf(token), undefined, word);
    }
    assert.deepEqual(tokenizer.tokenize('a female nurse'), ['a</w>', 'female</w>', 'nurse</w>']);
  });

  test('applyMerges (the BPE used to build it) agrees with the tokenizer library', () => {
    const table = bytesToUnicode();
    const tokenizer = ClipTokenizer.fromBpe(bpe);
    for (const word of ['females', 'mechanics', 'heather', 'manatee', 'women']) {
      const symbols = Array.from(new TextEncoder().encode(word), (b) => table[b] as string);
      symbols[symbols.length - 1] += '</w>';
      assert.deepEqual(applyMerges(symbols, ranks), tokenizer.tokenize(word), word);
    }
  });

  test('adding words keeps the ids of the earlier words (append-only vocabularies)', () => {
    const first = buildWordVocab(OVERLAPPING.slice(0, 10));
    const tokenizer = ClipTokenizer.fromBpe(bpe);
    const firstTokenizer = ClipTokenizer.fromBpe(first);
    for (const word of OVERLAPPING.slice(0, 10)) {
      assert.deepEqual(tokenizer.tokenize(word), firstTokenizer.tokenize(word), word);
    }
    assert.deepEqual(bpe.merges.slice(0, first.merges.length), first.merges);
  });

  test('is deterministic and ends with BOS, EOS', () => {
    assert.deepEqual(buildWordVocab(OVERLAPPING), bpe);
    const size = Object.keys(bpe.vocab).length;
    assert.equal(bpe.vocab[BOS_TOKEN], size - 2);
    assert.equal(bpe.vocab[EOS_TOKEN], size - 1);
    assert.equal(size, 512 + bpe.merges.length + 2);
  });
});

describe('clipTokenizerJson', () => {
  test('rejects a pad token outside the vocabulary', () => {
    assert.throws(() => clipTokenizerJson(buildWordVocab(['cat']), { padToken: '<pad>' }), /<pad>/);
  });
});

describe('vocabFromMerges on the real CLIP merges', { skip: skipWithoutClip }, () => {
  test('49408 tokens: 256 bytes, 256 bytes</w>, 48894 merges, BOS 49406, EOS 49407', () => {
    const bpe = clipVocab();
    assert.equal(bpe.merges.length, 48894);
    assert.equal(Object.keys(bpe.vocab).length, 49408);
    assert.equal(bpe.vocab['!'], 0);
    assert.equal(bpe.vocab['!</w>'], 256);
    assert.equal(bpe.vocab[BOS_TOKEN], 49406);
    assert.equal(bpe.vocab[EOS_TOKEN], 49407);
    assert.equal(vocabFromMerges(bpe.merges).vocab['cat</w>'], 2368);
  });
});
