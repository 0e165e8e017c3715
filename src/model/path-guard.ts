/**
 * The one path guard (issue 11) every command and the config loader use for the folders they write
 * or delete:
 *
 *   - a run name is a single path segment, not `.` or `..` (it is joined under an output folder);
 *   - a folder is deleted or replaced only if it is provably this tool's own: a run folder with its
 *     marker file (RUN_MARKER), or a model folder this tool exported (its time-edit.json names the
 *     tool); anything else is refused with a description of what is there;
 *   - "is the input", "inside the input" and "contains the input" are decided on real paths
 *     (symbolic links resolved) for the model folder and for each of its component folders, so
 *     `snap/unet -> ../store/unet` protects `store/unet` as well;
 *   - outputs (generate, audit, debias, edit) never go inside a model folder.
 */
import { existsSync, lstatSync, readdirSync, readFileSync, readlinkSync, realpathSync, statSync } from 'node:fs';
import { basename, dirname, isAbsolute, join, relative, resolve, sep } from 'node:path';
import { writeJsonAtomic } from '../util/atomic.js';
import { ConfigError, OutputError, show } from '../util/errors.js';

/** The marker file of a run folder this tool made (audit and debias runs). */
export const RUN_MARKER = '.time-debias-run.json';
/** The manifest of an exported model folder (the same name model/export.ts writes). */
const EDIT_MANIFEST = 'time-edit.json';

export type RunKind = 'audit' | 'debias';

/**
 * A run name is one path segment: letters, digits, `.`, `_`, `-`, not `.` or `..`. ConfigError
 * naming `field` otherwise.
 */
export function checkRunName(name: unknown, field = 'name'): string {
  if (typeof name !== 'string' || !/^[A-Za-z0-9._-]+$/.test(name) || name === '.' || name === '..') {
    throw new ConfigError(
      `${show(name)} is not a run name (rule: one folder name of letters, digits, ".", "_", "-", not "." or "..")`,
      { field },
    );
  }
  return name;
}

/** `path` is `dir` or somewhere below it (lexically; give real paths for a real answer). */
export function isSameOrInside(path: string, dir: string): boolean {
  const rel = relative(dir, path);
  return rel === '' || (rel !== '..' && !rel.startsWith(`..${sep}`) && !isAbsolute(rel));
}

/** The real path of `path`, resolving its deepest existing ancestor (the rest may not exist yet). */
export function realpathNear(path: string): string {
  let head = resolve(path);
  const rest: string[] = [];
  for (;;) {
    try {
      return join(realpathSync(head), ...rest);
    } catch {
      const up = dirname(head);
      if (up === head) return resolve(path);
      rest.unshift(basename(head));
      head = up;
    }
  }
}

/**
 * The real folders a model occupies: the model folder and each folder directly inside it (the
 * components: unet, text_encoder, …), every one with its symbolic links resolved.
 */
export function modelRealFolders(modelDir: string): string[] {
  const dir = resolve(modelDir);
  const out = new Set<string>([realpathNear(dir)]);
  let names: string[] = [];
  try {
    names = readdirSync(dir);
  } catch {
    return [...out];
  }
  for (const name of names) {
    const p = join(dir, name);
    try {
      if (statSync(p).isDirectory()) out.add(realpathSync(p));
    } catch {
      // a broken link is no folder of the model
    }
  }
  return [...out];
}

/**
 * The output `field` (the library parameter, e.g. `outDir`; the CLI names its flag) at `path` must be neither a model folder (or one of its
 * component folders) nor inside one: outputs never go into a model. With `replacing` (the path will
 * be deleted or replaced), it must not contain the model or a component either. OutputError.
 */
export function checkOutsideModel(
  what: string,
  path: string,
  modelDir: string,
  options: { replacing?: boolean } = {},
): void {
  const out = resolve(path);
  const outReal = realpathNear(out);
  const model = resolve(modelDir);
  for (const real of modelRealFolders(model)) {
    const where =
      real === realpathNear(model)
        ? `the model folder ${show(model)}`
        : `${show(real)}, a component folder of the model ${show(model)}`;
    if (isSameOrInside(outReal, real) || (real === realpathNear(model) && isSameOrInside(out, model))) {
      throw new OutputError(
        `${show(out)} is ${outReal === real ? '' : 'inside '}${where}${outReal !== out ? ` (real path ${show(outReal)})` : ''}; ` +
          'outputs never go into a model folder (the input is only ever read); choose a folder outside it',
        { field: what },
      );
    }
    if (options.replacing && (isSameOrInside(real, outReal) || isSameOrInside(model, out))) {
      throw new OutputError(
        `${show(out)} contains ${where}; replacing it would delete the input; choose another folder`,
        { field: what },
      );
    }
  }
}

