/**
 * `evaluate`: TIME's own evaluation on TIMED (src/evaluate/timed.ts, metrics.ts), in a resumable run
 * folder like an audit's (src/audit/store.ts):
 *
 *   1. rows: the file's rows that passed the column checks, the selected ones, and the token checks
 *      here (every prompt within the text encoder's 77 tokens; `new` contains `old`'s tokens in
 *      order, TIME's alignment); a row that fails is reported with its reason and left out.
 *   2. edits: per row (`per-row`, as the paper: the model is reset between rows, each row is its
 *      own TIME edit of the original weights) or all rows in one joint solve (`joint`), for each λ.
 *      No model is exported: an all-site TIME edit is W' = W·M with one M for every site
 *      (src/edit/solve.ts), which the renderer applies to the text side (edit/text-transform.ts).
 *   3. images: per phase (before, and after each λ), row and prompt (source, 5 positives, 5
 *      negatives), N images each, with the SAME seeds for a prompt in every phase (common random
 *      numbers: a before / after difference is the edit's, not the noise's) and disjoint seeds
 *      across the row's prompts (prompt k of the row uses start + k·N … start + (k+1)·N − 1, so the
 *      images a row pools are independent draws), each classified by CLIP between the prompt and
 *      its edited text; a chunk's records in one fsynced write, so a crash loses at most a chunk. The images
 *      come from a render service (src/audit/run.ts `RenderService`), one request per chunk of
 *      seeds with the row's M: in process (the default) or on the queue's workers (`--queue`),
 *      which run the same generate + classify code on the same chunks, so both write the same
 *      evaluate.json.
 *   4. statistics (metrics.ts): per row and aggregated, before and after; the before → after change
 *      per row (Newcombe interval, McNemar on the paired images) and over rows (paired bootstrap).
 *
 * `evaluate.json` has no timestamps and lists everything in plan order, so a resumed run writes
 * the same file as an uninterrupted one.
 */
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { RenderRequest, RenderService } from '../audit/run.js';
import type { FixedGeneration } from '../audit/source.js';
import { type ShareChange, shareChange } from '../audit/stats.js';
import { type ClassifiedRecord, folderDigest, RunStore } from '../audit/store.js';
import type { ClipClassifier } from '../classify/clip.js';
import type { Attribute } from '../classify/labels.js';
import { alignTokens } from '../edit/align.js';
import { alignmentTokens } from '../edit/prepare.js';
import { buildRows, type PromptEncoder, type RowSet } from '../edit/rows.js';
import { solveEdit } from '../edit/solve.js';
import { decodeRgbPng } from '../generate/png.js';
import { GemmEngine } from '../linalg/gemm.js';
import { contactSheet } from '../report/sheet.js';
import type { ClipTokenizer } from '../text/tokenizer.js';
import { writeFileAtomic, writeJsonAtomic } from '../util/atomic.js';
import { EditError, OutputError, show, UsageError } from '../util/errors.js';
import {
  type AggregateMetric,
  type AggregateMetrics,
  aggregateMetrics,
  type BootstrapOptions,
  type ClassifiedImage,
  METRICS,
  type MetricName,
  type PromptRole,
  pairedChange,
  type RowMetrics,
  rowMetrics,
} from './metrics.js';
import { validateEvaluateJson } from './schema.js';
import type { TimedFile, TimedRow, TimedRowIssue } from './timed.js';

export type EvaluateMode = 'per-row' | 'joint';

/** The fixed generation settings (an audit's, a queue task's) and the batch size. */
export interface EvaluateGeneration extends FixedGeneration {
  /** Images per UNet batch (does not change the images; not fingerprinted). */
  batchSize: number;
}

/** What the evaluation runs on (opened by the caller, who disposes it). */
export interface EvaluateWorld {
  /** The model folder (its path and digest identify the run; the renderer renders with it). */
  modelDir: string;
  /** The model's tokenizer (token checks, TIME's alignment). */
  tokenizer: ClipTokenizer;
  /** The classifier (its folder, digest and logit scale identify the run; the renderer classifies with it). */
  classifier: ClipClassifier;
  /** The model's text encoding (rows of TIME's objective). */
  encode: PromptEncoder;
  /**
   * Where the images are rendered and classified, with this run's generation settings: in process
   * (src/audit/pipeline-renderer.ts) or on the queue's workers (src/audit/queue-source.ts), which
   * run the same code on the same chunks.
   */
  renderer: RenderService;
}

