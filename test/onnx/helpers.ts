/** Test helpers for the ONNX layer: temp folders, deterministic data, file checksums, hand-edited models. */
import { createHash } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import type onnxProto from 'onnx-proto';
import { decodeModel, encodeModel } from '../../src/onnx/proto.js';

export function tempDir(prefix: string): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), `td-${prefix}-`));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/** Deterministic pseudo-random floats in [-1, 1) (mulberry32). */
export function randomFloats(n: number, seed: number): Float32Array {
  let a = seed >>> 0;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    out[i] = (((t ^ (t >>> 14)) >>> 0) / 4294967296) * 2 - 1;
  }
  return out;
}

/** sha256 of every file under `dir`, keyed by relative path. */
export function checksums(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (d: string) => {
    for (const name of readdirSync(d).sort()) {
      const p = join(d, name);
      if (statSync(p).isDirectory()) walk(p);
      else out[relative(dir, p)] = createHash('sha256').update(readFileSync(p)).digest('hex');
    }
  };
  walk(dir);
  return out;
}

/** Decode a model file, let `edit` change it, write it back (protobufjs re-encoding). */
export function rewriteModel(path: string, edit: (m: onnxProto.onnx.ModelProto) => void): void {
  const model = decodeModel(readFileSync(path));
  edit(model);
  writeFileSync(path, encodeModel(model));
}

/** Set an external_data entry of initializer `name`. */
export function setExternalEntry(path: string, name: string, key: string, value: string): void {
  rewriteModel(path, (m) => {
    const t = (m.graph?.initializer ?? []).find((x) => x.name === name);
    if (!t?.externalData) throw new Error(`no external initializer ${name}`);
    const entry = t.externalData.find((e) => e.key === key);
    if (entry) entry.value = value;
    else t.externalData.push({ key, value });
  });
}
