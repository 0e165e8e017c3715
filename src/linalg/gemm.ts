/**
 * General matrix products through the runtime seam (onnxruntime's MLAS kernels): a plain JS loop
 * runs at about 1 GFLOP/s, onnxruntime's MatMul/Gemm at 100–300 GFLOP/s on two cores. Every product
 * the edit needs that is larger than a few hundred thousand multiply-adds goes through here.
 *
 * Matrices are row-major typed arrays with explicit `rows`/`cols` (no strides: pass contiguous
 * blocks). Sessions are small graphs built with `GraphBuilder`, with symbolic dimensions, created on
 * first use for each (operation, dtypes, flags) and kept until `dispose()`; so a GemmEngine is meant
 * to live as long as the job that uses it (a tuning loop reuses one for hundreds of solves).
 *
 * Precision: `compute: 'float64'` casts float32 inputs to float64 inside the graph and accumulates
 * in float64 (about 100 GFLOP/s); float32 is 2–3× faster and is what the weight products use.
 */
import { GraphBuilder } from '../onnx/build.js';
import { Session, type Tensor, tensor } from '../runtime/ort.js';

export type Dtype = 'float32' | 'float64';
export type FloatArray = Float32Array | Float64Array;

/** A row-major matrix: element (i, j) is `data[i * cols + j]`. */
export interface Matrix<T extends FloatArray = FloatArray> {
  data: T;
  rows: number;
  cols: number;
}

export function matrix<T extends FloatArray>(data: T, rows: number, cols: number): Matrix<T> {
  if (!Number.isInteger(rows) || !Number.isInteger(cols) || rows < 0 || cols < 0) {
    throw new RangeError(`matrix: shape [${rows}, ${cols}] is not a pair of non-negative integers`);
  }
  if (data.length !== rows * cols) {
    throw new RangeError(`matrix: ${data.length} elements for shape [${rows}, ${cols}] (expected ${rows * cols})`);
  }
  return { data, rows, cols };
}

export interface GemmOptions {
  /** Use Aᵀ instead of A. */
  transA?: boolean;
  /** Use Bᵀ instead of B. */
  transB?: boolean;
  /** Scale of the product (default 1). */
  alpha?: number;
  /** Added term: Y = alpha·op(A)·op(B) + beta·C. C has the shape of Y. */
  c?: Matrix;
  /** Scale of C (default 1 when C is given). */
  beta?: number;
  /** Accumulation precision; inputs are cast to it. Default: float64 if any input is float64. */
  compute?: Dtype;
  /** Element type of the result (default: `compute`). */
  output?: Dtype;
  /** Write the result here (length rows·cols of Y, dtype `output`) instead of a new array. */
  out?: FloatArray;
}

/**
 * One update applied to many matrices X_i (k columns each):
 *   product: Y_i = X_i·M                 (M k×k)
 *   dense:   Y_i = X_i + X_i·Δ           (Δ k×k)
 *   lowRank: Y_i = X_i + (X_i·Uᵀ)·V      (U, V r×k)
 * or, with `columns` (X_i is k×m_i: the same matrices stored transposed, as ONNX exporters store
 * MatMul weights), the transposed results: Mᵀ·X_i, X_i + Δᵀ·X_i, X_i + Vᵀ·(U·X_i).
 */
export type BatchedUpdate =
  | { kind: 'product'; m: Matrix<Float32Array> }
  | { kind: 'dense'; delta: Matrix<Float32Array> }
  | { kind: 'lowRank'; u: Matrix<Float32Array>; v: Matrix<Float32Array> };

export interface BatchedUpdateOptions {
  /** Arrays that receive Y_i (same order and lengths as the inputs). */
  outputs?: readonly Float32Array[];
  /**
   * Also compute ‖Y_i − X_i‖²_F and ‖X_i‖²_F (float32 accumulation in onnxruntime). Costs extra
   * passes over the weights: measured +30–60 % on SD 1.4's 32 projections, memory-bound.
   */
  norms?: boolean;
  /** X_i are k×m_i (the update acts on their rows): Y_i is the transpose of the row-form result. */
  columns?: boolean;
}

export interface BatchedUpdateResult {
  /** Y_i, one per input, float32 row-major with the shape of X_i. */
  outputs: Float32Array[];
  /** ‖Y_i − X_i‖²_F, when `norms` was asked for. */
  changeSquared?: number[];
  /** ‖X_i‖²_F, when `norms` was asked for. */
  normSquared?: number[];
}

