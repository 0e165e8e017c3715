/**
 * Write a model with some initializers replaced by new bytes of the same dtype and shape, keeping
 * every other byte as it was:
 *
 *   external data   the data file is cloned and the edited ranges are patched in place; model.onnx unchanged
 *   raw_data        model.onnx is cloned and the payloads are patched in place (same length)
 *   typed fields    model.onnx is rebuilt at wire level: the TensorProto loses its typed value field,
 *                   gains raw_data with the new bytes, and the enclosing length prefixes (GraphProto in
 *                   ModelProto, TensorProto in GraphProto) are re-encoded; all other fields, unknown
 *                   ones included, are copied verbatim — streamed from the source file range by
 *                   range (never the whole model in memory), raw_data patches applied to the new file
 *
 * Cloning is `copyFileSync(src, dst, COPYFILE_FICLONE)`: a reflink where the filesystem allows it, a
 * plain copy otherwise; never a hard link (onnx >= 1.21 rejects data files with several links, and a
 * patch through a hard link would modify the source).
 */
import {
  closeSync,
  constants,
  copyFileSync,
  fsyncSync,
  mkdirSync,
  openSync,
  readSync,
  renameSync,
  rmSync,
  statSync,
  writeSync,
} from 'node:fs';
import { basename, dirname, join, normalize, resolve } from 'node:path';
import { ModelFormatError, OutputError, show } from '../util/errors.js';
import { type OnnxModelFile, withModelFd } from './model-file.js';
import {
  GRAPH_INITIALIZER_FIELD,
  lengthDelimitedHeader,
  MODEL_GRAPH_FIELD,
  TENSOR_FIELDS,
  VALUE_FIELDS,
} from './wire.js';

/** One in-place write into a file of the model's folder. */
export interface FilePatch {
  /** Path relative to the model's folder ('model.onnx', 'weights.pb', ...). */
  file: string;
  offset: number;
  bytes: Uint8Array;
  /** The initializer whose bytes these are. */
  tensor: string;
}

/** One piece of a rebuilt model file: a range of the source model file, or new bytes. */
export type RebuildPart = { offset: number; length: number } | Uint8Array;

/** A model file rebuilt at wire level: its pieces in order, ranges streamed from `from`'s file. */
export interface RebuiltModel {
  from: OnnxModelFile;
  parts: RebuildPart[];
  byteLength: number;
}

export interface WritePlan {
  /** The model file's name inside its folder. */
  modelFile: string;
  /**
   * In-place patches. Those of the model file have offsets in the rebuilt file when there is one
   * (applied to it before it is renamed into place).
   */
  patches: FilePatch[];
  /** The new model file, when a typed-field tensor forced a rebuild. */
  rebuiltModel?: RebuiltModel;
  /** Files of the folder the plan writes to (relative paths). */
  touchedFiles: string[];
}

/**
 * Plan the writes that replace `replacements` (initializer name → new bytes, same dtype and shape,
 * little-endian raw_data layout). Throws ModelFormatError for an unknown name or a wrong byte size.
 */
export function planTensorWrites(file: OnnxModelFile, replacements: ReadonlyMap<string, Uint8Array>): WritePlan {
  const modelFile = basename(file.path);
  const patches: FilePatch[] = [];
  const rebuild = new Map<number, Uint8Array>();
  for (const [name, bytes] of replacements) {
    const init = file.initializerByName.get(name);
    if (!init)
      throw new ModelFormatError(`replacement for ${show(name)}: ${show(file.path)} has no initializer of that name`);
    if (bytes.byteLength !== init.byteLength) {
      throw new ModelFormatError(
        `replacement for ${show(name)}: ${bytes.byteLength} bytes given, the initializer holds ${init.byteLength} (dims [${init.dims}] of ${init.dtype}); the dtype and shape must stay the same`,
      );
    }
    const s = init.storage;
    if (s.kind === 'external') patches.push({ file: normalize(s.location), offset: s.offset, bytes, tensor: name });
    else if (s.kind === 'raw') patches.push({ file: modelFile, offset: s.offset, bytes, tensor: name });
    else if (s.kind === 'typed') rebuild.set(init.index, bytes);
    // 'empty': zero bytes, nothing to write
  }
  const touched = new Set(patches.map((p) => p.file));
  if (rebuild.size === 0) return { modelFile, patches, touchedFiles: [...touched] };
  // Rebuild: splice the typed tensors; the raw_data patches move to their place in the new file.
  const rebuiltModel = spliceInitializers(file, rebuild);
  touched.add(modelFile);
  const moved = patches.map((p) =>
    p.file === modelFile ? { ...p, offset: rebuiltOffset(rebuiltModel, p.offset, p.bytes.byteLength, p.tensor) } : p,
  );
  return { modelFile, patches: moved, rebuiltModel, touchedFiles: [...touched] };
}

