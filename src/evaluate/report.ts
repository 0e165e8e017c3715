/**
 * Reports of a TIMED evaluation, rendered from its result object only (evaluate.json): the text
 * summary the CLI prints, report.md, report.html and the λ plot (lambda.svg: the three metrics
 * against λ on a log axis, with their bootstrap intervals, and the before values as dashed lines).
 */
import { join } from 'node:path';
import { escapeXml } from '../report/svg.js';
import { writeFileAtomic } from '../util/atomic.js';
import { METRICS, type MetricName } from './metrics.js';
import type { EvaluatedRow, EvaluateResult } from './run.js';

const pct = (x: number | null | undefined) => (x === null || x === undefined ? '–' : `${(100 * x).toFixed(1)}%`);
const interval = (lo: number | null | undefined, hi: number | null | undefined) =>
  lo === null || lo === undefined || hi === null || hi === undefined ? '' : `[${pct(lo)}, ${pct(hi)}]`;

function table(header: string[], body: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((b) => (b[i] ?? '').length)));
  const line = (cells: string[]) =>
    cells.map((x, i) => (i === 0 ? x.padEnd(widths[i] as number) : x.padStart(widths[i] as number))).join('  ');
  return [line(header), line(widths.map((w) => '─'.repeat(w))), ...body.map(line)].join('\n');
}

/** The summary: per metric, before → after for every λ (mean over rows, 95 % bootstrap over rows). */
export function renderSummaryTable(r: EvaluateResult): string {
  const header = ['metric', 'before [95%]', ...r.summary.after.map((a) => `after λ=${a.lambda} [95%]`)];
  const body = METRICS.map((m) => [
    m,
    `${pct(r.summary.before[m].value)} ${interval(r.summary.before[m].lower, r.summary.before[m].upper)}`,
    ...r.summary.after.map((a) => `${pct(a.metrics[m].value)} ${interval(a.metrics[m].lower, a.metrics[m].upper)}`),
  ]);
  const skipped = r.issues.length ? `; ${r.issues.length} bad rows left out (see report)` : '';
  return [
    table(header, body),
    '',
    `${r.summary.rows} TIMED rows (${r.mode}${r.augment ? ', augmented' : ''}), ${r.images} images per prompt (seeds ${r.seeds.start}–${r.seeds.start + r.seeds.perRow - 1}, ${r.seeds.count} per prompt, the same before and after)${skipped}`,
  ].join('\n');
}

/** Per-row table: the three metrics before → after (first λ unless given). */
export function renderRowsTable(r: EvaluateResult, lambdaIndex = 0): string {
  const l = r.lambdas[lambdaIndex];
  const header = ['row', 'old → new', `efficacy (λ=${l})`, `generality (λ=${l})`, `specificity (λ=${l})`];
  const body = r.rows.map((row) => {
    const after = row.after[lambdaIndex]?.result.metrics;
    const cell = (m: MetricName) => `${pct(row.before.metrics[m].value)} → ${pct(after?.[m].value)}`;
    return [String(row.index), `${row.old} → ${row.new}`, cell('efficacy'), cell('generality'), cell('specificity')];
  });
  return table(header, body);
}

const COLORS: Record<MetricName, string> = { efficacy: '#c2185b', generality: '#1e6fd9', specificity: '#2e9d4f' };

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

function rowDetail(row: EvaluatedRow): string[] {
  const lines: string[] = [];
  lines.push(`### Row ${row.index} (line ${row.line}): ${row.old} → ${row.new}`, '');
  const header = ['prompt', 'classified against', 'before', ...row.after.map((a) => `after λ=${a.lambda}`)];
  const body = row.before.prompts.map((p, i) => [
    `${p.role === 'source' ? 'source' : `${p.role} ${p.position}`}: ${p.prompt}`,
    p.edited,
    `${p.k}/${p.n}`,
    ...row.after.map((a) => {
      const q = a.result.prompts[i];
      return q ? `${q.k}/${q.n}` : '–';
    }),
  ]);
  lines.push(
    `| ${header.join(' | ')} |`,
    `| ${header.map(() => '---').join(' | ')} |`,
    ...body.map((b) => `| ${b.join(' | ')} |`),
    '',
  );
  lines.push('(counts: images CLIP classified as the edited text, of N)', '');
  const mh = [
    'metric',
    'before [95% Wilson]',
    ...row.after.map((a) => `after λ=${a.lambda}`),
    'change (first λ) [95%]',
    'p',
  ];
  const first = row.after[0];
  const mb = METRICS.map((m) => {
    const ch = first?.changes.find((c) => c.metric === m)?.change;
    const p = ch ? (ch.paired ? ch.paired.pValue : ch.pValue) : null;
    return [
      m,
      `${pct(row.before.metrics[m].value)} ${interval(row.before.metrics[m].lower, row.before.metrics[m].upper)}`,
      ...row.after.map(
        (a) => `${pct(a.result.metrics[m].value)} ${interval(a.result.metrics[m].lower, a.result.metrics[m].upper)}`,
      ),
      ch ? `${pct(ch.difference)} ${interval(ch.lower, ch.upper)}` : '–',
      p === null ? '–' : `${p < 0.001 ? '<0.001' : p.toFixed(3)}${ch?.significant ? ' *' : ''}`,
    ];
  });
  lines.push(
    `| ${mh.join(' | ')} |`,
    `| ${mh.map(() => '---').join(' | ')} |`,
    ...mb.map((b) => `| ${b.join(' | ')} |`),
    '',
  );
  for (const s of row.sheets) {
    lines.push(
      `![row ${row.index} contact sheet](${s})`,
      '',
      `Contact sheet \`${s}\`: lines in pairs before / after (same seeds) for the source, positive 1 and negative 1; frame ${COLORS_NOTE}.`,
      '',
    );
  }
  return lines;
}

