/**
 * Reads the tables back out of a rendered report, as cell text (header row first), so a test can
 * check that report.md, report.html and the terminal hold the same rows as the result they render.
 */
import assert from 'node:assert/strict';
import type { EvaluateResult } from '../../src/evaluate/run.js';
import { escapeXml } from '../../src/report/svg.js';

/** Every Markdown table (runs of lines starting with `|`), the alignment rule left out, `\|` unescaped. */
export function markdownTables(md: string): string[][][] {
  const tables: string[][][] = [];
  let current: string[][] | null = null;
  for (const line of md.split('\n')) {
    if (!line.startsWith('|')) {
      current = null;
      continue;
    }
    if (!current) {
      current = [];
      tables.push(current);
    }
    if (/^\|(\s*:?-{3,}:?\s*\|)+$/.test(line)) continue;
    const cells = line
      .slice(1, -1)
      .split(/(?<!\\)\|/)
      .map((c) => c.trim().replace(/\\\|/g, '|'));
    current.push(cells);
  }
  return tables;
}

const cellText = (s: string) =>
  s
    .replace(/<[^>]*>/g, '')
    .replace(/&lt;/g, '<')
    .replace(/&gt;/g, '>')
    .replace(/&quot;/g, '"')
    .replace(/&#39;/g, "'")
    .replace(/&amp;/g, '&');

/** Every HTML table: per <tr> the text of its <th>/<td> cells (tags stripped, entities decoded). */
export function htmlTables(html: string): string[][][] {
  return [...html.matchAll(/<table>([\s\S]*?)<\/table>/g)].map((t) =>
    [...(t[1] as string).matchAll(/<tr[^>]*>([\s\S]*?)<\/tr>/g)].map((r) =>
      [...(r[1] as string).matchAll(/<t[hd][^>]*>([\s\S]*?)<\/t[hd]>/g)].map((c) => cellText(c[1] as string)),
    ),
  );
}

/** A terminal table (textTable's lines: header, rule, rows) split back into cells on runs of 2+ spaces. */
export function textTableCells(lines: readonly string[]): string[][] {
  return lines.filter((_, i) => i !== 1).map((l) => l.trim().split(/\s{2,}/));
}

/** "96.7% [95.0%, 100.0%]" → [0.967, 0.95, 1]; "–" → [] */
const percents = (cell: string) => [...cell.matchAll(/(-?\d+\.\d)%/g)].map((m) => Number(m[1]) / 100);

/** A metric cell holds the value and interval of the result (to the 0.1 % it is printed with). */
function assertMetricCell(
  cell: string,
  m: { value: number | null; lower: number | null; upper: number | null },
  what: string,
) {
  if (m.value === null) return assert.equal(cell, '–', what);
  const [v, lo, hi] = percents(cell);
  for (const [got, want] of [
    [v, m.value],
    [lo, m.lower],
    [hi, m.upper],
  ] as const)
    assert.ok(
      Math.abs((got as number) - (want as number)) <= 0.0005 + 1e-9,
      `${what}: ${cell} vs ${JSON.stringify(m)}`,
    );
}

const METRIC_ORDER = ['efficacy', 'generality', 'specificity'] as const;

/**
 * report.md and report.html of a TIMED evaluation hold the same tables, and those hold the rows of
 * evaluate.json: the summary per metric and λ, one line per row, per row its prompts' counts and its
 * metrics; the HTML has no Markdown left in it (no `|` outside a table cell).
 */
export function assertEvaluateReport(r: EvaluateResult, md: string, html: string): void {
  const mdTables = markdownTables(md);
  const htmlT = htmlTables(html);
  assert.deepEqual(htmlT, mdTables, 'report.html and report.md hold the same tables');
  assert.equal(mdTables.length, 2 + 2 * r.rows.length);
  // no Markdown table left: no | but in a cell or in a text of the dataset (a heading names the row)
  const texts = r.rows.flatMap((row) => [row.old, row.new, ...row.before.prompts.flatMap((p) => [p.prompt, p.edited])]);
  let outsideCells = html.replace(/<t([hd])[^>]*>[\s\S]*?<\/t\1>/g, '');
  for (const t of texts) outsideCells = outsideCells.split(escapeXml(t)).join('');
  assert.ok(!outsideCells.includes('|'), 'no stray | in report.html');
  const [summary, rows, ...perRow] = mdTables as [string[][], string[][], ...string[][][]];
  // the summary: one line per metric, before and every λ
  assert.deepEqual(summary[0], ['metric', 'before [95%]', ...r.summary.after.map((a) => `after λ=${a.lambda} [95%]`)]);
  assert.deepEqual(
    summary.slice(1).map((l) => l[0]),
    [...METRIC_ORDER],
  );
  METRIC_ORDER.forEach((m, i) => {
    const line = summary[i + 1] as string[];
    assertMetricCell(line[1] as string, r.summary.before[m], `summary ${m} before`);
    r.summary.after.forEach((a, j) => {
      assertMetricCell(line[2 + j] as string, a.metrics[m], `summary ${m} λ=${a.lambda}`);
    });
  });
  // one line per row, in the result's order
  assert.deepEqual(
    rows.slice(1).map((l) => [l[0], l[1]]),
    r.rows.map((row) => [String(row.index), `${row.old} → ${row.new}`]),
  );
  r.rows.forEach((row, k) => {
    const prompts = perRow[2 * k] as string[][];
    const metrics = perRow[2 * k + 1] as string[][];
    assert.deepEqual(
      prompts.slice(1),
      row.before.prompts.map((p, i) => [
        p.role === 'source' ? `source: ${p.prompt}` : `${p.role} ${p.position}: ${p.prompt}`,
        p.edited,
        `${p.k}/${p.n}`,
        ...row.after.map((a) => `${a.result.prompts[i]?.k}/${a.result.prompts[i]?.n}`),
      ]),
      `row ${row.index}: the prompts' counts`,
    );
    assert.deepEqual(
      metrics.slice(1).map((l) => l[0]),
      [...METRIC_ORDER],
    );
    METRIC_ORDER.forEach((m, i) => {
      const line = metrics[i + 1] as string[];
      assertMetricCell(line[1] as string, row.before.metrics[m], `row ${row.index} ${m} before`);
      row.after.forEach((a, j) => {
        assertMetricCell(line[2 + j] as string, a.result.metrics[m], `row ${row.index} ${m} λ=${a.lambda}`);
      });
      const ch = row.after[0]?.changes.find((c) => c.metric === m)?.change;
      assert.ok(ch);
      assertMetricCell(
        line[2 + row.after.length] as string,
        { value: ch.difference, lower: ch.lower, upper: ch.upper },
        `row ${row.index} ${m} change`,
      );
      assert.equal(line[3 + row.after.length]?.endsWith(' *'), ch.significant, `row ${row.index} ${m} significance`);
    });
  });
}