export interface GemmEngineOptions {
  /** onnxruntime intra-op threads (0 or undefined: onnxruntime decides, one per core). */
  threads?: number;
  /**
   * Let idle onnxruntime threads spin-wait between jobs. Default false: an engine holds several
   * sessions, each with its own thread pool, used back to back; spinning pools steal the cores from
   * the running one (measured on 2 cores: Woodbury solve 76 → 32 ms, 35-pair apply 216 → 158 ms).
   */
  spinning?: boolean;
}

export class GemmEngine {
  private readonly sessions = new Map<string, Promise<Session>>();
  private disposed = false;

  constructor(private readonly options: GemmEngineOptions = {}) {}

  /** Number of cached sessions (for tests of reuse and disposal). */
  get sessionCount(): number {
    return this.sessions.size;
  }

  /**
   * Y = alpha·op(A)·op(B) + beta·C  (the ONNX Gemm contract). Shapes are checked here, with the
   * names of the operands, before onnxruntime sees them.
   */
  async gemm(a: Matrix, b: Matrix, options: GemmOptions = {}): Promise<Matrix> {
    const transA = options.transA ?? false;
    const transB = options.transB ?? false;
    const [m, k] = transA ? [a.cols, a.rows] : [a.rows, a.cols];
    const [kb, n] = transB ? [b.cols, b.rows] : [b.rows, b.cols];
    if (k !== kb) {
      throw new RangeError(
        `gemm: inner dimensions differ: op(A) is ${m}×${k}, op(B) is ${kb}×${n} (transA=${transA}, transB=${transB})`,
      );
    }
    const c = options.c;
    if (c && (c.rows !== m || c.cols !== n)) {
      throw new RangeError(`gemm: C is ${c.rows}×${c.cols}; the product is ${m}×${n}`);
    }
    const anyF64 =
      dtypeOf(a.data) === 'float64' || dtypeOf(b.data) === 'float64' || (c && dtypeOf(c.data) === 'float64');
    const compute = options.compute ?? (anyF64 ? 'float64' : 'float32');
    const output = options.output ?? compute;
    const out = options.out;
    if (out && (out.length !== m * n || dtypeOf(out) !== output)) {
      throw new RangeError(
        `gemm: out has ${out.length} ${dtypeOf(out)} elements; the product needs ${m * n} ${output}`,
      );
    }
    if (m === 0 || n === 0) return matrix(out ?? allocate(output, 0), m, n);
    if (k === 0) {
      // An empty sum: Y = beta·C (or 0). onnxruntime rejects zero-sized inner dimensions in some kernels.
      const y = out ?? allocate(output, m * n);
      const beta = options.beta ?? 1;
      if (c) for (let i = 0; i < m * n; i++) y[i] = beta * (c.data[i] as number);
      else y.fill(0);
      return matrix(y, m, n);
    }
    const alpha = options.alpha ?? 1;
    const beta = options.beta ?? 1;
    const types = [dtypeOf(a.data), dtypeOf(b.data), c ? dtypeOf(c.data) : '-'];
    const key = `gemm:${types.join(',')}:${compute}:${output}:${transA}:${transB}:${alpha}:${c ? beta : '-'}`;
    const session = await this.session(key, () => {
      const g = new GraphBuilder('gemm');
      const inputs = [
        cast(g, g.input('A', types[0] as Dtype, ['a0', 'a1']), types[0] as Dtype, compute),
        cast(g, g.input('B', types[1] as Dtype, ['b0', 'b1']), types[1] as Dtype, compute),
      ];
      if (c) inputs.push(cast(g, g.input('C', types[2] as Dtype, ['m', 'n']), types[2] as Dtype, compute));
      const attrs: Record<string, number | { float: number }> = { alpha: { float: alpha } };
      if (transA) attrs.transA = 1;
      if (transB) attrs.transB = 1;
      if (c) attrs.beta = { float: beta };
      const y = g.node('Gemm', inputs, 1, attrs, 'Gemm');
      g.node(compute === output ? 'Identity' : 'Cast', [y], ['Y'], compute === output ? {} : { to: onnxType(output) });
      g.output('Y', output, ['m', 'n']);
      return g;
    });
    const feeds: Record<string, Tensor> = { A: asTensor(a), B: asTensor(b) };
    if (c) feeds.C = asTensor(c);
    const y = out ?? allocate(output, m * n);
    await session.run(feeds, { Y: tensor(output, y, [m, n]) });
    return matrix(y, m, n);
  }

