/**
 * `npm run demo [-- --restart] [-- --json] [-- --config FILE]`: the embedded demo, end to end.
 *
 * 1. Builds the demo world (src/demo/world.ts) unless the cache already holds this generator
 *    version: a designed tiny Stable Diffusion model and CLIP classifier with a graded gender bias.
 * 2. Runs the main job on it with configs/demo.json, exactly as `time-debias debias --config
 *    configs/demo.json` does: audit before → per-profession tuning → one joint TIME edit → export →
 *    audit after on held-out prompts and seeds (and the explicitly gendered and unrelated prompts).
 * 3. Prints the before/after table (share female per profession with its 95 % interval, mean Δ) and
 *    where the report and the debiased model were written (under outputs/).
 *
 * A thin entry point like the CLI: it parses, calls the library and renders.
 */
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { EXIT, exitCodeFor } from '../cli/exit.js';
import { loadConfig } from '../debias/config.js';
import { runDebiasJob } from '../debias/job.js';
import { openJobWorld } from '../debias/open.js';
import { renderDebiasTable, writeDebiasReports } from '../debias/report.js';
import { ensureDemoWorld } from './world.js';

const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

interface DemoArgs {
  config: string;
  restart: boolean;
  json: boolean;
}

function parseArgs(argv: readonly string[]): DemoArgs {
  const args: DemoArgs = { config: join(REPO_ROOT, 'configs', 'demo.json'), restart: false, json: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--restart') args.restart = true;
    else if (a === '--json') args.json = true;
    else if (a === '--config' && argv[i + 1]) args.config = resolve(argv[++i] as string);
    else if (a === '--help' || a === '-h') {
      process.stdout.write('usage: npm run demo [-- --restart] [-- --json] [-- --config FILE]\n');
      process.exit(0);
    } else {
      process.stderr.write(`demo: unknown argument ${JSON.stringify(a)} (known: --restart, --json, --config FILE)\n`);
      process.exit(2);
    }
  }
  return args;
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  const log = (line: string) => process.stderr.write(`${line}\n`);
  const t0 = performance.now();
  const world = ensureDemoWorld();
  log(
    `demo world ${world.built ? 'built' : 'from cache'} in ${Math.round(performance.now() - t0)} ms: ${world.root}\n` +
      `  model: ${world.model.sites.length} cross-attention sites, d = ${world.model.d}; classifier: ${world.classifierDir}`,
  );
  const config = loadConfig(args.config);
  const opened = await openJobWorld(config, {
    modelDir: world.modelDir,
    classifierDir: world.classifierDir,
    professions: world.professions,
  });
  try {
    const result = await runDebiasJob(opened.config, opened.world, { restart: args.restart, log });
    const written = writeDebiasReports(result);
    if (args.json) {
      process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
    } else {
      process.stdout.write(`${renderDebiasTable(result)}\n\n`);
      process.stdout.write(`report: ${written.join(', ') || `${result.runDir}/report.md`}\n`);
      if (result.exported) process.stdout.write(`debiased model: ${result.exported}\n`);
      process.stdout.write(`total: ${((performance.now() - t0) / 1000).toFixed(1)} s\n`);
    }
    if (result.status !== 'complete') process.exitCode = EXIT.notReached;
  } finally {
    await opened.dispose();
  }
}

main().catch((error: unknown) => {
  process.stderr.write(`demo: ${(error as Error)?.message ?? String(error)}\n`);
  process.exitCode = exitCodeFor(error);
});
