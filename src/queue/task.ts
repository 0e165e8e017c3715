/**
 * A render-and-classify task: what a coordinator puts on the queue and a worker takes. One task is
 * one chunk of an audit (one prompt × a few seeds), rendered with fixed generation settings, an
 * optional text transform M (a TIME edit on the text side: every site's weight W becomes W·M) and
 * classified by a CLIP folder with an attribute's labels.
 *
 * Models travel by content digest (the sha256 of src/model/folder-digest.ts) with a path hint for
 * messages only: a worker finds them among its own folders and never opens the hint. The text
 * transform travels by digest too; its bytes are stored once in Redis (producer.ts) and checked by
 * the worker against the digest.
 *
 * Every payload is validated against TASK_SCHEMA (ajv) by the worker before anything is opened.
 *
 * The task's identity (its BullMQ job id) is the hash of everything that decides its images and
 * their classification: the canonical JSON of the task without the path hints. A duplicate enqueue
 * of the same task is the same job; a restarted coordinator asks for the same ids again.
 */
import { Ajv } from 'ajv';
import type { Attribute } from '../classify/labels.js';
import { fingerprint } from '../util/canonical-json.js';
import { QueueError, show } from '../util/errors.js';

export const TASK_VERSION = 1;

export interface FolderRef {
  /** sha256 of the folder (folderDigest). */
  digest: string;
  /** The coordinator's path of it: for messages only, never opened by a worker. */
  hint: string;
}

export interface TaskGeneration {
  steps: number;
  scheduler: string;
  guidance: number;
  height: number;
  width: number;
  negativePrompt: string;
}

export interface RenderTask {
  version: typeof TASK_VERSION;
  model: FolderRef;
  /** logitScale and preprocess as the coordinator's classifier has them (they decide the labels). */
  classifier: FolderRef & { logitScale: number; preprocess: 'transformers' | 'pil' };
  /** M (d × d, float32 row-major) by digest: sha256 of its little-endian bytes. */
  transform: { digest: string; d: number } | null;
  generation: TaskGeneration;
  prompt: string;
  seeds: number[];
  /** Label context of the classifier ("{profession}" in label prompts). */
  profession: string;
  attribute: Attribute;
  threshold: number | null;
  /** Per seed: return the PNG (contact sheets, --keep-images). */
  images: boolean[];
}

export interface ImageResult {
  seed: number;
  label: string;
  unclear: boolean;
  probabilities: Record<string, number>;
  /** sha256 of the RGB bytes (height × width × 3). */
  digest: string;
  /** The PNG, base64, where the task asked for it. */
  png: string | null;
}

export interface TaskResult {
  version: typeof TASK_VERSION;
  /** The worker's name. */
  worker: string;
  images: ImageResult[];
  /** Wall time of the task on the worker (render + classify), ms. */
  ms: number;
}

const HEX64 = '^[0-9a-f]{64}$';
const folderRef = {
  type: 'object',
  required: ['digest', 'hint'],
  additionalProperties: false,
  properties: { digest: { type: 'string', pattern: HEX64 }, hint: { type: 'string', maxLength: 4096 } },
} as const;

/** The JSON schema every task is validated against before a worker acts on it. */
export const TASK_SCHEMA = {
  $id: 'time-debias/render-task',
  type: 'object',
  additionalProperties: false,
  required: [
    'version',
    'model',
    'classifier',
    'transform',
    'generation',
    'prompt',
    'seeds',
    'profession',
    'attribute',
    'threshold',
    'images',
  ],
  properties: {
    version: { const: TASK_VERSION },
    model: folderRef,
    classifier: {
      type: 'object',
      required: ['digest', 'hint', 'logitScale', 'preprocess'],
      additionalProperties: false,
      properties: {
        ...folderRef.properties,
        logitScale: { type: 'number', exclusiveMinimum: 0 },
        preprocess: { enum: ['transformers', 'pil'] },
      },
    },
    transform: {
      oneOf: [
        { type: 'null' },
        {
          type: 'object',
          required: ['digest', 'd'],
          additionalProperties: false,
          properties: { digest: { type: 'string', pattern: HEX64 }, d: { type: 'integer', minimum: 1, maximum: 8192 } },
        },
      ],
    },
    generation: {
      type: 'object',
      additionalProperties: false,
      required: ['steps', 'scheduler', 'guidance', 'height', 'width', 'negativePrompt'],
      properties: {
        steps: { type: 'integer', minimum: 1, maximum: 1000 },
        scheduler: { type: 'string', minLength: 1, maxLength: 64 },
        guidance: { type: 'number' },
        height: { type: 'integer', minimum: 8, maximum: 4096, multipleOf: 8 },
        width: { type: 'integer', minimum: 8, maximum: 4096, multipleOf: 8 },
        negativePrompt: { type: 'string', maxLength: 10000 },
      },
    },
    prompt: { type: 'string', maxLength: 10000 },
    seeds: { type: 'array', minItems: 1, maxItems: 1024, items: { type: 'integer', minimum: 0 } },
    profession: { type: 'string', maxLength: 1000 },
    attribute: {
      type: 'object',
      required: ['name', 'classes'],
      properties: {
        name: { type: 'string' },
        classes: {
          type: 'array',
          minItems: 2,
          items: {
            type: 'object',
            required: ['name', 'prompts'],
            properties: {
              name: { type: 'string', minLength: 1 },
              prompts: { type: 'array', minItems: 1, items: { type: 'string' } },
            },
          },
        },
      },
    },
    threshold: { oneOf: [{ type: 'null' }, { type: 'number', minimum: 0, maximum: 1 }] },
    images: { type: 'array', items: { type: 'boolean' } },
  },
} as const;

const ajv = new Ajv({ allErrors: true, strict: true });
const validateSchema = ajv.compile(TASK_SCHEMA);

/** Check a payload against TASK_SCHEMA (and what a schema cannot say); throws QueueError naming every problem. */
export function validateTask(payload: unknown): RenderTask {
  if (!validateSchema(payload)) {
    const problems = (validateSchema.errors ?? [])
      .map((e) => `${e.instancePath || '(task)'} ${e.message ?? 'is invalid'}`)
      .join('; ');
    throw new QueueError(`malformed task payload (schema ${TASK_SCHEMA.$id} v${TASK_VERSION}): ${problems}`);
  }
  const task = payload as unknown as RenderTask;
  if (task.images.length !== task.seeds.length) {
    throw new QueueError(
      `malformed task payload: images has ${task.images.length} flags for ${task.seeds.length} seeds (one per seed)`,
    );
  }
  if (new Set(task.seeds).size !== task.seeds.length)
    throw new QueueError(`malformed task payload: seeds ${show(task.seeds)} repeat a seed`);
  return task;
}

/** The task's identity: hash of everything that decides its images and classification (not the path hints). */
export function taskId(task: RenderTask): string {
  const { model, classifier, ...rest } = task;
  const identity = {
    ...rest,
    model: model.digest,
    classifier: { digest: classifier.digest, logitScale: classifier.logitScale, preprocess: classifier.preprocess },
  };
  // BullMQ job ids must not be integers or contain ':'.
  return `t${fingerprint(identity)}`;
}
