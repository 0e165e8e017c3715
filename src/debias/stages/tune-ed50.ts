/**
 * Stage 2 (ed50): each profession's edit strength tuned on its own single edit, concurrently — the
 * tuner (tuner.ts) decides every probe; this stage renders and classifies what it asks for, logs each
 * probe, and saves the state after every batch of images.
 */
import pLimit from 'p-limit';
import type { Profession } from '../../audit/professions.js';
import type { JobConfig } from '../config.js';
import { startingStrength } from '../interference.js';
import type { ProfessionPair } from '../prompts.js';
import { createTuner, imagesUsed, nextRequest, observe, type TunerSettings, type TunerState } from '../tuner.js';
import { fmt, type StageContext } from './context.js';

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
async function initialStrength(ctx: StageContext, pair: ProfessionPair): Promise<{ strength: number; slope?: number }> {
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

export async function tuneEd50(ctx: StageContext): Promise<void> {
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
