/**
 * Helpers for the edit tests (test/edit/api.test.ts, test/cli/edit.test.ts): running the CLI, running
 * every part of a model folder with onnxruntime, comparing folders byte by byte, an independent
 * float64 TIME solve, and the broken model folders of issue 2's bad-input list.
 */
import { spawn } from 'node:child_process';
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  readdirSync,
  statSync,
  symlinkSync,
  truncateSync,
  unlinkSync,
  writeFileSync,
} from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildTinySdModel, type TinySdManifest, type TinySdOptions } from '../../src/demo/sd-model.js';
import { openOnnxModel } from '../../src/onnx/model-file.js';
import { Session, type Tensor, tensor } from '../../src/runtime/ort.js';
import { toHalf } from '../../src/util/half.js';
import { rewriteModel, setExternalEntry } from '../onnx/helpers.js';

export const REPO = fileURLToPath(new URL('../../', import.meta.url));

/** Every file under `dir`, relative paths, sorted. */
export function listFiles(dir: string): string[] {
  const out: string[] = [];
  const walk = (p: string) => {
    for (const name of readdirSync(p).sort()) {
      const full = join(p, name);
      if (statSync(full).isDirectory()) walk(full);
      else out.push(relative(dir, full));
    }
  };
  walk(dir);
  return out.sort();
}

export interface CliRun {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Run `node bin/time-debias.js ...args` from the repository root. */
export function runCli(args: readonly string[], timeoutMs = 60_000): Promise<CliRun> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(process.execPath, [join(REPO, 'bin', 'time-debias.js'), ...args], {
      cwd: REPO,
      env: { ...process.env, TIME_DEBIAS_DEBUG: '' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => {
      stdout += c.toString('utf8');
    });
    child.stderr.on('data', (c: Buffer) => {
      stderr += c.toString('utf8');
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolvePromise({ code, stdout, stderr });
    });
  });
}

/** Run tasks at most `limit` at a time, results in order. */
export async function inBatches<T>(tasks: readonly (() => Promise<T>)[], limit: number): Promise<T[]> {
  const results = new Array<T>(tasks.length);
  let next = 0;
  const worker = async () => {
    while (next < tasks.length) {
      const i = next++;
      results[i] = await (tasks[i] as () => Promise<T>)();
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, tasks.length) }, worker));
  return results;
}

/** Load every ONNX part of a model folder with onnxruntime and run the UNet once; returns out_sample's length. */
export async function loadAllAndRunUnet(dir: string, d: number): Promise<{ parts: string[]; outSample: number[] }> {
  const parts = listFiles(dir).filter((f) => f.endsWith('.onnx'));
  for (const part of parts) {
    if (part === join('unet', 'model.onnx')) continue;
    const s = await Session.create(join(dir, part), { threads: 1, label: part });
    await s.dispose();
  }
  const unet = await Session.create(join(dir, 'unet', 'model.onnx'), { threads: 1, label: 'unet' });
  try {
    const floatTensor = (type: string, values: Float32Array, dims: number[]): Tensor =>
      type === 'float16' ? tensor('float16', toHalf(values), dims) : tensor('float32', values, dims);
    const feeds: Record<string, Tensor> = {};
    for (const input of unet.inputs) {
      if (input.name === 'sample') {
        const dims = input.shape.map((x, i) => (typeof x === 'number' ? x : i === 0 ? 1 : i === 1 ? 4 : 8));
        const n = dims.reduce((a, b) => a * b, 1);
        feeds.sample = floatTensor(
          input.type,
          Float32Array.from({ length: n }, (_, i) => Math.sin(i)),
          dims,
        );
      } else if (input.name === 'timestep') {
        const dims = input.shape.length === 0 ? [] : [1];
        feeds.timestep =
          input.type === 'int64'
            ? tensor('int64', BigInt64Array.from([500n]), dims)
            : floatTensor(input.type, Float32Array.from([500]), dims);
      } else if (input.name === 'encoder_hidden_states') {
        const n = 77 * d;
        feeds.encoder_hidden_states = floatTensor(
          input.type,
          Float32Array.from({ length: n }, (_, i) => Math.cos(i) * 0.5),
          [1, 77, d],
        );
      } else {
        throw new Error(`unexpected UNet input ${input.name}`);
      }
    }
    const out = await unet.run(feeds);
    const sample = out.out_sample as Tensor;
    return { parts, outSample: [...sample.dims] };
  } finally {
    await unet.dispose();
  }
}

