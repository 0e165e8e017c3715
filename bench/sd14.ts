/**
 * Real-scale rendering (issue 15, item 8), on SD 1.4's UNet architecture with random weights
 * (bench/sd14-model.ts; 859,520,964 parameters):
 *   - one UNet step (batch 2 = one image with guidance, 4 × 64 × 64 latents, i.e. 512 × 512) in a raw
 *     onnxruntime session, against the pipeline's step (target ≤ 1.05×);
 *   - peak RSS of rendering one 512 × 512 image through the pipeline (target ≤ 8 GiB);
 *   - with SD14_BENCH_SWEEP=1, the raw step and peak RSS under other session options (arena, memory
 *     patterns, graph optimization level, pre-packing, 1 thread instead of 2): the measurements behind SESSION_MEMORY_DEFAULTS.
 * Every figure comes from its own child process (bench/sd14-child.ts), so each peak RSS is its own.
 * A step takes ≈ 10 s on 2 idle cores (minutes on a loaded machine: the load average is recorded).
 * The 3.4 GB model folder is built once (≈ 20 s) and removed at the end unless SD14_BENCH_KEEP=1.
 */
import { execFileSync } from 'node:child_process';
import { loadavg, totalmem } from 'node:os';
import { SESSION_MEMORY_DEFAULTS, type SessionTuning } from '../src/runtime/ort.js';
import { type Benchmark, type BenchResult, round, summarize } from './harness.js';
import { ensureSd14BenchModel, removeSd14BenchModel } from './sd14-model.js';

const THREADS = 2;
const RAW_RUNS = 3;
const PIPELINE_STEPS = 3;
const RSS_TARGET_MB = 8 * 1024;

interface ChildResult {
  createMs: number;
  peakRssMb: number;
  afterCreateMb: number;
  runMs?: number[];
  runCpuMs?: number[];
  firstRunMs?: number;
  stepCpuMs?: number[];
  stepMs?: number[];
  firstStepMs?: number;
  unetMsPerCall?: number;
  decodeMs?: number;
}

function child(
  mode: 'raw' | 'pipeline',
  dir: string,
  tuning: SessionTuning,
  extra: Record<string, number>,
  threads = THREADS,
) {
  const load = loadavg()[0] as number;
  const out = execFileSync(
    process.execPath,
    ['--import', 'tsx', 'bench/sd14-child.ts', JSON.stringify({ mode, dir, threads, tuning, ...extra })],
    { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], maxBuffer: 1 << 20 },
  );
  const line = out.trim().split('\n').at(-1) as string;
  return {
    ...(JSON.parse(line) as ChildResult),
    loadBefore: round(load, 3),
    loadAfter: round(loadavg()[0] as number, 3),
  };
}

const label = (t: SessionTuning) =>
  `arena ${t.memArena ? 'on' : 'off'}, memory pattern ${t.memPattern ? 'on' : 'off'}, optimization ${t.optimization ?? 'all'}, prepack ${t.prepack === false ? 'off' : 'on'}`;

