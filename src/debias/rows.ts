/**
 * The rows of the job's joint objective (every pair, its augmentations and the preservation prompts)
 * and the closed-form solve on any subset of pairs at given strengths s_p = 1/λ_p: what every tuning
 * stage edits with.
 */
import type { Profession } from '../audit/professions.js';
import type { RowSet } from '../edit/rows.js';
import { buildRows } from '../edit/rows.js';
import { type EditSolution, solveEdit } from '../edit/solve.js';
import type { GemmEngine } from '../linalg/gemm.js';
import type { JobConfig } from './config.js';
import type { Preflight } from './preflight.js';
import { fillJobTemplate, type ProfessionPair, preservationPrompts, unrelatedPreservationWeights } from './prompts.js';
import type { JobWorld } from './types.js';

/** Solve at strengths s_p (by profession); with `interpolation`, pair p's targets are c + w_p (c* − c). */
export type Solver = (
  strengths: Record<string, number>,
  interpolation?: Record<string, number>,
) => Promise<EditSolution>;

export interface JobRows {
  /** the row set of every pair (pair order) and the preservation prompts */
  rows: RowSet;
  /** the preserved prompts (professions' own prompts and the unrelated list) */
  preserve: string[];
  /** preserved prompt → its own weight in the solve (the unrelated prompts'; others take preserve.weight) */
  unrelatedWeights: ReadonlyMap<string, number>;
  /** per pair row of `rows`: the other class's destination row (interference.ts eq. I1'), when needed */
  opposite: Float32Array | undefined;
}

export async function buildJobRows(
  config: JobConfig,
  world: Pick<JobWorld, 'encode'>,
  pre: Preflight,
  pairs: readonly ProfessionPair[],
  log: (line: string) => void,
): Promise<JobRows> {
  const preserve = preservationPrompts(config, pre.edited);
  const unrelatedWeights = unrelatedPreservationWeights(config, pre.edited);
  const rows = await buildRows(world.encode, {
    pairs: pairs.map((p) => ({ source: p.source, destination: p.destination })),
    augment: config.prompts.augment,
    preserve,
    tokens: pre.tokens,
  });
  log(
    `rows: ${pairs.length} pairs${config.prompts.augment ? ' × 4 (augmented)' : ''} + ${preserve.length} preserved prompts = ${rows.n} rows of d = ${rows.d}`,
  );
  const opposite =
    config.tuning.strategy === 'ed50' && (config.tuning.compensate || config.tuning.initialStrength === 'auto')
      ? await oppositeRows(config, world, pre, pairs, rows)
      : undefined;
  return { rows, preserve, unrelatedWeights, opposite };
}

/** The solver over `rows` with the config's preservation weights. */
export function makeSolver(
  config: JobConfig,
  pairs: readonly ProfessionPair[],
  jobRows: JobRows,
  gemm: GemmEngine,
): Solver {
  const pairIndex = new Map(pairs.map((p, i) => [p.profession, i]));
  return async (strengths, interpolation) => {
    const names = Object.keys(strengths);
    const subset = subsetRows(
      jobRows.rows,
      names.map((n) => pairIndex.get(n) as number),
      interpolation && names.map((n) => interpolation[n] as number),
    );
    return solveEdit(subset, {
      lambda: names.map((n) => 1 / (strengths[n] as number)),
      mu: config.preserve.weight,
      muByPrompt: jobRows.unrelatedWeights,
      gemm,
    });
  };
}

/**
 * For every pair row of `rows`, the row of the pair's destination prompt with the OTHER class word
 * ("a male doctor" for "a doctor" → "a female doctor"), aligned to the source like the target row
 * (interference.ts eq. I1': the attribute direction is c*_i − c°_i).
 */
async function oppositeRows(
  config: JobConfig,
  world: Pick<JobWorld, 'encode'>,
  pre: Preflight,
  pairs: readonly ProfessionPair[],
  rows: RowSet,
): Promise<Float32Array> {
  const byName = new Map<string, Profession>(pre.edited.map((p) => [p.profession, p]));
  const other = await buildRows(world.encode, {
    pairs: pairs.map((p) => {
      const word = config.attribute.classes.find((c) => c.id !== p.destinationClass)!.word;
      return {
        source: p.source,
        destination: fillJobTemplate(config.prompts.destination, byName.get(p.profession)!, word),
      };
    }),
    augment: config.prompts.augment,
    tokens: pre.tokens,
  });
  const { d } = rows;
  const out = new Float32Array(rows.n * d);
  const otherGroups = other.groups.filter((g) => g.kind === 'pair');
  let k = 0;
  for (const g of rows.groups) {
    if (g.kind !== 'pair') continue;
    const o = otherGroups[k++];
    if (o?.kind !== 'pair' || o.pair !== g.pair || o.count !== g.count) {
      throw new Error(`opposite rows: group ${k - 1} does not match the pair rows (pair ${g.pair})`);
    }
    out.set(other.targets.subarray(o.start * d, (o.start + o.count) * d), g.start * d);
  }
  return out;
}

/**
 * The rows of some pairs (in `pairIndices` order, renumbered 0..) plus every preservation group. With
 * `interpolation`, pair p's targets become c + w_p (c* − c) (UCE's loop moves w_p).
 */
export function subsetRows(rows: RowSet, pairIndices: readonly number[], interpolation?: readonly number[]): RowSet {
  const { d } = rows;
  const order = new Map(pairIndices.map((p, i) => [p, i]));
  const groups = rows.groups.filter((g) => g.kind === 'preserve' || order.has(g.pair));
  const n = groups.reduce((a, g) => a + g.count, 0);
  const sources = new Float32Array(n * d);
  const targets = new Float32Array(n * d);
  let start = 0;
  const outGroups: RowSet['groups'] = [];
  for (const g of groups) {
    const from = g.start * d;
    const len = g.count * d;
    sources.set(rows.sources.subarray(from, from + len), start * d);
    if (g.kind === 'pair' && interpolation) {
      const w = interpolation[order.get(g.pair) as number] as number;
      for (let i = 0; i < len; i++) {
        const c = rows.sources[from + i] as number;
        targets[start * d + i] = c + w * ((rows.targets[from + i] as number) - c);
      }
    } else targets.set(rows.targets.subarray(from, from + len), start * d);
    outGroups.push(g.kind === 'pair' ? { ...g, pair: order.get(g.pair) as number, start } : { ...g, start });
    start += g.count;
  }
  return { d, length: rows.length, n, sources, targets, groups: outGroups, pairCount: pairIndices.length };
}
