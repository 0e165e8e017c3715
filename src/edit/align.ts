/**
 * The reference token alignment of TIME (mission.md §1 "Alignment"; the official code's
 * `idxs_replace`): which destination row is the target of each source row.
 *
 *   1. Tokens "an" count as "a" (both sequences).
 *   2. Walk the source tokens BOS … EOS in order; each is matched to the next equal destination token
 *      (greedy, monotone). Inserted destination words ("female") get no source row.
 *   3. So source EOS ↦ destination EOS, and the source padding after its EOS at position e_s maps to
 *      the destination positions after its EOS at e_d: p ↦ min(L − 1, e_d + (p − e_s)).
 *   4. A destination that lacks a source token (in order) is an error naming both prompts and the
 *      token (the official code crashes with an index error).
 */
import { EditError, show } from '../util/errors.js';

export interface AlignTokens {
  /** Id of the token "a</w>". */
  a: number;
  /** Id of the token "an</w>" (read as "a"). */
  an: number;
  /** Id of the end-of-text token; the prompt's tokens end at its first occurrence after position 0. */
  eos: number;
  /** Token text for error messages (e.g. the tokenizer's id → token). */
  tokenText?: (id: number) => string | undefined;
}

export interface AlignPrompt {
  prompt: string;
  /** Padded ids (77 for CLIP): BOS, tokens, EOS, padding. */
  ids: readonly number[];
}

/**
 * For each source position p (0 … L−1), the destination position whose row is its target.
 * Both prompts must have the same padded length L.
 */
export function alignTokens(source: AlignPrompt, destination: AlignPrompt, tokens: AlignTokens): number[] {
  const L = source.ids.length;
  if (destination.ids.length !== L) {
    throw new EditError(
      `alignment: source ${show(source.prompt)} has ${L} token positions but destination ${show(destination.prompt)} ` +
        `has ${destination.ids.length}; both must be padded to the same length`,
    );
  }
  if (L === 0) throw new EditError(`alignment: source ${show(source.prompt)} has no token positions`);
  const normalize = (id: number) => (id === tokens.an ? tokens.a : id);
  const src = source.ids.map(normalize);
  const dst = destination.ids.map(normalize);
  const srcEos = endOf(src, tokens.eos, source.prompt, 'source');
  const dstEos = endOf(dst, tokens.eos, destination.prompt, 'destination');

  const map = new Array<number>(L);
  let j = 0;
  for (let p = 0; p <= srcEos; p++) {
    const token = src[p] as number;
    while (j <= dstEos && dst[j] !== token) j++;
    if (j > dstEos) {
      const text = tokens.tokenText?.(source.ids[p] as number);
      const name = text === undefined ? `token id ${source.ids[p]}` : `token ${show(text)} (id ${source.ids[p]})`;
      throw new EditError(
        `alignment: destination ${show(destination.prompt)} does not contain the source ${show(source.prompt)}'s ` +
          `${name} at source position ${p}, in order; every source token must appear in the destination in the same ` +
          `order (the destination may only insert words, e.g. "a doctor" → "a female doctor")`,
      );
    }
    map[p] = j;
    j++;
  }
  // j − 1 = dstEos here: EOS is the last token of both walks, so it matched the destination's EOS.
  for (let p = srcEos + 1; p < L; p++) map[p] = Math.min(L - 1, dstEos + (p - srcEos));
  return map;
}

function endOf(ids: readonly number[], eos: number, prompt: string, role: string): number {
  const at = ids.indexOf(eos, 1);
  if (at < 0) {
    throw new EditError(
      `alignment: the ${role} ${show(prompt)} has no end-of-text token (id ${eos}) after position 0; ids must be ` +
        'the padded tokenizer output (BOS, tokens, EOS, padding)',
    );
  }
  return at;
}