  /**
   * The weighted Gram and cross-Gram of two row sets with the same number of rows:
   *   XX = Xᵀ·diag(w)·X  (p×p)   and   XY = Xᵀ·diag(w)·Y  (p×q),
   * computed in float64 from float32 rows (the rows are cast inside onnxruntime).
   */
  async weightedGram(
    x: Matrix<Float32Array>,
    y: Matrix<Float32Array>,
    w: Float64Array,
  ): Promise<{ xx: Matrix<Float64Array>; xy: Matrix<Float64Array> }> {
    if (y.rows !== x.rows || w.length !== x.rows) {
      throw new RangeError(`weightedGram: X has ${x.rows} rows, Y ${y.rows}, w ${w.length}; they must agree`);
    }
    const p = x.cols;
    const q = y.cols;
    const xx = new Float64Array(p * p);
    const xy = new Float64Array(p * q);
    if (x.rows === 0) return { xx: matrix(xx, p, p), xy: matrix(xy, p, q) };
    const session = await this.session('weightedGram', () => {
      const g = new GraphBuilder('weighted_gram');
      const xd = cast(g, g.input('X', 'float32', ['n', 'p']), 'float32', 'float64');
      const yd = cast(g, g.input('Y', 'float32', ['n', 'q']), 'float32', 'float64');
      const wd = g.input('w', 'float64', ['n', 1]);
      const xw = g.node('Mul', [xd, wd]);
      g.node('Gemm', [xw, xd], ['XX'], { transA: 1 });
      g.node('Gemm', [xw, yd], ['XY'], { transA: 1 });
      g.output('XX', 'float64', ['p', 'p']);
      g.output('XY', 'float64', ['p', 'q']);
      return g;
    });
    await session.run(
      { X: asTensor(x), Y: asTensor(y), w: tensor('float64', w, [w.length, 1]) },
      { XX: tensor('float64', xx, [p, p]), XY: tensor('float64', xy, [p, q]) },
    );
    return { xx: matrix(xx, p, p), xy: matrix(xy, p, q) };
  }

