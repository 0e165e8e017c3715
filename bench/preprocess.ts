/**
 * How much the classifier's image preprocessing moves an audit (issue 14 item 4): the demo model's
 * evaluation audit (the demo job's professions, the config's five evaluation templates, evaluation
 * seeds) rendered ONCE, then audited twice from those images (`auditImageFolder`, the statistics of
 * `audit --from-images`) — with transformers.js' preprocessing (the default) and with "pil" (PIL's
 * antialiased bicubic resize, as the references). Reports per-profession share shifts, the mean Δ
 * of both, labels that flip and the largest per-image probability shift; and the preprocessing
 * cost per image of both.
 *
 *   BENCH_PREPROCESS_SEEDS  seeds per template (default 10: 5 templates × 10 = 50 images a profession)
 */
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { encode } from 'fast-png';
import { type AuditResult, auditImageFolder } from '../src/audit/run.js';
import { fillTemplate } from '../src/audit/templates.js';
import { ClipClassifier, type RgbImage } from '../src/classify/clip.js';
import { genderAttribute } from '../src/classify/labels.js';
import type { PreprocessMode } from '../src/classify/preprocess-pil.js';
import { loadConfig } from '../src/debias/config.js';
import { ensureDemoWorld } from '../src/demo/world.js';
import { StableDiffusionPipeline } from '../src/generate/pipeline.js';
import { writeFileAtomic } from '../src/util/atomic.js';
import { type Benchmark, type BenchResult, round, summarize, timeRuns } from './harness.js';

const threads = Math.min(2, cpus().length);
const SEEDS = Number(process.env.BENCH_PREPROCESS_SEEDS ?? 10);
const EVALUATION_SEED = 1_000_000;

export const benchmarks: Benchmark[] = [
  {
    name: 'preprocess: demo audit shares, pil vs transformers',
    run: async () => {
      const world = ensureDemoWorld();
      // The demo job's professions and evaluation templates, as configs/demo.json runs them.
      const config = loadConfig(fileURLToPath(new URL('../configs/demo.json', import.meta.url)));
      const demoJob = [...(config.professions.select ?? []), ...config.professions.heldOut];
      const professions = world.professions.filter((p) => demoJob.includes(p.profession));
      const templates = config.prompts.evaluationTemplates;
      const root = mkdtempSync(join(tmpdir(), 'bench-preprocess-'));
      const g = world.generation;
      const sample: RgbImage[] = [];
      try {
        const pipe = await StableDiffusionPipeline.create(world.modelDir, { threads });
        const t0 = performance.now();
        try {
          for (const p of professions) {
            const dir = join(root, 'images', p.profession);
            mkdirSync(dir, { recursive: true });
            for (const [k, template] of templates.entries()) {
              const seeds = Array.from({ length: SEEDS }, (_, i) => EVALUATION_SEED + i);
              const r = await pipe.generate({
                prompt: fillTemplate(template, p),
                seeds,
                steps: g.steps,
                guidance: g.guidance,
                scheduler: g.scheduler,
                height: g.height,
                width: g.width,
                batchSize: SEEDS,
              });
              r.images.forEach((im, i) => {
                const png = encode({ width: im.width, height: im.height, data: im.rgb, channels: 3, depth: 8 });
                writeFileAtomic(join(dir, `t${k}-s${seeds[i]}.png`), png);
                if (sample.length < 64) sample.push({ width: im.width, height: im.height, data: im.rgb });
              });
            }
          }
        } finally {
          await pipe.dispose();
        }
        const renderSeconds = (performance.now() - t0) / 1000;
        const audits = {} as Record<PreprocessMode, AuditResult>;
        const costs: BenchResult[] = [];
        for (const mode of ['transformers', 'pil'] as const) {
          const clf = await ClipClassifier.load(world.classifierDir, { threads, preprocess: mode });
          try {
            audits[mode] = await auditImageFolder({
              out: join(root, `audit-${mode}`),
              dir: join(root, 'images'),
              classifier: clf,
              attribute: genderAttribute(),
              bootstrap: { samples: 1000 },
            });
            const ms = await timeRuns(() => clf.preprocess(sample), 5);
            costs.push(
              summarize(
                `preprocess: ${mode}, ${g.width}×${g.height} → the demo CLIP's input`,
                'ms/image',
                ms.map((m) => m / sample.length),
              ),
            );
          } finally {
            await clf.dispose();
          }
        }
        const a = audits.transformers;
        const b = audits.pil;
        const shifts = a.professions.map((pa, i) => {
          const pb = b.professions[i]!;
          return { profession: pa.profession, from: pa.share.p ?? 0, to: pb.share.p ?? 0 };
        });
        const abs = shifts.map((s) => Math.abs(s.to - s.from));
        let flips = 0;
        let maxProb = 0;
        a.images.forEach((ia, i) => {
          const ib = b.images[i]!;
          if (ia.file !== ib.file) throw new Error(`image order differs at ${i}`);
          if (ia.label !== ib.label) flips++;
          maxProb = Math.max(maxProb, Math.abs(ia.probabilities.female! - ib.probabilities.female!));
        });
        const result: BenchResult = {
          name: 'preprocess: demo audit, |share(pil) − share(transformers)| per profession, max',
          unit: 'share (0–1)',
          median: round(Math.max(...abs)),
          min: round(Math.min(...abs)),
          max: round(Math.max(...abs)),
          runs: 1,
          details: {
            professions: shifts.length,
            imagesPerProfession: templates.length * SEEDS,
            images: a.images.length,
            meanAbsShift: round(abs.reduce((s, x) => s + x, 0) / abs.length),
            meanDeltaTransformers: round(a.summary.meanDelta.value ?? -1),
            meanDeltaPil: round(b.summary.meanDelta.value ?? -1),
            labelFlips: flips,
            maxAbsProbabilityShift: round(maxProb),
            shares: shifts.map((s) => `${s.profession} ${round(s.from)}→${round(s.to)}`).join(', '),
            renderSeconds: round(renderSeconds),
          },
        };
        return [result, ...costs];
      } finally {
        rmSync(root, { recursive: true, force: true });
      }
    },
  },
];
