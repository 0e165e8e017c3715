/**
 * The rows of TIME's objective (mission.md §1–§2): for every (source, destination) prompt pair, all
 * L = 77 positions of the padded source prompt (BOS, words, EOS, padding) with, as targets, the
 * aligned rows of the destination prompt; optionally the three augmented pairs ("A photo of …",
 * "An image of …", "A picture of …"); optionally preservation prompts whose rows map to themselves.
 *
 * Independent of the tokenizer and text encoder: the caller passes an `encode` function that returns
 * each prompt's padded ids and its last_hidden_state rows. The weights (1/λ_p, μ) are not part of the
 * row set, so that a tuning loop encodes once and re-solves with other strengths (see solve.ts).
 */
import { EditError, show } from '../util/errors.js';
import { type AlignTokens, alignTokens } from './align.js';

/** One encoded prompt: padded ids [L] and hidden rows [L·d] (row-major: position, channel). */
export interface EncodedRows {
  ids: readonly number[];
  hidden: Float32Array;
}

/** Encodes prompts in one batch; one result per prompt, in order. */
export type PromptEncoder = (prompts: string[]) => Promise<EncodedRows[]>;

export interface PromptPair {
  source: string;
  destination: string;
}

export interface BuildRowsOptions {
  pairs: readonly PromptPair[];
  /** Add the three augmented pairs of each pair (TIME's `--with_augs`). */
  augment?: boolean;
  /** Prompts whose rows must keep their projections (c*_q = c_q). */
  preserve?: readonly string[];
  /** Token ids the alignment needs ("a", "an", EOS). */
  tokens: AlignTokens;
}

export type RowGroup =
  | {
      kind: 'pair';
      /** Index into `BuildRowsOptions.pairs`: all augmentations of one pair share its λ_p. */
      pair: number;
      source: string;
      destination: string;
      /** First row of this group in the row set, and its row count (L). */
      start: number;
      count: number;
      /** Destination position of each source position. */
      alignment: number[];
    }
  | { kind: 'preserve'; prompt: string; start: number; count: number };

/** Source rows c_i and target rows c*_i, n×d row-major float32, with their provenance. */
export interface RowSet {
  d: number;
  /** Padded prompt length L. */
  length: number;
  n: number;
  sources: Float32Array;
  targets: Float32Array;
  groups: RowGroup[];
  /** Number of (unaugmented) pairs: the length a per-pair λ array must have. */
  pairCount: number;
}

/** The TIME augmentation prefixes, in the reference order. */
export const AUGMENTATION_PREFIXES = Object.freeze(['A photo of ', 'An image of ', 'A picture of ']);

/**
 * The prompt and its three augmentations: "A photo of " / "An image of " / "A picture of " + the
 * prompt, whose leading article "A"/"An" is lower-cased ("A nurse" → "A photo of a nurse").
 */
export function augmentPrompts(prompt: string): string[] {
  const body = prompt.replace(/^(A|An)(?=\s)/, (article) => article.toLowerCase());
  return [prompt, ...AUGMENTATION_PREFIXES.map((prefix) => prefix + body)];
}

/** Encode every prompt once and assemble the row set. */
export async function buildRows(encode: PromptEncoder, options: BuildRowsOptions): Promise<RowSet> {
  const { pairs, tokens } = options;
  const preserve = options.preserve ?? [];
  if (pairs.length === 0 && preserve.length === 0) {
    throw new EditError(
      'edit rows: no prompt pairs and no preservation prompts were given; at least one pair is needed',
    );
  }
  if (pairs.length === 0) {
    throw new EditError(
      'edit rows: only preservation prompts were given; an edit needs at least one (source, destination) pair',
    );
  }
  pairs.forEach((p, i) => {
    checkPrompt(`pairs[${i}].source`, p.source);
    checkPrompt(`pairs[${i}].destination`, p.destination);
  });
  preserve.forEach((p, i) => {
    checkPrompt(`preserve[${i}]`, p);
  });

  const expanded: { pair: number; source: string; destination: string }[] = [];
  pairs.forEach((p, pair) => {
    const sources = options.augment ? augmentPrompts(p.source) : [p.source];
    const destinations = options.augment ? augmentPrompts(p.destination) : [p.destination];
    sources.forEach((source, k) => {
      expanded.push({ pair, source, destination: destinations[k] as string });
    });
  });

  const unique = [...new Set([...expanded.flatMap((e) => [e.source, e.destination]), ...preserve])];
  const encoded = await encode(unique);
  if (!Array.isArray(encoded) || encoded.length !== unique.length) {
    throw new EditError(
      `edit rows: the encoder returned ${Array.isArray(encoded) ? encoded.length : show(encoded)} results for ${unique.length} prompts`,
    );
  }
  const first = encoded[0] as EncodedRows;
  const L = first.ids.length;
  const d = L > 0 ? first.hidden.length / L : 0;
  if (L === 0 || !Number.isInteger(d) || d < 1) {
    throw new EditError(
      `edit rows: prompt ${show(unique[0])} encoded to ${L} ids and ${first.hidden.length} hidden values; expected L ids and L·d values`,
    );
  }
  const byPrompt = new Map<string, EncodedRows>();
  unique.forEach((prompt, i) => {
    const e = encoded[i] as EncodedRows;
    if (e.ids.length !== L || e.hidden.length !== L * d) {
      throw new EditError(
        `edit rows: prompt ${show(prompt)} encoded to ${e.ids.length} ids and ${e.hidden.length} hidden values; ` +
          `the other prompts have ${L} ids and ${L * d} values (L = ${L}, d = ${d})`,
      );
    }
    byPrompt.set(prompt, e);
  });

  const n = L * (expanded.length + preserve.length);
  const sources = new Float32Array(n * d);
  const targets = new Float32Array(n * d);
  const groups: RowGroup[] = [];
  let start = 0;
  for (const e of expanded) {
    const src = byPrompt.get(e.source) as EncodedRows;
    const dst = byPrompt.get(e.destination) as EncodedRows;
    const alignment = alignTokens({ prompt: e.source, ids: src.ids }, { prompt: e.destination, ids: dst.ids }, tokens);
    sources.set(src.hidden, start * d);
    for (let p = 0; p < L; p++) {
      const q = alignment[p] as number;
      targets.set(dst.hidden.subarray(q * d, (q + 1) * d), (start + p) * d);
    }
    groups.push({
      kind: 'pair',
      pair: e.pair,
      source: e.source,
      destination: e.destination,
      start,
      count: L,
      alignment,
    });
    start += L;
  }
  for (const prompt of preserve) {
    const enc = byPrompt.get(prompt) as EncodedRows;
    sources.set(enc.hidden, start * d);
    targets.set(enc.hidden, start * d);
    groups.push({ kind: 'preserve', prompt, start, count: L });
    start += L;
  }
  return { d, length: L, n, sources, targets, groups, pairCount: pairs.length };
}

function checkPrompt(name: string, value: unknown): void {
  if (typeof value !== 'string' || value.trim() === '') {
    throw new EditError(`${name}: ${show(value)} is not a prompt; prompts must be non-empty text`);
  }
}
