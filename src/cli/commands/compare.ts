/**
 * `time-debias compare RUN_A RUN_B`: before/after report of two audit run folders, paired per
 * profession (share change with Newcombe interval and significance, Δ before → after, mean Δ change
 * with a bootstrap interval). Parses, calls compareAudits (src/audit), writes and renders reports.
 */
import { basename, join, resolve } from 'node:path';
import type { Argv, CommandModule } from 'yargs';
import { type Comparison, compareAudits } from '../../audit/compare.js';
import { readAudit } from '../../audit/run.js';
import { writeCompareReports } from '../../report/audit-report.js';

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

const pct = (x: number | null) => (x === null ? '–' : `${(100 * x).toFixed(1)}%`);

export function renderCompareTable(c: Comparison): string {
  const header = [
    'profession',
    `${c.targetClass} before`,
    'after',
    'change',
    '95% interval',
    'p',
    'Δ before',
    'Δ after',
  ];
  const rows = [...c.professions].sort((a, b) => (a.deltaChange ?? 0) - (b.deltaChange ?? 0));
  const body = rows.map((r) => {
    const p = r.change.paired ? r.change.paired.pValue : r.change.pValue;
    return [
      r.profession,
      pct(r.before.share.p),
      pct(r.after.share.p),
      pct(r.change.difference),
      `[${pct(r.change.lower)}, ${pct(r.change.upper)}]`,
      `${p < 0.001 ? '<0.001' : p.toFixed(3)}${r.change.significant ? ' *' : ''}`,
      r.before.delta.value?.toFixed(2) ?? '–',
      r.after.delta.value?.toFixed(2) ?? '–',
    ];
  });
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((b) => (b[i] as string).length)));
  const line = (cells: string[]) =>
    cells.map((x, i) => (i === 0 ? x.padEnd(widths[i] as number) : x.padStart(widths[i] as number))).join('  ');
  const m = c.summary.meanDelta;
  return [
    line(header),
    line(widths.map((w) => '-'.repeat(w))),
    ...body.map(line),
    '',
    `mean Δ ${m.before.toFixed(3)} → ${m.after.toFixed(3)} (change ${m.difference.toFixed(3)} [${m.lower.toFixed(3)}, ${m.upper.toFixed(3)}]); ` +
      `${c.summary.significant}/${c.summary.professions} significant (* p < 0.05, ${c.summary.paired ? 'McNemar, paired by prompt and seed' : 'two-proportion z'})`,
    '',
  ].join('\n');
}
