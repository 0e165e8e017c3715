/**
 * Writes that cannot lie (issue 11): the bytes go to a temporary file next to the target
 * (`<path>.tmp-<pid>-<hex>`), every byte is written (a short write is continued, a failed one throws),
 * the file and then its folder are fsynced, and only then is the file renamed over the target. On
 * any error the temporary file is removed and the error says which path could not be written; the
 * target keeps its previous content (or stays absent). While a temporary path exists it is
 * registered with `trackTemp`, so SIGINT/SIGTERM remove it before the process exits.
 */
import { randomBytes } from 'node:crypto';
import {
  closeSync,
  existsSync,
  fsyncSync,
  lstatSync,
  mkdirSync,
  openSync,
  readdirSync,
  renameSync,
  rmSync,
  writeSync,
} from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { fsErrorToOutput } from './fs-errors.js';

/** The temporary name for `path`: `<path>.tmp-<pid>-<hex>` (unique per call). */
export function tempPathFor(path: string): string {
  return `${path}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
}

/** Write all of `data` at `fd` from file offset `position` (null: current position), however many calls it takes. */
export function writeAll(fd: number, data: Uint8Array, position: number | null = null): void {
  let done = 0;
  while (done < data.byteLength) {
    const n = writeSync(fd, data, done, data.byteLength - done, position === null ? null : position + done);
    if (n <= 0) throw Object.assign(new Error(`write returned ${n}`), { code: 'EIO' });
    done += n;
  }
}

/**
 * Write `data` to `path` atomically (see the module comment). `what` is the library field the path
 * belongs to, for the error message (default `outDir`: every file the tool writes lies under its
 * output, which the CLI names `--out` or `config.output`).
 */
export function writeFileAtomic(path: string, data: string | Uint8Array, what?: string): void {
  const bytes = typeof data === 'string' ? Buffer.from(data, 'utf8') : data;
  const dir = dirname(path);
  const tmp = tempPathFor(path);
  const untrack = trackTemp(tmp);
  try {
    mkdirSync(dir, { recursive: true });
    const fd = openSync(tmp, 'wx');
    try {
      writeAll(fd, bytes, 0);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, path);
    fsyncDir(dir);
  } catch (error) {
    rmSync(tmp, { force: true });
    throw fsErrorToOutput(error, what ?? 'outDir', path);
  } finally {
    untrack();
  }
}

export function writeJsonAtomic(path: string, value: unknown, what?: string): void {
  writeFileAtomic(path, `${JSON.stringify(value, null, 2)}\n`, what);
}

export function fsyncDir(dir: string): void {
  let fd: number | null = null;
  try {
    fd = openSync(dir, 'r');
    fsyncSync(fd);
  } catch {
    // Some filesystems refuse fsync on directories; the rename is still atomic there.
  } finally {
    if (fd !== null) closeSync(fd);
  }
}

/** `name` is a temporary of this tool: `<base>.tmp-<suffix>` (files and export folders alike). */
export function isTempName(name: string): boolean {
  return /\.tmp-[0-9a-z-]+$/i.test(name);
}

/**
 * Remove the leftovers of interrupted writes directly in `dir`: entries named `<prefix…>.tmp-<suffix>`
 * (all temporaries when `prefix` is omitted), except those registered by this process. Returns the
 * removed paths. A missing folder has none.
 */
export function removeTempLeftovers(dir: string, prefix?: string): string[] {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return [];
  }
  const removed: string[] = [];
  for (const name of names) {
    if (!isTempName(name) || (prefix !== undefined && !name.startsWith(prefix))) continue;
    const path = join(dir, name);
    if (live.has(path)) continue;
    try {
      lstatSync(path);
      rmSync(path, { recursive: true, force: true });
      removed.push(path);
    } catch {
      // gone meanwhile
    }
  }
  return removed;
}

/**
 * Temporaries of an export to `outDir`: `<outDir>.tmp-*` next to it. A replacing export renames the
 * old folder to `<outDir>.tmp-old-<hex>` and the new one into place right after; when a process died
 * between the two renames (SIGKILL, power loss) `outDir` is missing and the old folder — a complete
 * earlier export — is renamed back first instead of being removed with the other leftovers. Returns
 * the removed paths.
 */
export function removeExportLeftovers(outDir: string): string[] {
  const dir = dirname(outDir);
  const prefix = `${basename(outDir)}.tmp-`;
  if (!existsSync(outDir)) {
    const olds = safeReaddir(dir)
      .filter((n) => n.startsWith(`${prefix}old-`) && isTempName(n) && !live.has(join(dir, n)))
      .map((n) => ({ path: join(dir, n), mtime: lstatSync(join(dir, n)).mtimeMs }))
      .sort((a, b) => b.mtime - a.mtime);
    if (olds[0]) renameSync(olds[0].path, outDir);
  }
  return removeTempLeftovers(dir, prefix);
}

function safeReaddir(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

// --- cleanup on SIGINT / SIGTERM -----------------------------------------------------------------

const live = new Set<string>();
const exitHooks = new Set<() => void>();
let installed = false;

/**
 * Register a temporary path (file or folder) to be removed if the process is interrupted by SIGINT
 * or SIGTERM before the returned function is called.
 */
export function trackTemp(path: string): () => void {
  installSignalCleanup();
  live.add(path);
  return () => {
    live.delete(path);
  };
}

/** Register a function run on SIGINT/SIGTERM (after the temporaries are removed) and at exit: lock release. */
export function onInterrupt(hook: () => void): () => void {
  installSignalCleanup();
  exitHooks.add(hook);
  return () => {
    exitHooks.delete(hook);
  };
}

/** Remove every registered temporary and run the hooks (what a signal does before exit). */
export function cleanupNow(): void {
  for (const path of live) {
    try {
      rmSync(path, { recursive: true, force: true });
    } catch {
      // best effort: the next run removes its own kind's leftovers
    }
  }
  live.clear();
  for (const hook of exitHooks) {
    try {
      hook();
    } catch {
      // best effort
    }
  }
  exitHooks.clear();
}

function installSignalCleanup(): void {
  if (installed) return;
  installed = true;
  const onSignal = (signal: NodeJS.Signals, code: number) => {
    cleanupNow();
    process.stderr.write(`time-debias: interrupted (${signal}); temporary files removed\n`);
    process.exit(code);
  };
  process.once('SIGINT', () => onSignal('SIGINT', 130));
  process.once('SIGTERM', () => onSignal('SIGTERM', 143));
  process.once('exit', () => {
    for (const hook of exitHooks) {
      try {
        hook();
      } catch {
        // best effort
      }
    }
  });
}