/** Byte ranges [start, end) of the initializers `names` in each file of the UNet folder (relative to the model folder). */
export function tensorRanges(modelDir: string, names: ReadonlySet<string>): Map<string, [number, number][]> {
  const unet = openOnnxModel(join(modelDir, 'unet', 'model.onnx'));
  const ranges = new Map<string, [number, number][]>();
  const add = (file: string, start: number, length: number) =>
    ranges.set(file, [...(ranges.get(file) ?? []), [start, start + length]]);
  for (const init of unet.initializers) {
    if (!names.has(init.name)) continue;
    const s = init.storage;
    if (s.kind === 'external') add(join('unet', s.location), s.offset, s.length);
    else if (s.kind === 'raw') add(join('unet', 'model.onnx'), s.offset, s.length);
    else throw new Error(`initializer ${init.name} is stored as ${s.kind}; the test expects raw or external bytes`);
  }
  return ranges;
}

/**
 * Compare two files byte by byte outside `ranges`; returns the number of differing bytes outside
 * the ranges and inside them.
 */
export function diffOutside(
  a: Uint8Array,
  b: Uint8Array,
  ranges: readonly [number, number][],
): { outside: number; inside: number } {
  if (a.length !== b.length) return { outside: Math.abs(a.length - b.length) + 1, inside: 0 };
  const mask = new Uint8Array(a.length);
  for (const [s, e] of ranges) mask.fill(1, s, e);
  let outside = 0;
  let inside = 0;
  for (let i = 0; i < a.length; i++) {
    if (a[i] !== b[i]) {
      if (mask[i]) inside++;
      else outside++;
    }
  }
  return { outside, inside };
}

/**
 * TIME's closed form, computed directly (mission.md §1), in float64, by Gaussian elimination with
 * partial pivoting — independent of src/linalg and src/edit:
 *   W' = (λW + Σ_i w_i' v*_i c_iᵀ)(λI + Σ_i w_i' c_i c_iᵀ)⁻¹,  v*_i = W c*_i
 * generalised to per-row weights: rows with weight w_i contribute w_i·(…) to Σ and the regulariser
 * has weight 1 (i.e. λ = 1 in that form). W is [out, d] row-major; c, cStar are n×d row-major.
 */
export function directTimeSolve(
  W: Float32Array,
  out: number,
  d: number,
  c: Float64Array,
  cStar: Float64Array,
  w: Float64Array,
): Float64Array {
  const n = w.length;
  // G = I + Σ w c cᵀ (d×d), B = W + Σ w (W c*) cᵀ (out×d); W' G = B ⇒ G W'ᵀ = Bᵀ.
  const G = new Float64Array(d * d);
  for (let i = 0; i < d; i++) G[i * d + i] = 1;
  const B = Float64Array.from(W);
  const v = new Float64Array(out);
  for (let r = 0; r < n; r++) {
    const wr = w[r] as number;
    const cr = c.subarray(r * d, (r + 1) * d);
    const sr = cStar.subarray(r * d, (r + 1) * d);
    for (let i = 0; i < d; i++) {
      const ci = wr * (cr[i] as number);
      for (let j = 0; j < d; j++) G[i * d + j] = (G[i * d + j] as number) + ci * (cr[j] as number);
    }
    for (let o = 0; o < out; o++) {
      let s = 0;
      for (let j = 0; j < d; j++) s += (W[o * d + j] as number) * (sr[j] as number);
      v[o] = s;
    }
    for (let o = 0; o < out; o++) {
      const vo = wr * (v[o] as number);
      for (let j = 0; j < d; j++) B[o * d + j] = (B[o * d + j] as number) + vo * (cr[j] as number);
    }
  }
  // Solve G X = Bᵀ (X = W'ᵀ, d×out) by elimination on the augmented matrix.
  const cols = d + out;
  const A = new Float64Array(d * cols);
  for (let i = 0; i < d; i++) {
    for (let j = 0; j < d; j++) A[i * cols + j] = G[i * d + j] as number;
    for (let o = 0; o < out; o++) A[i * cols + d + o] = B[o * d + i] as number;
  }
  for (let k = 0; k < d; k++) {
    let p = k;
    for (let i = k + 1; i < d; i++)
      if (Math.abs(A[i * cols + k] as number) > Math.abs(A[p * cols + k] as number)) p = i;
    if (p !== k) {
      for (let j = 0; j < cols; j++) {
        const t = A[k * cols + j] as number;
        A[k * cols + j] = A[p * cols + j] as number;
        A[p * cols + j] = t;
      }
    }
    const pivot = A[k * cols + k] as number;
    for (let i = k + 1; i < d; i++) {
      const f = (A[i * cols + k] as number) / pivot;
      if (f === 0) continue;
      for (let j = k; j < cols; j++) A[i * cols + j] = (A[i * cols + j] as number) - f * (A[k * cols + j] as number);
    }
  }
  const X = new Float64Array(d * out);
  for (let o = 0; o < out; o++) {
    for (let i = d - 1; i >= 0; i--) {
      let s = A[i * cols + d + o] as number;
      for (let j = i + 1; j < d; j++) s -= (A[i * cols + j] as number) * (X[j * out + o] as number);
      X[i * out + o] = s / (A[i * cols + i] as number);
    }
  }
  // W' = Xᵀ, [out, d]
  const Wp = new Float64Array(out * d);
  for (let o = 0; o < out; o++) for (let i = 0; i < d; i++) Wp[o * d + i] = X[i * out + o] as number;
  return Wp;
}

