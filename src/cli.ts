/**
 * The `time-debias` command line: yargs parses, the library computes, src/report renders. Each
 * command lives in src/cli/commands/<name>.ts as a yargs CommandModule; add it to COMMANDS below.
 */
import yargs, { type CommandModule } from 'yargs';
import { hideBin } from 'yargs/helpers';
import { auditCommand } from './cli/commands/audit.js';
import { classifyCommand } from './cli/commands/classify.js';
import { compareCommand } from './cli/commands/compare.js';
import { debiasCommand } from './cli/commands/debias.js';
import { editCommand } from './cli/commands/edit.js';
import { generateCommand } from './cli/commands/generate.js';
import { inspectCommand } from './cli/commands/inspect.js';
import { exitCodeFor } from './cli/exit.js';

const COMMANDS: CommandModule<object, any>[] = [
  auditCommand,
  classifyCommand,
  compareCommand,
  debiasCommand,
  editCommand,
  generateCommand,
  inspectCommand,
];

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
  for (const command of COMMANDS) parser.command(command);
  try {
    await parser.parseAsync();
  } catch (error) {
    const e = error as Error;
    process.stderr.write(`time-debias: ${e.name && e.name !== 'Error' ? `${e.name}: ` : ''}${e.message}\n`);
    if (process.env.TIME_DEBIAS_DEBUG && e.stack) process.stderr.write(`${e.stack}\n`);
    process.exit(exitCodeFor(error));
  }
}

await main(hideBin(process.argv));
