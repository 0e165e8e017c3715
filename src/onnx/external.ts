/**
 * Safe external data (mission.md §3): a TensorProto with `data_location` = EXTERNAL names its bytes
 * with `external_data` entries `location` (relative to the model's folder), `offset`, `length` and
 * optionally `checksum`. onnxruntime rejects absolute locations, `..` components and symlinks that
 * resolve outside the folder (the subject of several onnx CVEs); so do we, before reading a byte.
 */
import { closeSync, existsSync, openSync, readSync, realpathSync, statSync } from 'node:fs';
import { isAbsolute, join, relative, sep, win32 } from 'node:path';
import { ModelFormatError, show } from '../util/errors.js';

export interface ExternalEntries {
  location: string;
  offset: number;
  /** Declared length, or undefined when the entry omits it (then the tensor's byte size is used). */
  length?: number;
  checksum?: string;
}

/** Parse a TensorProto's external_data key/value list; `what` names the tensor in messages. */
export function parseExternalEntries(
  entries: readonly { key?: string | null; value?: string | null }[],
  what: string,
): ExternalEntries {
  const map = new Map<string, string>();
  for (const e of entries) map.set(e.key ?? '', e.value ?? '');
  const location = map.get('location');
  if (location === undefined || location === '') {
    throw new ModelFormatError(
      `${what}: external data has no 'location' entry (rule: EXTERNAL tensors name their data file)`,
    );
  }
  const offset = parseByteCount(map.get('offset') ?? '0', `${what}: external data 'offset'`);
  const lengthText = map.get('length');
  const length = lengthText === undefined ? undefined : parseByteCount(lengthText, `${what}: external data 'length'`);
  const checksum = map.get('checksum');
  return { location, offset, ...(length !== undefined ? { length } : {}), ...(checksum ? { checksum } : {}) };
}

function parseByteCount(text: string, what: string): number {
  if (!/^\d+$/.test(text.trim()) || !Number.isSafeInteger(Number(text))) {
    throw new ModelFormatError(`${what} is ${show(text)}; it must be a non-negative integer byte count`);
  }
  return Number(text);
}

/**
 * Resolve `location` inside `modelDir`, refusing absolute paths, `..` components, and anything
 * (symlinks included) whose real path lies outside the real path of `modelDir`. Also checks that
 * the file exists and is a regular file. Returns the absolute path.
 */
export function resolveExternalLocation(modelDir: string, location: string, what: string): string {
  if (isAbsolute(location) || win32.isAbsolute(location) || /^[A-Za-z]:/.test(location)) {
    throw new ModelFormatError(
      `${what}: external data location ${show(location)} is absolute; locations must be relative to the model folder ${show(modelDir)}`,
    );
  }
  if (location.split(/[\\/]/).some((part) => part === '..')) {
    throw new ModelFormatError(
      `${what}: external data location ${show(location)} contains '..'; locations must stay inside the model folder ${show(modelDir)}`,
    );
  }
  const path = join(modelDir, location);
  if (!existsSync(path)) {
    throw new ModelFormatError(`${what}: external data file ${show(path)} (location ${show(location)}) does not exist`);
  }
  const realDir = realpathSync(modelDir);
  const realFile = realpathSync(path);
  const rel = relative(realDir, realFile);
  if (rel === '' || rel.startsWith(`..${sep}`) || rel === '..' || isAbsolute(rel)) {
    throw new ModelFormatError(
      `${what}: external data location ${show(location)} resolves to ${show(realFile)}, outside the model folder ${show(realDir)} (symlinks must not leave the folder)`,
    );
  }
  if (!statSync(realFile).isFile()) {
    throw new ModelFormatError(`${what}: external data location ${show(location)} is not a regular file`);
  }
  return path;
}

/** Read exactly [offset, offset + length) of a file, nothing else. */
export function readFileRange(path: string, offset: number, length: number): Uint8Array {
  const fd = openSync(path, 'r');
  try {
    return readFdRange(fd, path, offset, length);
  } finally {
    closeSync(fd);
  }
}

/** Read exactly [offset, offset + length) of the open file `fd`; `path` names it in the error. */
export function readFdRange(fd: number, path: string, offset: number, length: number): Uint8Array {
  const out = new Uint8Array(length);
  let done = 0;
  while (done < length) {
    const n = readSync(fd, out, done, length - done, offset + done);
    if (n === 0)
      throw new ModelFormatError(
        `${show(path)}: file ends at byte ${offset + done}, expected ${length} bytes from offset ${offset}`,
      );
    done += n;
  }
  return out;
}
