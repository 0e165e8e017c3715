/**
 * The debias job (issue: "Debias jobs from config files"): audit before → per-profession tuning of
 * the edit strength → ONE joint closed-form commit (+ bounded joint re-tuning rounds) → export →
 * audit after on held-out prompts and seeds → reports.
 *
 * Every phase is resumable: the audits resume from their own run folders, the tuning state is saved
 * (atomically) after every batch of images, joint rounds after every verification, and the export is
 * skipped when the run folder already holds it. Re-running the same command after a crash continues
 * where it stopped and ends with the same result as an uninterrupted run.
 *
 *   run folder  <output>/<name>/
 *     config.json          the config as run (defaults filled in)
 *     state.json           the job state (phase, tuners, joint rounds): resume point
 *     job.json             the log of every probe and round, and the result summary
 *     before/  after/      audit run folders (held-out templates, evaluation seeds); the after audit
 *                          of a model that was not exported (tolerance not reached) goes to
 *                          after-unexported/ (the in-memory edit: other settings, other folder)
 *     gendered-<class>/    audits of explicitly gendered prompts on the debiased model
 *     model/               the debiased model (diffusers layout + time-edit.json)
 *     report.md  report.html
 */
import { existsSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import pLimit from 'p-limit';
import type { Profession, ProfessionList } from '../audit/professions.js';
import { type AuditResult, runAudit } from '../audit/run.js';
import { seedPlan } from '../audit/seeds.js';
import { pipelineSource } from '../audit/source.js';
import { type MeanDelta, meanDelta } from '../audit/stats.js';
import { fingerprint } from '../audit/store.js';
import type { ClipClassifier, RgbImage } from '../classify/clip.js';
import type { Attribute } from '../classify/labels.js';
import { applyEdit } from '../edit/apply.js';
import type { EncodedRows, RowSet } from '../edit/rows.js';
import { buildRows } from '../edit/rows.js';
import { type EditSolution, solveEdit } from '../edit/solve.js';
import type { StableDiffusionPipeline } from '../generate/pipeline.js';
import { GemmEngine, matrix } from '../linalg/gemm.js';
import { EDIT_MANIFEST, exportEditedModel } from '../model/export.js';
import type { SdModel } from '../model/folder.js';
import { type EditSite, locateSites, readSiteWeightStored } from '../model/sites.js';
import type { ClipTokenizer } from '../text/tokenizer.js';
import { writeJsonAtomic } from '../util/atomic.js';
import { ConfigError, OutputError, show } from '../util/errors.js';
import type { JobConfig } from './config.js';
import { logit, normalQuantile } from './dose-response.js';
import { compensateInterference, editProgress, startingStrength } from './interference.js';
import {
  buildPairs,
  fillJobTemplate,
  type ProfessionPair,
  preservationPrompts,
  tuningPrompt,
  UNRELATED_HELD_OUT_PROMPTS,
  UNRELATED_PROMPTS,
  unrelatedPreservationWeights,
} from './prompts.js';
import {
  createTuner,
  imagesUsed,
  nextRequest,
  observe,
  type TunerSettings,
  type TunerState,
  wilsonInterval,
} from './tuner.js';

/** What the job needs from the layers below, opened once by the caller (and disposed by it). */
export interface JobWorld {
  model: SdModel;
  pipeline: StableDiffusionPipeline;
  tokenizer: ClipTokenizer;
  /** Encodes prompts with the model's text encoder (padded ids and last_hidden_state rows). */
  encode: (prompts: string[]) => Promise<EncodedRows[]>;
  classifier: ClipClassifier;
  /** The profession list named by the config (already filtered by `select`). */
  professions: ProfessionList;
  /** Opens a pipeline on another model folder (the exported one, for the after audit). */
  openPipeline: (dir: string) => Promise<StableDiffusionPipeline>;
}

export interface JobOptions {
  /** Start over: delete the run folder's state and audits. */
  restart?: boolean;
  /** Export the model even when some profession did not reach the tolerance. */
  exportPartial?: boolean;
  log?: (line: string) => void;
}

export interface ProbeLog {
  profession: string;
  probe: number;
  strength: number;
  x: number;
  k: number;
  n: number;
  generated: number;
  share: number;
  interval: [number, number];
  outcome: string;
  /** seed-pool indices evaluated: [from, to) of the tuning seeds */
  seeds: [number, number];
}

export interface ProfessionOutcome {
  profession: string;
  destinationClass: string;
  source: string;
  destination: string;
  target: number;
  status: 'converged' | 'exhausted';
  strength: number;
  lambda: number;
  probes: number;
  tuningImages: number;
  /** destination-class share under its own single edit (tuning prompts and seeds) */
  singleShare: number | null;
  /** destination-class share under the joint edit, per joint round (tuning prompts, verification seeds) */
  jointShares: number[];
  before: ShareSummary | null;
  after: ShareSummary | null;
}

export interface TextChange {
  mean: number;
  max: number;
  prompts: string[];
}

export interface ShareSummary {
  /** share of the config's target class */
  share: number | null;
  lower: number;
  upper: number;
  delta: number | null;
  n: number;
}

export interface JointRound {
  round: number;
  /** the joint solve's strengths s_p (after interference compensation, when on) */
  strengths: Record<string, number>;
  /** σ_p: each profession's equivalent single-edit strength this round's solve was compensated for */
  equivalent?: Record<string, number>;
  /** text-side progress π_p (interference.ts eq. I1): its own edit's (target), the joint solve's at σ and at s */
  compensation?: {
    target: Record<string, number>;
    uncompensated: Record<string, number>;
    compensated: Record<string, number>;
    residual: number;
    iterations: number;
  };
  shares: Record<string, { k: number; n: number; share: number }>;
  outside: string[];
}

export interface JobState {
  kind: 'debias-state';
  version: 1;
  fingerprint: string;
  phase: 'baseline' | 'tuning' | 'joint' | 'export' | 'after' | 'done';
  pairs: ProfessionPair[] | null;
  tuners: Record<string, TunerState>;
  uce: UceState | null;
  joint: {
    rounds: JointRound[];
    strengths: Record<string, number>;
    /** σ_p for the next round (compensation on) */
    equivalent?: Record<string, number>;
    pending: JointRound | null;
    done: boolean;
  };
  probeLog: ProbeLog[];
}

export interface UceState {
  round: number;
  /** interpolation weight w_p of each profession (target rows c + w_p (c* − c)) */
  weights: Record<string, number>;
  history: { round: number; weights: Record<string, number>; shares: Record<string, number>; images: number }[];
  images: Record<string, number>;
  converged: boolean;
  done: boolean;
}

export interface DebiasResult {
  kind: 'debias';
  version: 1;
  runDir: string;
  /** the audit run folders, relative to runDir */
  audits: { before: string; after: string };
  strategy: JobConfig['tuning']['strategy'];
  status: 'complete' | 'tolerance-not-reached';
  exported: string | null;
  professions: ProfessionOutcome[];
  heldOut: { profession: string; before: ShareSummary | null; after: ShareSummary | null }[];
  summary: {
    professions: number;
    targetClass: string;
    targetShare: number;
    meanDeltaBefore: MeanDelta | null;
    meanDeltaAfter: MeanDelta | null;
    maxDeltaAfter: number | null;
    tuningImages: number;
    tuningImagesPerProfession: number;
    /** explicitly gendered prompts that kept their class on the debiased model */
    genderedKept: {
      k: number;
      n: number;
      share: number | null;
      perClass: Record<string, { k: number; n: number }>;
    } | null;
    /**
     * ‖W'c − Wc‖/‖Wc‖ per (prompt, edited site), mean and max: on the preserved unrelated prompts
     * (the defaults' list, weight preserve.unrelatedWeight in the solve) and on unrelated prompts the
     * solve never saw (heldOut)
     */
    unrelatedTextChange: (TextChange & { heldOut: TextChange }) | null;
    jointRounds: number;
  };
  joint: JointRound[];
}

const STATE = 'state.json';

/** Settings whose change invalidates a run folder (what decides images and edits). */
function jobFingerprint(config: JobConfig): string {
  const { output: _o, concurrency: _c, threads: _t, ...decisive } = config;
  return fingerprint(decisive as unknown as Record<string, unknown>);
}

export function attributeOf(config: JobConfig): Attribute {
  return {
    name: config.attribute.name,
    classes: config.attribute.classes.map((c) => ({ name: c.id, prompts: [...c.labels] })),
  };
}

export function runDirOf(config: JobConfig): string {
  return resolve(config.output, config.name);
}

/** Run (or resume) the job. */
export async function runDebiasJob(
  config: JobConfig,
  world: JobWorld,
  options: JobOptions = {},
): Promise<DebiasResult> {
  const log = options.log ?? (() => {});
  const runDir = runDirOf(config);
  const fp = jobFingerprint(config);
  if (options.restart && existsSync(runDir)) rmSync(runDir, { recursive: true, force: true });
  mkdirSync(runDir, { recursive: true });
  const state = loadState(runDir, fp);
  writeJsonAtomic(join(runDir, 'config.json'), config);
  const save = () => writeJsonAtomic(join(runDir, STATE), state);

  const attribute = attributeOf(config);
  const allProfessions = world.professions.professions;
  const held = new Set(config.professions.heldOut);
  for (const h of held) {
    if (!allProfessions.some((p) => p.profession === h)) {
      throw new ConfigError(
        `config.professions.heldOut: ${show(h)} is not in the list ${show(world.professions.name)} (rule: known profession)`,
      );
    }
  }
  const edited = allProfessions.filter((p) => !held.has(p.profession));
  if (edited.length === 0) throw new ConfigError('config.professions: no profession left to edit (rule: at least one)');
  const gen = config.generation;
  const sourceSettings = {
    steps: gen.steps,
    scheduler: gen.scheduler,
    guidance: gen.guidance,
    height: gen.height,
    width: gen.width,
    negativePrompt: gen.negativePrompt,
    batchSize: gen.batchSize,
  };
  const evalTemplates = config.prompts.evaluationTemplates;
  const perTemplate = Math.max(1, Math.ceil(config.audit.imagesPerProfession / evalTemplates.length));
  // Distinct seeds per template: imagesPerProfession independent seeds per profession.
  const evalSeeds = {
    ...seedPlan('evaluation', perTemplate, config.seeds.evaluation),
    perTemplate: 'distinct' as const,
  };
  const auditCommon = {
    classifier: world.classifier,
    professions: world.professions,
    templates: evalTemplates,
    seeds: evalSeeds,
    attribute,
    threshold: config.attribute.threshold,
    targetClass: config.target.class,
    targetShare: config.target.share,
    batchSize: Math.max(gen.batchSize, 8),
  };

  // 1. Baseline audit on held-out prompts and seeds.
  log(
    `before: auditing ${allProfessions.length} professions × ${evalTemplates.length} templates × ${perTemplate} seeds`,
  );
  const before = await runAudit({
    ...auditCommon,
    out: join(runDir, 'before'),
    source: pipelineSource(world.pipeline, sourceSettings, config.device),
    onProgress: progressLogger(log, 'before'),
  });
  const baselineShare = new Map(before.professions.map((p) => [p.profession, p.share.p]));

  // 2. Pairs and rows (deterministic: recomputed on resume, checked against the saved pairs).
  const pairs = buildPairs(config, edited, baselineShare);
  if (state.pairs && JSON.stringify(state.pairs) !== JSON.stringify(pairs)) {
    throw new OutputError(`${runDir}: the saved pairs differ from this run's (the baseline changed?); pass --restart`);
  }
  state.pairs = pairs;
  if (state.phase === 'baseline') state.phase = 'tuning';
  save();
  const preserve = preservationPrompts(config, edited);
  const unrelatedWeights = unrelatedPreservationWeights(config, edited);
  const rows = await buildRows(world.encode, {
    pairs: pairs.map((p) => ({ source: p.source, destination: p.destination })),
    augment: config.prompts.augment,
    preserve,
    tokens: alignTokensOf(world.tokenizer),
  });
  log(
    `rows: ${pairs.length} pairs${config.prompts.augment ? ' × 4 (augmented)' : ''} + ${preserve.length} preserved prompts = ${rows.n} rows of d = ${rows.d}`,
  );
  const opposite =
    config.tuning.strategy === 'ed50' && (config.tuning.compensate || config.tuning.initialStrength === 'auto')
      ? await oppositeRows(config, world, edited, pairs, rows)
      : undefined;

  const located = locateSites(world.model);
  const sites = selectJobSites(located, config);
  const allSites = sites.length === located.length;
  if (!allSites) {
    throw new ConfigError(
      `config.edit: tuning edits of a subset of sites (${sites.length} sites) need a UNet per probe; this version tunes edits of every to_k/to_v site only (use the default projections and layers)`,
    );
  }
  const gemm = new GemmEngine();
  const professionByName = new Map(edited.map((p) => [p.profession, p]));
  const classify = async (images: RgbImage[], profession: Profession) =>
    world.classifier.classify(images, attribute, {
      profession: profession.profession,
      threshold: config.attribute.threshold,
    });

  /** Generate and classify: per seed-pool index, whether the image is in the class `dest`. */
  const evaluate = async (
    profession: Profession,
    M: Float32Array,
    seedStart: number,
    indices: readonly number[],
    dest: string,
  ): Promise<boolean[]> => {
    const byPrompt = new Map<string, number[]>();
    for (const i of indices) {
      const prompt = tuningPrompt(config, profession, i);
      byPrompt.set(prompt, [...(byPrompt.get(prompt) ?? []), i]);
    }
    const outcome = new Map<number, boolean>();
    for (const [prompt, idx] of byPrompt) {
      const result = await world.pipeline.generate({
        prompt,
        negativePrompt: gen.negativePrompt,
        seeds: idx.map((i) => seedStart + i),
        steps: gen.steps,
        scheduler: gen.scheduler,
        guidance: gen.guidance,
        height: gen.height,
        width: gen.width,
        batchSize: Math.max(gen.batchSize, idx.length),
        textTransform: M,
      });
      const images = result.images.map((img) => ({ width: img.width, height: img.height, data: img.rgb }));
      const labels = await classify(images, profession);
      labels.forEach((l, j) => {
        outcome.set(idx[j] as number, l.kind === 'label' && l.label === dest);
      });
    }
    return indices.map((i) => outcome.get(i) as boolean);
  };

  const pairIndex = new Map(pairs.map((p, i) => [p.profession, i]));
  const solveFor = async (
    strengths: Record<string, number>,
    interpolation?: Record<string, number>,
  ): Promise<EditSolution> => {
    const names = Object.keys(strengths);
    const subset = subsetRows(
      rows,
      names.map((n) => pairIndex.get(n) as number),
      interpolation && names.map((n) => interpolation[n] as number),
    );
    return solveEdit(subset, {
      lambda: names.map((n) => 1 / (strengths[n] as number)),
      mu: config.preserve.weight,
      muByPrompt: unrelatedWeights,
      gemm,
    });
  };

  // 3. Tuning.
  const phase: PhaseContext = {
    config,
    state,
    pairs,
    professions: professionByName,
    solveFor,
    evaluate,
    rows,
    opposite,
    baseline: baselineShare,
    save,
    log,
  };
  if (config.tuning.strategy === 'ed50') {
    await tuneEd50(phase);
  } else {
    await tuneUce(phase);
  }

  // 4. Joint commit and re-tuning rounds (ed50; UCE's loop is joint already).
  if (state.phase === 'tuning') state.phase = 'joint';
  save();
  if (config.tuning.strategy === 'ed50') {
    await jointRounds(phase);
  } else if (!state.joint.done) {
    state.joint.strengths = Object.fromEntries(pairs.map((p) => [p.profession, uceStrength]));
    state.joint.done = true;
    save();
  }
  const unconverged = pairs
    .filter((p) => professionStatus(config, state, p.profession) !== 'converged')
    .map((p) => p.profession);
  const complete = unconverged.length === 0;
  if (!complete) {
    log(`tolerance not reached for ${unconverged.join(', ')} (see job.json for each profession's probes)`);
  }
  const strengths = state.joint.strengths;
  const interpolation = config.tuning.strategy === 'uce' ? state.uce?.weights : undefined;
  const solution = await solveFor(strengths, interpolation);

  // 5. Export.
  const modelDir = join(runDir, 'model');
  let exported: string | null = null;
  if (complete || options.exportPartial) {
    if (state.phase === 'joint') state.phase = 'export';
    if (state.phase === 'export' || !existsSync(join(modelDir, EDIT_MANIFEST))) {
      log(`export: ${sites.length} sites → ${modelDir}`);
      const weights = sites.map((s) => ({ name: s.name, ...readSiteWeightStored(world.model, s) }));
      const applied = await applyEdit(weights, solution, { gemm });
      await exportEditedModel({
        model: world.model,
        weights: new Map(applied.sites.map((s) => [s.name, s.W])),
        layout: 'stored',
        outDir: modelDir,
        force: true,
        sites,
        manifest: modelManifest(config, state, pairs, solution, preserve, before, null),
      });
      state.phase = 'after';
      save();
    }
    exported = modelDir;
  }

  // 6. After: audit the exported model (or the in-memory edit when not exported).
  let after: AuditResult | null = null;
  let genderedKept: DebiasResult['summary']['genderedKept'] = null;
  let afterDir = 'after';
  const afterPipeline = exported ? await world.openPipeline(exported) : world.pipeline;
  try {
    const afterSettings = exported ? sourceSettings : { ...sourceSettings, textTransform: solution.M };
    const suffix = exported ? '' : '-unexported';
    afterDir = `after${suffix}`;
    log('after: auditing the debiased model on the held-out prompts and seeds');
    after = await runAudit({
      ...auditCommon,
      out: join(runDir, afterDir),
      source: pipelineSource(afterPipeline, afterSettings, config.device),
      onProgress: progressLogger(log, 'after'),
    });
    if (config.audit.gendered) {
      genderedKept = await genderedAudits(
        config,
        runDir,
        suffix,
        afterPipeline,
        afterSettings,
        auditCommon,
        edited,
        log,
      );
    }
  } finally {
    if (afterPipeline !== world.pipeline) await afterPipeline.dispose();
  }
  const [preserved, heldOut] = await unrelatedChange(world, sites, solution, gemm, [
    UNRELATED_PROMPTS,
    UNRELATED_HELD_OUT_PROMPTS,
  ]);
  const unrelated = { ...(preserved as TextChange), heldOut: heldOut as TextChange };
  await gemm.dispose();
  const result = assemble(
    config,
    runDir,
    afterDir,
    state,
    pairs,
    before,
    after,
    exported,
    complete,
    genderedKept,
    unrelated,
    held,
  );
  if (exported) {
    const manifestPath = join(exported, EDIT_MANIFEST);
    const manifest = JSON.parse(readFileSync(manifestPath, 'utf8')) as Record<string, unknown>;
    manifest.debias = modelManifest(config, state, pairs, solution, preserve, before, after).debias;
    writeJsonAtomic(manifestPath, manifest);
  }
  state.phase = 'done';
  save();
  // Probes by profession and number: professions are tuned concurrently, so the order they were
  // logged in depends on timing, and a resumed run must write the same file as an uninterrupted one.
  const probes = [...state.probeLog].sort((a, b) => a.profession.localeCompare(b.profession) || a.probe - b.probe);
  writeJsonAtomic(join(runDir, 'job.json'), { ...result, probes, uce: state.uce });
  return result;
}

/** Fraction of the Newton step taken in a joint re-tuning round. */
const JOINT_DAMPING = 0.7;
/** Smallest joint re-tuning step in ln s. */
const MIN_JOINT_STEP = 0.1;

/** UCE's fixed edit strength s = 1/λ (TIME's default λ = 0.1); its loop moves the targets instead. */
const uceStrength = 10;

function loadState(runDir: string, fp: string): JobState {
  const path = join(runDir, STATE);
  if (existsSync(path)) {
    let saved: JobState;
    try {
      saved = JSON.parse(readFileSync(path, 'utf8')) as JobState;
    } catch (cause) {
      throw new OutputError(`${path} is not valid JSON; pass --restart to start over`, { cause });
    }
    if (saved.fingerprint !== fp) {
      throw new OutputError(
        `${runDir} holds a run made with other settings (its config.json); pass --restart to start over, or choose another name/output`,
      );
    }
    return saved;
  }
  return {
    kind: 'debias-state',
    version: 1,
    fingerprint: fp,
    phase: 'baseline',
    pairs: null,
    tuners: {},
    uce: null,
    joint: { rounds: [], strengths: {}, pending: null, done: false },
    probeLog: [],
  };
}

function alignTokensOf(tokenizer: ClipTokenizer) {
  const a = tokenizer.idOf('a</w>');
  const an = tokenizer.idOf('an</w>');
  if (a === undefined || an === undefined) {
    throw new ConfigError('the model tokenizer has no "a</w>"/"an</w>" tokens; the TIME alignment needs them');
  }
  return { a, an, eos: tokenizer.eosId };
}

function selectJobSites(sites: EditSite[], config: JobConfig): EditSite[] {
  const layers = config.edit.layers;
  return sites.filter(
    (s) =>
      config.edit.projections.includes(s.projection) && (!layers || layers.some((prefix) => s.name.startsWith(prefix))),
  );
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

/** What every tuning phase works with. */
interface PhaseContext {
  config: JobConfig;
  state: JobState;
  pairs: ProfessionPair[];
  professions: Map<string, Profession>;
  solveFor: Solver;
  evaluate: Evaluator;
  /** the row set of every pair (pair order) and the preservation prompts */
  rows: RowSet;
  /** per pair row of `rows`: the other class's destination row (interference.ts eq. I1'), when compensating */
  opposite: Float32Array | undefined;
  /** share of the config's target class per profession at baseline */
  baseline: ReadonlyMap<string, number | null>;
  save: () => void;
  log: (line: string) => void;
}

type Solver = (strengths: Record<string, number>, interpolation?: Record<string, number>) => Promise<EditSolution>;
type Evaluator = (
  profession: Profession,
  M: Float32Array,
  seedStart: number,
  indices: readonly number[],
  dest: string,
) => Promise<boolean[]>;

function tunerSettings(config: JobConfig, target: number, start: { strength: number; slope?: number }): TunerSettings {
  const t = config.tuning;
  return {
    target,
    tolerance: t.tolerance,
    confidence: t.confidence,
    decisionConfidence: t.decisionConfidence,
    batch: t.batch,
    imagesPerProbe: t.imagesPerProbe,
    maxProbes: t.maxProbes,
    x0: Math.log(start.strength),
    step: 1.5,
    ...(start.slope !== undefined ? { priorSlope: start.slope } : {}),
    xMin: Math.log(t.strengthRange[0]),
    xMax: Math.log(t.strengthRange[1]),
  };
}

/**
 * The first probe's strength: the config's, or the text-side prediction (interference.ts eq. I3)
 * with the model's slope for the first steps.
 */
async function initialStrength(ctx: PhaseContext, pair: ProfessionPair): Promise<{ strength: number; slope?: number }> {
  const { config, rows, opposite, baseline, pairs, solveFor, log } = ctx;
  const fixed = config.tuning.initialStrength;
  if (fixed !== 'auto') return { strength: fixed };
  const share = baseline.get(pair.profession);
  if (share === undefined || share === null || !opposite) return { strength: 1 };
  const b = pair.destinationClass === config.target.class ? share : 1 - share;
  const index = pairs.indexOf(pair);
  const start = await startingStrength({
    pair: index,
    baseline: b,
    target: pair.target,
    attributed: config.tuning.attributedShare,
    solveSingle: (s) => solveFor({ [pair.profession]: s }),
    rows,
    opposite,
    range: config.tuning.strengthRange,
  });
  log(
    `tune ${pair.profession} → ${pair.destinationClass}: first probe s=${fmt(start.strength)} (text side: baseline ${fmt(b)}, progress ${fmt(start.progress)} for ${fmt(pair.target)}, slope ${fmt(start.slope)})`,
  );
  return { strength: start.strength, slope: start.slope };
}

async function tuneEd50(ctx: PhaseContext): Promise<void> {
  const { config, state, pairs, professions, solveFor, evaluate, save, log } = ctx;
  const limit = pLimit(config.concurrency);
  await Promise.all(
    pairs.map((pair) =>
      limit(async () => {
        if (!state.tuners[pair.profession]) {
          const s0 = await initialStrength(ctx, pair);
          state.tuners[pair.profession] = createTuner(tunerSettings(config, pair.target, s0));
          save();
        }
        const tuner = state.tuners[pair.profession] as TunerState;
        const profession = professions.get(pair.profession) as Profession;
        let cached: { x: number; M: Float32Array } | null = null;
        for (;;) {
          const req = nextRequest(tuner);
          if (!req) break;
          if (!cached || cached.x !== req.x)
            cached = { x: req.x, M: (await solveFor({ [pair.profession]: req.strength })).M };
          const outcomes = req.generate.length
            ? await evaluate(profession, cached.M, config.seeds.tuning, req.generate, pair.destinationClass)
            : [];
          const probesBefore = tuner.probes.length;
          observe(tuner, req, outcomes);
          if (tuner.probes.length > probesBefore) {
            const p = tuner.probes[tuner.probes.length - 1]!;
            state.probeLog.push({
              profession: pair.profession,
              probe: tuner.probes.length,
              strength: p.strength,
              x: p.x,
              k: p.k,
              n: p.n,
              generated: imagesUsed(tuner),
              share: p.k / p.n,
              interval: p.interval,
              outcome: p.outcome,
              seeds: [config.seeds.tuning, config.seeds.tuning + p.n],
            });
            log(
              `tune ${pair.profession} → ${pair.destinationClass}: probe ${tuner.probes.length} s=${fmt(p.strength)} ` +
                `${p.k}/${p.n} = ${fmt(p.k / p.n)} [${fmt(p.interval[0])}, ${fmt(p.interval[1])}] ${p.outcome}`,
            );
          }
          save();
        }
      }),
    ),
  );
}

/** UCE's fixed-step loop (mission.md §2) on the joint edit: w_p ← w_p + step·(t − measured). */
async function tuneUce(ctx: PhaseContext): Promise<void> {
  const { config, state, pairs, professions, solveFor, evaluate, save, log } = ctx;
  const u = config.tuning.uce;
  state.uce ??= {
    round: 0,
    weights: Object.fromEntries(pairs.map((p) => [p.profession, 0])),
    history: [],
    images: Object.fromEntries(pairs.map((p) => [p.profession, 0])),
    converged: false,
    done: false,
  };
  const uce = state.uce;
  const strengths = Object.fromEntries(pairs.map((p) => [p.profession, uceStrength]));
  const indices = Array.from({ length: u.imagesPerRound }, (_, i) => i);
  const limit = pLimit(config.concurrency);
  while (!uce.done) {
    // Round 0 has w = 0: targets equal sources and M = I (the unedited model).
    const M = (await solveFor(strengths, uce.weights)).M;
    const shares: Record<string, number> = {};
    await Promise.all(
      pairs.map((pair) =>
        limit(async () => {
          const profession = professions.get(pair.profession) as Profession;
          const outcomes = await evaluate(profession, M, config.seeds.tuning, indices, pair.destinationClass);
          shares[pair.profession] = outcomes.filter(Boolean).length / outcomes.length;
          uce.images[pair.profession] = (uce.images[pair.profession] ?? 0) + outcomes.length;
        }),
      ),
    );
    const within = pairs.every((p) => Math.abs((shares[p.profession] as number) - p.target) <= config.tuning.tolerance);
    uce.history.push({
      round: uce.round,
      weights: { ...uce.weights },
      shares,
      images: pairs.length * u.imagesPerRound,
    });
    log(
      `uce round ${uce.round}: ${pairs.map((p) => `${p.profession} ${fmt(shares[p.profession] as number)}`).join(', ')}`,
    );
    if (within) {
      uce.converged = true;
      uce.done = true;
    } else if (uce.round + 1 >= u.maxRounds) {
      uce.done = true;
    } else {
      for (const p of pairs)
        uce.weights[p.profession] =
          (uce.weights[p.profession] as number) + u.step * (p.target - (shares[p.profession] as number));
      uce.round++;
    }
    save();
  }
}

/** Verification after the joint solve; Newton steps in ln s for professions outside tolerance. */
async function jointRounds(ctx: PhaseContext): Promise<void> {
  const { config, state, pairs, professions, solveFor, evaluate, save, log } = ctx;
  const joint = state.joint;
  if (joint.done) return;
  if (Object.keys(joint.strengths).length === 0) {
    joint.strengths = Object.fromEntries(
      pairs.map((p) => [p.profession, state.tuners[p.profession]!.result!.strength]),
    );
  }
  // σ_p: the equivalent single-edit strengths; re-tuning rounds move them (compensation on).
  joint.equivalent ??= { ...joint.strengths };
  const slopes = pairs
    .map((p) => state.tuners[p.profession]?.fit?.beta)
    .filter((b): b is number => b !== undefined && b > 0);
  const fallbackSlope = slopes.length ? slopes.sort((a, b) => a - b)[slopes.length >> 1]! : 1;
  const n = config.tuning.verificationImages;
  const indices = Array.from({ length: n }, (_, i) => i);
  const limit = pLimit(config.concurrency);
  while (!joint.done) {
    const round = joint.rounds.length;
    let pending = joint.pending;
    if (!pending) {
      pending = { round, strengths: { ...joint.strengths }, shares: {}, outside: [] };
      if (config.tuning.compensate && pairs.length > 1) {
        const equivalent = { ...(joint.equivalent as Record<string, number>) };
        const c = await compensate(ctx, equivalent);
        pending.strengths = c.strengths;
        pending.equivalent = equivalent;
        pending.compensation = c.record;
        log(
          `joint round ${round}: interference compensation (text side), progress ${pairs
            .map(
              (p) =>
                `${p.profession} ${fmt(c.record.uncompensated[p.profession] as number)}→${fmt(c.record.compensated[p.profession] as number)}/${fmt(c.record.target[p.profession] as number)}`,
            )
            .join(', ')}`,
        );
      }
      joint.pending = pending;
      save();
    }
    const current = pending;
    const M = (await solveFor(current.strengths)).M;
    await Promise.all(
      pairs.map((pair) =>
        limit(async () => {
          if (current.shares[pair.profession]) return;
          const profession = professions.get(pair.profession) as Profession;
          const outcomes = await evaluate(profession, M, config.seeds.verification, indices, pair.destinationClass);
          const k = outcomes.filter(Boolean).length;
          current.shares[pair.profession] = { k, n: outcomes.length, share: k / outcomes.length };
          save();
        }),
      ),
    );
    // Outside = beyond tolerance AND significantly off target (its interval at the tuning confidence
    // excludes t): the verification sample's own noise must not start a re-tuning round.
    const z = normalQuantile(0.5 + config.tuning.confidence / 2);
    current.outside = pairs
      .filter((p) => {
        const { k, n: m, share } = current.shares[p.profession] as { k: number; n: number; share: number };
        const [lo, hi] = wilsonInterval(k, m, z);
        return Math.abs(share - p.target) > config.tuning.tolerance + 1e-9 && (hi < p.target || lo > p.target);
      })
      .map((p) => p.profession);
    joint.rounds.push(current);
    joint.pending = null;
    log(
      `joint round ${round}: ${pairs.map((p) => `${p.profession} ${fmt(current.shares[p.profession]!.share)}`).join(', ')}` +
        (current.outside.length ? ` — outside tolerance: ${current.outside.join(', ')}` : ' — all within tolerance'),
    );
    if (current.outside.length === 0 || joint.rounds.length > config.tuning.jointRounds) {
      // Keep the strengths of the last verified solve.
      joint.strengths = { ...current.strengths };
      joint.done = true;
    } else {
      // Damped Newton steps in ln s for the professions outside: on σ_p (the tuner's slope is a
      // single-edit slope) when compensating, else on the joint strength itself.
      const base = config.tuning.compensate ? (current.equivalent ?? current.strengths) : current.strengths;
      const next = { ...base };
      for (const p of pairs) {
        if (!current.outside.includes(p.profession)) continue;
        const { k, n: m } = current.shares[p.profession] as { k: number; n: number };
        const share = (k + 0.5) / (m + 1); // keep logit finite at 0/m and m/m
        const beta = state.tuners[p.profession]?.fit?.beta ?? fallbackSlope;
        // Damped (the other professions move too: full steps oscillate).
        const raw = (JOINT_DAMPING * (logit(p.target) - logit(share))) / beta;
        // At least MIN_JOINT_STEP: with common random numbers a tiny step may flip no seed at all.
        const step = Math.sign(raw) * Math.min(1.5, Math.max(MIN_JOINT_STEP, Math.abs(raw)));
        const [lo, hi] = config.tuning.strengthRange;
        next[p.profession] = Math.min(hi, Math.max(lo, (next[p.profession] as number) * Math.exp(step)));
      }
      if (config.tuning.compensate) joint.equivalent = next;
      else joint.strengths = next;
    }
    save();
  }
}

/**
 * For every pair row of `rows`, the row of the pair's destination prompt with the OTHER class word
 * ("a male doctor" for "a doctor" → "a female doctor"), aligned to the source like the target row
 * (interference.ts eq. I1': the attribute direction is c*_i − c°_i).
 */
async function oppositeRows(
  config: JobConfig,
  world: JobWorld,
  professions: readonly Profession[],
  pairs: readonly ProfessionPair[],
  rows: RowSet,
): Promise<Float32Array> {
  const byName = new Map(professions.map((p) => [p.profession, p]));
  const other = await buildRows(world.encode, {
    pairs: pairs.map((p) => {
      const word = config.attribute.classes.find((c) => c.id !== p.destinationClass)!.word;
      return {
        source: p.source,
        destination: fillJobTemplate(config.prompts.destination, byName.get(p.profession)!, word),
      };
    }),
    augment: config.prompts.augment,
    tokens: alignTokensOf(world.tokenizer),
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
 * Joint strengths compensated for interference (interference.ts): targets π*_p from each
 * profession's own edit at σ_p, then eq. I2 on the joint solve.
 */
async function compensate(
  ctx: PhaseContext,
  equivalent: Record<string, number>,
): Promise<{ strengths: Record<string, number>; record: NonNullable<JointRound['compensation']> }> {
  const { config, pairs, rows, opposite, solveFor } = ctx;
  const names = pairs.map((p) => p.profession);
  const targets: number[] = [];
  for (let i = 0; i < names.length; i++) {
    const name = names[i] as string;
    const own = await solveFor({ [name]: equivalent[name] as number });
    targets.push(editProgress(rows, own, { opposite, pairs: [i] })[i] as number);
  }
  const result = await compensateInterference({
    equivalent: names.map((n) => equivalent[n] as number),
    targets,
    rows,
    range: config.tuning.strengthRange,
    progress: { opposite },
    solveJoint: (s) => solveFor(Object.fromEntries(names.map((n, i) => [n, s[i] as number]))),
  });
  const byName = (xs: readonly number[]) => Object.fromEntries(names.map((n, i) => [n, xs[i] as number]));
  return {
    strengths: byName(result.strengths),
    record: {
      target: byName(result.targets),
      uncompensated: byName(result.before),
      compensated: byName(result.after),
      residual: result.residual,
      iterations: result.iterations,
    },
  };
}

function professionStatus(config: JobConfig, state: JobState, profession: string): 'converged' | 'exhausted' {
  if (config.tuning.strategy === 'uce') return state.uce?.converged ? 'converged' : 'exhausted';
  // After joint rounds, the last verified joint solve decides; without them, the profession's own tuning.
  const lastRound = state.joint.rounds[state.joint.rounds.length - 1];
  if (lastRound) return lastRound.outside.includes(profession) ? 'exhausted' : 'converged';
  return state.tuners[profession]?.status === 'converged' ? 'converged' : 'exhausted';
}

function shareSummary(audit: AuditResult | null, profession: string): ShareSummary | null {
  const p = audit?.professions.find((x) => x.profession === profession);
  if (!p) return null;
  return { share: p.share.p, lower: p.share.lower, upper: p.share.upper, delta: p.delta.value, n: p.share.n };
}

async function genderedAudits(
  config: JobConfig,
  runDir: string,
  suffix: string,
  pipeline: StableDiffusionPipeline,
  settings: Parameters<typeof pipelineSource>[1],
  common: Omit<Parameters<typeof runAudit>[0], 'out' | 'source'>,
  professions: readonly Profession[],
  log: (line: string) => void,
): Promise<NonNullable<DebiasResult['summary']['genderedKept']>> {
  const perClass: Record<string, { k: number; n: number }> = {};
  const count = Math.max(4, Math.ceil(config.audit.imagesPerProfession / 10));
  for (const c of config.attribute.classes) {
    log(`gendered: "{article} ${c.word} {profession}" on the debiased model`);
    const audit = await runAudit({
      ...common,
      professions: {
        kind: 'profession-list',
        name: `${common.professions.name} (edited)`,
        source: common.professions.source,
        professions: [...professions],
      },
      templates: [`{article} ${c.word} {profession}`.replace('{article}', articleOf(c.word))],
      seeds: seedPlan('evaluation', count, config.seeds.evaluation),
      targetClass: c.id,
      targetShare: config.target.class === c.id ? config.target.share : 1 - config.target.share,
      out: join(runDir, `gendered-${c.id}${suffix}`),
      source: pipelineSource(pipeline, settings, config.device),
    });
    const k = audit.professions.reduce((a, p) => a + (p.counts[c.id] ?? 0), 0);
    const n = audit.professions.reduce((a, p) => a + p.classified, 0);
    perClass[c.id] = { k, n };
  }
  const k = Object.values(perClass).reduce((a, v) => a + v.k, 0);
  const n = Object.values(perClass).reduce((a, v) => a + v.n, 0);
  return { k, n, share: n ? k / n : null, perClass };
}

function articleOf(word: string): string {
  return /^[aeiou]/i.test(word) ? 'an' : 'a';
}

/** ‖W'c − Wc‖/‖Wc‖ = ‖W(M − I)c‖/‖Wc‖ over the unrelated prompts' rows (all 77) and every edited site. */
async function unrelatedChange(
  world: JobWorld,
  sites: readonly EditSite[],
  solution: EditSolution,
  gemm: GemmEngine,
  lists: readonly (readonly string[])[],
): Promise<TextChange[]> {
  const { d } = solution;
  // Each site's weight is read once, as stored (Wᵀ [d, out] for the exporter's layout: X·Wᵀ needs no
  // transpose), for every prompt of every list.
  const weights = sites.map((site) => {
    const { W, transposed } = readSiteWeightStored(world.model, site);
    return { W: transposed ? matrix(W, d, W.length / d) : matrix(W, W.length / d, d), transB: !transposed };
  });
  const out: TextChange[] = [];
  for (const list of lists) {
    const prompts = [...list];
    const encoded = await world.encode(prompts);
    let total = 0;
    let max = 0;
    let count = 0;
    for (const e of encoded) {
      const X = matrix(e.hidden, e.hidden.length / d, d);
      // rows of (Δc)ᵀ = cᵀΔᵀ
      const DX = await gemm.gemm(X, matrix(solution.delta, d, d), { transB: true });
      for (const { W, transB } of weights) {
        const wc = (await gemm.gemm(X, W, { transB })).data;
        const wd = (await gemm.gemm(DX, W, { transB })).data;
        let num = 0;
        let den = 0;
        for (let k = 0; k < wc.length; k++) {
          num += (wd[k] as number) ** 2;
          den += (wc[k] as number) ** 2;
        }
        const ratio = den > 0 ? Math.sqrt(num / den) : 0;
        total += ratio;
        max = Math.max(max, ratio);
        count++;
      }
    }
    out.push({ mean: count ? total / count : 0, max, prompts });
  }
  return out;
}

function modelManifest(
  config: JobConfig,
  state: JobState,
  pairs: ProfessionPair[],
  solution: EditSolution,
  preserve: string[],
  before: AuditResult,
  after: AuditResult | null,
): Record<string, unknown> & { debias: unknown } {
  return {
    tool: 'time-debias',
    method: 'TIME (arXiv 2303.08084), joint closed form over all professions',
    solve: { kind: solution.kind, n: solution.n, d: solution.d },
    debias: {
      strategy: config.tuning.strategy,
      attribute: config.attribute,
      target: config.target,
      augment: config.prompts.augment,
      preserve: { prompts: preserve, weight: config.preserve.weight, unrelatedWeight: config.preserve.unrelatedWeight },
      professions: pairs.map((p) => ({
        profession: p.profession,
        source: p.source,
        destination: p.destination,
        destinationClass: p.destinationClass,
        strength: state.joint.strengths[p.profession],
        lambda: 1 / (state.joint.strengths[p.profession] as number),
        uceWeight: state.uce?.weights[p.profession],
        rows: config.prompts.augment ? 4 * 77 : 77,
        before: shareSummary(before, p.profession),
        after: shareSummary(after, p.profession),
      })),
    },
  };
}

function assemble(
  config: JobConfig,
  runDir: string,
  afterDir: string,
  state: JobState,
  pairs: ProfessionPair[],
  before: AuditResult,
  after: AuditResult | null,
  exported: string | null,
  complete: boolean,
  genderedKept: DebiasResult['summary']['genderedKept'],
  unrelated: DebiasResult['summary']['unrelatedTextChange'],
  held: Set<string>,
): DebiasResult {
  const outcomes: ProfessionOutcome[] = pairs.map((p) => {
    const tuner = state.tuners[p.profession];
    const accepted = tuner?.probes.filter((x) => x.outcome === 'accepted').at(-1);
    const strength = state.joint.strengths[p.profession] as number;
    return {
      profession: p.profession,
      destinationClass: p.destinationClass,
      source: p.source,
      destination: p.destination,
      target: p.target,
      status: professionStatus(config, state, p.profession),
      strength,
      lambda: 1 / strength,
      probes: tuner ? tuner.probes.length : (state.uce?.history.length ?? 0),
      tuningImages: tuner ? imagesUsed(tuner) : (state.uce?.images[p.profession] ?? 0),
      singleShare: accepted ? accepted.k / accepted.n : tuner?.result ? tuner.result.share : null,
      jointShares: state.joint.rounds.map((r) => r.shares[p.profession]?.share ?? Number.NaN),
      before: shareSummary(before, p.profession),
      after: shareSummary(after, p.profession),
    };
  });
  const edited = (audit: AuditResult | null) =>
    audit?.professions.filter((p) => !held.has(p.profession) && p.share.n > 0) ?? [];
  const md = (audit: AuditResult | null) => {
    const counts = edited(audit).map((p) => ({ k: p.share.k, n: p.share.n }));
    return counts.length ? meanDelta(counts, { target: config.target.share, seed: 1 }) : null;
  };
  const tuningImages = outcomes.reduce((a, o) => a + o.tuningImages, 0);
  const afterDeltas = edited(after).map((p) => p.delta.value as number);
  return {
    kind: 'debias',
    version: 1,
    runDir,
    audits: { before: 'before', after: afterDir },
    strategy: config.tuning.strategy,
    status: complete ? 'complete' : 'tolerance-not-reached',
    exported,
    professions: outcomes,
    heldOut: [...held].map((h) => ({ profession: h, before: shareSummary(before, h), after: shareSummary(after, h) })),
    summary: {
      professions: pairs.length,
      targetClass: config.target.class,
      targetShare: config.target.share,
      meanDeltaBefore: md(before),
      meanDeltaAfter: md(after),
      maxDeltaAfter: afterDeltas.length ? Math.max(...afterDeltas) : null,
      tuningImages,
      tuningImagesPerProfession: pairs.length ? tuningImages / pairs.length : 0,
      genderedKept,
      unrelatedTextChange: unrelated,
      jointRounds: state.joint.rounds.length,
    },
    joint: state.joint.rounds,
  };
}

function progressLogger(log: (line: string) => void, name: string) {
  let last = -1;
  return (p: { done: number; total: number }) => {
    const pct = Math.floor((100 * p.done) / Math.max(1, p.total));
    if (pct >= last + 10 || p.done === p.total) {
      last = pct;
      log(`${name}: ${p.done}/${p.total} images`);
    }
  };
}

function fmt(x: number): string {
  return Number.isFinite(x) ? x.toFixed(3) : String(x);
}
