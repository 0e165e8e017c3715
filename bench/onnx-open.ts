/**
 * Opening an inline-weights model (issue: an inline ONNX model is never held in JS memory).
 *
 * The fixture (a temporary folder, removed at the end): a 1 GiB model.onnx shaped like an
 * Optimum/diffusers fp16 UNet export below protobuf's 2 GB, so every weight is inline raw_data:
 * 512 float16 initializers of [1024, 1024] (2 MiB each) and 4,096 nodes, written tensor by tensor
 * with `writeInlineModel`.
 *
 * Measured in a child process per run (node --expose-gc; the file is in the page cache, written
 * just before): `openOnnxModel` wall time, then — after a gc, with the opened model still held —
 * the growth of `process.memoryUsage().arrayBuffers` (every Buffer/ArrayBuffer, the file bytes
 * included when they are kept), of `rss`, and the child's peak RSS; then one tensor read.
 * Reference: the same child doing what openOnnxModel did before positioned reads
 * (`readFileSync` of the whole file + protobufjs `decodeModel`, the buffer kept with the result).
 * Target: the opened model holds far less than the file: arrayBuffers growth ≤ 1 % of its size.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statfsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { GraphBuilder, type InlineBulk, writeInlineModel } from '../src/onnx/build.js';
import { type Benchmark, type BenchResult, round, summarize } from './harness.js';

const BULK: InlineBulk = { prefix: 'unet.weight', count: 512, dims: [1024, 1024] };
const NODES_PER_TENSOR = 8;
const RUNS = 3;
const MB = 2 ** 20;

interface ChildRun {
  ms: number;
  arrayBuffersMb: number;
  rssMb: number;
  heapUsedMb: number;
  maxRssMb: number;
  readMs: number;
  initializers: number;
}

/** The graph around the bulk tensors: a chain of MatMul/Add/... nodes reading them (never run). */
function graph(): GraphBuilder {
  const g = new GraphBuilder();
  let x = g.input('sample', 'float16', ['batch', 1024]);
  const ops = ['MatMul', 'Add', 'Mul', 'Sigmoid', 'Mul', 'Cast', 'Cast', 'Identity'];
  for (let i = 0; i < BULK.count; i++) {
    for (let k = 0; k < NODES_PER_TENSOR; k++) {
      const op = ops[k % ops.length] as string;
      const inputs = op === 'MatMul' ? [x, `${BULK.prefix}.${i}`] : op === 'Add' || op === 'Mul' ? [x, x] : [x];
      const attrs: Record<string, number> = op === 'Cast' ? { to: k === 5 ? 1 : 10 } : {};
      x = g.node(op, inputs, 1, attrs, `/block.${i}/${op}_${k}`);
    }
  }
  g.output(x, 'float16', ['batch', 1024]);
  return g;
}

/** Child mode: open `path` one way, print the figures as one JSON line. */
async function child(mode: string, path: string): Promise<void> {
  const { getInitializer, openOnnxModel, readTensorBytes } = await import('../src/onnx/model-file.js');
  const { decodeModel } = await import('../src/onnx/proto.js');
  const gc = (globalThis as { gc?: () => void }).gc;
  if (!gc) throw new Error('run the child with --expose-gc');
  gc();
  const m0 = process.memoryUsage();
  const t0 = performance.now();
  let held: unknown;
  let initializers: number;
  let read: () => unknown;
  if (mode === 'stream') {
    const file = openOnnxModel(path);
    held = file;
    initializers = file.initializers.length;
    read = () => readTensorBytes(file, getInitializer(file, `${BULK.prefix}.${BULK.count >> 1}`));
  } else {
    const bytes = readFileSync(path);
    const model = decodeModel(bytes);
    held = { bytes, model };
    initializers = model.graph?.initializer?.length ?? 0;
    read = () => Uint8Array.from(model.graph?.initializer?.[BULK.count >> 1]?.rawData ?? []);
  }
  const ms = performance.now() - t0;
  gc();
  const m1 = process.memoryUsage();
  const t1 = performance.now();
  read();
  const readMs = performance.now() - t1;
  const run: ChildRun = {
    ms,
    arrayBuffersMb: (m1.arrayBuffers - m0.arrayBuffers) / MB,
    rssMb: (m1.rss - m0.rss) / MB,
    heapUsedMb: (m1.heapUsed - m0.heapUsed) / MB,
    maxRssMb: process.resourceUsage().maxRSS / 1024,
    readMs,
    initializers,
  };
  if (!held) throw new Error('unreachable');
  process.stdout.write(`${JSON.stringify(run)}\n`);
}

