/**
 * Reports of a TIMED evaluation, rendered from its result only (evaluate.json): the tables the CLI
 * prints, report.md, report.html and the λ plot (lambda.svg: the three metrics against λ on a log
 * axis, with their bootstrap intervals, and the before values as dashed lines). Every table is one
 * TableSpec written by report/text (terminal, Markdown or HTML); report.md and report.html are one
 * list of blocks written two ways, so they hold the same text and the same rows.
 *
 * (The result's types come from src/evaluate, the floor that produces it: type-only imports.)
 */
import { join } from 'node:path';
import type { MetricName } from '../evaluate/metrics.js';
import type { EvaluatedRow, EvaluateResult } from '../evaluate/run.js';
import { writeFileAtomic } from '../util/atomic.js';
import { escapeXml } from './svg.js';
import { htmlTable, markdownTable, pct, pValue, shareText, type TableSpec, textTable } from './text/index.js';

const COLORS: Record<MetricName, string> = { efficacy: '#c2185b', generality: '#1e6fd9', specificity: '#2e9d4f' };
/** The metrics in the order every table, the plot and its legend show them (COLORS names each once). */
const METRICS = Object.keys(COLORS) as MetricName[];

/** A metric with its interval, "96.7% [95.0%, 100.0%]"; "–" without a value. */
function metric(m: { value: number | null; lower: number | null; upper: number | null } | undefined): string {
  return shareText(m ? { p: m.value, lower: m.lower, upper: m.upper } : null);
}

/** The summary: per metric, before → after for every λ (mean over rows, 95 % bootstrap over rows). */
function summaryTable(r: EvaluateResult): TableSpec {
  return {
    header: ['metric', 'before [95%]', ...r.summary.after.map((a) => `after λ=${a.lambda} [95%]`)],
    rows: METRICS.map((m) => [m, metric(r.summary.before[m]), ...r.summary.after.map((a) => metric(a.metrics[m]))]),
  };
}

function summaryNote(r: EvaluateResult): string {
  const skipped = r.issues.length ? `; ${r.issues.length} bad rows left out (see report)` : '';
  return `${r.summary.rows} TIMED rows (${r.mode}${r.augment ? ', augmented' : ''}), ${r.images} images per prompt (seeds ${r.seeds.start}–${r.seeds.start + r.seeds.perRow - 1}, ${r.seeds.count} per prompt, the same before and after)${skipped}`;
}

/** Per row: the three metrics before → after at one λ. */
function rowsTable(r: EvaluateResult, lambdaIndex: number): TableSpec {
  const l = r.lambdas[lambdaIndex];
  return {
    header: ['row', 'old → new', `efficacy (λ=${l})`, `generality (λ=${l})`, `specificity (λ=${l})`],
    rows: r.rows.map((row) => {
      const after = row.after[lambdaIndex]?.result.metrics;
      const cell = (m: MetricName) => `${pct(row.before.metrics[m].value)} → ${pct(after?.[m].value)}`;
      return [String(row.index), `${row.old} → ${row.new}`, ...METRICS.map(cell)];
    }),
    align: ['left', 'left'],
  };
}

/** The λ the rows are shown at: TIME's default 0.1 when it was evaluated, else the first. */
export function shownLambdaIndex(r: EvaluateResult): number {
  return Math.max(0, r.lambdas.indexOf(0.1));
}

/** The summary table the CLI prints, with its note. */
export function renderSummaryTable(r: EvaluateResult): string {
  return [...textTable({ ...summaryTable(r), rule: '─' }), '', summaryNote(r)].join('\n');
}

/** The per-row table the CLI prints (the first λ unless given). */
export function renderRowsTable(r: EvaluateResult, lambdaIndex = 0): string {
  // the terminal right-aligns every column but the first (as it always printed)
  return textTable({ ...rowsTable(r, lambdaIndex), align: undefined, rule: '─' }).join('\n');
}

