/**
 * `time-debias evaluate`: TIME's own evaluation on TIMED — efficacy, generality and specificity
 * before and after each row's edit (or one joint edit), per row and aggregated, in a resumable run
 * folder with evaluate.json, report.md/html, contact sheets and (several λ) a plot of the metrics
 * against λ. Parses, calls runEvaluateJob (src/evaluate/job.ts), renders.
 *
 *   time-debias evaluate --dataset TIMED_test_set.csv --model DIR --classifier DIR --out DIR
 *   time-debias evaluate --dataset demo --model demo --classifier demo --lambda 0.01,0.1,1 --out DIR
 *   time-debias evaluate … --queue redis://127.0.0.1:6379   (images on `time-debias worker`s)
 */
import type { Argv, CommandModule } from 'yargs';
import { runEvaluateJob } from '../../evaluate/job.js';
import type { EvaluateMode } from '../../evaluate/run.js';
import { SCHEDULER_IDS } from '../../generate/schedulers/index.js';
import { renderRowsTable, renderSummaryTable, shownLambdaIndex } from '../../report/evaluate.js';
import { show, UsageError } from '../../util/errors.js';
import { flagOf, relabelForUser } from '../fields.js';
import { generationOptions, queueOption, runFolderOptions, runtimeOptions } from '../options.js';
import { imageProgressLines } from '../progress.js';

interface EvaluateArgs {
  dataset: string;
  model: string;
  classifier: string;
  out: string;
  rows?: string;
  images: number;
  seed: number;
  mode: string;
  lambda: string;
  augment: boolean;
  steps?: number;
  scheduler?: string;
  guidance?: number;
  height?: number;
  width?: number;
  'negative-prompt'?: string;
  'batch-size'?: number;
  device: string;
  threads?: number;
  'sheet-images': number;
  restart: boolean;
  bootstrap: number;
  'bootstrap-seed': number;
  json: boolean;
  queue?: string;
}

/** "0.01,0.1,1" → [0.01, 0.1, 1]; each a finite number > 0. */
export function parseLambdas(spec: string): number[] {
  const parts = String(spec)
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
  if (parts.length === 0)
    throw new UsageError(`--lambda: ${show(spec)} names no λ (rule: numbers > 0, comma-separated)`);
  return parts.map((s) => {
    const v = Number(s);
    if (!Number.isFinite(v) || v <= 0)
      throw new UsageError(`--lambda: ${show(s)} is not a valid λ (rule: a finite number > 0, e.g. 0.1 or 0.01,0.1,1)`);
    return v;
  });
}

