/**
 * Benchmark harness: every bench module exports `benchmarks: Benchmark[]`; `npm run bench` runs them
 * (or those whose name contains one of the CLI arguments), prints ONE JSON document and writes it to
 * outputs/bench.json. Figures are medians of several runs (these machines are noisy).
 */
export interface BenchResult {
  name: string;
  unit: string;
  median: number;
  min: number;
  max: number;
  runs: number;
  /** A figure to compare against (e.g. the reference implementation's time), when one is asked for. */
  reference?: { name: string; median: number; unit: string };
  /** The target as stated by the issue, e.g. "<= 100 ms". */
  target?: string;
  /** Whether the target holds, when there is one. */
  meetsTarget?: boolean;
  /** Extra measured facts (peak RSS, sizes, ratios). */
  details?: Record<string, number | string | boolean>;
}

export interface Benchmark {
  name: string;
  /** Skip with this reason (e.g. an env var not set) instead of running. */
  skip?: () => string | undefined;
  run: () => Promise<BenchResult[]>;
}

/** Time `fn` `runs` times after `warmup` untimed calls; returns the samples in ms. */
export async function timeRuns(fn: () => unknown | Promise<unknown>, runs: number, warmup = 1): Promise<number[]> {
  for (let i = 0; i < warmup; i++) await fn();
  const samples: number[] = [];
  for (let i = 0; i < runs; i++) {
    const t0 = process.hrtime.bigint();
    await fn();
    samples.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  return samples;
}

export function summarize(
  name: string,
  unit: string,
  samples: number[],
  extra: Partial<BenchResult> = {},
): BenchResult {
  const sorted = [...samples].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  const median =
    sorted.length % 2 ? (sorted[mid] as number) : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2;
  return {
    name,
    unit,
    median: round(median),
    min: round(sorted[0] as number),
    max: round(sorted[sorted.length - 1] as number),
    runs: samples.length,
    ...extra,
  };
}

export function round(x: number, digits = 4): number {
  return Number.isFinite(x) ? Number(x.toPrecision(digits)) : x;
}

/** Peak resident set size of this process so far, in MB (Linux: VmHWM; else maxRSS). */
export function peakRssMb(): number {
  return round(process.resourceUsage().maxRSS / 1024);
}