const COLORS_NOTE = 'pink = classified as the prompt itself, blue = classified as its edited text';

export function renderEvaluateMarkdown(r: EvaluateResult): string {
  const lines: string[] = [];
  lines.push('# TIMED evaluation', '');
  lines.push(
    `Dataset \`${r.dataset.file}\` (${r.dataset.rowCount} rows, ${r.dataset.selected.length} selected, ${r.summary.rows} evaluated); ` +
      `mode ${r.mode}${r.augment ? ' with the augmentations' : ''}; λ ${r.lambdas.join(', ')}; ${r.images} images per prompt, the same seeds before and after.`,
    '',
  );
  lines.push(
    "Efficacy: share of source-prompt images CLIP classifies as `new`; generality: share of the positives' images classified as their `gt`; specificity: share of the negatives' images NOT classified as their `gn` (Orgad et al. 2303.08084, Sec. 5). Means over rows with 95 % bootstrap intervals over rows.",
    '',
  );
  lines.push('```', renderSummaryTable(r), '```', '');
  if (r.plot) lines.push(`![metrics vs λ](${r.plot})`, '');
  lines.push('## Rows', '', '```', renderRowsTable(r, Math.max(0, r.lambdas.indexOf(0.1))), '```', '');
  if (r.issues.length) {
    lines.push('## Rows left out', '');
    for (const i of r.issues) lines.push(`- row ${i.index} (${i.kind}): ${i.message}`);
    lines.push('');
  }
  for (const row of r.rows) lines.push(...rowDetail(row));
  lines.push(`fingerprint: \`${r.fingerprint}\``, '');
  return lines.join('\n');
}

export function renderEvaluateHtml(r: EvaluateResult): string {
  const md = renderEvaluateMarkdown(r);
  // A small, faithful rendering: headings, pre blocks, tables, images, paragraphs.
  const out: string[] = [];
  const lines = md.split('\n');
  let inPre = false;
  let inTable = false;
  for (const line of lines) {
    if (line === '```') {
      out.push(inPre ? '</pre>' : '<pre>');
      inPre = !inPre;
      continue;
    }
    if (inPre) {
      out.push(escapeXml(line));
      continue;
    }
    if (line.startsWith('|')) {
      const cells = line
        .slice(1, -1)
        .split(' | ')
        .map((c) => c.trim());
      if (cells.every((c) => c === '---')) continue;
      if (!inTable) {
        out.push('<table>');
        out.push(`<tr>${cells.map((c) => `<th>${escapeXml(c)}</th>`).join('')}</tr>`);
        inTable = true;
      } else out.push(`<tr>${cells.map((c) => `<td>${escapeXml(c)}</td>`).join('')}</tr>`);
      continue;
    }
    if (inTable) {
      out.push('</table>');
      inTable = false;
    }
    const img = /^!\[(.*)\]\((.*)\)$/.exec(line);
    if (img) out.push(`<p><img src="${escapeXml(img[2] as string)}" alt="${escapeXml(img[1] as string)}"></p>`);
    else if (line.startsWith('### ')) out.push(`<h3>${escapeXml(line.slice(4))}</h3>`);
    else if (line.startsWith('## ')) out.push(`<h2>${escapeXml(line.slice(3))}</h2>`);
    else if (line.startsWith('# ')) out.push(`<h1>${escapeXml(line.slice(2))}</h1>`);
    else if (line.startsWith('- ')) out.push(`<li>${escapeXml(line.slice(2))}</li>`);
    else if (line.trim()) out.push(`<p>${escapeXml(line).replace(/`([^`]+)`/g, '<code>$1</code>')}</p>`);
  }
  if (inTable) out.push('</table>');
  return [
    '<!doctype html>',
    '<html lang="en"><head><meta charset="utf-8"><title>TIMED evaluation</title>',
    '<style>body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}pre{background:#f6f6f6;padding:1em;overflow:auto}table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ddd;padding:3px 8px;text-align:right}td:first-child,th:first-child{text-align:left}img{max-width:100%}</style>',
    '</head><body>',
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
