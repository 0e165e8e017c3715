/**
 * CLIP BPE vocabulary files: the byte↔unicode table, vocab/merges built from CLIP's merges list, and
 * the Hugging Face `tokenizer.json` form of a CLIP BPE tokenizer (so @huggingface/transformers can
 * load a diffusers `tokenizer/` folder that only has vocab.json + merges.txt).
 *
 * CLIP conventions: text is NFC-normalised, whitespace collapsed, lower-cased, split by CLIP's
 * regex, bytes mapped to printable unicode; the last symbol of a word carries `</w>`; vocabulary =
 * 256 byte symbols, the same with `</w>`, one entry per merge, then `<|startoftext|>` and
 * `<|endoftext|>`.
 */

import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export const BOS_TOKEN = '<|startoftext|>';
export const EOS_TOKEN = '<|endoftext|>';

/** GPT-2/CLIP reversible byte → unicode mapping (printable bytes map to themselves). */
export function bytesToUnicode(): string[] {
  const bs: number[] = [];
  for (let b = 33; b <= 126; b++) bs.push(b);
  for (let b = 161; b <= 172; b++) bs.push(b);
  for (let b = 174; b <= 255; b++) bs.push(b);
  const cs = [...bs];
  let n = 0;
  for (let b = 0; b < 256; b++) {
    if (!bs.includes(b)) {
      bs.push(b);
      cs.push(256 + n);
      n++;
    }
  }
  const table: string[] = new Array(256);
  bs.forEach((b, i) => {
    table[b] = String.fromCodePoint(cs[i] as number);
  });
  return table;
}

/** The 256 byte symbols in CLIP's vocabulary order (printable bytes first, then the remapped ones). */
export function byteSymbolsInVocabOrder(): string[] {
  const table = bytesToUnicode();
  const order: number[] = [];
  for (let b = 33; b <= 126; b++) order.push(b);
  for (let b = 161; b <= 172; b++) order.push(b);
  for (let b = 174; b <= 255; b++) order.push(b);
  for (let b = 0; b < 256; b++) if (!order.includes(b)) order.push(b);
  return order.map((b) => table[b] as string);
}

export interface BpeVocab {
  /** token → id */
  vocab: Record<string, number>;
  /** merges in rank order, each "left right" */
  merges: string[];
}

/** Build CLIP's vocabulary from its merges list (as in openai/CLIP's SimpleTokenizer). */
export function vocabFromMerges(merges: string[]): BpeVocab {
  const base = byteSymbolsInVocabOrder();
  const tokens = [
    ...base,
    ...base.map((s) => `${s}</w>`),
    ...merges.map((m) => m.replace(' ', '')),
    BOS_TOKEN,
    EOS_TOKEN,
  ];
  const vocab: Record<string, number> = Object.create(null);
  tokens.forEach((t, i) => {
    vocab[t] = i;
  });
  return { vocab, merges };
}

/**
 * Parse CLIP's `bpe_simple_vocab_16e6.txt` (first line a header; CLIP uses the first
 * 49152 − 256 − 2 merges).
 */
export function mergesFromClipBpeText(text: string, count = 49152 - 256 - 2): string[] {
  return text
    .split('\n')
    .slice(1, 1 + count)
    .filter((l) => l.length > 0);
}

/**
 * A small CLIP-convention BPE vocabulary covering `words` (each word becomes exactly one token), for
 * the project's own tiny models. Deterministic for a given word list.
 *
 * Why a loop and not simply the word's left-to-right merges: BPE applies the lowest-ranked merge
 * first, wherever it occurs, so merges added for an earlier word fire inside a later one ("male"
 * adds "m a", which splits "female" into "fe" + "male</w>"). So each word is run through the BPE
 * built so far and, while it is still in several pieces, one more merge (first piece + second
 * piece) is appended. Appended merges rank after every existing one, so earlier words, which
 * already merge completely with lower ranks, keep their single token.
 */
export function buildWordVocab(words: readonly string[]): BpeVocab {
  const base = bytesToUnicode();
  const merges: string[] = [];
  const ranks = new Map<string, number>();
  const enc = new TextEncoder();
  for (const word of words) {
    const symbols = Array.from(enc.encode(word.toLowerCase()), (b) => base[b] as string);
    if (symbols.length < 2) continue;
    symbols[symbols.length - 1] += '</w>';
    for (let pieces = applyMerges(symbols, ranks); pieces.length > 1; pieces = applyMerges(symbols, ranks)) {
      const merge = `${pieces[0]} ${pieces[1]}`;
      ranks.set(merge, merges.length);
      merges.push(merge);
    }
  }
  return vocabFromMerges(merges);
}

/** Byte-pair encoding of one word's symbols: repeatedly merge the adjacent pair of lowest rank. */
export function applyMerges(symbols: readonly string[], ranks: ReadonlyMap<string, number>): string[] {
  const pieces = [...symbols];
  for (;;) {
    let best = -1;
    let bestRank = Number.POSITIVE_INFINITY;
    for (let i = 0; i + 1 < pieces.length; i++) {
      const rank = ranks.get(`${pieces[i]} ${pieces[i + 1]}`);
      if (rank !== undefined && rank < bestRank) {
        bestRank = rank;
        best = i;
      }
    }
    if (best < 0) return pieces;
    const [left, right] = [pieces[best] as string, pieces[best + 1] as string];
    // Merge every occurrence of the pair, left to right (as CLIP's and GPT-2's BPE do).
    for (let i = 0; i + 1 < pieces.length; i++) {
      if (pieces[i] === left && pieces[i + 1] === right) pieces.splice(i, 2, left + right);
    }
  }
}