export interface EvaluateOptions {
  out: string;
  dataset: TimedFile;
  /** The file's digest (the run's identity covers the rows' text). */
  datasetDigest: string;
  /** Selected 0-based data rows (default: all). */
  rows?: readonly number[];
  world: EvaluateWorld;
  /** Images per prompt N. */
  images: number;
  /** First seed (default 0): prompt k (0 source, 1–5 positives, 6–10 negatives) of every row uses start + k·N … start + (k+1)·N − 1, in every phase. */
  seedStart?: number;
  mode: EvaluateMode;
  /** λ values (each its own "after" phase). */
  lambdas: readonly number[];
  augment: boolean;
  generation: EvaluateGeneration;
  /** Execution device, part of the run's identity (default 'cpu'). */
  device?: string;
  /** Images per prompt kept for the contact sheets (default 4). */
  sheetImages?: number;
  restart?: boolean;
  bootstrap?: BootstrapOptions;
  onProgress?: (p: EvaluateProgress) => void;
  log?: (line: string) => void;
}

export interface EvaluateProgress {
  phase: string;
  done: number;
  total: number;
  /** With the queue: workers connected, and the names of those whose results arrived. */
  workers?: { connected: number; seen: string[] };
}

export interface PromptResult {
  role: PromptRole;
  /** 1-based position among the row's positives / negatives (0 for the source). */
  position: number;
  prompt: string;
  /** The text it is classified against: new, gt_i or gn_i. */
  edited: string;
  /** Images classified as the edited text, of n. */
  k: number;
  n: number;
}

export interface PhaseRowResult {
  metrics: RowMetrics;
  prompts: PromptResult[];
}

export interface RowChange {
  metric: MetricName;
  change: ShareChange;
}

export interface EvaluatedRow {
  index: number;
  line: number;
  old: string;
  new: string;
  before: PhaseRowResult;
  after: { lambda: number; result: PhaseRowResult; changes: RowChange[] }[];
  /** Contact sheets (relative paths), one per λ. */
  sheets: string[];
}

export interface EvaluateResult {
  kind: 'timed-evaluation';
  version: 1;
  fingerprint: string;
  settings: Record<string, unknown>;
  dataset: { file: string; digest: string; rowCount: number; selected: number[] };
  mode: EvaluateMode;
  augment: boolean;
  lambdas: number[];
  images: number;
  /** Prompt k of a row uses seeds start + k·count … start + (k+1)·count − 1 (perRow = 11·count in all). */
  seeds: { start: number; count: number; perRow: number };
  issues: TimedRowIssue[];
  rows: EvaluatedRow[];
  summary: {
    rows: number;
    before: AggregateMetrics;
    after: { lambda: number; metrics: AggregateMetrics; change: Record<MetricName, AggregateMetric> }[];
  };
  /** λ plot (relative path) when more than one λ was evaluated. */
  plot: string | null;
}

/** Token checks of a row: every prompt within the encoder's context, `old` → `new` aligned. */
export function checkRowTokens(row: TimedRow, tokenizer: ClipTokenizer): TimedRowIssue | null {
  const prompts: [string, string][] = [
    ['old', row.old],
    ['new', row.new],
    ...row.positives.flatMap((p, i): [string, string][] => [
      [`positive${i + 1}`, p.prompt],
      [`gt${i + 1}`, p.edited],
    ]),
    ...row.negatives.flatMap((p, i): [string, string][] => [
      [`negative${i + 1}`, p.prompt],
      [`gn${i + 1}`, p.edited],
    ]),
  ];
  const long = prompts.filter(([, p]) => tokenizer.encode(p).truncated);
  if (long.length) {
    return {
      index: row.index,
      line: row.line,
      kind: 'too-long',
      message: `line ${row.line}: ${long.map(([c, p]) => `${c} ${show(p)}`).join(', ')} longer than ${tokenizer.maxLength} tokens (rule: the text encoder sees at most ${tokenizer.maxLength}, BOS and EOS included)`,
    };
  }
  try {
    alignTokens(
      { prompt: row.old, ids: tokenizer.encode(row.old).ids },
      { prompt: row.new, ids: tokenizer.encode(row.new).ids },
      alignmentTokens(tokenizer),
    );
  } catch (error) {
    if (!(error instanceof EditError)) throw error;
    return { index: row.index, line: row.line, kind: 'alignment', message: `line ${row.line}: ${error.message}` };
  }
  return null;
}