/** Line plot of the three metrics against λ (log axis), bootstrap bands, before values dashed. */
export function lambdaPlot(r: EvaluateResult): string {
  const W = 560;
  const H = 340;
  const left = 56;
  const right = 150;
  const top = 40;
  const bottom = 48;
  const pw = W - left - right;
  const ph = H - top - bottom;
  const logs = r.lambdas.map((l) => Math.log10(l));
  const lo = Math.min(...logs);
  const hi = Math.max(...logs);
  const span = hi - lo || 1;
  const x = (l: number) => left + ((Math.log10(l) - lo) / span) * pw;
  const y = (v: number) => top + (1 - v) * ph;
  const f = (v: number) => v.toFixed(1);
  const parts: string[] = [];
  const title = `TIMED metrics vs λ (${r.summary.rows} rows, ${r.images} images per prompt)`;
  parts.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" role="img" aria-label="${escapeXml(title)}" font-family="system-ui, -apple-system, 'Segoe UI', sans-serif" font-size="12">`,
    `<title>${escapeXml(title)}</title>`,
    `<rect width="${W}" height="${H}" fill="#ffffff"/>`,
    `<text x="${left + pw / 2}" y="20" text-anchor="middle" font-size="14" font-weight="600">${escapeXml(title)}</text>`,
  );
  for (const v of [0, 0.25, 0.5, 0.75, 1]) {
    parts.push(`<line x1="${left}" x2="${left + pw}" y1="${f(y(v))}" y2="${f(y(v))}" stroke="#e3e3e3"/>`);
    parts.push(`<text x="${left - 6}" y="${f(y(v) + 4)}" text-anchor="end">${Math.round(v * 100)}%</text>`);
  }
  for (const l of r.lambdas) {
    parts.push(`<line x1="${f(x(l))}" x2="${f(x(l))}" y1="${top + ph}" y2="${top + ph + 4}" stroke="#555"/>`);
    parts.push(`<text x="${f(x(l))}" y="${top + ph + 18}" text-anchor="middle">${l}</text>`);
  }
  parts.push(`<text x="${left + pw / 2}" y="${H - 10}" text-anchor="middle">λ (log scale)</text>`);
  parts.push(`<rect x="${left}" y="${top}" width="${pw}" height="${ph}" fill="none" stroke="#999"/>`);
  METRICS.forEach((m, i) => {
    const color = COLORS[m];
    const pts = r.summary.after
      .map((a) => ({ l: a.lambda, v: a.metrics[m].value, lo: a.metrics[m].lower, hi: a.metrics[m].upper }))
      .filter((p) => p.v !== null)
      .sort((a, b) => a.l - b.l);
    if (pts.length > 1) {
      const band = [
        ...pts.map((p) => `${f(x(p.l))},${f(y(p.hi ?? (p.v as number)))}`),
        ...[...pts].reverse().map((p) => `${f(x(p.l))},${f(y(p.lo ?? (p.v as number)))}`),
      ].join(' ');
      parts.push(`<polygon points="${band}" fill="${color}" fill-opacity="0.12" stroke="none"/>`);
    }
    parts.push(
      `<polyline points="${pts.map((p) => `${f(x(p.l))},${f(y(p.v as number))}`).join(' ')}" fill="none" stroke="${color}" stroke-width="2"/>`,
    );
    for (const p of pts) parts.push(`<circle cx="${f(x(p.l))}" cy="${f(y(p.v as number))}" r="3.5" fill="${color}"/>`);
    const before = r.summary.before[m].value;
    if (before !== null)
      parts.push(
        `<line x1="${left}" x2="${left + pw}" y1="${f(y(before))}" y2="${f(y(before))}" stroke="${color}" stroke-dasharray="5 4" stroke-opacity="0.7"/>`,
      );
    const ly = top + 12 + i * 20;
    parts.push(
      `<line x1="${left + pw + 14}" x2="${left + pw + 34}" y1="${ly}" y2="${ly}" stroke="${color}" stroke-width="2"/>`,
    );
    parts.push(`<text x="${left + pw + 40}" y="${ly + 4}">${m}</text>`);
  });
  const ly = top + 12 + 3 * 20;
  parts.push(
    `<line x1="${left + pw + 14}" x2="${left + pw + 34}" y1="${ly}" y2="${ly}" stroke="#555" stroke-dasharray="5 4"/>`,
    `<text x="${left + pw + 40}" y="${ly + 4}">before the edit</text>`,
    '</svg>',
  );
  return `${parts.join('\n')}\n`;
}

/** A row's prompts: images classified as the edited text, k of n, before and at every λ. */
function promptTable(row: EvaluatedRow): TableSpec {
  return {
    header: ['prompt', 'classified against', 'before', ...row.after.map((a) => `after λ=${a.lambda}`)],
    rows: row.before.prompts.map((p, i) => [
      `${p.role === 'source' ? 'source' : `${p.role} ${p.position}`}: ${p.prompt}`,
      p.edited,
      `${p.k}/${p.n}`,
      ...row.after.map((a) => {
        const q = a.result.prompts[i];
        return q ? `${q.k}/${q.n}` : '–';
      }),
    ]),
    align: ['left', 'left'],
  };
}

/** A row's metrics before and at every λ (Wilson intervals), the change at the first λ and its test. */
function rowMetricTable(row: EvaluatedRow): TableSpec {
  const first = row.after[0];
  return {
    header: [
      'metric',
      'before [95% Wilson]',
      ...row.after.map((a) => `after λ=${a.lambda}`),
      'change (first λ) [95%]',
      'p',
    ],
    rows: METRICS.map((m) => {
      const ch = first?.changes.find((c) => c.metric === m)?.change;
      const p = ch ? (ch.paired ? ch.paired.pValue : ch.pValue) : null;
      return [
        m,
        metric(row.before.metrics[m]),
        ...row.after.map((a) => metric(a.result.metrics[m])),
        ch ? shareText({ p: ch.difference, lower: ch.lower, upper: ch.upper }) : '–',
        p === null ? '–' : `${pValue(p)}${ch?.significant ? ' *' : ''}`,
      ];
    }),
  };
}

const COLORS_NOTE = 'pink = classified as the prompt itself, blue = classified as its edited text';

