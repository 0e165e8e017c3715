/**
 * One error family (style.md §7): one class per failure area, each with a stable `name`, `cause`
 * chaining and the `field` it is about. The CLI maps the classes to exit codes in one place
 * (src/cli/exit.ts).
 *
 * `field` names the LIBRARY parameter the error is about (`steps`, `lambda`, `pairs[2].source`,
 * `preserve.weight`), never a CLI flag or a config path: the library does not know how it was
 * called. The message is `<field>: <detail>`; a caller that knows the outside name relabels it —
 * the CLI to `--steps`, the config loader to `config.generation.steps` — with `relabel`, which
 * keeps `field` and `detail` and rewrites only the message.
 */
export interface TimeDebiasErrorOptions {
  cause?: unknown;
  /** The library parameter (dotted path, `[i]` for list items) the error is about. */
  field?: string;
  /**
   * Other library parameters the detail names, each written in it as `name` (in backticks), e.g.
   * "replace it (`force`)": a relabelling caller names them as its user knows them (`--force`).
   */
  mentions?: string[];
}

export class TimeDebiasError extends Error {
  /** The library parameter the error is about, or undefined when it is about no single one. */
  readonly field: string | undefined;
  /** The message without its `<field>: ` prefix. */
  readonly detail: string;
  /** Library parameters named in the detail (see TimeDebiasErrorOptions.mentions). */
  readonly mentions: readonly string[];
  constructor(message: string, options?: TimeDebiasErrorOptions) {
    super(options?.field ? `${options.field}: ${message}` : message, { cause: options?.cause });
    this.field = options?.field;
    this.detail = message;
    this.mentions = options?.mentions ?? [];
  }
  /**
   * Rewrite the message to name the field as the caller's user knows it (e.g. `--steps`; undefined
   * for an error about no single field), and, given `nameOf`, each mentioned parameter too
   * (`force` → `--force`).
   */
  relabel(name: string | undefined, nameOf?: (field: string) => string): this {
    let detail = this.detail;
    if (nameOf) for (const m of this.mentions) detail = detail.replaceAll(`\`${m}\``, nameOf(m));
    this.message = name === undefined ? detail : `${name}: ${detail}`;
    return this;
  }
}
/** Bad user input: an argument, an option, a value outside its rule. */
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
/**
 * onnxruntime failed: a session that cannot be created or run, an execution provider that is not
 * installed. A bad device NAME is a UsageError (field `device`), not this.
 */
export class RuntimeError extends TimeDebiasError {
  override name = 'RuntimeError';
}

/** The job queue: Redis unreachable, a task no worker can do, a task a worker refuses or fails. */
export class QueueError extends TimeDebiasError {
  override name = 'QueueError';
}

/**
 * How the caller's user names a library parameter (`restart` → `--restart` on the command line), for
 * the log lines and notes that advise one; `libraryName` (the parameter's own name) by default.
 */
export type NameOf = (field: string) => string;
export const libraryName: NameOf = (field) => field;

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
