/** Exit codes come from one pure function (style.md: one error handler, distinct codes). */
import {
  ClassifierError,
  ConfigError,
  EditError,
  GenerationError,
  ModelFormatError,
  OutputError,
  QueueError,
  RuntimeError,
  UsageError,
} from '../util/errors.js';
import { isOutputFsError } from '../util/fs-errors.js';

export const EXIT = Object.freeze({
  ok: 0,
  failure: 1,
  usage: 2,
  model: 3,
  edit: 4,
  generation: 5,
  classifier: 6,
  config: 7,
  output: 8,
  /** the job ran but did not reach its goal (e.g. tuning tolerance not met) */
  notReached: 9,
  /** the job finished, but the held-out after audit puts some edited profession outside target ± tolerance */
  heldOutNotReached: 10,
  /** the job queue (Redis, workers) failed */
  queue: 11,
  interrupted: 130,
});

export function exitCodeFor(error: unknown): number {
  if (error instanceof UsageError) return EXIT.usage;
  if (error instanceof ModelFormatError) return EXIT.model;
  if (error instanceof EditError) return EXIT.edit;
  if (error instanceof GenerationError) return EXIT.generation;
  if (error instanceof ClassifierError) return EXIT.classifier;
  if (error instanceof ConfigError) return EXIT.config;
  if (error instanceof OutputError) return EXIT.output;
  // a filesystem error no caller explained (no space, permission, ...) is still an output error
  if (isOutputFsError(error)) return EXIT.output;
  if (error instanceof QueueError) return EXIT.queue;
  // onnxruntime could not load or run a model: a failure of the run, not of its arguments (a bad
  // device name is a UsageError).
  if (error instanceof RuntimeError) return EXIT.failure;
  return EXIT.failure;
}
