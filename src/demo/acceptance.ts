/**
 * Measure the demo world's designed behaviour through the project's real code paths (issue 4's
 * acceptance): the generation pipeline (src/generate) makes the images, the CLIP classifier
 * (src/classify, transformers.js) labels them, and TIME edits (src/edit, exported model folders)
 * are generated from exactly as a user would.
 *
 *   gendered     "a female doctor" / "a male doctor": share classified as the prompt's gender
 *   professions  share "female" of "a/an {profession}" per profession, next to the design Φ(offset);
 *                mean Δ = mean |p − ½| / ½ and the span (min, max)
 *   lambda sweep one TIME edit "a doctor" → "a female doctor" at several λ: the doctor share must
 *                move monotonically with λ (small λ = strong edit)
 *
 * Unlike the rest of src/demo (which only writes model folders, floor 2), this module and main.ts
 * sit on top of the library: they use generation, classification and editing.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ClipClassifier } from '../classify/clip.js';
import { type GenderLabelStyle, genderAttribute } from '../classify/labels.js';
import { editModel } from '../edit/api.js';
import { StableDiffusionPipeline } from '../generate/pipeline.js';
import { type DemoProfession, findProfession } from './professions.js';
import type { DemoWorld } from './world.js';

export interface AcceptanceOptions {
  /** Seeds per prompt (default 100: seeds 0 … n−1). */
  seeds?: number;
  /** Professions to measure (default: the demo config's twelve plus its two held-out ones). */
  professions?: readonly string[];
  /** λ values of the sweep (default 0.01 … 1000, decades). */
  lambdas?: readonly number[];
  /** Denoising steps (default: the world's calibrated setting). */
  steps?: number;
  /** Images per UNet batch (default 50). */
  batchSize?: number;
  /** Classifier label style (default 'woman-man'). */
  labelStyle?: GenderLabelStyle;
  /** onnxruntime intra-op threads (default 0: onnxruntime decides). */
  threads?: number;
  /** Skip parts: useful for quick checks. */
  skip?: readonly ('gendered' | 'professions' | 'lambda')[];
}

export interface ShareMeasure {
  prompt: string;
  n: number;
  female: number;
  share: number;
}

export interface ProfessionMeasure extends ShareMeasure {
  profession: string;
  offset: number;
  /** Φ(offset), the designed share. */
  designShare: number;
  /** |p − ½| / ½ */
  delta: number;
}

export interface AcceptanceResult {
  kind: 'demo-acceptance';
  world: { hash: string; design: string };
  settings: { seeds: number; steps: number; guidance: number; scheduler: string; size: number; labelStyle: string };
  gendered: { female: ShareMeasure; male: ShareMeasure; correct: number } | null;
  professions: {
    rows: ProfessionMeasure[];
    meanDelta: number;
    min: number;
    max: number;
  } | null;
  lambdaSweep: {
    source: string;
    destination: string;
    points: { lambda: number; share: number }[];
    unedited: number;
    /** Share non-increasing as λ grows (the edit fades). */
    monotone: boolean;
  } | null;
  /** Generation + classification, ms per image. */
  msPerImage: number;
}

