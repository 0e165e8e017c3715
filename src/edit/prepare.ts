/**
 * The preparation half of the one edit core (used by `edit`, `debias` and what comes next): which
 * sites an edit changes, which token ids the alignment needs, and the rows of the objective.
 *
 *   selectSites(sites, projections, layers)   the ONE rule for `projections` and `layers`
 *   alignmentTokens(tokenizer)                "a", "an" (read as "a") and EOS, from the vocabulary
 *   planEdit(tokenizer, spec)                 tokenize + align every pair, augmentations included,
 *                                             and collect the warnings: cheap, no text encoder, so a
 *                                             caller checks everything before any heavy work
 *   prepareEdit(plan, encode)                 encode the prompts → the rows c_i, c*_i (rows.ts) and
 *                                             the rows per pair / preserved prompt
 *
 * Layer prefixes (`layers`): a site is selected when its module name IS the prefix or continues it
 * at a `.` boundary — `up_blocks.1` selects `up_blocks.1.attentions.0…` but not `up_blocks.10…`. A
 * prefix that selects no site is an error (not silently ignored), and so is a selection of none.
 *
 * The tokens "a" and "an" (mission.md §1: "treat token an as a"): the rule applies to the tokens the
 * vocabulary has. A vocabulary without "a</w>" or "an</w>" (tiny test vocabularies) cannot produce
 * that token in any prompt, so the rule has nothing to do for it: its id is −1, which no token has.
 * It is never an error — the alignment itself fails, naming the token, when a pair cannot be aligned.
 */
import type { EditSite, SiteProjection } from '../model/sites.js';
import type { ClipTokenizer } from '../text/tokenizer.js';
import { EditError, show, UsageError } from '../util/errors.js';
import { type AlignTokens, alignTokens } from './align.js';
import { augmentPrompts, buildRows, type PromptEncoder, type RowSet } from './rows.js';

export const PROJECTIONS: readonly SiteProjection[] = Object.freeze(['to_k', 'to_v']);

/** True when the module name `name` is `prefix` or continues it at a `.` boundary. */
export function matchesLayerPrefix(name: string, prefix: string): boolean {
  return name === prefix || name.startsWith(prefix.endsWith('.') ? prefix : `${prefix}.`);
}

/**
 * The sites an edit changes: by projection, then by module-name prefix (field `layers`). UsageError
 * when a prefix matches no site of the selected projections, or when nothing is selected.
 */
