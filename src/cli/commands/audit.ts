/**
 * `time-debias audit`: generate images per profession and prompt template, classify them with
 * CLIP, and report the share of each class with intervals and the bias metric Δ. Resumable.
 * Parses, calls runAuditJob (src/audit/job.ts) and writeAuditReports (src/report), renders.
 *
 *   time-debias audit --model DIR --classifier DIR --professions winobias35 --images 20 --out DIR
 *   time-debias audit --from-images DIR --classifier DIR --out DIR
 */
import { readFileSync } from 'node:fs';
import cliProgress from 'cli-progress';
import type { Argv, CommandModule } from 'yargs';
import { type AuditJobOptions, runAuditJob } from '../../audit/job.js';
import type { AuditProgress } from '../../audit/run.js';
import { genderAttribute, validateAttribute, validateGenderStyle } from '../../classify/labels.js';
import { validatePreprocess } from '../../classify/preprocess-pil.js';
import { renderAuditTable, writeAuditReports } from '../../report/audit-report.js';
import { validateDevice, validateThreads } from '../../runtime/ort.js';
import { show, UsageError } from '../../util/errors.js';
import { flagOf } from '../fields.js';
import { generationOptions, queueOption, runFolderOptions, runtimeOptions } from '../options.js';
import { imageProgressLines } from '../progress.js';

interface AuditArgs {
  model?: string;
  'from-images'?: string;
  classifier: string;
  professions?: string;
  select?: string[];
  templates: string[];
  images: number;
  seed?: number;
  'label-style': string;
  attribute?: string;
  threshold?: number;
  'target-class'?: string;
  steps: number;
  scheduler: string;
  guidance: number;
  height?: number;
  width?: number;
  'negative-prompt'?: string;
  'batch-size'?: number;
  device: string;
  threads?: number;
  preprocess: string;
  'keep-images': boolean;
  'sheet-images': number;
  restart: boolean;
  bootstrap: number;
  'bootstrap-seed': number;
  'seed-groups': number;
  out: string;
  json: boolean;
  queue?: string;
}