async function run(): Promise<BenchResult[]> {
  const model = ensureSd14BenchModel();
  const results: BenchResult[] = [];
  try {
    const chosen: SessionTuning = { ...SESSION_MEMORY_DEFAULTS };
    const raw = child('raw', model.dir, chosen, { runs: RAW_RUNS });
    const rawStep = summarize('', 'ms', raw.runMs ?? []).median;
    const rawCpu = summarize('', 'ms', raw.runCpuMs ?? []).median;
    results.push(
      summarize('sd14: raw onnxruntime UNet step (batch 2, 4×64×64 latents)', 'ms', raw.runMs ?? [], {
        details: {
          sessionOptions: label(chosen),
          threads: THREADS,
          createMs: round(raw.createMs),
          firstRunMs: round(raw.firstRunMs ?? 0),
          cpuMsPerRun: rawCpu,
          peakRssMb: raw.peakRssMb,
          rssAfterCreateMb: raw.afterCreateMb,
          parameters: model.parameterCount,
          weightBytes: model.weightBytes,
          buildMs: round(model.buildMs),
          loadAverageBefore: raw.loadBefore,
          loadAverageAfter: raw.loadAfter,
        },
      }),
    );
    const pipe = child('pipeline', model.dir, chosen, { steps: PIPELINE_STEPS });
    const step = summarize('', 'ms', pipe.stepMs ?? []).median;
    const ratio = step / rawStep;
    const stepCpu = summarize('', 'ms', pipe.stepCpuMs ?? []).median;
    results.push(
      summarize('sd14: pipeline denoising step (512×512, guidance 7.5)', 'ms', pipe.stepMs ?? [], {
        reference: { name: 'raw onnxruntime session run, same inputs (separate process)', median: rawStep, unit: 'ms' },
        target: '<= 1.05 × the raw session run',
        meetsTarget: ratio <= 1.05,
        details: {
          ratio: round(ratio),
          cpuMsPerStep: stepCpu,
          cpuRatio: round(stepCpu / rawCpu),
          unetMsPerCallInsideLoop: round(pipe.unetMsPerCall ?? 0),
          loopOverUnetInside: round(step / (pipe.unetMsPerCall ?? step)),
          firstStepMs: round(pipe.firstStepMs ?? 0),
          loadAverageBefore: pipe.loadBefore,
          loadAverageAfter: pipe.loadAfter,
        },
      }),
    );
    results.push({
      ...summarize('sd14: peak RSS rendering one 512×512 image (pipeline, one process)', 'MB', [pipe.peakRssMb]),
      target: `<= ${RSS_TARGET_MB} MB (8 GiB)`,
      meetsTarget: pipe.peakRssMb <= RSS_TARGET_MB,
      details: {
        sessionOptions: label(chosen),
        rssAfterCreateMb: pipe.afterCreateMb,
        createMs: round(pipe.createMs),
        decodeMs: round(pipe.decodeMs ?? 0),
        steps: PIPELINE_STEPS,
        components: 'SD 1.4 UNet (random weights); tiny text encoder (d = 768) and 8-channel VAE decoder',
      },
    });
    if (process.env.SD14_BENCH_SWEEP === '1') {
      const variants = (
        [
          { memArena: true, memPattern: true, prepack: true },
          { memArena: false, memPattern: true, prepack: true },
          { memArena: true, memPattern: false, prepack: true },
          { memArena: false, memPattern: false, prepack: true },
          { memArena: false, memPattern: false, prepack: false },
          { memArena: false, memPattern: true, prepack: true, optimization: 'extended' },
          { memArena: false, memPattern: true, prepack: true, optimization: 'basic' },
        ] satisfies SessionTuning[]
      )
        .filter((v) => label(v) !== label(chosen))
        .map((tuning): { tuning: SessionTuning; threads: number } => ({ tuning, threads: THREADS }));
      // and the chosen options with one intra-op thread (two workers on two cores would each have one)
      variants.push({ tuning: chosen, threads: 1 });
      for (const { tuning: v, threads } of variants) {
        const r = child('raw', model.dir, v, { runs: 1 }, threads);
        results.push(
          summarize(
            `sd14: raw UNet step, ${label(v)}, ${threads} thread${threads > 1 ? 's' : ''}`,
            'ms',
            r.runMs ?? [],
            {
              details: {
                peakRssMb: r.peakRssMb,
                rssAfterCreateMb: r.afterCreateMb,
                createMs: round(r.createMs),
                firstRunMs: round(r.firstRunMs ?? 0),
                cpuMsPerRun: summarize('', 'ms', r.runCpuMs ?? []).median,
                loadAverageBefore: r.loadBefore,
                loadAverageAfter: r.loadAfter,
              },
            },
          ),
        );
      }
    }
  } finally {
    if (process.env.SD14_BENCH_KEEP !== '1') removeSd14BenchModel();
  }
  return results;
}

export const benchmarks: Benchmark[] = [
  {
    name: 'sd14: real-scale UNet step and image peak RSS',
    skip: () =>
      totalmem() < 12 * 2 ** 30
        ? `needs >= 12 GiB of memory (this machine has ${Math.round(totalmem() / 2 ** 30)} GiB): the SD 1.4 UNet holds 3.4 GB of weights`
        : undefined,
    run,
  },
];
