/**
 * The demo world (issue 4): generation speed of a demo image (the debias job makes thousands), and
 * the designed behaviour measured at full size (100 seeds per prompt, 14 professions, a λ sweep).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { measureDemoAcceptance } from '../src/demo/acceptance.js';
import { ensureDemoWorld } from '../src/demo/world.js';
import { StableDiffusionPipeline } from '../src/generate/pipeline.js';
import { type Benchmark, peakRssMb, round, summarize, timeRuns } from './harness.js';

const threads = Math.min(2, cpus().length);

export const benchmarks: Benchmark[] = [
  {
    name: 'demo: world build (cold) and generation ms per 64×64 image',
    run: async () => {
      const cache = mkdtempSync(join(tmpdir(), 'bench-demo-'));
      try {
        const build = await timeRuns(() => ensureDemoWorld({ cacheDir: cache, force: true }), 3, 0);
        const world = ensureDemoWorld({ cacheDir: cache });
        const pipe = await StableDiffusionPipeline.create(world.modelDir, { threads });
        const results = [
          summarize('demo: world build (cold)', 'ms', build, {
            target: 'seconds on 2 cores',
            meetsTarget: Math.max(...build) < 5000,
          }),
        ];
        try {
          for (const batchSize of [1, 16]) {
            const n = 32;
            const seeds = Array.from({ length: n }, (_, i) => i);
            const g = world.generation;
            const samples = await timeRuns(
              () =>
                pipe.generate({
                  prompt: 'a photo of a doctor',
                  seeds,
                  steps: g.steps,
                  guidance: g.guidance,
                  height: g.height,
                  width: g.width,
                  batchSize,
                }),
              3,
            );
            const perImage = samples.map((s) => s / n);
            results.push(
              summarize(`demo: generate 64×64, ${g.steps} steps, guidance, batch ${batchSize}`, 'ms/image', perImage, {
                target: 'tens of ms per image on 2 cores',
                meetsTarget: Math.min(...perImage) < 100,
                details: { threads, peakRssMb: peakRssMb() },
              }),
            );
          }
        } finally {
          await pipe.dispose();
        }
        return results;
      } finally {
        rmSync(cache, { recursive: true, force: true });
      }
    },
  },
  {
    name: 'demo: acceptance at 100 seeds',
    run: async () => {
      const world = ensureDemoWorld();
      const t0 = performance.now();
      const r = await measureDemoAcceptance(world, { seeds: 100, threads, batchSize: 50 });
      const wall = performance.now() - t0;
      const details: Record<string, number | string | boolean> = {
        genderedCorrect: r.gendered?.correct ?? -1,
        meanDelta: round(r.professions?.meanDelta ?? -1),
        minShare: r.professions?.min ?? -1,
        maxShare: r.professions?.max ?? -1,
        lambdaMonotone: r.lambdaSweep?.monotone ?? false,
        lambdaSweep: (r.lambdaSweep?.points ?? []).map((p) => `${p.lambda}:${p.share}`).join(' '),
        uneditedDoctor: r.lambdaSweep?.unedited ?? -1,
        wallSeconds: round(wall / 1000),
      };
      for (const row of r.professions?.rows ?? []) details[`share.${row.profession}`] = row.share;
      const ok =
        (r.gendered?.correct ?? 0) >= 0.95 &&
        (r.professions?.min ?? 1) <= 0.15 &&
        (r.professions?.max ?? 0) >= 0.85 &&
        (r.professions?.meanDelta ?? 0) >= 0.5 &&
        (r.lambdaSweep?.monotone ?? false);
      return [
        summarize('demo: generate + classify (acceptance run)', 'ms/image', [r.msPerImage], {
          target: 'female/male doctor ≥ 95 % correct; shares span ≤ 15 % … ≥ 85 %; mean Δ ≥ 0.5; λ sweep monotone',
          meetsTarget: ok,
          details,
        }),
      ];
    },
  },
];