export const evaluateCommand: CommandModule<object, EvaluateArgs> = {
  command: 'evaluate',
  describe: 'TIME on TIMED: efficacy / generality / specificity before and after each edit (resumable)',
  builder: (yargs: Argv) =>
    queueOption(
      runFolderOptions(
        runtimeOptions(
          generationOptions(yargs, {
            steps: { describe: 'Denoising steps (default 25; 8 with --model demo)' },
            scheduler: { describe: `One of ${SCHEDULER_IDS.join(', ')} (default pndm)` },
            guidance: { describe: 'Classifier-free guidance scale (default 7.5)' },
          }),
        ),
        'intervals over rows',
      ),
    )
      .usage('$0 evaluate --dataset FILE --model DIR --classifier DIR --out DIR [options]')
      .option('dataset', {
        type: 'string',
        demandOption: true,
        describe: 'TIMED CSV (old,new,positive1,gt1,…,negative5,gn5), or "demo" for the demo world\'s file',
      })
      .option('model', { type: 'string', demandOption: true, describe: 'Stable Diffusion ONNX folder, or "demo"' })
      .option('classifier', { type: 'string', demandOption: true, describe: 'CLIP folder (local), or "demo"' })
      .option('out', { type: 'string', demandOption: true, describe: 'Run folder (created; re-running resumes it)' })
      .option('rows', {
        type: 'string',
        describe: 'Rows to evaluate: "all" (default) or 0-based indices/ranges, e.g. 0-4,7',
      })
      .option('images', {
        type: 'number',
        default: 10,
        describe: 'Images per prompt (the same seeds before and after)',
      })
      .option('seed', { type: 'number', default: 0, describe: 'First seed (seeds seed … seed+images−1)' })
      .option('mode', {
        type: 'string',
        default: 'per-row',
        describe: 'per-row: each row its own edit of the original model (the paper); joint: all rows in one solve',
      })
      .option('lambda', { type: 'string', default: '0.1', describe: 'λ, or several for a sweep: 0.01,0.1,1' })
      .option('augment', {
        type: 'boolean',
        default: false,
        describe: 'Add TIME\'s three augmented pairs ("A photo of …") to each edit',
      })
      .option('batch-size', { type: 'number', describe: 'Images per UNet batch (default 4; 32 with --model demo)' })
      .option('sheet-images', { type: 'number', default: 4, describe: "Seeds per line of a row's contact sheet" })
      .option('json', { type: 'boolean', default: false, describe: 'Print the result (evaluate.json) as JSON' })
      .example(
        '$0 evaluate --dataset TIMED_test_set.csv --model models/stable-diffusion-v1-4-onnx --classifier models/clip-vit-base-patch32 --images 10 --out outputs/timed-sd14',
        "the paper's evaluation on SD 1.4",
      )
      .example(
        '$0 evaluate --dataset demo --model demo --classifier demo --lambda 0.01,0.1,1 --out outputs/demo-timed',
        'the demo world (npm run demo:timed)',
      )
      .example(
        '$0 evaluate --dataset demo --model demo --classifier demo --out outputs/demo-timed-queue --queue redis://127.0.0.1:6379',
        'the same on `time-debias worker --queue redis://127.0.0.1:6379 --models .cache/demo` processes',
      ) as unknown as Argv<EvaluateArgs>,
  handler: async (argv) => {
    if (argv.mode !== 'per-row' && argv.mode !== 'joint')
      throw new UsageError(`--mode: ${show(argv.mode)} is not one of per-row, joint`);
    const lambdas = parseLambdas(argv.lambda);
    const progressLine = imageProgressLines('evaluate', 10);
    const job = await runEvaluateJob({
      dataset: argv.dataset,
      model: argv.model,
      classifier: argv.classifier,
      out: argv.out,
      rows: argv.rows,
      images: argv.images,
      seedStart: argv.seed,
      mode: argv.mode as EvaluateMode,
      lambdas,
      augment: argv.augment,
      generation: {
        steps: argv.steps,
        scheduler: argv.scheduler,
        guidance: argv.guidance,
        height: argv.height,
        width: argv.width,
        negativePrompt: argv['negative-prompt'],
        batchSize: argv['batch-size'],
      },
      device: argv.device,
      threads: argv.threads,
      sheetImages: argv['sheet-images'],
      restart: argv.restart,
      bootstrap: { samples: argv.bootstrap, seed: argv['bootstrap-seed'] },
      log: argv.json ? undefined : (line) => process.stderr.write(`evaluate: ${line}\n`),
      nameOf: flagOf,
      queue: argv.queue,
      onProgress: (p) => {
        if (!argv.json) progressLine({ ...p, label: p.phase });
      },
    }).catch((error: unknown) => {
      throw relabelForUser(error, flagOf);
    });
    const r = job.result;
    if (argv.json) {
      process.stdout.write(`${JSON.stringify({ ...r, out: job.out, reports: job.reports }, null, 2)}\n`);
      return;
    }
    // rows at TIME's default λ = 0.1 when it was evaluated, else the first λ (as in the report)
    const shown = shownLambdaIndex(r);
    process.stdout.write(`${renderSummaryTable(r)}\n\n${renderRowsTable(r, shown)}\n`);
    if (r.lambdas.length > 1) process.stdout.write(`(rows: λ = ${r.lambdas[shown]}; every λ in the report)\n`);
    for (const i of r.issues) process.stdout.write(`left out: row ${i.index} (${i.kind}): ${i.message}\n`);
    process.stdout.write(
      `\nreport: ${job.out}/report.html (also report.md, evaluate.json${r.plot ? `, ${r.plot}` : ''}); ${job.seconds.toFixed(1)} s\n`,
    );
  },
};