  /**
   * Apply one update to many matrices X_i in one onnxruntime run (one graph with a product chain per
   * input, so the inputs are not concatenated). Without norms each Y_i is written by a single GEMM
   * (the addition of X_i folded into Gemm's C); with norms the change X_i·Δ (or (X_i·Uᵀ)·V) is kept
   * as a tensor so that its norm is exact even when it is tiny next to X_i.
   */
  async updateEach(
    xs: readonly Matrix<Float32Array>[],
    update: BatchedUpdate,
    options: BatchedUpdateOptions = {},
  ): Promise<BatchedUpdateResult> {
    const square = update.kind === 'product' ? update.m : update.kind === 'dense' ? update.delta : undefined;
    const k = square ? square.rows : (update as { u: Matrix }).u.cols;
    if (square && square.cols !== k) {
      throw new RangeError(`updateEach: the ${update.kind} matrix is ${square.rows}×${square.cols}; it must be square`);
    }
    if (update.kind === 'lowRank' && (update.v.rows !== update.u.rows || update.v.cols !== k)) {
      throw new RangeError(
        `updateEach: U is ${update.u.rows}×${update.u.cols} and V is ${update.v.rows}×${update.v.cols}; they must have the same shape`,
      );
    }
    const { outputs } = options;
    const norms = options.norms ?? false;
    const columns = options.columns ?? false;
    if (outputs && outputs.length !== xs.length) {
      throw new RangeError(`updateEach: ${outputs.length} output arrays for ${xs.length} inputs`);
    }
    xs.forEach((x, i) => {
      if ((columns ? x.rows : x.cols) !== k) {
        throw new RangeError(
          `updateEach: X_${i} has ${columns ? `${x.rows} rows` : `${x.cols} columns`}; the update acts on ${k}`,
        );
      }
      const o = outputs?.[i];
      if (o && o.length !== x.rows * x.cols) {
        throw new RangeError(`updateEach: output ${i} has ${o.length} elements; X_${i} has ${x.rows * x.cols}`);
      }
    });
    const ys = xs.map((x, i) => outputs?.[i] ?? new Float32Array(x.rows * x.cols));
    if (xs.length === 0) return norms ? { outputs: [], changeSquared: [], normSquared: [] } : { outputs: [] };
    const count = xs.length;
    const session = await this.session(`updateEach:${update.kind}:${count}:${norms}:${columns}`, () => {
      const g = new GraphBuilder('update_each');
      if (update.kind === 'product') g.input('M', 'float32', ['k', 'k']);
      else if (update.kind === 'dense') g.input('Delta', 'float32', ['k', 'k']);
      else {
        g.input('U', 'float32', ['r', 'k']);
        g.input('V', 'float32', ['r', 'k']);
      }
      for (let i = 0; i < count; i++) {
        const shape = columns ? ['k', `m${i}`] : [`m${i}`, 'k'];
        const x = g.input(`X${i}`, 'float32', shape);
        const y = `Y${i}`;
        let change: string;
        if (update.kind === 'product') {
          if (columns) g.node('Gemm', ['M', x], [y], { transA: 1 });
          else g.node('MatMul', [x, 'M'], [y]);
          change = norms ? g.node('Sub', [y, x]) : '';
        } else {
          // row form: left·right with (X, Δ) or (X·Uᵀ, V); column form: leftᵀ·right with (Δ, X) or (V, U·X)
          const [left, right] = columns
            ? update.kind === 'dense'
              ? ['Delta', x]
              : ['V', g.node('MatMul', ['U', x])]
            : update.kind === 'dense'
              ? [x, 'Delta']
              : [g.node('Gemm', [x, 'U'], 1, { transB: 1 }), 'V'];
          const trans: Record<string, number> = columns ? { transA: 1 } : {};
          if (norms) {
            change = g.node('Gemm', [left, right], 1, trans);
            g.node('Add', [x, change], [y]);
          } else {
            change = '';
            g.node('Gemm', [left, right, x], [y], trans); // left·right + 1·X
          }
        }
        g.output(y, 'float32', shape);
        if (norms) {
          g.node('ReduceSumSquare', [change], [`dY${i}`], { keepdims: 0 });
          g.node('ReduceSumSquare', [x], [`nX${i}`], { keepdims: 0 });
          g.output(`dY${i}`, 'float32', []);
          g.output(`nX${i}`, 'float32', []);
        }
      }
      return g;
    });
    const feeds: Record<string, Tensor> = {};
    if (update.kind === 'product') feeds.M = asTensor(update.m);
    else if (update.kind === 'dense') feeds.Delta = asTensor(update.delta);
    else {
      feeds.U = asTensor(update.u);
      feeds.V = asTensor(update.v);
    }
    const fetches: Record<string, Tensor | null> = {};
    xs.forEach((x, i) => {
      feeds[`X${i}`] = asTensor(x);
      fetches[`Y${i}`] = tensor('float32', ys[i] as Float32Array, [x.rows, x.cols]);
      if (norms) {
        fetches[`dY${i}`] = null;
        fetches[`nX${i}`] = null;
      }
    });
    const result = await session.run(feeds, fetches);
    if (!norms) return { outputs: ys };
    const scalar = (name: string) => Number((result[name] as Tensor).data[0]);
    return {
      outputs: ys,
      changeSquared: xs.map((_, i) => scalar(`dY${i}`)),
      normSquared: xs.map((_, i) => scalar(`nX${i}`)),
    };
  }

  /** Release every session. The engine cannot be used afterwards. */
  async dispose(): Promise<void> {
    if (this.disposed) return;
    this.disposed = true;
    const sessions = [...this.sessions.values()];
    this.sessions.clear();
    for (const s of sessions) {
      try {
        await (await s).dispose();
      } catch {
        // A session whose creation failed has nothing to release.
      }
    }
  }

  private session(key: string, build: () => GraphBuilder): Promise<Session> {
    if (this.disposed) throw new Error('GemmEngine: used after dispose()');
    let s = this.sessions.get(key);
    if (!s) {
      const model = build().toModel({ opset: 17 }).model;
      s = Session.create(model, {
        label: `linalg ${key}`,
        threads: this.options.threads,
        allowSpinning: this.options.spinning ?? false,
      });
      this.sessions.set(key, s);
      // A failed creation is not cached: the next call tries again and reports its own error.
      s.catch(() => this.sessions.delete(key));
    }
    return s;
  }
}

function dtypeOf(a: FloatArray): Dtype {
  return a instanceof Float64Array ? 'float64' : 'float32';
}

function allocate(dtype: Dtype, length: number): FloatArray {
  return dtype === 'float64' ? new Float64Array(length) : new Float32Array(length);
}

function asTensor(m: Matrix): Tensor {
  return tensor(dtypeOf(m.data), m.data, [m.rows, m.cols]);
}

function onnxType(d: Dtype): number {
  return d === 'float64' ? 11 : 1;
}

function cast(g: GraphBuilder, name: string, from: Dtype, to: Dtype): string {
  return from === to ? name : g.node('Cast', [name], 1, { to: onnxType(to) });
}
