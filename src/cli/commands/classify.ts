/**
 * `time-debias classify --classifier DIR [--labels L1 L2 ...] IMAGE...`: zero-shot CLIP class
 * probabilities per image (a table, or JSON with --json). Without --labels, the gender labels of
 * --label-style. Parses, calls ClipClassifier (src/classify), renders.
 */

import type { Argv, CommandModule } from 'yargs';
import { ClipClassifier, type ImageClassification } from '../../classify/clip.js';
import { attributeFromLabels, genderAttribute, validateGenderStyle } from '../../classify/labels.js';
import { validatePreprocess } from '../../classify/preprocess-pil.js';
import { textTable } from '../../report/text/index.js';
import { validateDevice } from '../../runtime/ort.js';
import { UsageError } from '../../util/errors.js';

interface ClassifyArgs {
  classifier: string;
  labels?: string[];
  'label-style': string;
  profession?: string;
  threshold?: number;
  images: string[];
  'batch-size': number;
  device: string;
  threads?: number;
  preprocess: string;
  json: boolean;
}

export const classifyCommand: CommandModule<object, ClassifyArgs> = {
  command: 'classify <images..>',
  describe: 'Zero-shot CLIP classification of image files: class probabilities per image',
  builder: (yargs: Argv) =>
    yargs
      .positional('images', {
        type: 'string',
        array: true,
        demandOption: true,
        describe: 'Image files (PNG, JPEG, WebP)',
      })
      .option('classifier', {
        type: 'string',
        demandOption: true,
        describe: 'CLIP folder (transformers.js layout, local)',
      })
      .option('labels', { type: 'string', array: true, describe: 'Label prompts, one class each (at least 2)' })
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
      .example(
        '$0 classify --classifier ./clip --labels "a photo of a woman" "a photo of a man" img1.png img2.png',
        '',
      ) as unknown as Argv<ClassifyArgs>,
  handler: async (argv) => {
    if (argv.labels !== undefined && argv.labels.length === 0)
      throw new UsageError('--labels: give at least 2 label prompts');
    const attribute = argv.labels
      ? attributeFromLabels(argv.labels)
      : genderAttribute(validateGenderStyle(argv['label-style']));
    const device = validateDevice(argv.device);
    const clf = await ClipClassifier.load(argv.classifier, {
      device,
      threads: argv.threads,
      batchSize: argv['batch-size'],
      preprocess: validatePreprocess(argv.preprocess),
    });
    try {
      const results = await clf.classify(argv.images, attribute, {
        profession: argv.profession,
        threshold: argv.threshold,
      });
      const rows = argv.images.map((image, i) => ({ image, ...(results[i] as ImageClassification) }));
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

export function renderClassifyTable(rows: ({ image: string } & ImageClassification)[], classes: string[]): string {
  const header = ['image', 'label', ...classes];
  const body = rows.map((r) => [
    r.image,
    r.kind === 'unclear' ? `unclear (${r.label})` : r.label,
    ...classes.map((c) => (r.probabilities[c] ?? 0).toFixed(4)),
  ]);
  return `${textTable({ header, rows: body, align: ['left', 'left'] }).join('\n')}\n`;
}
