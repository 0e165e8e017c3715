/**
 * `time-debias debias --config FILE [--dry-run] [--restart] [--export-partial] [--json]`: the main
 * job. Parses, loads the config, opens the world (the embedded demo where the config says "demo"),
 * calls the library, renders; exit code 9 when the tolerance was not reached, 10 when the job finished
 * but the held-out after audit puts some edited profession outside target ± tolerance.
 */
import type { Argv, CommandModule } from 'yargs';
import { validatePreprocess } from '../../classify/preprocess-pil.js';
import { loadConfig } from '../../debias/config.js';
import { runDebiasJob } from '../../debias/job.js';
import { type DemoFolders, openJobWorld } from '../../debias/open.js';
import { planDebias, renderPlan } from '../../debias/plan.js';
import type { DebiasStatus } from '../../debias/types.js';
import { nativeSizeWarning } from '../../generate/geometry.js';
import { parseQueueUrl } from '../../queue/connection.js';
import { renderDebiasTable, writeDebiasReports } from '../../report/debias.js';
import { EXIT } from '../exit.js';
import { configRunNameOf, flagOf, relabelForUser } from '../fields.js';

interface DebiasArgs {
  config: string;
  dryRun: boolean;
  restart: boolean;
  exportPartial: boolean;
  json: boolean;
  quiet: boolean;
  preprocess?: string;
  queue?: string;
}

/** The demo world's folders, built (or taken from the cache) only when a config names "demo". */
export async function demoFoldersFor(config: {
  model: string;
  classifier: { path: string };
  professions: { list: string };
}): Promise<DemoFolders | undefined> {
  if (config.model !== 'demo' && config.classifier.path !== 'demo' && config.professions.list !== 'demo')
    return undefined;
  const { ensureDemoWorld } = await import('../../demo/world.js');
  const world = ensureDemoWorld();
  return { modelDir: world.modelDir, classifierDir: world.classifierDir, professions: world.professions };
}

/** 0 complete; 9 tolerance not reached in tuning/verification; 10 done, but held-out parity not reached. */
export function debiasExitCode(status: DebiasStatus): number {
  if (status === 'tolerance-not-reached') return EXIT.notReached;
  if (status === 'held-out-parity-not-reached') return EXIT.heldOutNotReached;
  return EXIT.ok;
}

export const debiasCommand: CommandModule<object, DebiasArgs> = {
  command: 'debias',
  describe: 'Run a debias job from a config: audit, tune per profession, one joint edit, export, audit again',
  builder: (yargs: Argv) =>
    yargs
      .option('config', { type: 'string', demandOption: true, describe: 'Job config (JSON, see configs/schema.json)' })
      .option('dry-run', {
        type: 'boolean',
        default: false,
        describe: 'Print the pairs, rows, image budget and a time estimate; generate nothing',
      })
      .option('restart', {
        type: 'boolean',
        default: false,
        describe: 'Discard the run folder of this config and start over',
      })
      .option('export-partial', {
        type: 'boolean',
        default: false,
        describe: 'Export the model even when some profession did not reach the tolerance',
      })
      .option('json', { type: 'boolean', default: false, describe: 'Print the result as JSON' })
      .option('queue', {
        type: 'string',
        describe:
          "redis://[user:pass@]HOST:PORT[/DB] (rediss:// for TLS): render and classify every image on `time-debias worker`s (overrides the config's queue)",
      })
      .option('quiet', { type: 'boolean', default: false, describe: 'No progress lines on stderr' })
      .option('preprocess', {
        type: 'string',
        describe: 'Classifier image preprocessing, transformers or pil (overrides config classifier.preprocess)',
      })
      .example('$0 debias --config configs/demo.json', 'the embedded demo, end to end')
      .example(
        '$0 debias --config configs/sd14-winobias35.json --dry-run',
        'what the job would do',
      ) as unknown as Argv<DebiasArgs>,
  handler: async (args) => {
    const config = loadConfig(args.config);
    // The two flags that override a config value: their errors name the flag the user typed, not the config key.
    try {
      if (args.preprocess !== undefined) config.classifier.preprocess = validatePreprocess(args.preprocess);
      if (args.queue !== undefined) {
        parseQueueUrl(args.queue);
        config.queue = args.queue;
      }
    } catch (error) {
      throw relabelForUser(error, flagOf);
    }
    // Library parameters in log lines and notes: config paths, or the flags the config has not.
    const nameOf = configRunNameOf;
    const opened = await openJobWorld(config, await demoFoldersFor(config));
    const log = args.quiet ? undefined : (line: string) => process.stderr.write(`${line}\n`);
    if (opened.config.generation.height === undefined || opened.config.generation.width === undefined) {
      const warning = nativeSizeWarning(opened.world.pipeline.nativeSize, nameOf);
      if (warning) process.stderr.write(`warning: ${warning}\n`);
    }
    try {
      if (args.dryRun) {
        const queueWorkers = opened.world.queue ? await opened.world.queue.workerCount() : undefined;
        const plan = await planDebias(opened.config, opened.world, { queueWorkers });
        process.stdout.write(args.json ? `${JSON.stringify(plan, null, 2)}\n` : renderPlan(plan, nameOf));
        return;
      }
      const result = await runDebiasJob(opened.config, opened.world, {
        restart: args.restart,
        exportPartial: args.exportPartial,
        log,
        nameOf,
      });
      await writeDebiasReports(result, nameOf);
      process.stdout.write(
        args.json
          ? `${JSON.stringify(result, null, 2)}\n`
          : `${renderDebiasTable(result, nameOf)}\n\nreport: ${result.runDir}/report.md\n`,
      );
      process.exitCode = debiasExitCode(result.status);
    } finally {
      await opened.dispose();
    }
  },
};