interface PlannedPrompt {
  role: PromptRole;
  position: number;
  /** k: 0 source, 1–5 positives, 6–10 negatives (its seed block). */
  slot: number;
  prompt: string;
  edited: string;
}

function plannedPrompts(row: TimedRow): PlannedPrompt[] {
  return [
    { role: 'source', position: 0, slot: 0, prompt: row.old, edited: row.new },
    ...row.positives.map((p, i) => ({
      role: 'positive' as const,
      position: i + 1,
      slot: 1 + i,
      prompt: p.prompt,
      edited: p.edited,
    })),
    ...row.negatives.map((p, i) => ({
      role: 'negative' as const,
      position: i + 1,
      slot: 1 + row.positives.length + i,
      prompt: p.prompt,
      edited: p.edited,
    })),
  ];
}

/** Rows per render call (bounds the edits held at once: one d × d M per row). */
const ROWS_PER_CALL = 16;

/** The renderer must render with this run's model and generation settings (they are in the fingerprint). */
function checkRenderer(identity: Record<string, unknown>, settings: Record<string, unknown>): void {
  const model = identity.model as { digest?: string } | undefined;
  const expected = settings.model as { digest: string };
  const generation = settings.generation as Record<string, unknown>;
  const differ = Object.keys(generation).filter((k) => identity[k] !== generation[k]);
  if (model?.digest !== expected.digest) differ.unshift('model');
  if (identity.device !== settings.device) differ.push('device');
  if (differ.length)
    throw new UsageError(
      `the renderer's ${differ.join(', ')} differ from the run's (${differ.map((k) => `${k}: ${show(identity[k])} vs ${show(k === 'model' ? expected.digest : (generation[k] ?? settings[k]))}`).join('; ')})`,
      { field: 'renderer' },
    );
}

const phaseName = (lambda: number | null) => (lambda === null ? 'before' : `after-lambda-${lambda}`);