/** Pieces of a file being rebuilt; consecutive ranges of the source merge into one. */
class Splice {
  readonly parts: RebuildPart[] = [];
  byteLength = 0;
  range(start: number, end: number): this {
    const last = this.parts[this.parts.length - 1];
    if (last && !(last instanceof Uint8Array) && last.offset + last.length === start) last.length += end - start;
    else this.parts.push({ offset: start, length: end - start });
    this.byteLength += end - start;
    return this;
  }
  bytes(bytes: Uint8Array): this {
    this.parts.push(bytes);
    this.byteLength += bytes.byteLength;
    return this;
  }
  append(other: Splice): this {
    for (const p of other.parts) {
      if (p instanceof Uint8Array) this.bytes(p);
      else this.range(p.offset, p.offset + p.length);
    }
    return this;
  }
}

/** Re-encode the model with the initializers at `replace` (index → bytes) stored as raw_data. */
function spliceInitializers(file: OnnxModelFile, replace: Map<number, Uint8Array>): RebuiltModel {
  const indexByStart = new Map<number, number>();
  file.wire.initializers.forEach((t, i) => {
    indexByStart.set(t.span.start, i);
  });
  const graphByStart = new Map(file.wire.graphs.map((g) => [g.span.start, g]));
  const model = new Splice();
  for (const field of file.wire.modelFields) {
    const graph = field.field === MODEL_GRAPH_FIELD ? graphByStart.get(field.start) : undefined;
    if (!graph) {
      model.range(field.start, field.end);
      continue;
    }
    const g = new Splice();
    for (const gf of graph.fields) {
      const index = gf.field === GRAPH_INITIALIZER_FIELD ? indexByStart.get(gf.start) : undefined;
      const newBytes = index === undefined ? undefined : replace.get(index);
      if (index === undefined || !newBytes) {
        g.range(gf.start, gf.end);
        continue;
      }
      const layout = file.wire.initializers[index];
      if (!layout) throw new ModelFormatError(`${show(file.path)}: no wire layout for initializer #${index}`);
      const t = new Splice();
      for (const tf of layout.fields) {
        if (!VALUE_FIELDS.has(tf.field)) t.range(tf.start, tf.end);
      }
      t.bytes(lengthDelimitedHeader(TENSOR_FIELDS.rawData, newBytes.byteLength)).bytes(newBytes);
      g.bytes(lengthDelimitedHeader(GRAPH_INITIALIZER_FIELD, t.byteLength)).append(t);
    }
    model.bytes(lengthDelimitedHeader(MODEL_GRAPH_FIELD, g.byteLength)).append(g);
  }
  return { from: file, parts: model.parts, byteLength: model.byteLength };
}

/** Where source bytes [offset, offset + length) (a raw_data payload, copied verbatim) land in the rebuilt file. */
function rebuiltOffset(rebuilt: RebuiltModel, offset: number, length: number, tensor: string): number {
  let at = 0;
  for (const p of rebuilt.parts) {
    if (p instanceof Uint8Array) at += p.byteLength;
    else {
      if (offset >= p.offset && offset + length <= p.offset + p.length) return at + offset - p.offset;
      at += p.length;
    }
  }
  throw new ModelFormatError(
    `${show(rebuilt.from.path)}: the raw_data of ${show(tensor)} at ${offset}+${length} is not copied into the rebuilt model`,
  );
}

const COPY_CHUNK = 8 << 20;

/** Write `rebuilt` to `path` (a new file): ranges copied from the source model in chunks, then `patches`; fsynced. */
function writeRebuilt(rebuilt: RebuiltModel, path: string, patches: FilePatch[]): void {
  withModelFd(rebuilt.from, (src) => {
    const out = openSync(path, 'wx');
    try {
      const write = (bytes: Uint8Array, length: number, at: number) => {
        let done = 0;
        while (done < length) done += writeSync(out, bytes, done, length - done, at + done);
      };
      const longest = Math.max(1, ...rebuilt.parts.map((p) => (p instanceof Uint8Array ? 0 : p.length)));
      const chunk = Buffer.alloc(Math.min(COPY_CHUNK, longest));
      let at = 0;
      for (const p of rebuilt.parts) {
        if (p instanceof Uint8Array) {
          write(p, p.byteLength, at);
          at += p.byteLength;
          continue;
        }
        for (let done = 0; done < p.length; ) {
          const want = Math.min(chunk.byteLength, p.length - done);
          const n = readSync(src, chunk, 0, want, p.offset + done);
          if (n <= 0) {
            throw new ModelFormatError(
              `${show(rebuilt.from.path)}: file ends at byte ${p.offset + done}, expected ${p.length} bytes from offset ${p.offset}`,
            );
          }
          write(chunk, n, at);
          at += n;
          done += n;
        }
      }
      if (at !== rebuilt.byteLength) {
        throw new OutputError(`${show(path)}: wrote ${at} bytes of a rebuilt model of ${rebuilt.byteLength}`);
      }
      for (const p of patches) {
        if (p.offset + p.bytes.byteLength > at) {
          throw new OutputError(
            `${show(path)}: patch of ${show(p.tensor)} at ${p.offset}+${p.bytes.byteLength} runs past the end (${at} bytes)`,
          );
        }
        write(p.bytes, p.bytes.byteLength, p.offset);
      }
      fsyncSync(out);
    } finally {
      closeSync(out);
    }
  });
}

