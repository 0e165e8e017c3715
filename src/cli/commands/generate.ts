/**
 * `time-debias generate`: text-to-image with a Stable Diffusion ONNX folder. Parses, calls
 * StableDiffusionPipeline (src/generate/pipeline.ts) and writeGenerationRun (src/generate/output.ts),
 * renders progress and a summary.
 *
 *   time-debias generate --model DIR --prompt "a photo of a doctor" --seeds 0-7 --out DIR
 *     [--negative-prompt TEXT] [--latents FILE.npy] [--save-latents] [--steps 25] [--scheduler pndm]
 *     [--guidance 7.5] [--eta 0] [--height 512 --width 512] [--batch-size 1] [--device cpu|cuda]
 *     [--threads N] [--grid] [--json]
 */
import { accessSync, constants, existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import cliProgress from 'cli-progress';
import type { Argv, CommandModule } from 'yargs';
import { checkWorkBounds } from '../../generate/bounds.js';
import { nativeSizeWarning } from '../../generate/geometry.js';
import { declaredSampleSize } from '../../generate/model-geometry.js';
import { readNpy } from '../../generate/npy.js';
import { writeGenerationRun } from '../../generate/output.js';
import { type GenerateRequest, normalizeRequest, StableDiffusionPipeline } from '../../generate/pipeline.js';
import { parseSeedList } from '../../generate/rng.js';
import { SCHEDULER_IDS } from '../../generate/schedulers/index.js';
import { checkOutsideModel } from '../../model/path-guard.js';
import { validateDevice, validateThreads } from '../../runtime/ort.js';
import { GenerationError, OutputError, show, UsageError } from '../../util/errors.js';
import { withFsErrors } from '../../util/fs-errors.js';
import { flagOf } from '../fields.js';

interface GenerateArgs {
  model: string;
  prompt: string;
  'negative-prompt'?: string;
  seeds?: string;
  latents?: string;
  'save-latents': boolean;
  steps: number;
  scheduler: string;
  guidance: number;
  eta: number;
  height?: number;
  width?: number;
  'batch-size': number;
  device: string;
  threads?: number;
  grid: boolean;
  out: string;
  json: boolean;
}

export const generateCommand: CommandModule<object, GenerateArgs> = {
  command: 'generate',
  describe: 'Generate images with a Stable Diffusion ONNX model (PNG with parameters, JSON sidecar)',
  builder: (yargs: Argv) =>
    yargs
      .usage('$0 generate --model DIR --prompt TEXT (--seeds 0-7 | --latents FILE.npy) --out DIR [options]')
      .option('model', { type: 'string', demandOption: true, describe: 'Stable Diffusion ONNX model folder' })
      .option('prompt', { type: 'string', demandOption: true, describe: 'The prompt' })
      .option('negative-prompt', { type: 'string', describe: 'Negative prompt (the unconditional branch)' })
      .option('seeds', { type: 'string', describe: 'Seeds, one image each: "0-7", "3", "0-3,10"' })
      .option('latents', { type: 'string', describe: 'Initial latents, float32 .npy [n, 4, h/8, w/8]' })
      .option('save-latents', {
        type: 'boolean',
        default: false,
        describe: 'Write the final latents to OUT/latents.npy',
      })
      .option('steps', { type: 'number', default: 25, describe: 'Denoising steps' })
      .option('scheduler', { type: 'string', default: 'pndm', describe: `One of ${SCHEDULER_IDS.join(', ')}` })
      .option('guidance', { type: 'number', default: 7.5, describe: 'Classifier-free guidance scale (≤ 1: off)' })
      .option('eta', { type: 'number', default: 0, describe: 'DDIM η (ddim only)' })
      .option('height', {
        type: 'number',
        describe: "Image height, a multiple of the VAE's scale factor (8 for SD)",
        defaultDescription: "the model's native size",
      })
      .option('width', {
        type: 'number',
        describe: "Image width, a multiple of the VAE's scale factor (8 for SD)",
        defaultDescription: "the model's native size",
      })
      .option('batch-size', { type: 'number', default: 1, describe: 'Images per UNet batch' })
      .option('device', {
        type: 'string',
        default: 'cpu',
        describe: 'cpu or cuda (needs the CUDA provider; see README)',
      })
      .option('threads', { type: 'number', describe: 'onnxruntime intra-op threads' })
      .option('grid', { type: 'boolean', default: false, describe: 'Also write a contact sheet OUT/grid.png' })
      .option('out', { type: 'string', demandOption: true, describe: 'Output folder' })
      .option('json', { type: 'boolean', default: false, describe: 'Print the run summary as JSON' })
      .check((argv) => {
        if (argv.seeds === undefined && argv.latents === undefined) {
          throw new UsageError('--seeds or --latents: give one (e.g. --seeds 0-7)');
        }
        return true;
      }) as unknown as Argv<GenerateArgs>,
  handler: async (argv) => {
    const device = validateDevice(argv.device);
    validateThreads(argv.threads);
    const request: GenerateRequest = {
      prompt: argv.prompt,
      negativePrompt: argv['negative-prompt'],
      seeds: argv.seeds === undefined ? undefined : parseSeedList(argv.seeds),
      steps: argv.steps,
      scheduler: argv.scheduler,
      guidance: argv.guidance,
      eta: argv.eta,
      height: argv.height,
      width: argv.width,
      batchSize: argv['batch-size'],
      returnLatents: argv['save-latents'],
    };
    // Check the cheap inputs before loading the model.
    normalizeRequest({ ...request, seeds: request.seeds ?? [0], latents: undefined });
    checkWorkBounds(
      {
        height: request.height,
        width: request.width,
        batchSize: request.batchSize,
        steps: request.steps,
        images: request.seeds?.length,
        bytesPerImage: 4 * (request.height ?? 512) * (request.width ?? 512),
      },
      {
        fields: { images: 'seeds' },
        sampleSize: declaredSampleSize(argv.model),
        error: (m, o) => new GenerationError(m, o),
      },
    );
    // The output: never inside the model, and not a folder of an earlier run (found now, not after rendering).
    checkOutsideModel('--out', argv.out, argv.model);
    if (existsSync(join(argv.out, 'generation.json'))) {
      throw new OutputError(
        `--out: ${show(argv.out)} already holds a generation run (generation.json); choose another folder or remove it`,
      );
    }
    // and a folder this user can write (created now: a permission or space problem is found before rendering)
    withFsErrors('outDir', argv.out, () => {
      mkdirSync(argv.out, { recursive: true });
      accessSync(argv.out, constants.W_OK);
    });
    if (argv.latents !== undefined) request.latents = readNpy(argv.latents);

    const pipeline = await StableDiffusionPipeline.create(argv.model, { device, threads: argv.threads });
    try {
      const progress = makeProgress(!argv.json && process.stderr.isTTY === true);
      const result = await pipeline.generate({
        ...request,
        onProgress: (e) => progress.update(e),
      });
      progress.stop();
      // the size guess's advice names the flags (the result keeps the library's words)
      const guess = nativeSizeWarning(pipeline.nativeSize);
      for (const w of result.warnings)
        process.stderr.write(`warning: ${w === guess ? nativeSizeWarning(pipeline.nativeSize, flagOf) : w}\n`);
      const written = writeGenerationRun(argv.out, result, {
        grid: argv.grid,
        saveLatents: argv['save-latents'],
        extra: { command: ['time-debias', ...process.argv.slice(2)] },
      });
      if (argv.json) {
        process.stdout.write(
          `${JSON.stringify({ ...written, warnings: result.warnings, timing: result.timing }, null, 2)}\n`,
        );
      } else {
        const perStep = result.timing.unetCalls ? result.timing.loopMs / result.timing.unetCalls : 0;
        process.stdout.write(
          `${written.images.length} image(s) in ${written.dir} (${(result.timing.totalMs / 1000).toFixed(1)} s, ` +
            `${perStep.toFixed(0)} ms per denoising step)\n`,
        );
        if (written.grid) process.stdout.write(`grid: ${written.grid}\n`);
        if (written.latents) process.stdout.write(`latents: ${written.latents}\n`);
      }
    } finally {
      await pipeline.dispose();
    }
  },
};

/** A progress bar on a TTY, plain lines otherwise (one per finished image). */
function makeProgress(tty: boolean) {
  let bar: cliProgress.SingleBar | null = null;
  return {
    update(e: Parameters<NonNullable<GenerateRequest['onProgress']>>[0]) {
      if (e.kind === 'step') {
        if (!tty) return;
        if (!bar) {
          bar = new cliProgress.SingleBar(
            { format: 'generate |{bar}| {value}/{total} steps | ETA {eta}s', stream: process.stderr },
            cliProgress.Presets.shades_classic,
          );
          bar.start(e.total, 0);
        }
        bar.update(e.done);
      } else if (!tty) {
        process.stderr.write(`image ${e.done}/${e.total} done\n`);
      }
    },
    stop() {
      bar?.stop();
    },
  };
}
