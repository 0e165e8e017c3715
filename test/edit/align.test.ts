import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { gunzipSync } from 'node:zlib';
import { alignTokens } from '../../src/edit/align.js';
import { mergesFromClipBpeText, vocabFromMerges } from '../../src/text/bpe-files.js';
import { ClipTokenizer } from '../../src/text/tokenizer.js';
import { EditError } from '../../src/util/errors.js';

// A word-level stand-in for CLIP ids (SD 1.x conventions: BOS 49406, EOS 49407, padded with EOS).
const BOS = 49406;
const EOS = 49407;
const VOCAB: Record<string, number> = {
  a: 320,
  an: 550,
  doctor: 3299,
  female: 2308,
  male: 2794,
  attendant: 13725,
  photo: 1125,
  of: 539,
  small: 2442,
  cat: 2368,
  red: 736,
  rose: 3568,
  pack: 2417,
  roses: 3921,
  blue: 1746,
};
const NAMES = new Map(Object.entries(VOCAB).map(([w, id]) => [id, `${w}</w>`]));
NAMES.set(EOS, '<|endoftext|>');
const TOKENS = { a: VOCAB.a as number, an: VOCAB.an as number, eos: EOS, tokenText: (id: number) => NAMES.get(id) };

function ids(prompt: string, { length = 77, pad = EOS } = {}): number[] {
  const words = prompt.toLowerCase().split(/\s+/).filter(Boolean);
  const body = [BOS, ...words.map((w) => VOCAB[w] as number), EOS].slice(0, length);
  if (body.length === length) body[length - 1] = EOS; // truncation keeps EOS last
  return [...body, ...new Array<number>(length - body.length).fill(pad)];
}
const align = (s: string, d: string, options?: { length?: number; pad?: number }) =>
  alignTokens({ prompt: s, ids: ids(s, options) }, { prompt: d, ids: ids(d, options) }, TOKENS);

/** The expected map: explicit head, then the padding shift p ↦ min(76, e_d + p − e_s). */
function expected(head: number[], srcEos: number, dstEos: number, L = 77): number[] {
  const out = [...head];
  for (let p = head.length; p < L; p++) out.push(Math.min(L - 1, dstEos + (p - srcEos)));
  return out;
}

describe('reference alignment', () => {
  test('inserted word: "a doctor" → "a female doctor"', () => {
    const map = align('a doctor', 'a female doctor');
    // BOS→BOS, a→a, doctor→doctor (skipping "female"), EOS→EOS, padding shifted by one.
    assert.deepEqual(map.slice(0, 5), [0, 1, 3, 4, 5]);
    assert.deepEqual(map, expected([0, 1, 3, 4], 3, 4));
    assert.equal(map.length, 77);
    assert.equal(map[75], 76);
    assert.equal(map[76], 76); // clamped at the last position
  });

  test('"an" is read as "a": "an attendant" → "a female attendant"', () => {
    assert.deepEqual(align('an attendant', 'a female attendant'), expected([0, 1, 3, 4], 3, 4));
    assert.deepEqual(align('a attendant', 'an female attendant'), expected([0, 1, 3, 4], 3, 4));
  });

  test('identical prompts map every row to itself', () => {
    assert.deepEqual(
      align('a doctor', 'a doctor'),
      Array.from({ length: 77 }, (_, i) => i),
    );
  });

  test('longer destination with several inserted words: the padding shifts by the length difference', () => {
    // src: BOS a pack of roses EOS (EOS at 5); dst: BOS a small pack of red blue roses EOS (EOS at 8).
    const map = align('a pack of roses', 'a small pack of red blue roses');
    assert.deepEqual(map.slice(0, 6), [0, 1, 3, 4, 7, 8]);
    assert.deepEqual(map, expected([0, 1, 3, 4, 7, 8], 5, 8));
    assert.equal(map[72], 75);
    assert.equal(map[73], 76);
    assert.deepEqual(map.slice(73), [76, 76, 76, 76]);
  });

  test('greedy matching takes the first equal destination token', () => {
    // "a cat" → "a photo of a cat": the source "a" matches the destination's FIRST "a".
    assert.deepEqual(align('a cat', 'a photo of a cat').slice(0, 4), [0, 1, 5, 6]);
  });

  test('SD 2.x padding ("!" id 0) is shifted the same way', () => {
    const map = align('a doctor', 'a female doctor', { pad: 0 });
    assert.deepEqual(map, expected([0, 1, 3, 4], 3, 4));
  });

  test('a shorter padded length is clamped at its own last position', () => {
    const map = align('a doctor', 'a female doctor', { length: 8 });
    assert.deepEqual(map, [0, 1, 3, 4, 5, 6, 7, 7]);
  });

  test('a truncated source (EOS at the last position) maps its EOS to the destination EOS', () => {
    const long = Array.from({ length: 80 }, () => 'cat').join(' ');
    const map = align(long, long);
    assert.equal(map[76], 76);
    assert.deepEqual(
      map,
      Array.from({ length: 77 }, (_, i) => i),
    );
  });
});

