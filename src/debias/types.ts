/**
 * The debias job's typed values: what it needs from the layers below (JobWorld), its persisted
 * state (JobState, state.json), and its result (DebiasResult, job.json, what the renderers read).
 */
import type { Comparison } from '../audit/compare.js';
import type { ProfessionList } from '../audit/professions.js';
import type { MeanDelta } from '../audit/stats.js';
import type { ClipClassifier } from '../classify/clip.js';
import type { EncodedRows } from '../edit/rows.js';
import type { StableDiffusionPipeline } from '../generate/pipeline.js';
import type { SdModel } from '../model/folder.js';
import type { RenderQueue } from '../queue/producer.js';
import type { ClipTokenizer } from '../text/tokenizer.js';
import type { JobConfig } from './config.js';
import type { ProfessionPair } from './prompts.js';
import type { TunerState } from './tuner.js';

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
  /** With a render queue, every image-producing step renders and classifies on its workers. */
  queue?: RenderQueue;
}

export interface JobOptions {
  /** Start over: delete the run folder's state and audits. */
  restart?: boolean;
  /** Export the model even when some profession did not reach the tolerance. */
  exportPartial?: boolean;
  log?: (line: string) => void;
  /** How the caller's user names a parameter a log line advises (`restart` → `--restart`); default its own name. */
  nameOf?: (field: string) => string;
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
  /**
   * on the held-out prompts and seeds: 'outside' when the after interval lies entirely outside
   * target ± tolerance (the config's target class), 'reached' when it meets it, null without an after audit
   */
  heldOutParity: 'reached' | 'outside' | null;
}

export interface TextChange {
  mean: number;
  max: number;
  prompts: string[];
  /** per prompt (in `prompts` order): the mean over the edited sites */
  perPrompt: number[];
}

/** One held-out prompt and seed rendered before and after (the audits' kept images), for the reports' sheets. */
export interface BeforeAfterImage {
  prompt: string;
  seed: number;
  /** image files relative to the run folder, and their classified class (null: unclear) */
  before: { file: string; label: string | null };
  after: { file: string; label: string | null };
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

/** The job's phases in order; state.json's `phase` only moves forward (run-folder.ts advance). */
export const PHASES = ['baseline', 'tuning', 'joint', 'export', 'after', 'done'] as const;
export type JobPhase = (typeof PHASES)[number];

export interface JobState {
  kind: 'debias-state';
  version: 1;
  fingerprint: string;
  phase: JobPhase;
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

export type DebiasStatus = 'complete' | 'held-out-parity-not-reached' | 'tolerance-not-reached';

export interface DebiasResult {
  kind: 'debias';
  version: 1;
  runDir: string;
  /** the audit run folders, relative to runDir */
  audits: { before: string; after: string };
  strategy: JobConfig['tuning']['strategy'];
  /**
   * complete: every profession reached the tolerance in tuning/verification AND on the held-out
   * after audit; held-out-parity-not-reached: tuning did, the held-out after audit puts some edited
   * profession outside target ± tolerance; tolerance-not-reached: tuning/verification did not
   */
  status: DebiasStatus;
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
      /** per profession and class: the images of "{article} <class word> <profession>" that kept the class */
      perProfession: Record<string, Record<string, { k: number; n: number }>>;
    } | null;
    /**
     * ‖W'c − Wc‖/‖Wc‖ per (prompt, edited site), mean and max: on the preserved unrelated prompts
     * (the defaults' list, weight preserve.unrelatedWeight in the solve) and on unrelated prompts the
     * solve never saw (heldOut)
     */
    unrelatedTextChange: (TextChange & { heldOut: TextChange }) | null;
    jointRounds: number;
    /** the held-out after audit against the target: what decides complete vs held-out-parity-not-reached */
    heldOutParity: {
      target: number;
      tolerance: number;
      /** edited professions whose after interval lies outside target ± tolerance */
      outside: string[];
      /** mean Δ after against the parity floor: atFloor when its interval reaches down to the floor */
      meanDelta: { value: number; lower: number; upper: number; parityFloor: number; atFloor: boolean } | null;
    };
  };
  joint: JointRound[];
  /** the before/after audits compared (paired tests per profession; audit/compare.ts) */
  comparison: Comparison;
  /** the attribute's classes in the audits' order (the sheets' frame colours) */
  classes: string[];
  /** per profession (edited and held out): the same held-out prompts and seeds before and after */
  images: { profession: string; edited: boolean; pairs: BeforeAfterImage[] }[];
}