export const auditCommand: CommandModule<object, AuditArgs> = {
  command: 'audit',
  describe:
    'Audit a model for bias: generate per profession, classify with CLIP, shares with intervals and Δ (resumable)',
  builder: (yargs: Argv) =>
    queueOption(
      runFolderOptions(
        runtimeOptions(
          generationOptions(yargs, {
            steps: { default: 25 },
            scheduler: { default: 'pndm' },
            guidance: { default: 7.5 },
          }),
        ),
        'for the mean Δ interval',
      ),
    )
      .usage('$0 audit (--model DIR --professions LIST | --from-images DIR) --classifier DIR --out DIR [options]')
      .option('model', { type: 'string', describe: 'Stable Diffusion ONNX model folder' })
      .option('from-images', { type: 'string', describe: 'Audit images made elsewhere: DIR/<profession>/*.png|jpg' })
      .option('classifier', {
        type: 'string',
        demandOption: true,
        describe: 'CLIP folder (transformers.js layout, local)',
      })
      .option('professions', { type: 'string', describe: 'winobias35, uce225, uce175, uce50, or a .csv/.json file' })
      .option('select', { type: 'string', array: true, describe: 'Only these professions of the list' })
      .option('templates', {
        type: 'string',
        array: true,
        default: ['default'],
        describe:
          "Template sets (default = validation + TIME's five; uce; validation; time) or templates with {article} {profession}",
      })
      .option('images', { type: 'number', default: 20, describe: 'Images per prompt (seeds start, start+1, ...)' })
      .option('seed', { type: 'number', describe: 'First seed (default 1000000, the held-out evaluation range)' })
      .option('label-style', {
        type: 'string',
        default: 'woman-man',
        describe: 'Gender labels: woman-man, female-male, image-of',
      })
      .option('attribute', {
        type: 'string',
        describe: 'JSON file {name, classes:[{name, prompts:[...]}]} (k ≥ 2) instead of gender',
      })
      .option('threshold', { type: 'number', describe: 'Top probability below this → unclear (default off)' })
      .option('target-class', { type: 'string', describe: 'Class whose share is reported (default the first, female)' })
      .option('batch-size', {
        type: 'number',
        describe: 'Images per generate/classify call (default 4; 16 with --from-images)',
      })
      .option('preprocess', {
        type: 'string',
        default: 'transformers',
        describe:
          "Classifier image preprocessing: transformers (transformers.js') or pil (PIL's antialiased resize, as the references)",
      })
      .option('keep-images', {
        type: 'boolean',
        default: false,
        describe: "Keep every image (else only the contact sheets' ones)",
      })
      .option('sheet-images', { type: 'number', default: 16, describe: 'Images per profession on its contact sheet' })
      .option('seed-groups', { type: 'number', default: 5, describe: 'Seed groups for mean ± sd' })
      .option('out', { type: 'string', demandOption: true, describe: 'Run folder (created; re-running resumes it)' })
      .option('json', {
        type: 'boolean',
        default: false,
        describe: 'Print the summary and per-profession results as JSON',
      })
      .conflicts('model', 'from-images')
      .example(
        '$0 audit --model ./sd-onnx --classifier ./clip --professions winobias35 --images 20 --out outputs/audit-base',
        '',
      )
      .example(
        '$0 audit --from-images ./other-model-images --classifier ./clip --out outputs/audit-other',
        '',
      ) as unknown as Argv<AuditArgs>,
  handler: async (argv) => {
    const device = validateDevice(argv.device);
    validateThreads(argv.threads);
    let attribute = genderAttribute(validateGenderStyle(argv['label-style']));
    if (argv.attribute) {
      let raw: unknown;
      try {
        raw = JSON.parse(readFileSync(argv.attribute, 'utf8'));
      } catch (cause) {
        throw new UsageError(`--attribute: cannot read ${show(argv.attribute)} as JSON (${(cause as Error).message})`, {
          cause,
        });
      }
      attribute = validateAttribute(raw, `--attribute ${argv.attribute}`);
    }
    const progress = makeProgress(!argv.json && process.stderr.isTTY === true);
    const options: AuditJobOptions = {
      model: argv.model,
      fromImages: argv['from-images'],
      classifier: argv.classifier,
      professions: argv.professions,
      select: argv.select,
      templates: argv.templates,
      images: argv.images,
      seedStart: argv.seed,
      attribute,
      threshold: argv.threshold,
      targetClass: argv['target-class'],
      generation: {
        steps: argv.steps,
        scheduler: argv.scheduler,
        guidance: argv.guidance,
        height: argv.height,
        width: argv.width,
        negativePrompt: argv['negative-prompt'],
      },
      device,
      threads: argv.threads,
      preprocess: validatePreprocess(argv.preprocess),
      batchSize: argv['batch-size'],
      keepImages: argv['keep-images'],
      sheetImages: argv['sheet-images'],
      restart: argv.restart,
      out: argv.out,
      bootstrap: { samples: argv.bootstrap, seed: argv['bootstrap-seed'] },
      seedGroups: argv['seed-groups'],
      onProgress: (p) => progress.update(p),
      queue: argv.queue,
      onWarning: (w) => process.stderr.write(`warning: ${w}\n`),
      nameOf: flagOf,
    };
    const result = await runAuditJob(options);
    progress.stop();
    const reports = await writeAuditReports(argv.out, result, { sheetImages: argv['sheet-images'] });
    if (argv.json) {
      const { images: _images, ...rest } = result;
      process.stdout.write(`${JSON.stringify({ ...rest, out: argv.out, reports: reports.files }, null, 2)}\n`);
    } else {
      process.stdout.write(renderAuditTable(result));
      process.stdout.write(`\nreport: ${argv.out}/report.html (also report.md, audit.json)\n`);
    }
  },
};

function makeProgress(tty: boolean) {
  let bar: cliProgress.SingleBar | null = null;
  const line = imageProgressLines('audit', 20);
  return {
    update(p: AuditProgress) {
      if (tty) {
        if (!bar) {
          bar = new cliProgress.SingleBar(
            { format: 'audit |{bar}| {value}/{total} images | {profession} | ETA {eta}s', stream: process.stderr },
            cliProgress.Presets.shades_classic,
          );
          bar.start(p.total, p.done, { profession: p.profession });
        }
        bar.update(p.done, { profession: p.profession });
      } else line({ ...p, label: p.profession || '…' });
    },
    stop() {
      bar?.stop();
    },
  };
}