export function selectSites(
  sites: readonly EditSite[],
  projections: readonly SiteProjection[],
  layers: readonly string[] | null | undefined,
): EditSite[] {
  let selected = sites.filter((s) => projections.includes(s.projection));
  if (layers) {
    const modules = [...new Set(selected.map((s) => s.name.replace(/\.(to_k|to_v)$/, '')))];
    for (const prefix of layers) {
      if (!selected.some((s) => matchesLayerPrefix(s.name, prefix))) {
        throw new UsageError(
          `${show(prefix)} matches no cross-attention site (a prefix matches at a "." boundary); site modules are ${modules
            .slice(0, 4)
            .map((m) => show(m))
            .join(', ')}${modules.length > 4 ? `, … (${modules.length} in all; see \`time-debias inspect\`)` : ''}`,
          { field: 'layers' },
        );
      }
    }
    selected = selected.filter((s) => layers.some((prefix) => matchesLayerPrefix(s.name, prefix)));
  }
  if (selected.length === 0) {
    throw new UsageError(
      `${projections.join(', ')}: the model's sites are ${[...new Set(sites.map((s) => s.projection))].join(', ')}; none is selected`,
      { field: 'projections' },
    );
  }
  return selected;
}

/** What the preparation needs of a tokenizer (the text/tokenizer.ts ClipTokenizer has it). */
export type EditTokenizer = Pick<ClipTokenizer, 'encode' | 'idOf' | 'tokenOf' | 'eosId' | 'maxLength'>;

/** The ids the reference alignment needs: "a", "an" (read as "a") and EOS. See the module comment. */
export function alignmentTokens(tokenizer: EditTokenizer): AlignTokens {
  return {
    a: tokenizer.idOf('a</w>') ?? -1,
    an: tokenizer.idOf('an</w>') ?? -1,
    eos: tokenizer.eosId,
    tokenText: (id) => {
      try {
        return tokenizer.tokenOf(id);
      } catch {
        return undefined;
      }
    },
  };
}

/** The pairs, augmentation and preserved prompts of an edit (already validated as prompts). */
export interface EditSpec {
  pairs: readonly { source: string; destination: string }[];
  /** Add TIME's three augmented pairs per pair. */
  augment: boolean;
  /** Prompts whose rows keep their projections. */
  preserve?: readonly string[];
}

/** An edit whose every pair is tokenized and aligned: what `prepareEdit` encodes. */
export interface EditPlan {
  spec: EditSpec;
  tokens: AlignTokens;
  /** Every (source, destination) prompt pair of the rows, augmentations included, with its pair index. */
  expanded: { pair: number; source: string; destination: string }[];
  /** E.g. prompts longer than the tokenizer's context (cut). */
  warnings: string[];
}

/**
 * Tokenize and align every pair of `spec` (EditError naming both prompts when a destination does
 * not contain the source's tokens in order) and collect the warnings. Needs no text encoder.
 */
export function planEdit(tokenizer: EditTokenizer, spec: EditSpec): EditPlan {
  if (spec.pairs.length === 0) {
    throw new EditError('no (source, destination) pair was given; an edit needs at least one', { field: 'pairs' });
  }
  const tokens = alignmentTokens(tokenizer);
  const warnings: string[] = [];
  const warned = new Set<string>();
  const cut = (prompt: string, what: string) => {
    if (warned.has(prompt)) return;
    warned.add(prompt);
    warnings.push(
      `${what} ${show(prompt)} is longer than ${tokenizer.maxLength} tokens; it was cut (the text encoder sees only the first ${tokenizer.maxLength})`,
    );
  };
  const expanded = spec.pairs.flatMap((p, pair) => {
    const sources = spec.augment ? augmentPrompts(p.source) : [p.source];
    const destinations = spec.augment ? augmentPrompts(p.destination) : [p.destination];
    return sources.map((source, k) => ({ pair, source, destination: destinations[k] as string }));
  });
  for (const e of expanded) {
    const src = tokenizer.encode(e.source);
    const dst = tokenizer.encode(e.destination);
    if (src.truncated) cut(e.source, 'prompt');
    if (dst.truncated) cut(e.destination, 'prompt');
    alignTokens({ prompt: e.source, ids: src.ids }, { prompt: e.destination, ids: dst.ids }, tokens);
  }
  for (const prompt of spec.preserve ?? []) {
    if (tokenizer.encode(prompt).truncated) cut(prompt, 'preserved prompt');
  }
  return { spec, tokens, expanded, warnings };
}

/** The rows of a planned edit, with their counts per pair and for the preserved prompts. */
export interface PreparedEdit {
  rows: RowSet;
  /** Rows of each pair (77, or 4 × 77 with augmentations), in `spec.pairs` order. */
  pairRows: number[];
  preserveRows: number;
  warnings: string[];
}

/** Encode the planned prompts and assemble the rows c_i, c*_i of the objective (rows.ts). */
export async function prepareEdit(plan: EditPlan, encode: PromptEncoder): Promise<PreparedEdit> {
  const rows = await buildRows(encode, {
    pairs: plan.spec.pairs.map((p) => ({ source: p.source, destination: p.destination })),
    augment: plan.spec.augment,
    preserve: plan.spec.preserve ?? [],
    tokens: plan.tokens,
  });
  const pairRows = new Array<number>(plan.spec.pairs.length).fill(0);
  let preserveRows = 0;
  for (const g of rows.groups) {
    if (g.kind === 'pair') pairRows[g.pair] = (pairRows[g.pair] as number) + g.count;
    else preserveRows += g.count;
  }
  return { rows, pairRows, preserveRows, warnings: plan.warnings };
}