/** Standard normal CDF (Abramowitz–Stegun 7.1.26 erf, |error| < 1.5e-7). */
export function normalCdf(x: number): number {
  const z = Math.abs(x) / Math.SQRT2;
  const t = 1 / (1 + 0.3275911 * z);
  const erf =
    1 -
    ((((1.061405429 * t - 1.453152027) * t + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t * Math.exp(-z * z);
  return x >= 0 ? 0.5 * (1 + erf) : 0.5 * (1 - erf);
}

export const ACCEPTANCE_PROFESSIONS = Object.freeze([
  'nurse',
  'secretary',
  'librarian',
  'teacher',
  'cashier',
  'designer',
  'attendant',
  'tailor',
  'manager',
  'doctor',
  'engineer',
  'mechanic',
  'housekeeper',
  'carpenter',
]);

/** Run the measurements on a demo world (see the module header). */
export async function measureDemoAcceptance(
  world: DemoWorld,
  options: AcceptanceOptions = {},
): Promise<AcceptanceResult> {
  const seeds = Array.from({ length: options.seeds ?? 100 }, (_, i) => i);
  const steps = options.steps ?? world.generation.steps;
  const labelStyle = options.labelStyle ?? 'woman-man';
  const skip = new Set(options.skip ?? []);
  const attribute = genderAttribute(labelStyle);
  const gen = {
    seeds,
    steps,
    guidance: world.generation.guidance,
    scheduler: world.generation.scheduler,
    height: world.generation.height,
    width: world.generation.width,
    batchSize: options.batchSize ?? 50,
  };
  const classifier = await ClipClassifier.load(world.classifierDir, { threads: options.threads });
  let images = 0;
  let ms = 0;
  const share = async (pipe: StableDiffusionPipeline, prompt: string, profession: string): Promise<ShareMeasure> => {
    const t0 = performance.now();
    const result = await pipe.generate({ prompt, ...gen });
    const labels = await classifier.classify(
      result.images.map((im) => ({ width: im.width, height: im.height, data: im.rgb })),
      attribute,
      { profession },
    );
    ms += performance.now() - t0;
    images += labels.length;
    const female = labels.filter((l) => l.label === 'female').length;
    return { prompt, n: labels.length, female, share: female / labels.length };
  };
  const out: AcceptanceResult = {
    kind: 'demo-acceptance',
    world: { hash: world.hash, design: world.design },
    settings: {
      seeds: seeds.length,
      steps,
      guidance: gen.guidance,
      scheduler: gen.scheduler,
      size: gen.height,
      labelStyle,
    },
    gendered: null,
    professions: null,
    lambdaSweep: null,
    msPerImage: 0,
  };
  const pipe = await StableDiffusionPipeline.create(world.modelDir, { threads: options.threads });
  const tmp = mkdtempSync(join(tmpdir(), 'demo-acceptance-'));
  try {
    if (!skip.has('gendered')) {
      const female = await share(pipe, 'a female doctor', 'doctor');
      const male = await share(pipe, 'a male doctor', 'doctor');
      out.gendered = { female, male, correct: (female.female + (male.n - male.female)) / (female.n + male.n) };
    }
    if (!skip.has('professions')) {
      const rows: ProfessionMeasure[] = [];
      for (const name of options.professions ?? ACCEPTANCE_PROFESSIONS) {
        const p = findProfession(name) as DemoProfession | undefined;
        if (!p) throw new Error(`professions: ${JSON.stringify(name)} is not a demo profession`);
        const m = await share(pipe, `${p.article} ${p.profession}`, p.profession);
        rows.push({
          ...m,
          profession: p.profession,
          offset: p.offset,
          designShare: normalCdf(p.offset),
          delta: Math.abs(m.share - 0.5) / 0.5,
        });
      }
      const shares = rows.map((r) => r.share);
      out.professions = {
        rows,
        meanDelta: rows.reduce((a, r) => a + r.delta, 0) / rows.length,
        min: Math.min(...shares),
        max: Math.max(...shares),
      };
    }
    if (!skip.has('lambda')) {
      const source = 'a doctor';
      const destination = 'a female doctor';
      const unedited = (await share(pipe, source, 'doctor')).share;
      const points: { lambda: number; share: number }[] = [];
      for (const lambda of options.lambdas ?? [0.01, 0.1, 1, 10, 100, 1000]) {
        const dir = join(tmp, `lambda-${lambda}`);
        await editModel({
          modelDir: world.modelDir,
          pairs: [{ source, destination }],
          lambda,
          outDir: dir,
          threads: options.threads,
        });
        const edited = await StableDiffusionPipeline.create(dir, { threads: options.threads });
        try {
          points.push({ lambda, share: (await share(edited, source, 'doctor')).share });
        } finally {
          await edited.dispose();
        }
        rmSync(dir, { recursive: true, force: true });
      }
      const monotone = points.every((p, i) => i === 0 || p.share <= (points[i - 1] as { share: number }).share);
      out.lambdaSweep = { source, destination, points, unedited, monotone };
    }
  } finally {
    await pipe.dispose();
    await classifier.dispose();
    rmSync(tmp, { recursive: true, force: true });
  }
  out.msPerImage = images ? ms / images : 0;
  return out;
}