async function run(): Promise<BenchResult[]> {
  const base = process.env.TIME_DEBIAS_BENCH_DIR ?? tmpdir();
  const fs = statfsSync(base);
  if (fs.bavail * fs.bsize < 2 * 2 ** 30) {
    throw new Error(`onnx-open bench: ${base} has under 2 GiB free. Set TIME_DEBIAS_BENCH_DIR to a roomier folder.`);
  }
  const root = mkdtempSync(join(base, 'td-bench-open-'));
  try {
    const path = join(root, 'unet', 'model.onnx');
    const tWrite = performance.now();
    const { size } = writeInlineModel(path, graph(), BULK, { opset: 17, producerName: 'pytorch' });
    const writeMs = performance.now() - tWrite;
    const self = fileURLToPath(import.meta.url);
    const once = (mode: string): ChildRun => {
      const r = spawnSync(process.execPath, ['--expose-gc', '--import', 'tsx', self, '--child', mode, path], {
        encoding: 'utf8',
        maxBuffer: 1 << 20,
      });
      if (r.status !== 0) throw new Error(`onnx-open child (${mode}) failed (${r.status}): ${r.stderr}`);
      const run = JSON.parse(r.stdout.trim().split('\n').pop() as string) as ChildRun;
      if (run.initializers !== BULK.count)
        throw new Error(`onnx-open child (${mode}): ${run.initializers} initializers`);
      return run;
    };
    const stream: ChildRun[] = [];
    const whole: ChildRun[] = [];
    for (let i = 0; i < RUNS; i++) {
      whole.push(once('whole'));
      stream.push(once('stream'));
    }
    const fileMb = size / MB;
    const pick = (runs: ChildRun[], key: keyof ChildRun) => runs.map((r) => r[key]);
    const med = (runs: ChildRun[], key: keyof ChildRun) => summarize('', '', pick(runs, key)).median;
    const reference = summarize(
      'onnx-open: readFileSync + decodeModel of the 1 GiB inline model',
      'ms',
      pick(whole, 'ms'),
      {
        details: {
          fileMb: round(fileMb),
          arrayBuffersGrowthMb: med(whole, 'arrayBuffersMb'),
          rssGrowthMb: med(whole, 'rssMb'),
          peakRssMb: med(whole, 'maxRssMb'),
          tensorReadMs: med(whole, 'readMs'),
        },
      },
    );
    const maxArrayBuffers = Math.max(...pick(stream, 'arrayBuffersMb'));
    return [
      summarize('onnx-open: openOnnxModel of the 1 GiB inline model (positioned reads)', 'ms', pick(stream, 'ms'), {
        reference: { name: reference.name, median: reference.median, unit: 'ms' },
        details: {
          fileMb: round(fileMb),
          nodes: BULK.count * NODES_PER_TENSOR,
          fixtureWriteMs: round(writeMs),
          rssGrowthMb: med(stream, 'rssMb'),
          heapUsedGrowthMb: med(stream, 'heapUsedMb'),
          peakRssMb: med(stream, 'maxRssMb'),
          tensorReadMs: med(stream, 'readMs'),
        },
      }),
      summarize('onnx-open: arrayBuffers held by the opened model (after gc)', 'MB', pick(stream, 'arrayBuffersMb'), {
        reference: { name: reference.name, median: med(whole, 'arrayBuffersMb'), unit: 'MB' },
        target: `<= 1 % of the file (${round(fileMb / 100)} MB)`,
        meetsTarget: maxArrayBuffers <= fileMb / 100,
      }),
      reference,
    ];
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
}

export const benchmarks: Benchmark[] = [{ name: 'onnx-open', run }];

if (process.argv[2] === '--child' && import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  await child(process.argv[3] as string, process.argv[4] as string);
}