/** One piece of report.md / report.html; text may hold `code` spans. */
type Block =
  | { h: 1 | 2 | 3; text: string }
  | { p: string }
  | { list: string[] }
  | { table: TableSpec }
  | { image: string; alt: string };

function rowBlocks(row: EvaluatedRow): Block[] {
  const blocks: Block[] = [
    { h: 3, text: `Row ${row.index} (line ${row.line}): ${row.old} → ${row.new}` },
    { table: promptTable(row) },
    { p: '(counts: images CLIP classified as the edited text, of N)' },
    { table: rowMetricTable(row) },
  ];
  for (const s of row.sheets)
    blocks.push(
      { image: s, alt: `row ${row.index} contact sheet` },
      {
        p: `Contact sheet \`${s}\`: lines in pairs before / after (same seeds) for the source, positive 1 and negative 1; frame ${COLORS_NOTE}.`,
      },
    );
  return blocks;
}

/** The report, once: report.md and report.html write these blocks. */
function reportBlocks(r: EvaluateResult): Block[] {
  const blocks: Block[] = [
    { h: 1, text: 'TIMED evaluation' },
    {
      p:
        `Dataset \`${r.dataset.file}\` (${r.dataset.rowCount} rows, ${r.dataset.selected.length} selected, ${r.summary.rows} evaluated); ` +
        `mode ${r.mode}${r.augment ? ' with the augmentations' : ''}; λ ${r.lambdas.join(', ')}; ${r.images} images per prompt, the same seeds before and after.`,
    },
    {
      p: "Efficacy: share of source-prompt images CLIP classifies as `new`; generality: share of the positives' images classified as their `gt`; specificity: share of the negatives' images NOT classified as their `gn` (Orgad et al. 2303.08084, Sec. 5). Means over rows with 95 % bootstrap intervals over rows.",
    },
    { table: summaryTable(r) },
    { p: summaryNote(r) },
  ];
  if (r.plot) blocks.push({ image: r.plot, alt: 'metrics vs λ' });
  blocks.push({ h: 2, text: 'Rows' }, { table: rowsTable(r, shownLambdaIndex(r)) });
  if (r.issues.length)
    blocks.push(
      { h: 2, text: 'Rows left out' },
      { list: r.issues.map((i) => `row ${i.index} (${i.kind}): ${i.message}`) },
    );
  for (const row of r.rows) blocks.push(...rowBlocks(row));
  blocks.push({ p: `fingerprint: \`${r.fingerprint}\`` });
  return blocks;
}

export function renderEvaluateMarkdown(r: EvaluateResult): string {
  const lines: string[] = [];
  for (const b of reportBlocks(r)) {
    if ('h' in b) lines.push(`${'#'.repeat(b.h)} ${b.text}`);
    else if ('p' in b) lines.push(b.p);
    else if ('list' in b) lines.push(...b.list.map((l) => `- ${l}`));
    else if ('table' in b) lines.push(...markdownTable(b.table));
    else lines.push(`![${b.alt}](${b.image})`);
    lines.push('');
  }
  return lines.join('\n');
}

/** Escaped text with its `code` spans as <code>. */
const inline = (s: string) => escapeXml(s).replace(/`([^`]+)`/g, '<code>$1</code>');

const CSS =
  'body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}table{border-collapse:collapse;margin:1em 0}' +
  'td,th{border:1px solid #ddd;padding:3px 8px;text-align:right}.l{text-align:left}th{background:#f3f4f6}img{max-width:100%}' +
  'code{background:#f3f4f6;padding:0 3px;border-radius:3px}';

export function renderEvaluateHtml(r: EvaluateResult): string {
  const out: string[] = [];
  for (const b of reportBlocks(r)) {
    if ('h' in b) out.push(`<h${b.h}>${escapeXml(b.text)}</h${b.h}>`);
    else if ('p' in b) out.push(`<p>${inline(b.p)}</p>`);
    else if ('list' in b) out.push(`<ul>${b.list.map((l) => `<li>${inline(l)}</li>`).join('')}</ul>`);
    else if ('table' in b) out.push(htmlTable(b.table));
    else out.push(`<p><img src="${escapeXml(b.image)}" alt="${escapeXml(b.alt)}"></p>`);
  }
  return [
    '<!doctype html>',
    `<html lang="en"><head><meta charset="utf-8"><title>TIMED evaluation</title><style>${CSS}</style></head><body>`,
    ...out,
    '</body></html>',
    '',
  ].join('\n');
}

/** Write report.md, report.html and (with several λ) lambda.svg into the run folder. */
export function writeEvaluateReports(runDir: string, r: EvaluateResult): string[] {
  const files: string[] = [];
  if (r.plot) {
    writeFileAtomic(join(runDir, r.plot), lambdaPlot(r));
    files.push(r.plot);
  }
  writeFileAtomic(join(runDir, 'report.md'), renderEvaluateMarkdown(r));
  writeFileAtomic(join(runDir, 'report.html'), renderEvaluateHtml(r));
  files.push('report.md', 'report.html');
  return files;
}
