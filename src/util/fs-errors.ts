/**
 * Filesystem errors (ENOSPC, EACCES, ENOTEMPTY, EEXIST, ...) as the tool's own OutputError (exit 8),
 * with a message that names the argument, the path and what went wrong, instead of a raw Node error
 * (exit 1). Anything that is not a filesystem error is returned unchanged.
 */
import { OutputError, show, TimeDebiasError } from './errors.js';

const REASONS: Record<string, string> = {
  ENOSPC: 'no space left on the device; free some space or choose a folder on another device',
  EDQUOT: 'the disk quota is exhausted; free some space or choose a folder on another device',
  EACCES: 'permission denied; this user cannot write there',
  EPERM: 'operation not permitted; this user cannot change that path',
  EROFS: 'the filesystem is read-only',
  ENOTEMPTY: 'the folder is not empty',
  EEXIST: 'the path already exists',
  ENOTDIR: 'a component of the path is not a folder',
  EISDIR: 'the path is a folder, a file was expected',
  ENOENT: 'a folder on the way does not exist',
  ENAMETOOLONG: 'the path is too long',
  EMFILE: 'too many open files',
  EIO: 'an input/output error (the device failed or the write came back short)',
  EXDEV: 'the paths are on different devices',
  EBUSY: 'the path is busy (in use, or a mount point)',
  ELOOP: 'too many symbolic links on the way (a loop?)',
};

/** The errno code of a Node filesystem error, when it is one the tool explains. */
export function fsErrorCode(error: unknown): string | undefined {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === 'string' && code in REASONS ? code : undefined;
}

const OUTPUT_CODES = new Set(['ENOSPC', 'EDQUOT', 'EACCES', 'EPERM', 'EROFS', 'ENOTEMPTY', 'EEXIST', 'EIO']);

/** A raw filesystem error of the kinds writing output meets (no space, permission, exists): exit 8. */
export function isOutputFsError(error: unknown): boolean {
  const code = fsErrorCode(error);
  return code !== undefined && OUTPUT_CODES.has(code);
}

/**
 * `error` as an OutputError naming `what` (the argument or file role, e.g. "--out") and `path`;
 * the project's own errors and non-filesystem errors are returned as they are.
 */
export function fsErrorToOutput(error: unknown, what: string, path: string): unknown {
  if (error instanceof TimeDebiasError) return error;
  const code = fsErrorCode(error);
  if (code === undefined) return error;
  const syscall = (error as { syscall?: unknown }).syscall;
  const other = (error as { path?: unknown }).path;
  const at = typeof other === 'string' && other !== path ? ` (at ${show(other)})` : '';
  return new OutputError(
    `cannot write ${show(path)}${at}: ${REASONS[code]} [${code}${typeof syscall === 'string' ? ` in ${syscall}` : ''}]`,
    { cause: error, field: what },
  );
}

/** Run `fn`; a filesystem error it throws becomes an OutputError naming `what` and `path`. */
export function withFsErrors<T>(what: string, path: string, fn: () => T): T {
  try {
    return fn();
  } catch (error) {
    throw fsErrorToOutput(error, what, path);
  }
}

/** The async form of `withFsErrors`. */
export async function withFsErrorsAsync<T>(what: string, path: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (error) {
    throw fsErrorToOutput(error, what, path);
  }
}
