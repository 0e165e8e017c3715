/**
 * Audit benchmarks (issue 5), on the tiny real-format models (the project's tiny SD folder with the
 * SD 1.x site layout, 64 × 64 images, and the tiny designed CLIP folder):
 *   - audit throughput: images/s end to end (generate → save → classify → fsynced records → audit.json);
 *   - classifier images/s alone (preprocessing + CLIP image tower + softmax, batch 16);
 *   - peak RSS over a 1,000-image audit, measured in a child process, with RSS after the first
 *     100 images against the end (a long audit's memory must stay flat).
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadProfessions } from '../src/audit/professions.js';
import { runAudit } from '../src/audit/run.js';
import { seedPlan } from '../src/audit/seeds.js';
import { pipelineSource } from '../src/audit/source.js';
import { ClipClassifier } from '../src/classify/clip.js';
import { genderAttribute } from '../src/classify/labels.js';
import { buildClipFolder } from '../src/demo/clip-model.js';
import { buildTinySdModel } from '../src/demo/sd-model.js';
import { StableDiffusionPipeline } from '../src/generate/pipeline.js';
import { tinySpec } from '../test/classify/fixtures.js';
import { type Benchmark, type BenchResult, peakRssMb, round, summarize, timeRuns } from './harness.js';

const THREADS = 2;
const STEPS = 4;

function world(): { root: string; model: string; classifier: string } {
  const root = mkdtempSync(join(tmpdir(), 'td-bench-audit-'));
  buildTinySdModel(join(root, 'sd'), { seed: 1 });
  buildClipFolder(join(root, 'clip'), tinySpec());
  return { root, model: join(root, 'sd'), classifier: join(root, 'clip') };
}

interface ChildReport {
  images: number;
  seconds: number;
  peakRssMb: number;
  rssAfter100Mb: number;
  rssEndMb: number;
}

/** The 1,000-image audit, run in this file as a child process so its peak RSS is its own. */
async function childAudit(model: string, classifier: string, out: string, images: number): Promise<ChildReport> {
  const pipeline = await StableDiffusionPipeline.create(model, { threads: THREADS });
  const clf = await ClipClassifier.load(classifier, { threads: THREADS });
  const professions = loadProfessions('winobias35', {
    select: ['nurse', 'CEO', 'attendant', 'janitor', 'secretary', 'driver', 'teacher', 'mechanic', 'cashier', 'lawyer'],
  });
  let rssAfter100 = 0;
  const t0 = performance.now();
  try {
    await runAudit({
      out,
      source: pipelineSource(pipeline, { steps: STEPS, height: 64, width: 64 }),
      classifier: clf,
      professions,
      templates: ['A photo of {article} {profession}'],
      seeds: seedPlan('evaluation', images / professions.professions.length),
      attribute: genderAttribute(),
      batchSize: 8,
      bootstrap: { samples: 500 },
      onProgress: (p) => {
        if (!rssAfter100 && p.done >= 100) rssAfter100 = process.memoryUsage().rss / 2 ** 20;
      },
    });
  } finally {
    await pipeline.dispose();
    await clf.dispose();
  }
  return {
    images,
    seconds: (performance.now() - t0) / 1000,
    peakRssMb: peakRssMb(),
    rssAfter100Mb: round(rssAfter100),
    rssEndMb: round(process.memoryUsage().rss / 2 ** 20),
  };
}

if (process.argv[1] === fileURLToPath(import.meta.url) && process.argv[2] === '--child') {
  const [model, classifier, out, n] = process.argv.slice(3) as [string, string, string, string];
  const report = await childAudit(model, classifier, out, Number(n));
  process.stdout.write(`${JSON.stringify(report)}\n`);
}

export const benchmarks: Benchmark[] = [
  {
    name: 'audit/throughput',
    run: async () => {
      const w = world();
      const pipeline = await StableDiffusionPipeline.create(w.model, { threads: THREADS });
      const clf = await ClipClassifier.load(w.classifier, { threads: THREADS });
      const results: BenchResult[] = [];
      try {
        const professions = loadProfessions('winobias35', { select: ['nurse', 'CEO'] });
        const images = 2 * 24;
        let run = 0;
        const samples = await timeRuns(
          async () => {
            await runAudit({
              out: join(w.root, `run-${run++}`),
              source: pipelineSource(pipeline, { steps: STEPS, height: 64, width: 64 }),
              classifier: clf,
              professions,
              templates: ['A photo of {article} {profession}'],
              seeds: seedPlan('evaluation', 24),
              attribute: genderAttribute(),
              batchSize: 8,
              bootstrap: { samples: 500 },
            });
          },
          3,
          0,
        );
        // generation alone, for the share of the audit's own overhead
        const gen = await timeRuns(
          () =>
            pipeline.generate({
              prompt: 'A photo of a nurse',
              seeds: Array.from({ length: 8 }, (_, i) => i),
              steps: STEPS,
              height: 64,
              width: 64,
              batchSize: 8,
            }),
          3,
          1,
        );
        const genPerImage = [...gen].sort((a, b) => a - b)[1]! / 8;
        const perImage = samples.map((ms) => ms / images);
        results.push(
          summarize(
            'audit end to end (tiny SD 64×64, 4 steps, tiny CLIP)',
            'images/s',
            perImage.map((ms) => 1000 / ms),
            {
              details: {
                images,
                msPerImage: round([...perImage].sort((a, b) => a - b)[1]!),
                generationMsPerImage: round(genPerImage),
                threads: THREADS,
              },
            },
          ),
        );
        const imgs = Array.from({ length: 256 }, (_, k) => {
          const data = new Uint8Array(64 * 64 * 3);
          for (let i = 0; i < data.length; i++) data[i] = (i * (k + 3) + k * 17) % 256;
          return { width: 64, height: 64, data };
        });
        const attribute = genderAttribute();
        const cls = await timeRuns(() => clf.classify(imgs, attribute), 3, 1);
        results.push(
          summarize(
            'classifier alone (64×64 → tiny CLIP, batch 16)',
            'images/s',
            cls.map((ms) => (256 * 1000) / ms),
            { details: { images: 256 } },
          ),
        );
      } finally {
        await pipeline.dispose();
        await clf.dispose();
        rmSync(w.root, { recursive: true, force: true });
      }
      return results;
    },
  },
  {
    name: 'audit/memory-1000',
    run: async () => {
      const w = world();
      try {
        const child = spawnSync(
          process.execPath,
          [
            '--import',
            'tsx',
            fileURLToPath(import.meta.url),
            '--child',
            w.model,
            w.classifier,
            join(w.root, 'run'),
            '1000',
          ],
          { encoding: 'utf8', maxBuffer: 1 << 20 },
        );
        if (child.status !== 0) throw new Error(`audit child failed: ${child.stderr}`);
        const r = JSON.parse(child.stdout.trim().split('\n').pop() as string) as ChildReport;
        return [
          {
            name: 'peak RSS over a 1,000-image audit (child process)',
            unit: 'MB',
            median: r.peakRssMb,
            min: r.peakRssMb,
            max: r.peakRssMb,
            runs: 1,
            details: {
              images: r.images,
              seconds: round(r.seconds),
              imagesPerSecond: round(r.images / r.seconds),
              rssAfter100ImagesMb: r.rssAfter100Mb,
              rssAtEndMb: r.rssEndMb,
              rssGrowthMb: round(r.rssEndMb - r.rssAfter100Mb),
            },
          },
        ];
      } finally {
        rmSync(w.root, { recursive: true, force: true });
      }
    },
  },
];
