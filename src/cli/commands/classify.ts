/**
 * `time-debias classify --classifier DIR [--label L1 --label L2 ...] IMAGE...`: zero-shot CLIP class
 * probabilities per image (a table, or JSON with --json). Without labels, the gender labels of
 * --label-style. Parses, calls ClipClassifier (src/classify), renders.
 *
 * Images and labels cannot be confused (issue 11): `--label` takes one prompt per flag; `--labels
 * L1 L2 …` takes every word up to the next option, so images go before it or after `--`; a label
 * that names an image file is refused rather than classified against.
 */
import { existsSync, statSync } from 'node:fs';
import { extname } from 'node:path';
import type { Argv, CommandModule } from 'yargs';
import { ClipClassifier, type ImageClassification } from '../../classify/clip.js';
import { attributeFromLabels, genderAttribute, validateGenderStyle } from '../../classify/labels.js';
import { validatePreprocess } from '../../classify/preprocess-pil.js';
import { textTable } from '../../report/text/index.js';
import { validateDevice } from '../../runtime/ort.js';
import { show, UsageError } from '../../util/errors.js';

interface ClassifyArgs {
  classifier: string;
  label?: string | string[];
  labels?: string[];
  'label-style': string;
  profession?: string;
  threshold?: number;
  images?: string[];
  _: (string | number)[];
  'batch-size': number;
  device: string;
  threads?: number;
  preprocess: string;
  json: boolean;
}

export const classifyCommand: CommandModule<object, ClassifyArgs> = {
  command: 'classify [images..]',
  describe: 'Zero-shot CLIP classification of image files: class probabilities per image',
  builder: (yargs: Argv) =>
    yargs
      .positional('images', {
        type: 'string',
        array: true,
        describe: 'Image files (PNG, JPEG, WebP); after "--" when --labels comes last',
      })
      .option('classifier', {
        type: 'string',
        demandOption: true,
        describe: 'CLIP folder (transformers.js layout, local)',
      })
      .option('label', {
        type: 'string',
        describe: 'A label prompt, one class; repeat it: --label "a photo of a woman" --label "a photo of a man"',
      })
      .option('labels', {
        type: 'string',
        array: true,
        describe: 'Label prompts, one class each (at least 2); takes every word up to the next option or "--"',
      })
      .option('label-style', {
        type: 'string',
        default: 'woman-man',
        describe: 'Gender labels when --labels is not given: woman-man, female-male, image-of',
      })
      .option('profession', { type: 'string', describe: 'Fills {profession} in label prompts (female-male style)' })
      .option('threshold', { type: 'number', describe: 'Top probability below this → unclear (default off)' })
      .option('batch-size', { type: 'number', default: 16, describe: 'Images per model run' })
      .option('device', { type: 'string', default: 'cpu', describe: 'cpu or cuda' })
      .option('threads', { type: 'number', describe: 'onnxruntime intra-op threads' })
      .option('preprocess', {
        type: 'string',
        default: 'transformers',
        describe:
          "Classifier image preprocessing: transformers (transformers.js') or pil (PIL's antialiased resize, as the references)",
      })
      .option('json', { type: 'boolean', default: false, describe: 'Print JSON' })
      .example(CLASSIFY_EXAMPLES[0] as string, '')
      .example(CLASSIFY_EXAMPLES[1] as string, '') as unknown as Argv<ClassifyArgs>,
  handler: async (argv) => {
    const { images, labels } = imagesAndLabels(argv);
    const attribute = labels ? attributeFromLabels(labels) : genderAttribute(validateGenderStyle(argv['label-style']));
    const device = validateDevice(argv.device);
    const clf = await ClipClassifier.load(argv.classifier, {
      device,
      threads: argv.threads,
      batchSize: argv['batch-size'],
      preprocess: validatePreprocess(argv.preprocess),
    });
    try {
      const results = await clf.classify(images, attribute, {
        profession: argv.profession,
        threshold: argv.threshold,
      });
      const rows = images.map((image, i) => ({ image, ...(results[i] as ImageClassification) }));
      if (argv.json) {
        process.stdout.write(
          `${JSON.stringify({ kind: 'classification', classes: attribute.classes.map((c) => c.name), images: rows }, null, 2)}\n`,
        );
      } else {
        process.stdout.write(
          renderClassifyTable(
            rows,
            attribute.classes.map((c) => c.name),
          ),
        );
      }
    } finally {
      await clf.dispose();
    }
  },
};

/** The --help examples (README shows the same; a test runs them as written). */
export const CLASSIFY_EXAMPLES = [
  '$0 classify --classifier ./clip --label "a photo of a woman" --label "a photo of a man" img1.png img2.png',
  '$0 classify --classifier ./clip --labels "a photo of a woman" "a photo of a man" -- img1.png img2.png',
];

const IMAGE_EXTENSIONS = new Set(['.png', '.jpg', '.jpeg', '.webp', '.gif', '.bmp']);

/**
 * The images (positional, and whatever follows `--`) and the labels (`--label` repeated, or
 * `--labels`); UsageError when a label names an image file or no image is left.
 */
export function imagesAndLabels(argv: {
  images?: string[];
  _: (string | number)[];
  label?: string | string[];
  labels?: string[];
}): {
  images: string[];
  labels: string[] | undefined;
} {
  const images = [...(argv.images ?? []), ...argv._.slice(1).map(String)];
  const single = argv.label === undefined ? undefined : ([] as string[]).concat(argv.label);
  if (single && argv.labels) throw new UsageError('--label and --labels: give the labels one way, not both');
  const labels = single ?? argv.labels;
  const flag = single ? '--label' : '--labels';
  if (labels !== undefined && labels.length < 2) {
    throw new UsageError(`${flag}: give at least 2 label prompts (${labels.length} given)`);
  }
  for (const label of labels ?? []) {
    const isFile = existsSync(label) && statSync(label).isFile();
    if (isFile || IMAGE_EXTENSIONS.has(extname(label).toLowerCase())) {
      throw new UsageError(
        `${flag}: ${show(label)} is ${isFile ? 'an existing file' : 'an image file name'}, not a label prompt; ` +
          'give the images before --labels or after "--", or use --label once per label',
      );
    }
  }
  if (images.length === 0) {
    throw new UsageError(
      'IMAGE: give at least one image file (after the options; after "--" when --labels comes last)',
    );
  }
  return { images, labels };
}

export function renderClassifyTable(rows: ({ image: string } & ImageClassification)[], classes: string[]): string {
  const header = ['image', 'label', ...classes];
  const body = rows.map((r) => [
    r.image,
    r.kind === 'unclear' ? `unclear (${r.label})` : r.label,
    ...classes.map((c) => (r.probabilities[c] ?? 0).toFixed(4)),
  ]);
  return `${textTable({ header, rows: body, align: ['left', 'left'] }).join('\n')}\n`;
}