/** Run (or resume) a TIMED evaluation into `options.out`; returns what evaluate.json holds. */
export async function runEvaluate(options: EvaluateOptions): Promise<EvaluateResult> {
  const { dataset, world, mode, augment } = options;
  const log = options.log ?? (() => {});
  const N = options.images;
  if (!Number.isInteger(N) || N < 1) throw new UsageError(`${show(N)} must be an integer ≥ 1`, { field: 'images' });
  const seedStart = options.seedStart ?? 0;
  if (!Number.isInteger(seedStart) || seedStart < 0)
    throw new UsageError(`${show(seedStart)} must be an integer ≥ 0`, { field: 'seedStart' });
  if (options.lambdas.length === 0) throw new UsageError('at least one λ is needed', { field: 'lambdas' });
  for (const l of options.lambdas) {
    if (!(Number.isFinite(l) && l > 0))
      throw new UsageError(`${show(l)} must be a finite number > 0`, { field: 'lambdas' });
  }
  const lambdas = [...new Set(options.lambdas)];
  if (mode !== 'per-row' && mode !== 'joint')
    throw new UsageError(`${show(mode)} is not one of per-row, joint`, { field: 'mode' });
  const sheetImages = Math.min(N, options.sheetImages ?? 4);
  const out = resolve(options.out);
  const gen = options.generation;
  const tokenizer = world.tokenizer;

  // 1. Rows: selection, token checks.
  const selected = options.rows ? [...options.rows] : Array.from({ length: dataset.rowCount }, (_, i) => i);
  const issues: TimedRowIssue[] = dataset.issues.filter((i) => selected.includes(i.index));
  const rows: TimedRow[] = [];
  for (const row of dataset.rows) {
    if (!selected.includes(row.index)) continue;
    const issue = checkRowTokens(row, tokenizer);
    if (issue) issues.push(issue);
    else rows.push(row);
  }
  issues.sort((a, b) => a.index - b.index);
  for (const i of issues) log(`row ${i.index} left out (${i.kind}): ${i.message}`);
  if (rows.length === 0) {
    throw new UsageError(
      `none of the ${selected.length} selected rows of ${dataset.file} can be evaluated (${issues.length} bad rows; first: ${issues[0]?.message ?? 'none'})`,
      { field: 'dataset' },
    );
  }

  // 2. Run folder.
  const settings = {
    kind: 'timed-evaluation',
    model: { path: resolve(world.modelDir), digest: folderDigest(world.modelDir) },
    generation: {
      steps: gen.steps,
      scheduler: gen.scheduler,
      guidance: gen.guidance,
      height: gen.height,
      width: gen.width,
      negativePrompt: gen.negativePrompt,
    },
    device: options.device ?? 'cpu',
    classifier: {
      path: world.classifier.folder.dir,
      digest: folderDigest(world.classifier.folder.dir),
      logitScale: world.classifier.logitScale,
    },
    dataset: { digest: options.datasetDigest },
    // How an edit reaches the images: M on the text side (every site W′ = W·M, float32 M), the form
    // the queue's tasks carry. Run folders of the earlier low-rank / Δ form are not mixed with it.
    edit: 'text-transform-M',
  };
  const store = RunStore.open(out, settings, { restart: options.restart });
  const gemm = new GemmEngine();
  try {
    const done = new Map<string, ClassifiedRecord>();
    for (const r of store.records) if (r.kind === 'classified') done.set(r.key, r);
    const seedsOf = (p: PlannedPrompt) => Array.from({ length: N }, (_, i) => seedStart + p.slot * N + i);
    // Phase keys: the after phases name everything their edit depends on besides the settings.
    const jointTag =
      mode === 'joint'
        ? createHash('sha256')
            .update(rows.map((r) => r.index).join(','))
            .digest('hex')
            .slice(0, 12)
        : '';
    const phaseKey = (lambda: number | null, row: number) =>
      lambda === null
        ? 'before'
        : `after/${mode}${mode === 'joint' ? `:${jointTag}` : `:${row}`}/${augment ? 'aug' : 'plain'}/${lambda}`;
    const key = (lambda: number | null, row: number, p: PlannedPrompt, seed: number) =>
      JSON.stringify([phaseKey(lambda, row), row, p.role, p.position, seed]);
    const pngOf = (lambda: number | null, row: number, p: PlannedPrompt, seed: number) =>
      `images/${phaseName(lambda)}/row-${row}/${p.role}${p.position ? p.position : ''}-s${seed}.png`;
    const sheetPrompt = (p: PlannedPrompt) => p.position <= 1;

    // 3. Edits (in memory; recomputed on resume: deterministic and cheap next to the images). Each is
    // an all-site TIME edit W′ = W·M applied as M on the text side, in process as on the queue's
    // workers (a task carries the base model's digest and M).
    const tAlign = alignmentTokens(tokenizer);
    const editRows = new Map<number, RowSet>();
    const rowSetFor = async (rowIndices: readonly number[]): Promise<RowSet> =>
      buildRows(world.encode, {
        pairs: rowIndices.map((i) => {
          const r = rows.find((x) => x.index === i) as TimedRow;
          return { source: r.old, destination: r.new };
        }),
        augment,
        tokens: tAlign,
      });
    const jointEdits = new Map<number, Float32Array>();
    const editFor = async (lambda: number, row: number): Promise<Float32Array> => {
      const have = mode === 'joint' ? jointEdits.get(lambda) : undefined;
      if (have) return have;
      const setKey = mode === 'joint' ? -1 : row;
      let set = editRows.get(setKey);
      if (!set) {
        set = await rowSetFor(mode === 'joint' ? rows.map((r) => r.index) : [row]);
        editRows.set(setKey, set);
      }
      const { M } = await solveEdit(set, { lambda, gemm });
      if (mode === 'joint') jointEdits.set(lambda, M);
      return M;
    };

    // 4. Images: every phase, row, prompt, in chunks of batchSize seeds (the same chunks on every
    // run, so a resumed or queued run renders the same batches); chunks with a pending seed are
    // requests of the render service, results recorded as they arrive, each image once.
    const renderer = world.renderer;
    checkRenderer(renderer.identity, settings);
    const phases: (number | null)[] = [null, ...lambdas];
    const total = phases.length * rows.length * 11 * N;
    let count = 0;
    for (const lambda of phases)
      for (const row of rows)
        for (const p of plannedPrompts(row))
          for (const s of seedsOf(p)) if (done.has(key(lambda, row.index, p, s))) count++;
    const chunksOf = (p: PlannedPrompt) => {
      const seeds = seedsOf(p);
      const chunks: number[][] = [];
      for (let start = 0; start < seeds.length; start += gen.batchSize)
        chunks.push(seeds.slice(start, start + gen.batchSize));
      return chunks;
    };
    const keptAt = (p: PlannedPrompt, s: number) => sheetPrompt(p) && s < seedStart + p.slot * N + sheetImages;
    const attributeOf = (p: PlannedPrompt): Attribute => ({
      name: 'timed',
      classes: [
        { name: 'prompt', prompts: [p.prompt] },
        { name: 'edited', prompts: [p.edited] },
      ],
    });
    let workers: EvaluateProgress['workers'];
    for (const lambda of phases) {
      const name = phaseName(lambda);
      if (lambda !== null)
        log(`${name}: ${mode === 'joint' ? 'one joint edit of' : 'one edit per row for'} ${rows.length} rows`);
      // Rows in groups: one render call per group keeps every worker busy while only the group's
      // edits (d × d each) are held.
      for (let g = 0; g < rows.length; g += ROWS_PER_CALL) {
        const requests: RenderRequest[] = [];
        const planned: { row: number; p: PlannedPrompt }[] = [];
        for (const row of rows.slice(g, g + ROWS_PER_CALL)) {
          let M: Float32Array | undefined;
          for (const p of plannedPrompts(row))
            for (const chunk of chunksOf(p)) {
              if (chunk.every((s) => done.has(key(lambda, row.index, p, s)))) continue;
              if (lambda !== null) M ??= await editFor(lambda, row.index);
              requests.push({
                profession: '',
                prompt: p.prompt,
                seeds: chunk,
                keep: chunk.map((s) => keptAt(p, s)),
                attribute: attributeOf(p),
                threshold: null,
                transform: M,
              });
              planned.push({ row: row.index, p });
            }
        }
        if (requests.length === 0) continue;
        await renderer.render(
          requests,
          (i, images) => {
            const req = requests[i] as RenderRequest;
            const { row, p } = planned[i] as { row: number; p: PlannedPrompt };
            const records: ClassifiedRecord[] = [];
            images.forEach((img, j) => {
              const s = req.seeds[j] as number;
              const k = key(lambda, row, p, s);
              if (done.has(k)) return; // recorded before (a resumed chunk, a duplicate delivery): once
              if (img.png && req.keep[j]) writeFileAtomic(join(out, pngOf(lambda, row, p, s)), img.png);
              const rec: ClassifiedRecord = {
                kind: 'classified',
                key: k,
                profession: `row ${row}`,
                label: img.classification.label,
                unclear: img.classification.kind === 'unclear',
                probabilities: img.classification.probabilities,
              };
              records.push(rec);
              done.set(k, rec);
              count++;
            });
            // the chunk's records in one write and one fsync
            store.appendAll(records);
            options.onProgress?.({ phase: name, done: count, total, workers });
          },
          (tick) => {
            workers = { connected: tick.workers, seen: tick.seen };
            options.onProgress?.({ phase: name, done: count, total, workers });
          },
        );
      }
    }

    // 5. Statistics, in plan order.
    const outcome = (lambda: number | null, row: number, p: PlannedPrompt, s: number) =>
      (done.get(key(lambda, row, p, s)) as ClassifiedRecord).label === 'edited';
    const phaseRow = (lambda: number | null, row: TimedRow): PhaseRowResult => {
      const classified: ClassifiedImage[] = [];
      const prompts = plannedPrompts(row).map((p): PromptResult => {
        let k = 0;
        for (const s of seedsOf(p)) {
          const edited = outcome(lambda, row.index, p, s);
          if (edited) k++;
          classified.push({ role: p.role, edited });
        }
        return { role: p.role, position: p.position, prompt: p.prompt, edited: p.edited, k, n: N };
      });
      return { metrics: rowMetrics(classified), prompts };
    };
    /** Paired counts per metric: b = counted before, not after; c = not before, counted after. */
    const paired = (lambda: number, row: TimedRow, metric: MetricName) => {
      const role: PromptRole = metric === 'efficacy' ? 'source' : metric === 'generality' ? 'positive' : 'negative';
      const counts = (x: boolean) => (metric === 'specificity' ? !x : x);
      const t = { a: 0, b: 0, c: 0, d: 0 };
      for (const p of plannedPrompts(row).filter((q) => q.role === role))
        for (const s of seedsOf(p)) {
          const before = counts(outcome(null, row.index, p, s));
          const after = counts(outcome(lambda, row.index, p, s));
          if (before && after) t.a++;
          else if (before) t.b++;
          else if (after) t.c++;
          else t.d++;
        }
      return t;
    };
    const evaluated: EvaluatedRow[] = [];
    for (const row of rows) {
      const before = phaseRow(null, row);
      const after = lambdas.map((lambda) => {
        const result = phaseRow(lambda, row);
        const changes = METRICS.map((metric) => ({
          metric,
          change: shareChange(before.metrics[metric], result.metrics[metric], paired(lambda, row, metric)),
        }));
        return { lambda, result, changes };
      });
      const sheets = writeRowSheets(out, row, lambdas, {
        seedsOf: (p) => seedsOf(p).slice(0, sheetImages),
        pngOf: (lambda, p, s) => pngOf(lambda, row.index, p, s),
        edited: (lambda, p, s) => outcome(lambda, row.index, p, s),
      });
      evaluated.push({ index: row.index, line: row.line, old: row.old, new: row.new, before, after, sheets });
    }
    const beforeRows = evaluated.map((r) => r.before.metrics);
    const summary: EvaluateResult['summary'] = {
      rows: evaluated.length,
      before: aggregateMetrics(beforeRows, options.bootstrap),
      after: lambdas.map((lambda, li) => {
        const afterRows = evaluated.map((r) => (r.after[li] as EvaluatedRow['after'][number]).result.metrics);
        const change = {} as Record<MetricName, AggregateMetric>;
        for (const m of METRICS)
          change[m] = pairedChange(
            beforeRows.map((r) => r[m].value),
            afterRows.map((r) => r[m].value),
            options.bootstrap,
          );
        return { lambda, metrics: aggregateMetrics(afterRows, options.bootstrap), change };
      }),
    };
    const result: EvaluateResult = {
      kind: 'timed-evaluation',
      version: 1,
      fingerprint: store.header.fingerprint,
      settings,
      dataset: { file: dataset.file, digest: options.datasetDigest, rowCount: dataset.rowCount, selected },
      mode,
      augment,
      lambdas,
      images: N,
      seeds: { start: seedStart, count: N, perRow: 11 * N },
      issues,
      rows: evaluated,
      summary,
      plot: lambdas.length > 1 ? 'lambda.svg' : null,
    };
    validateEvaluateJson(result);
    writeJsonAtomic(join(out, 'evaluate.json'), result);
    return result;
  } finally {
    store.close();
    await gemm.dispose();
  }
}