// ---------------------------------------------------------------------------------------------
// Broken model folders (issue 2 "Bad inputs")
// ---------------------------------------------------------------------------------------------

export type BrokenKind =
  | 'missing-unet'
  | 'not-onnx'
  | 'truncated-external'
  | 'absolute-location'
  | 'dotdot-location'
  | 'symlink-location'
  | 'no-sites'
  | 'd-mismatch';

/**
 * Build a tiny model in `dir` and break it as `kind` says. `scratch` is a folder outside `dir`
 * for what must lie outside the model (the symlink target, the other model of a d mismatch).
 */
export function buildBrokenModel(
  dir: string,
  scratch: string,
  kind: BrokenKind,
  options: TinySdOptions = {},
): TinySdManifest {
  const m = buildTinySdModel(dir, { sites: 2, ...options });
  const unetPath = join(dir, 'unet', 'model.onnx');
  const firstExternal = () => {
    const unet = openOnnxModel(unetPath);
    const init = unet.initializers.find((i) => i.storage.kind === 'external');
    if (!init) throw new Error('the tiny UNet has no external initializer');
    return init.name;
  };
  switch (kind) {
    case 'missing-unet':
      // the UNet's ONNX file is gone (its data file stays)
      unlinkSync(unetPath);
      break;
    case 'not-onnx':
      writeFileSync(unetPath, 'this is not an ONNX model, just text pretending to be one\n'.repeat(20));
      break;
    case 'truncated-external': {
      const data = join(dir, 'unet', 'weights.pb');
      truncateSync(data, Math.floor(statSync(data).size / 2));
      break;
    }
    case 'absolute-location':
      setExternalEntry(unetPath, firstExternal(), 'location', join(dir, 'unet', 'weights.pb'));
      break;
    case 'dotdot-location':
      setExternalEntry(unetPath, firstExternal(), 'location', '../unet/weights.pb');
      break;
    case 'symlink-location': {
      // a symlink inside the folder whose target lies outside it
      mkdirSync(scratch, { recursive: true });
      const outside = join(scratch, 'outside-weights.pb');
      copyFileSync(join(dir, 'unet', 'weights.pb'), outside);
      symlinkSync(outside, join(dir, 'unet', 'linked.pb'));
      setExternalEntry(unetPath, firstExternal(), 'location', 'linked.pb');
      break;
    }
    case 'no-sites':
      // encoder_hidden_states reaches the projections only through a Relu: no longer a K/V projection of the text rows
      rewriteModel(unetPath, (model) => {
        const graph = model.graph;
        if (!graph?.node) throw new Error('no graph');
        for (const node of graph.node) {
          node.input = (node.input ?? []).map((x) => (x === 'encoder_hidden_states' ? 'ehs_relu' : x));
        }
        graph.node.unshift({
          opType: 'Relu',
          name: '/relu_ehs',
          input: ['encoder_hidden_states'],
          output: ['ehs_relu'],
        });
      });
      break;
    case 'd-mismatch': {
      // the text encoder of a model with another text width
      const other = join(scratch, 'other-width');
      buildTinySdModel(other, { sites: 2, ...options, d: (options.d ?? 32) + 16 });
      copyFileSync(join(other, 'text_encoder', 'model.onnx'), join(dir, 'text_encoder', 'model.onnx'));
      break;
    }
  }
  return m;
}

/** The parent folder's entries that are leftovers of an export (`<out>.tmp-*`, `<out>.old-*`). */
export function exportLeftovers(outDir: string): string[] {
  const parent = dirname(outDir);
  if (!existsSync(parent)) return [];
  const base = relative(parent, outDir);
  return readdirSync(parent).filter((n) => n.startsWith(`${base}.tmp-`) || n.startsWith(`${base}.old-`));
}
