/**
 * `npm run bench [filter...]`: runs the benchmark modules listed in MODULES, prints one JSON document
 * and writes it to outputs/bench.json (temporary file, then rename).
 */
import { mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import type { Benchmark, BenchResult } from './harness.js';

/** Each entry: a module path exporting `benchmarks: Benchmark[]`. */
const MODULES: string[] = [
  './export.ts',
  './edit.ts',
  './generate.ts',
  './audit.ts',
  './demo.ts',
  './debias.ts',
  './sd14.ts',
  './preprocess.ts',
  './apply.ts',
  './queue.ts',
  './onnx-open.ts',
];

const filters = process.argv.slice(2);
const results: BenchResult[] = [];
const skipped: { name: string; reason: string }[] = [];
for (const modulePath of MODULES) {
  const { benchmarks } = (await import(modulePath)) as { benchmarks: Benchmark[] };
  for (const bench of benchmarks) {
    if (filters.length && !filters.some((f) => bench.name.includes(f))) continue;
    const reason = bench.skip?.();
    if (reason) {
      skipped.push({ name: bench.name, reason });
      continue;
    }
    process.stderr.write(`bench: ${bench.name}...\n`);
    results.push(...(await bench.run()));
  }
}
const doc = {
  tool: 'time-debias',
  date: new Date().toISOString(),
  machine: { cpus: cpus().length, cpu: cpus()[0]?.model ?? 'unknown', node: process.version },
  results,
  skipped,
};
const json = `${JSON.stringify(doc, null, 2)}\n`;
process.stdout.write(json);
mkdirSync('outputs', { recursive: true });
writeFileSync('outputs/bench.json.tmp', json);
renameSync('outputs/bench.json.tmp', 'outputs/bench.json');
