/**
 * One error class per failure area (style.md §7), each with a stable `name` and `cause` chaining.
 * The CLI maps them to exit codes in one place (src/cli/exit.ts).
 */
export class TimeDebiasError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
  }
}
/** Bad user input: an argument, a flag, a value outside its rule. */
export class UsageError extends TimeDebiasError {
  override name = 'UsageError';
}
/** A model folder or ONNX file that cannot be read or is not what it must be. */
export class ModelFormatError extends TimeDebiasError {
  override name = 'ModelFormatError';
}
/** The edit cannot be built (alignment, numerics, sites). */
export class EditError extends TimeDebiasError {
  override name = 'EditError';
}
/** Image generation failed or was asked something impossible. */
export class GenerationError extends TimeDebiasError {
  override name = 'GenerationError';
}
/** The classifier folder or a classification request is invalid. */
export class ClassifierError extends TimeDebiasError {
  override name = 'ClassifierError';
}
/** A job config that does not validate, or a run folder that does not match it. */
export class ConfigError extends TimeDebiasError {
  override name = 'ConfigError';
}
/** An output path that exists, a run folder from other settings, an interrupted write. */
export class OutputError extends TimeDebiasError {
  override name = 'OutputError';
}

/** Format a value for an error message: strings quoted, long values cut. */
export function show(value: unknown): string {
  let s: string;
  if (typeof value === 'string' || (value !== null && typeof value === 'object')) {
    try {
      s = JSON.stringify(value) ?? String(value);
    } catch {
      s = String(value);
    }
  } else s = String(value);
  return s.length > 120 ? `${s.slice(0, 117)}...` : s;
}
