/**
 * `time-debias compare RUN_A RUN_B`: before/after report of two audit run folders, paired per
 * profession (share change with Newcombe interval and significance, Δ before → after, mean Δ change
 * with a bootstrap interval). Parses, calls compareAudits (src/audit), writes and renders reports.
 */
import { basename, join, resolve } from 'node:path';
import type { Argv, CommandModule } from 'yargs';
import { compareAudits } from '../../audit/compare.js';
import { readAudit } from '../../audit/run.js';
import { checkWorkBounds } from '../../generate/bounds.js';
import { renderCompareTable, writeCompareReports } from '../../report/audit-report.js';
import { UsageError } from '../../util/errors.js';

interface CompareArgs {
  before: string;
  after: string;
  out?: string;
  bootstrap: number;
  'bootstrap-seed': number;
  json: boolean;
}

export const compareCommand: CommandModule<object, CompareArgs> = {
  command: 'compare <before> <after>',
  describe: 'Before/after report of two audit runs: per-profession change with intervals and significance',
  builder: (yargs: Argv) =>
    yargs
      .positional('before', { type: 'string', demandOption: true, describe: 'Audit run folder (before)' })
      .positional('after', { type: 'string', demandOption: true, describe: 'Audit run folder (after)' })
      .option('out', { type: 'string', describe: 'Report folder (default outputs/compare-<before>-vs-<after>)' })
      .option('bootstrap', { type: 'number', default: 2000, describe: 'Bootstrap resamples for the mean Δ change' })
      .option('bootstrap-seed', { type: 'number', default: 1, describe: 'Seed of the bootstrap' })
      .option('json', { type: 'boolean', default: false, describe: 'Print the comparison as JSON' })
      .example('$0 compare outputs/audit-base outputs/audit-debiased', '') as unknown as Argv<CompareArgs>,
  handler: (argv) => {
    checkWorkBounds({ bootstrap: argv.bootstrap }, { error: (m, o) => new UsageError(m, o) });
    const before = readAudit(argv.before);
    const after = readAudit(argv.after);
    const c = compareAudits(before, after, { bootstrap: { samples: argv.bootstrap, seed: argv['bootstrap-seed'] } });
    const names = { before: basename(resolve(argv.before)), after: basename(resolve(argv.after)) };
    const out = argv.out ?? join('outputs', `compare-${names.before}-vs-${names.after}`);
    const written = writeCompareReports(out, c, names);
    if (argv.json) process.stdout.write(`${JSON.stringify({ ...c, out, reports: written.files }, null, 2)}\n`);
    else
      process.stdout.write(`${renderCompareTable(c)}\nreport: ${out}/compare.html (also compare.md, compare.json)\n`);
  },
};
