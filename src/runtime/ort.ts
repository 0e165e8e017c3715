/**
 * The one module that imports onnxruntime-node (style.md §1): sessions, execution providers,
 * tensors and their disposal. Everything else in the project talks to ONNX Runtime through here.
 */
import { existsSync, readdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { availableParallelism } from 'node:os';
import { dirname, join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { RuntimeError, show, UsageError } from '../util/errors.js';

export type Device = 'cpu' | 'cuda';
export type TensorDtype = 'float32' | 'float16' | 'float64' | 'int32' | 'int64' | 'uint8' | 'bool';
export type Tensor = ort.Tensor;
export type TensorData = Float32Array | Float64Array | Int32Array | BigInt64Array | Uint16Array | Uint8Array;

/** Device → execution provider list. Frozen: the only devices this project knows. */
export const DEVICE_PROVIDERS: Readonly<Record<Device, readonly string[]>> = Object.freeze({
  cpu: Object.freeze(['cpu']),
  cuda: Object.freeze(['cuda', 'cpu']),
});

export const DEVICES = Object.freeze(Object.keys(DEVICE_PROVIDERS) as Device[]);

/** onnxruntime's failures are the error family's RuntimeError (src/util/errors.ts); re-exported here. */
export { RuntimeError };

export interface SessionOptions {
  /** 'cpu' (default) or 'cuda' (needs the CUDA opt-in install, see README). */
  device?: Device;
  /** Intra-op threads; 0 or undefined lets onnxruntime decide. */
  threads?: number;
  /** Graph optimization level; 'all' by default. */
  optimization?: 'disabled' | 'basic' | 'extended' | 'all';
  /** Human name used in error messages (e.g. "unet"). */
  label?: string;
  /**
   * For a model given as bytes whose initializers live in external data files: the folder their
   * `location`s are relative to (onnxruntime's session.model_external_initializers_file_folder_path).
   */
  externalDataFolder?: string;
  /**
   * Whether idle intra-op threads spin waiting for work (onnxruntime's default, true). A session
   * that runs rarely beside a busy one (a VAE or text encoder next to the UNet loop) should not
   * spin: on few cores its spinning threads slow the busy session down.
   */
  allowSpinning?: boolean;
  /** onnxruntime's CPU memory arena (`enableCpuMemArena`). Default: SESSION_MEMORY_DEFAULTS.memArena. */
  memArena?: boolean;
  /** Memory-pattern planning of activations (`enableMemPattern`). Default: SESSION_MEMORY_DEFAULTS.memPattern. */
  memPattern?: boolean;
  /** Pre-pack constant weights for the CPU kernels (`session.disable_prepacking` when false). Default: true. */
  prepack?: boolean;
}

/** The session settings a caller may tune (benchmarks compare them). */
export type SessionTuning = Pick<SessionOptions, 'memArena' | 'memPattern' | 'prepack' | 'optimization'>;

/**
 * Memory options of every session, chosen by measurement (bench/sd14.ts, README "Real scale"): on
 * SD 1.4's UNet (3.4 GB of float32 weights; one guided 512 × 512 step, batch 2), raw session, 2
 * threads, idle 2-core machine (load ≤ 2):
 *
 *   arena on,  memory pattern off  (chosen)                  step  5.2–6.0 s   peak RSS 5,719–5,796 MB
 *   arena on,  memory pattern on   (onnxruntime's defaults)  step 11.9 s       peak RSS 8,068 MB
 *   arena off, memory pattern on   (the previous choice)     step 11.2 s       peak RSS 5,935 MB
 *   arena off, memory pattern off                            step 33.7 s       peak RSS 6,243 MB
 *
 * Fresh memory is expensive on these machines (a page fault costs ≈ 20 µs per 4 KB page): the
 * self-attention scores alone are 2 × 8 × 4096² floats = 1 GiB, and an allocator that returns
 * them to the OS after each run pays ≈ 5 s of page faults per step. The arena keeps what it grew
 * to and reuses it, so later runs touch no new pages. With the memory pattern on as well, the
 * first run allocates tensor by tensor and the second allocates the planned pattern block next to
 * them (8 GB peak, and the block is fresh memory again); with the pattern off, the arena's chunks
 * are simply reused. The pipeline with these options: step 5.7 s (0.96× the raw session), peak RSS
 * 5,772 MB for one 512 × 512 image. Pre-packing stays on: RSS after creating that session is
 * 3,563 MB for 3,438 MB of weights, so the packed weights replace the originals rather than
 * doubling them; off, the step is no faster (31.2 s vs 33.7 s with arena and pattern off).
 */
export const SESSION_MEMORY_DEFAULTS = Object.freeze({ memArena: true, memPattern: false, prepack: true });

export function validateDevice(device: unknown): Device {
  if (typeof device === 'string' && (DEVICES as string[]).includes(device)) return device as Device;
  throw new UsageError(`${show(device)} is not a known device; valid devices are ${DEVICES.join(', ')}`, {
    field: 'device',
  });
}

/** The most intra-op threads a session may ask for: 4 × the CPUs this process can use. */
export function maxThreads(): number {
  return 4 * Math.max(1, availableParallelism());
}

/**
 * Check an intra-op thread count before anything is loaded: an integer ≥ 0 (0 or undefined lets
 * onnxruntime decide) and at most `maxThreads()`. More threads than CPUs only contend for them
 * (measured on 2 CPUs: 64 threads made a small generate 3× slower, 1024 did not finish in two
 * minutes, 100000 grew past 3 GiB and was killed for memory).
 */
export function validateThreads(threads: unknown): number | undefined {
  if (threads === undefined) return undefined;
  if (typeof threads !== 'number' || !Number.isInteger(threads) || threads < 0) {
    throw new UsageError(`${show(threads)} is not an integer >= 0`, { field: 'threads' });
  }
  const max = maxThreads();
  if (threads > max) {
    throw new UsageError(
      `${threads} is more than ${max} (rule: at most 4 × the ${max / 4} CPUs here; more intra-op threads than CPUs only contend for them, and thousands exhaust time and memory)`,
      { field: 'threads' },
    );
  }
  return threads;
}

/**
 * True when onnxruntime-node's CUDA provider library is installed next to its binding (the opt-in
 * install puts `libonnxruntime_providers_cuda.so` / `onnxruntime_providers_cuda.dll` there).
 * `listSupportedBackends()` alone is not enough: it lists 'cuda' even when the library is absent.
 */
export function cudaAvailable(): boolean {
  try {
    if (!ort.listSupportedBackends().some((b) => b.name === 'cuda')) return false;
    const require = createRequire(import.meta.url);
    const binDir = join(dirname(require.resolve('onnxruntime-node/package.json')), 'bin');
    const names = new Set(['libonnxruntime_providers_cuda.so', 'onnxruntime_providers_cuda.dll']);
    const walk = (dir: string): boolean =>
      readdirSync(dir, { withFileTypes: true }).some((e) =>
        e.isDirectory() ? walk(join(dir, e.name)) : names.has(e.name),
      );
    return existsSync(binDir) && walk(binDir);
  } catch {
    return false;
  }
}

export interface IoInfo {
  name: string;
  /** Element type as onnxruntime reports it, e.g. 'float32', 'float16', 'int32', 'int64'. */
  type: string;
  /** Shape with symbolic dims as strings. */
  shape: (number | string)[];
}

/**
 * A thin wrapper over ort.InferenceSession: feeds are checked against the session's input names
 * (all missing names reported at once), input/output metadata is exposed in plain objects.
 */
export class Session {
  readonly inputs: IoInfo[];
  readonly outputs: IoInfo[];
  private disposed = false;

  private constructor(
    private readonly inner: ort.InferenceSession,
    readonly label: string,
  ) {
    this.inputs = metadata(inner.inputMetadata, inner.inputNames);
    this.outputs = metadata(inner.outputMetadata, inner.outputNames);
  }

  static async create(model: string | Uint8Array, options: SessionOptions = {}): Promise<Session> {
    const device = validateDevice(options.device ?? 'cpu');
    const label = options.label ?? (typeof model === 'string' ? model : 'in-memory model');
    if (device === 'cuda' && !cudaAvailable()) {
      throw new UsageError(
        `"cuda": onnxruntime-node's CUDA provider is not installed on this host (needs the opt-in ` +
          `install and CUDA 12 + cuDNN 9; see README "CUDA"); use the device "cpu"`,
        { field: 'device' },
      );
    }
    const sessionOptions: ort.InferenceSession.SessionOptions = {
      executionProviders: [...DEVICE_PROVIDERS[device]],
      graphOptimizationLevel: options.optimization ?? 'all',
    };
    const threads = validateThreads(options.threads);
    if (threads) sessionOptions.intraOpNumThreads = threads;
    sessionOptions.enableCpuMemArena = options.memArena ?? SESSION_MEMORY_DEFAULTS.memArena;
    sessionOptions.enableMemPattern = options.memPattern ?? SESSION_MEMORY_DEFAULTS.memPattern;
    const sessionConfig: Record<string, unknown> = {};
    if (!(options.prepack ?? SESSION_MEMORY_DEFAULTS.prepack)) sessionConfig.disable_prepacking = '1';
    if (options.externalDataFolder) {
      sessionConfig.model_external_initializers_file_folder_path = options.externalDataFolder;
    }
    if (options.allowSpinning === false) sessionConfig.intra_op = { allow_spinning: '0' };
    if (Object.keys(sessionConfig).length > 0) sessionOptions.extra = { session: sessionConfig };
    try {
      const inner =
        typeof model === 'string'
          ? await ort.InferenceSession.create(model, sessionOptions)
          : await ort.InferenceSession.create(model, sessionOptions);
      return new Session(inner, label);
    } catch (cause) {
      throw new RuntimeError(`onnxruntime could not load ${label}: ${(cause as Error).message}`, { cause });
    }
  }

  input(name: string): IoInfo | undefined {
    return this.inputs.find((i) => i.name === name);
  }

  /**
   * Run the session. `outputs` is either the output names to compute, or a map from output name to a
   * pre-allocated tensor that onnxruntime writes into (null: let onnxruntime allocate that output).
   */
  async run(
    feeds: Record<string, Tensor>,
    outputs?: string[] | Record<string, Tensor | null>,
  ): Promise<Record<string, Tensor>> {
    if (this.disposed) throw new RuntimeError(`${this.label}: session used after dispose()`);
    const missing = this.inputs.map((i) => i.name).filter((n) => !(n in feeds));
    const unknown = Object.keys(feeds).filter((n) => !this.inputs.some((i) => i.name === n));
    if (missing.length || unknown.length) {
      const parts = [];
      if (missing.length) parts.push(`missing inputs ${missing.join(', ')}`);
      if (unknown.length) parts.push(`unknown inputs ${unknown.join(', ')}`);
      throw new RuntimeError(
        `${this.label}: ${parts.join('; ')} (the session takes ${this.inputs.map((i) => i.name).join(', ')})`,
      );
    }
    try {
      return (await (outputs
        ? this.inner.run(feeds, outputs as ort.InferenceSession.FetchesType)
        : this.inner.run(feeds))) as Record<string, Tensor>;
    } catch (cause) {
      throw new RuntimeError(`${this.label}: run failed: ${(cause as Error).message}`, { cause });
    }
  }

  async dispose(): Promise<void> {
    if (this.disposed) return;
    this.disposed = true;
    await this.inner.release();
  }
}

function metadata(meta: readonly ort.InferenceSession.ValueMetadata[] | undefined, names: readonly string[]): IoInfo[] {
  return names.map((name, i) => {
    const m = meta?.[i] as { isTensor?: boolean; type?: string; shape?: readonly (number | string)[] } | undefined;
    return { name, type: m?.isTensor ? String(m.type) : 'unknown', shape: m?.shape ? [...m.shape] : [] };
  });
}

/** Build a runtime tensor. float16 data are IEEE half bit patterns in a Uint16Array. */
export function tensor(type: TensorDtype, data: TensorData | boolean[], dims: readonly number[]): Tensor {
  return new ort.Tensor(type as 'float32', data as Float32Array, dims);
}
