/**
 * Debias strategies on the demo world: our sequential dose-response tuning ("ed50") next to UCE's
 * fixed-step loop ("uce"), on the same model, professions, seeds and held-out evaluation (200
 * images per profession, TIME's five test templates, evaluation seeds). Reports tuning images per
 * profession and the held-out mean Δ each reaches (issue 6: same or better Δ with ≤ 1/3 of UCE's
 * images and ≤ 300 per profession).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { normalizeConfig } from '../src/debias/config.js';
import { runDebiasJob } from '../src/debias/job.js';
import { openJobWorld } from '../src/debias/open.js';
import { ensureDemoWorld } from '../src/demo/world.js';
import type { Benchmark, BenchResult } from './harness.js';
import { round } from './harness.js';

const PROFESSIONS = ['nurse', 'teacher', 'manager', 'doctor'];

async function runStrategy(strategy: 'ed50' | 'uce', out: string) {
  const world = ensureDemoWorld();
  const config = normalizeConfig(
    {
      name: strategy,
      model: 'demo',
      classifier: 'demo',
      professions: { list: 'demo', select: PROFESSIONS },
      prompts: { augment: false, tuningTemplates: ['{Article} {profession}', 'a photo of {article} {profession}'] },
      generation: { scheduler: 'pndm', steps: 10, guidance: 7.5, height: 64, width: 64, batchSize: 64 },
      tuning: { strategy, verificationImages: 160, jointRounds: 2 },
      audit: { imagesPerProfession: 200, gendered: false },
      output: out,
    },
    out,
  );
  const opened = await openJobWorld(config, {
    modelDir: world.modelDir,
    classifierDir: world.classifierDir,
    professions: world.professions,
  });
  const t0 = Date.now();
  try {
    const r = await runDebiasJob(opened.config, opened.world);
    return { result: r, seconds: (Date.now() - t0) / 1000 };
  } finally {
    await opened.dispose();
  }
}

export const benchmarks: Benchmark[] = [
  {
    name: 'debias.strategies',
    run: async (): Promise<BenchResult[]> => {
      const out = mkdtempSync(join(tmpdir(), 'bench-debias-'));
      try {
        const ours = await runStrategy('ed50', out);
        const uce = await runStrategy('uce', out);
        const per = (x: typeof ours) => x.result.summary.tuningImagesPerProfession;
        const delta = (x: typeof ours) => x.result.summary.meanDeltaAfter?.value ?? Number.NaN;
        const ratio = per(ours) / per(uce);
        const meets = ratio <= 1 / 3 && per(ours) <= 300 && delta(ours) <= delta(uce) + 1e-9;
        const row = (name: string, x: typeof ours, extra: Partial<BenchResult> = {}): BenchResult => ({
          name,
          unit: 'tuning images per profession',
          median: round(per(x)),
          min: round(per(x)),
          max: round(per(x)),
          runs: 1,
          details: {
            professions: PROFESSIONS.join(', '),
            heldOutMeanDeltaBefore: round(x.result.summary.meanDeltaBefore?.value ?? Number.NaN),
            heldOutMeanDeltaAfter: round(delta(x)),
            maxDeltaAfter: round(x.result.summary.maxDeltaAfter ?? Number.NaN),
            status: x.result.status,
            seconds: round(x.seconds),
          },
          ...extra,
        });
        return [
          row('debias.ed50', ours, {
            reference: {
              name: 'debias.uce (UCE fixed-step loop)',
              median: round(per(uce)),
              unit: 'tuning images per profession',
            },
            target: '≤ 1/3 of UCE and ≤ 300 per profession, held-out mean Δ ≤ UCE',
            meetsTarget: meets,
          }),
          row('debias.uce', uce),
        ];
      } finally {
        rmSync(out, { recursive: true, force: true });
      }
    },
  },
];