/** A short description of what is at `path`, for refusals. */
export function describePath(path: string): string {
  let st: ReturnType<typeof lstatSync>;
  try {
    st = lstatSync(path);
  } catch {
    return 'nothing';
  }
  if (st.isSymbolicLink()) {
    let target = '?';
    try {
      target = readlinkSync(path);
    } catch {}
    return `a symbolic link to ${show(target)}`;
  }
  if (st.isFile()) return `a file of ${st.size} bytes`;
  if (!st.isDirectory()) return 'something that is neither a file nor a folder';
  let names: string[] = [];
  try {
    names = readdirSync(path).sort();
  } catch {
    return 'a folder this user cannot list';
  }
  if (names.length === 0) return 'an empty folder';
  const shown = names.slice(0, 5).join(', ');
  return `a folder of ${names.length} entr${names.length === 1 ? 'y' : 'ies'} (${shown}${names.length > 5 ? ', …' : ''})`;
}

/** The marker of a run folder of `kind` (or any kind) is there. */
export function isOwnRunFolder(dir: string, kind?: RunKind): boolean {
  try {
    const m = JSON.parse(readFileSync(join(dir, RUN_MARKER), 'utf8')) as { tool?: unknown; kind?: unknown };
    return m.tool === 'time-debias' && (kind === undefined || m.kind === kind);
  } catch {
    return false;
  }
}

/** A model folder this tool exported: its time-edit.json names the tool. */
export function isOwnModelFolder(dir: string): boolean {
  try {
    const m = JSON.parse(readFileSync(join(dir, EDIT_MANIFEST), 'utf8')) as { tool?: { name?: unknown } };
    return m.tool?.name === 'time-debias';
  } catch {
    return false;
  }
}

/** Write the marker of a run folder (created if needed); a no-op when it is there. */
export function markRunFolder(dir: string, kind: RunKind): void {
  if (isOwnRunFolder(dir, kind)) return;
  writeJsonAtomic(
    join(dir, RUN_MARKER),
    { tool: 'time-debias', kind, created: new Date().toISOString() },
    `run folder ${dir}`,
  );
}

/**
 * Before `path` is deleted or replaced (`action` 'delete', the default), or written into as a run
 * folder ('use'): it is absent, an empty folder, or this tool's own (a run folder of `kind` with
 * its marker, or — for 'model' — an exported model folder with its manifest). A symbolic link, a
 * file, or any other folder is refused with what is there. `legacy` lists files that identify a run
 * folder made before the marker existed (all must be present).
 */
export function checkReplaceable(
  what: string,
  path: string,
  kind: RunKind | 'model',
  options: { legacy?: readonly string[]; action?: 'delete' | 'use' } = {},
): void {
  const p = resolve(path);
  const legacy = options.legacy ?? [];
  let st: ReturnType<typeof lstatSync>;
  try {
    st = lstatSync(p);
  } catch {
    return; // absent
  }
  const refuse = (why: string) => {
    throw new OutputError(
      options.action === 'use'
        ? `${show(p)} is ${describePath(p)}, ${why}; refusing to write into it. Choose another path`
        : `${show(p)} is ${describePath(p)}, ${why}; refusing to delete it. Choose another path, or remove it yourself if it is yours to lose`,
      { field: what },
    );
  };
  if (st.isSymbolicLink())
    refuse('not a folder this tool made (a link: replacing it could reach whatever it points to)');
  if (!st.isDirectory()) refuse('not a folder this tool made');
  if (readdirSync(p).length === 0) return;
  if (kind === 'model') {
    if (!isOwnModelFolder(p)) refuse(`not a model folder this tool exported (no ${EDIT_MANIFEST} naming time-debias)`);
    return;
  }
  if (isOwnRunFolder(p, kind)) return;
  if (legacy.length > 0 && legacy.every((f) => existsSync(join(p, f)))) return;
  refuse(`not a ${kind} run folder of this tool (no ${RUN_MARKER})`);
}