describe('alignment errors', () => {
  test('destination missing a source token: EditError naming both prompts and the token', () => {
    assert.throws(
      () => align('a female doctor', 'a doctor'),
      (e: unknown) => {
        assert.ok(e instanceof EditError);
        assert.match(e.message, /"a doctor"/);
        assert.match(e.message, /"a female doctor"/);
        assert.match(e.message, /token "female<\/w>" \(id 2308\) at source position 2/);
        return true;
      },
    );
  });

  test('source tokens present but out of order', () => {
    assert.throws(
      () => align('a red rose', 'a rose red'),
      /does not contain the source "a red rose"'s token "rose<\/w>"/,
    );
  });

  test('without token texts the id is named', () => {
    const { tokenText: _, ...bare } = TOKENS;
    assert.throws(
      () => alignTokens({ prompt: 'a cat', ids: ids('a cat') }, { prompt: 'a doctor', ids: ids('a doctor') }, bare),
      /token id 2368 at source position 2/,
    );
  });

  test('different padded lengths and missing EOS are refused', () => {
    assert.throws(
      () =>
        alignTokens(
          { prompt: 'a', ids: ids('a', { length: 77 }) },
          { prompt: 'b', ids: ids('a', { length: 10 }) },
          TOKENS,
        ),
      /has 77 token positions but destination "b" has 10/,
    );
    assert.throws(
      () => alignTokens({ prompt: 'x', ids: [BOS, 320, 320] }, { prompt: 'y', ids: ids('a', { length: 3 }) }, TOKENS),
      /the source "x" has no end-of-text token \(id 49407\)/,
    );
  });
});

const CLIP_BPE = fileURLToPath(new URL('../../../shared/data/clip-bpe/bpe_simple_vocab_16e6.txt.gz', import.meta.url));
describe('with the real CLIP tokenizer', {
  skip: !existsSync(CLIP_BPE) && `${CLIP_BPE} not found (../shared/data is absent)`,
}, () => {
  test('reference cases on real token ids', () => {
    const vocab = vocabFromMerges(mergesFromClipBpeText(gunzipSync(readFileSync(CLIP_BPE)).toString('utf8')));
    const tok = ClipTokenizer.fromBpe(vocab);
    const a = tok.encode('a').ids[1] as number;
    const an = tok.encode('an').ids[1] as number;
    const tokens = { a, an, eos: tok.eosId };
    const run = (s: string, d: string) =>
      alignTokens({ prompt: s, ids: tok.encode(s).ids }, { prompt: d, ids: tok.encode(d).ids }, tokens);
    assert.deepEqual(run('a doctor', 'a female doctor').slice(0, 6), [0, 1, 3, 4, 5, 6]);
    assert.deepEqual(run('An attendant', 'A female attendant').slice(0, 5), [0, 1, 3, 4, 5]);
    // TIMED-style pair: "A pack of roses" → "A pack of blue roses".
    assert.deepEqual(run('A pack of roses', 'A pack of blue roses').slice(0, 7), [0, 1, 2, 3, 5, 6, 7]);
    assert.throws(() => run('a nurse', 'a doctor'), EditError);
  });
});
