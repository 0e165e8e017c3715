/**
 * The `time-debias` command line: yargs parses, the library computes, src/report renders. Each
 * command lives in src/cli/commands/<name>.ts as a yargs CommandModule; add it to COMMANDS below.
 * Only the module of the command being run is imported (the others pull in onnxruntime,
 * transformers.js and the pipeline, about a second of start-up); help and unknown names load all.
 */
import yargs, { type CommandModule } from 'yargs';
import { hideBin } from 'yargs/helpers';
import { exitCodeFor } from './cli/exit.js';
import { configRunNameOf, flagOf, relabelForUser } from './cli/fields.js';

// biome-ignore lint/suspicious/noExplicitAny: each command module has its own argument type
type Loader = () => Promise<CommandModule<object, any>>;

const COMMANDS: Record<string, Loader> = {
  apply: async () => (await import('./cli/commands/apply.js')).applyCommand,
  audit: async () => (await import('./cli/commands/audit.js')).auditCommand,
  classify: async () => (await import('./cli/commands/classify.js')).classifyCommand,
  compare: async () => (await import('./cli/commands/compare.js')).compareCommand,
  debias: async () => (await import('./cli/commands/debias.js')).debiasCommand,
  edit: async () => (await import('./cli/commands/edit.js')).editCommand,
  'export-lora': async () => (await import('./cli/commands/export-lora.js')).exportLoraCommand,
  evaluate: async () => (await import('./cli/commands/evaluate.js')).evaluateCommand,
  generate: async () => (await import('./cli/commands/generate.js')).generateCommand,
  inspect: async () => (await import('./cli/commands/inspect.js')).inspectCommand,
  worker: async () => (await import('./cli/commands/worker.js')).workerCommand,
};

export async function main(argv: string[]): Promise<void> {
  const parser = yargs(argv)
    .scriptName('time-debias')
    .usage('$0 <command> [options]')
    .strict()
    .demandCommand(1, 'Name a command (see --help).')
    .recommendCommands()
    .help()
    .alias('h', 'help')
    .version()
    .wrap(Math.min(110, process.stdout.columns || 110))
    .fail((msg, err) => {
      if (err) throw err;
      process.stderr.write(`time-debias: ${msg}\nRun 'time-debias --help' for usage.\n`);
      process.exit(2);
    });
  try {
    const first = argv.find((a) => !a.startsWith('-'));
    const loaders = first && first in COMMANDS ? [COMMANDS[first] as Loader] : Object.values(COMMANDS);
    for (const load of loaders) parser.command(await load());
    await parser.parseAsync();
  } catch (error) {
    // Library errors name the library parameter (`steps`); the user typed a flag (`--steps`) or, in a
    // config-driven run, wrote a config key (`config.generation.steps`) — or a flag the config does
    // not have (`--restart`).
    const configDriven = argv.some((a) => a === '--config' || a.startsWith('--config='));
    const e = relabelForUser(error, configDriven ? configRunNameOf : flagOf) as Error;
    process.stderr.write(`time-debias: ${e.name && e.name !== 'Error' ? `${e.name}: ` : ''}${e.message}\n`);
    if (process.env.TIME_DEBIAS_DEBUG && e.stack) process.stderr.write(`${e.stack}\n`);
    process.exit(exitCodeFor(error));
  }
}

await main(hideBin(process.argv));
