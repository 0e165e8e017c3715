/**
 * TIMED's three metrics (Orgad et al., arXiv 2303.08084, Sec. 5 "Evaluation"), from zero-shot CLIP
 * classifications of generated images:
 *
 *   notation   for a TIMED row r with source prompt `old`, edit `new`, positives (p_i, gt_i) and
 *              negatives (q_i, gn_i), i = 1…5; every image of a prompt is classified by CLIP between
 *              exactly two texts: source images between old and new, p_i's between p_i and gt_i,
 *              q_i's between q_i and gn_i (argmax, no threshold)
 *
 *   (1) efficacy_r    = #{source images classified as new}  / #{source images}
 *   (2) generality_r  = #{positive images classified as gt} / #{positive images}   (the 5 positives pooled)
 *   (3) specificity_r = #{negative images NOT classified as gn} / #{negative images} (the 5 negatives pooled)
 *   (4) aggregate     = mean over rows of (1)–(3) (each row weighs the same, as the paper averages
 *                       over TIMED's edits), with a 95 % percentile bootstrap over rows
 *                       (resample the rows with replacement, B = 2000, seeded mulberry32)
 *   (5) per row and metric, a Wilson interval on the pooled count (src/audit/stats.ts eq. 1)
 *
 * Where the definitions come from: the paper's Sec. 5 defines efficacy on the source prompt,
 * generality on the positives and specificity on the negatives, each measured with CLIP zero-shot
 * between the prompt and its edited version, and reports means over the dataset's rows. This
 * module follows that reading. The official code (bahjat-kawar/time-diffusion) could not be opened
 * from this project's build machine (no network), so its exact pooling (per prompt vs per row) and
 * the number of images per prompt could not be checked here; pooling a row's 5 prompts is the same
 * as averaging them when every prompt has the same number of images, which is the case here.
 */
import { quantileSorted, wilson } from '../audit/stats.js';
import { mulberry32 } from '../util/random.js';

export type MetricName = 'efficacy' | 'generality' | 'specificity';
export const METRICS: readonly MetricName[] = Object.freeze(['efficacy', 'generality', 'specificity']);

/** What the image's prompt is in its row. */
export type PromptRole = 'source' | 'positive' | 'negative';

/** One classified image: its role in the row and whether CLIP chose the edited text (new / gt / gn). */
export interface ClassifiedImage {
  role: PromptRole;
  /** True when CLIP chose the second text (`new`, `gt_i` or `gn_i`) over the prompt itself. */
  edited: boolean;
}

export interface MetricValue {
  /** Images that count toward the metric (k of n). */
  k: number;
  n: number;
  /** k / n, null when n = 0. */
  value: number | null;
  lower: number;
  upper: number;
}

export type RowMetrics = Record<MetricName, MetricValue>;

/** Eq. (1)–(3) and (5) for one row's classified images. */
export function rowMetrics(images: readonly ClassifiedImage[]): RowMetrics {
  const count = (role: PromptRole, want: boolean) => {
    const of = images.filter((i) => i.role === role);
    return { k: of.filter((i) => i.edited === want).length, n: of.length };
  };
  const value = (c: { k: number; n: number }): MetricValue => {
    const w = wilson(c.k, c.n);
    return { k: c.k, n: c.n, value: c.n ? c.k / c.n : null, lower: w.lower, upper: w.upper };
  };
  return {
    efficacy: value(count('source', true)),
    generality: value(count('positive', true)),
    specificity: value(count('negative', false)),
  };
}

export interface AggregateMetric {
  /** Mean over the rows that have images (eq. 4), null when none has. */
  value: number | null;
  lower: number | null;
  upper: number | null;
  rows: number;
}

export type AggregateMetrics = Record<MetricName, AggregateMetric>;

export interface BootstrapOptions {
  samples?: number;
  seed?: number;
  level?: number;
}

/** Eq. (4): per metric, the mean over rows and its percentile bootstrap interval over rows. */
export function aggregateMetrics(rows: readonly RowMetrics[], options: BootstrapOptions = {}): AggregateMetrics {
  const out = {} as AggregateMetrics;
  for (const m of METRICS) {
    const values = rows.map((r) => r[m].value).filter((v): v is number => v !== null);
    out[m] = meanOverRows(values, options);
  }
  return out;
}

/** Mean of per-row values with a seeded percentile bootstrap over rows. */
export function meanOverRows(values: readonly number[], options: BootstrapOptions = {}): AggregateMetric {
  const samples = options.samples ?? 2000;
  const level = options.level ?? 0.95;
  const rows = values.length;
  if (rows === 0) return { value: null, lower: null, upper: null, rows: 0 };
  const mean = values.reduce((a, b) => a + b, 0) / rows;
  const rand = mulberry32(options.seed ?? 1);
  const stats = new Float64Array(samples);
  for (let b = 0; b < samples; b++) {
    let sum = 0;
    for (let i = 0; i < rows; i++) sum += values[Math.min(rows - 1, Math.floor(rand() * rows))] as number;
    stats[b] = sum / rows;
  }
  stats.sort();
  const alpha = (1 - level) / 2;
  return { value: mean, lower: quantileSorted(stats, alpha), upper: quantileSorted(stats, 1 - alpha), rows };
}

/**
 * Before → after change of a mean over rows, paired by row: mean of (after_r − before_r) with a
 * bootstrap over rows (rows present in both).
 */
export function pairedChange(
  before: readonly (number | null)[],
  after: readonly (number | null)[],
  options: BootstrapOptions = {},
): AggregateMetric {
  const diffs: number[] = [];
  before.forEach((b, i) => {
    const a = after[i];
    if (b !== null && a !== null && a !== undefined) diffs.push(a - b);
  });
  return meanOverRows(diffs, options);
}