/**
 * Contact sheet of a row per λ: three before/after pairs of lines (source, positive 1, negative 1),
 * the same seeds in every line; frames coloured by CLIP's choice (prompt / edited text).
 */
function writeRowSheets(
  out: string,
  row: TimedRow,
  lambdas: readonly number[],
  images: {
    seedsOf: (p: PlannedPrompt) => number[];
    pngOf: (lambda: number | null, p: PlannedPrompt, seed: number) => string;
    edited: (lambda: number | null, p: PlannedPrompt, seed: number) => boolean;
  },
): string[] {
  const prompts = plannedPrompts(row).filter((p) => p.position <= 1);
  const sheets: string[] = [];
  for (const lambda of lambdas) {
    const cells = [];
    for (const p of prompts)
      for (const phase of [null, lambda])
        for (const s of images.seedsOf(p)) {
          const path = join(out, images.pngOf(phase, p, s));
          if (!existsSync(path)) continue;
          const png = decodeRgbPng(readFileSync(path));
          if (!png) throw new OutputError(`${path}: expected an 8-bit RGB PNG written by the evaluation`);
          cells.push({
            image: { width: png.width, height: png.height, data: png.rgb },
            classIndex: images.edited(phase, p, s) ? 1 : 0,
          });
        }
    if (cells.length === 0) continue;
    const rel = `sheets/row-${row.index}-lambda-${lambda}.png`;
    const columns = Math.max(1, ...prompts.map((p) => images.seedsOf(p).length));
    writeFileAtomic(join(out, rel), contactSheet(cells, { columns }));
    sheets.push(rel);
  }
  return sheets;
}

/** sha256 of a file's bytes (the dataset's identity). */
export function fileDigest(path: string): string {
  if (!existsSync(path)) throw new OutputError(`${show(path)} does not exist`);
  return createHash('sha256').update(readFileSync(path)).digest('hex');
}
