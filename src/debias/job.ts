/**
 * The debias job (issue: "Debias jobs from config files"): preflight → run folder → stages → result.
 *
 *   preflight    every check that needs no image (preflight.ts; --dry-run runs it too)
 *   before       audit of every profession on held-out prompts and seeds; the pairs (stages/before.ts)
 *   tuning       each profession's edit strength (stages/tune-ed50.ts) or UCE's loop (stages/tune-uce.ts)
 *   joint        ONE joint closed-form commit, verified, re-tuned in bounded rounds (stages/joint.ts)
 *   export       the debiased model folder (stages/export.ts)
 *   after        audit of the debiased model, gendered prompts, unrelated prompts (stages/after.ts)
 *
 * Every stage is resumable: the audits resume from their own run folders, the tuning state is saved
 * (atomically) after every batch of images, joint rounds after every verification, and the export is
 * skipped when the run folder already holds it (run-folder.ts). Re-running the same command after a
 * crash continues where it stopped and ends with the same result as an uninterrupted run.
 */
import { GemmEngine } from '../linalg/gemm.js';
import { libraryName } from '../util/errors.js';
import type { JobConfig } from './config.js';
import { professionStatus } from './joint-policy.js';
import { preflight } from './preflight.js';
import { assembleResult } from './result.js';
import { buildJobRows, makeSolver } from './rows.js';
import { RunFolder } from './run-folder.js';
import { runAfter } from './stages/after.js';
import { runBefore } from './stages/before.js';
import { pipelineEvaluator, type StageContext } from './stages/context.js';
import { exportStage } from './stages/export.js';
import { jointRounds } from './stages/joint.js';
import { tuneEd50 } from './stages/tune-ed50.js';
import { commitUce, tuneUce } from './stages/tune-uce.js';
import type { DebiasResult, JobOptions, JobWorld } from './types.js';

export { attributeOf } from './preflight.js';
export { subsetRows } from './rows.js';
export { runDirOf } from './run-folder.js';
export type * from './types.js';

/** Run (or resume) the job. */
export async function runDebiasJob(
  config: JobConfig,
  world: JobWorld,
  options: JobOptions = {},
): Promise<DebiasResult> {
  const log = options.log ?? (() => {});
  const pre = preflight(config, world);
  const folder = RunFolder.open(config, { restart: options.restart });
  try {
    return await runInFolder(config, world, options, pre, folder, log);
  } finally {
    folder.close();
  }
}

async function runInFolder(
  config: JobConfig,
  world: JobWorld,
  options: JobOptions,
  pre: ReturnType<typeof preflight>,
  folder: RunFolder,
  log: (line: string) => void,
): Promise<DebiasResult> {
  const { state } = folder;
  const nameOf = options.nameOf ?? libraryName;
  // A finished job is not run again: its result is what it printed (unless it can export now).
  const finished = state.phase === 'done' ? folder.readResult() : null;
  if (finished && (finished.exported !== null || !options.exportPartial)) {
    log(`done: ${folder.dir} holds this job's result (${nameOf('restart')} runs it again)`);
    return finished;
  }

  const before = await runBefore(config, world, pre, folder, log);
  const { pairs } = before;
  const jobRows = await buildJobRows(config, world, pre, pairs, log);
  const gemm = new GemmEngine();
  try {
    const ctx: StageContext = {
      config,
      state,
      pairs,
      professions: new Map(pre.edited.map((p) => [p.profession, p])),
      solveFor: makeSolver(config, pairs, jobRows, gemm),
      evaluate: pipelineEvaluator(config, world, pre.attribute),
      rows: jobRows.rows,
      opposite: jobRows.opposite,
      baseline: before.baseline,
      save: () => folder.save(),
      log,
    };
    const ed50 = config.tuning.strategy === 'ed50';
    await (ed50 ? tuneEd50(ctx) : tuneUce(ctx));
    folder.advance('joint');
    await (ed50 ? jointRounds(ctx) : commitUce(ctx));

    const unconverged = pairs
      .filter((p) => professionStatus(config.tuning.strategy, state, p.profession) !== 'converged')
      .map((p) => p.profession);
    const complete = unconverged.length === 0;
    if (!complete) {
      log(`tolerance not reached for ${unconverged.join(', ')} (see job.json for each profession's probes)`);
    }
    const interpolation = ed50 ? undefined : state.uce?.weights;
    const solution = await ctx.solveFor(state.joint.strengths, interpolation);

    const exported =
      complete || options.exportPartial
        ? await exportStage({
            ...ctx,
            world,
            folder,
            sites: pre.sites,
            solution,
            gemm,
            jobRows,
            before: before.audit,
          })
        : null;
    const after = await runAfter(config, world, pre, folder, before.audit, { exported, solution, gemm }, log);

    const result = assembleResult(config, folder.dir, state, pairs, before.audit, after, exported, complete, pre.held);
    folder.advance('done');
    folder.writeJob(result);
    return result;
  } finally {
    await gemm.dispose();
  }
}