/** The Hugging Face tokenizers `tokenizer.json` of a CLIP BPE tokenizer with this vocabulary. */
export function clipTokenizerJson(bpe: BpeVocab, options: { padToken?: string } = {}): Record<string, unknown> {
  const special = (content: string) => ({
    id: bpe.vocab[content],
    content,
    single_word: false,
    lstrip: false,
    rstrip: false,
    normalized: true,
    special: true,
  });
  const added = [special(BOS_TOKEN), special(EOS_TOKEN)];
  if (
    options.padToken &&
    options.padToken !== EOS_TOKEN &&
    options.padToken !== BOS_TOKEN &&
    bpe.vocab[options.padToken] === undefined
  ) {
    throw new Error(`pad token ${JSON.stringify(options.padToken)} is not in the vocabulary`);
  }
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: added,
    normalizer: {
      type: 'Sequence',
      normalizers: [
        { type: 'NFC' },
        { type: 'Replace', pattern: { Regex: '\\s+' }, content: ' ' },
        { type: 'Lowercase' },
      ],
    },
    pre_tokenizer: {
      type: 'Sequence',
      pretokenizers: [
        {
          type: 'Split',
          pattern: {
            Regex:
              "<\\|startoftext\\|>|<\\|endoftext\\|>|'s|'t|'re|'ve|'m|'ll|'d|[\\p{L}]+|[\\p{N}]|[^\\s\\p{L}\\p{N}]+",
          },
          behavior: 'Removed',
          invert: true,
        },
        { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: false },
      ],
    },
    post_processor: {
      type: 'RobertaProcessing',
      sep: [EOS_TOKEN, bpe.vocab[EOS_TOKEN]],
      cls: [BOS_TOKEN, bpe.vocab[BOS_TOKEN]],
      trim_offsets: false,
      add_prefix_space: false,
    },
    decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: EOS_TOKEN,
      continuing_subword_prefix: '',
      end_of_word_suffix: '</w>',
      fuse_unk: false,
      byte_fallback: false,
      vocab: bpe.vocab,
      merges: bpe.merges,
    },
  };
}

/**
 * Parse a Hugging Face `merges.txt` (the BPE merges in rank order, one "left right" per line; an
 * optional first line `#version: ...`). Blank lines are skipped.
 */
export function mergesFromMergesTxt(text: string): string[] {
  const lines = text.split(/\r?\n/);
  if (lines[0]?.startsWith('#version')) lines.shift();
  return lines.filter((l) => l.length > 0);
}

/** The `merges.txt` text that Hugging Face tokenizers write for these merges. */
export function mergesTxt(merges: readonly string[]): string {
  return `#version: 0.2\n${merges.join('\n')}\n`;
}

export interface ClipTokenizerFolderOptions {
  /**
   * 'diffusers' (default): vocab.json + merges.txt + tokenizer_config.json + special_tokens_map.json,
   * as in a diffusers `tokenizer/` folder; 'tokenizer-json': tokenizer.json + tokenizer_config.json,
   * as in a transformers.js model folder.
   */
  layout?: 'diffusers' | 'tokenizer-json';
  /** Pad token: SD 1.x pads with `<|endoftext|>` (the default), SD 2.x with `!` (id 0). */
  padToken?: string;
  /** `model_max_length` in tokenizer_config.json; 77 (CLIP's context length) by default. */
  modelMaxLength?: number;
}

/**
 * Write a CLIP tokenizer folder for this vocabulary in the layout the exporters produce (the config
 * files carry the special tokens the way `transformers` writes them: AddedToken objects in
 * tokenizer_config.json, plain objects in special_tokens_map.json). Returns the file names written.
 */
export function writeClipTokenizerFolder(
  dir: string,
  bpe: BpeVocab,
  options: ClipTokenizerFolderOptions = {},
): string[] {
  const layout = options.layout ?? 'diffusers';
  const padToken = options.padToken ?? EOS_TOKEN;
  if (bpe.vocab[padToken] === undefined) {
    throw new Error(`pad token ${JSON.stringify(padToken)} is not in the vocabulary`);
  }
  const addedToken = (content: string) => ({
    __type: 'AddedToken',
    content,
    lstrip: false,
    normalized: true,
    rstrip: false,
    single_word: false,
  });
  const config = {
    add_prefix_space: false,
    bos_token: addedToken(BOS_TOKEN),
    do_lower_case: true,
    eos_token: addedToken(EOS_TOKEN),
    errors: 'replace',
    model_max_length: options.modelMaxLength ?? 77,
    pad_token: padToken,
    tokenizer_class: 'CLIPTokenizer',
    unk_token: addedToken(EOS_TOKEN),
  };
  mkdirSync(dir, { recursive: true });
  const files: Record<string, string> = { 'tokenizer_config.json': JSON.stringify(config, null, 2) };
  if (layout === 'diffusers') {
    const plain = ({ __type: _, ...rest }: ReturnType<typeof addedToken>) => rest;
    files['vocab.json'] = JSON.stringify(bpe.vocab);
    files['merges.txt'] = mergesTxt(bpe.merges);
    files['special_tokens_map.json'] = JSON.stringify(
      {
        bos_token: plain(config.bos_token),
        eos_token: plain(config.eos_token),
        pad_token: padToken,
        unk_token: plain(config.unk_token),
      },
      null,
      2,
    );
  } else {
    files['tokenizer.json'] = JSON.stringify(clipTokenizerJson(bpe, { padToken }));
  }
  for (const [name, text] of Object.entries(files)) writeFileSync(join(dir, name), text);
  return Object.keys(files).sort();
}