/**
 * Carry out `plan` in `destDir`, a folder that already holds clones of the source folder's files
 * (same relative paths). Refuses to patch a file with more than one hard link or the very source
 * file (same device and inode): that would modify the input. Patched files are fsynced.
 */
export function applyWritePlan(plan: WritePlan, destDir: string, sourceDir?: string): void {
  const byFile = new Map<string, FilePatch[]>();
  for (const p of plan.patches) byFile.set(p.file, [...(byFile.get(p.file) ?? []), p]);
  if (plan.rebuiltModel) {
    const path = join(destDir, plan.modelFile);
    if (sourceDir) assertNotSource(path, join(sourceDir, plan.modelFile));
    // a new file renamed over the clone: never writes through a link to the source
    const tmp = `${path}.tmp-${process.pid}`;
    rmSync(tmp, { force: true });
    try {
      writeRebuilt(plan.rebuiltModel, tmp, byFile.get(plan.modelFile) ?? []);
      renameSync(tmp, path);
    } catch (error) {
      rmSync(tmp, { force: true });
      throw error;
    }
    byFile.delete(plan.modelFile);
  }
  for (const [rel, list] of byFile) {
    const path = join(destDir, rel);
    assertPatchable(path, sourceDir ? join(sourceDir, rel) : undefined);
    const size = statSync(path).size;
    const fd = openSync(path, 'r+');
    try {
      for (const p of list) {
        if (p.offset + p.bytes.byteLength > size) {
          throw new OutputError(
            `${show(path)}: patch of ${show(p.tensor)} at ${p.offset}+${p.bytes.byteLength} runs past the end (${size} bytes); is it a clone of the source?`,
          );
        }
        let done = 0;
        while (done < p.bytes.byteLength)
          done += writeSync(fd, p.bytes, done, p.bytes.byteLength - done, p.offset + done);
      }
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
  }
}

function assertNotSource(path: string, source: string): void {
  try {
    const a = statSync(path);
    const b = statSync(source);
    if (a.dev === b.dev && a.ino === b.ino) {
      throw new OutputError(`${show(path)} is the source file ${show(source)} itself; refusing to modify the input`);
    }
  } catch (error) {
    if (error instanceof OutputError) throw error;
  }
}

function assertPatchable(path: string, source?: string): void {
  let st: ReturnType<typeof statSync>;
  try {
    st = statSync(path);
  } catch (cause) {
    throw new OutputError(`${show(path)} does not exist; the destination must hold a clone of the source file`, {
      cause,
    });
  }
  if (st.nlink > 1) {
    throw new OutputError(
      `${show(path)} has ${st.nlink} hard links; refusing to patch it in place (it may share its bytes with the input)`,
    );
  }
  if (source) assertNotSource(path, source);
}

/** Clone one file: reflink where possible, plain copy otherwise, never a hard link. */
export function cloneFile(src: string, dst: string): void {
  mkdirSync(dirname(dst), { recursive: true });
  copyFileSync(src, dst, constants.COPYFILE_FICLONE);
}

/**
 * Write `file` with `replacements` applied into `destDir` (created if needed) under the same file
 * name, cloning its external data files. Returns the plan that was applied.
 */
export function saveModelWithReplacements(
  file: OnnxModelFile,
  replacements: ReadonlyMap<string, Uint8Array>,
  destDir: string,
): WritePlan {
  const dest = resolve(destDir);
  if (dest === file.dir)
    throw new OutputError(`destination ${show(dest)} is the model's own folder; refusing to modify the input`);
  const plan = planTensorWrites(file, replacements);
  mkdirSync(dest, { recursive: true });
  if (!plan.rebuiltModel) cloneFile(file.path, join(dest, plan.modelFile));
  for (const ext of file.externalFiles) cloneFile(ext.path, join(dest, ext.location));
  applyWritePlan(plan, dest, file.dir);
  const fd = openSync(join(dest, plan.modelFile), 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  return plan;
}
