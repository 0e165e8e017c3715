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
  const tokens = [...base, ...base.map((s) => `${s}</w>`), ...merges.map((m) => m.replace(' ', '')), BOS_TOKEN, EOS_TOKEN];
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
  return text.split('\n').slice(1, 1 + count).filter((l) => l.length > 0);
}

/**
 * A small CLIP-convention BPE vocabulary covering `words` (each word becomes one token, built by
 * left-to-right merges), for the project's own tiny models. Deterministic for a given word list.
 */
export function buildWordVocab(words: readonly string[]): BpeVocab {
  const base = bytesToUnicode();
  const merges: string[] = [];
  const seen = new Set<string>();
  const enc = new TextEncoder();
  for (const word of words) {
    const symbols = Array.from(enc.encode(word.toLowerCase()), (b) => base[b] as string);
    if (symbols.length < 2) continue;
    symbols[symbols.length - 1] += '</w>';
    let left = symbols[0] as string;
    for (let i = 1; i < symbols.length; i++) {
      const merge = `${left} ${symbols[i]}`;
      if (!seen.has(merge)) {
        seen.add(merge);
        merges.push(merge);
      }
      left += symbols[i];
    }
  }
  return vocabFromMerges(merges);
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
  if (options.padToken && options.padToken !== EOS_TOKEN && options.padToken !== BOS_TOKEN && bpe.vocab[options.padToken] === undefined) {
    throw new Error(`pad token ${JSON.stringify(options.padToken)} is not in the vocabulary`);
  }
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: added,
    normalizer: {
      type: 'Sequence',
      normalizers: [{ type: 'NFC' }, { type: 'Replace', pattern: { Regex: '\\s+' }, content: ' ' }, { type: 'Lowercase' }],
    },
    pre_tokenizer: {
      type: 'Sequence',
      pretokenizers: [
        {
          type: 'Split',
          pattern: {
            Regex: "<\\|startoftext\\|>|<\\|endoftext\\|>|'s|'t|'re|'ve|'m|'ll|'d|[\\p{L}]+|[\\p{N}]|[^\\s\\p{L}\\p{N}]+",
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
