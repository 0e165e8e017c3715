/**
 * The TIMED evaluation renderers on a result made by hand (two rows, λ 1 and 0.1, a row left out, a
 * prompt with `|`, `<` and `&` in it): report.md, report.html and the terminal tables hold the rows
 * of the result, the HTML is well formed and free of Markdown.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { shareChange } from '../../src/audit/stats.js';
import { aggregateMetrics, type ClassifiedImage, METRICS, rowMetrics } from '../../src/evaluate/metrics.js';
import type { EvaluatedRow, EvaluateResult, PhaseRowResult, PromptResult } from '../../src/evaluate/run.js';
import { validateEvaluateJson } from '../../src/evaluate/schema.js';
import {
  lambdaPlot,
  renderEvaluateHtml,
  renderEvaluateMarkdown,
  renderRowsTable,
  renderSummaryTable,
  shownLambdaIndex,
} from '../../src/report/evaluate.js';
import { checkMarkup } from '../audit/world.js';
import { assertEvaluateReport, markdownTables, textTableCells } from './tables.js';

const N = 10;

/** A phase of a row: per prompt (the source, five positives, five negatives) k of N classified as edited. */
function phase(old: string, ks: readonly number[]): PhaseRowResult {
  const roles = ['source', ...Array(5).fill('positive'), ...Array(5).fill('negative')] as const;
  const prompts: PromptResult[] = roles.map((role, i) => ({
    role,
    position: role === 'source' ? 0 : role === 'positive' ? i : i - 5,
    prompt: role === 'source' ? old : `${old} ${role} ${i}`,
    edited: role === 'source' ? `${old}, edited` : `${old} ${role} ${i}, edited`,
    k: ks[i] as number,
    n: N,
  }));
  const images: ClassifiedImage[] = prompts.flatMap((p) =>
    Array.from({ length: p.n }, (_, j) => ({ role: p.role, edited: j < p.k })),
  );
  return { metrics: rowMetrics(images), prompts };
}

function row(index: number, old: string, before: number[], after: number[][], lambdas: number[]): EvaluatedRow {
  const b = phase(old, before);
  return {
    index,
    line: index + 2,
    old,
    new: `${old}, edited`,
    before: b,
    after: lambdas.map((lambda, i) => {
      const result = phase(old, after[i] as number[]);
      return {
        lambda,
        result,
        changes: METRICS.map((metric) => ({
          metric,
          change: shareChange(b.metrics[metric], result.metrics[metric], { b: 0, c: 3 }),
        })),
      };
    }),
    sheets: lambdas.map((l) => `sheets/row-${index}-lambda-${l}.png`),
  };
}

function result(): EvaluateResult {
  const lambdas = [1, 0.1];
  const rows = [
    row(
      0,
      'A rose | a <b>thorn</b> & more',
      [0, 1, 0, 0, 2, 0, 0, 1, 0, 0, 0],
      [
        [9, 8, 10, 9, 9, 7, 1, 3, 2, 0, 1],
        [7, 6, 9, 8, 7, 7, 0, 2, 1, 0, 0],
      ],
      lambdas,
    ),
    row(
      2,
      'A sky',
      [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0],
      [
        [10, 10, 9, 10, 10, 9, 2, 2, 0, 1, 0],
        [8, 9, 9, 8, 10, 9, 1, 0, 0, 0, 0],
      ],
      lambdas,
    ),
  ];
  const before = rows.map((r) => r.before.metrics);
  return {
    kind: 'timed-evaluation',
    version: 1,
    fingerprint: 'f'.repeat(64),
    settings: {},
    dataset: { file: 'timed.csv', digest: 'a'.repeat(64), rowCount: 3, selected: [0, 1, 2] },
    mode: 'per-row',
    augment: false,
    lambdas,
    images: N,
    seeds: { start: 0, count: N, perRow: 11 * N },
    issues: [{ index: 1, line: 3, kind: 'alignment', message: 'line 3: alignment: `new` lacks old tokens' }],
    rows,
    summary: {
      rows: rows.length,
      before: aggregateMetrics(before, { samples: 200 }),
      after: lambdas.map((lambda, i) => {
        const after = rows.map((r) => (r.after[i] as EvaluatedRow['after'][number]).result.metrics);
        return {
          lambda,
          metrics: aggregateMetrics(after, { samples: 200 }),
          change: aggregateMetrics(after, { samples: 200 }),
        };
      }),
    },
    plot: 'lambda.svg',
  };
}

test('report.md and report.html hold the same tables as evaluate.json; the HTML is well formed, no Markdown left', () => {
  const r = result();
  validateEvaluateJson(JSON.parse(JSON.stringify(r)));
  const md = renderEvaluateMarkdown(r);
  const html = renderEvaluateHtml(r);
  assertEvaluateReport(r, md, html);
  checkMarkup(html);
  assert.equal((html.match(/<table>/g) ?? []).length, 2 + 2 * r.rows.length);
  // the prompt with | < & survives both: escaped in Markdown, entities in HTML
  assert.match(md, /\| source: A rose \\\| a <b>thorn<\/b> & more \|/);
  assert.match(html, /<td class="l">source: A rose \| a &lt;b&gt;thorn&lt;\/b&gt; &amp; more<\/td>/);
  // the rows table is at λ = 0.1 (TIME's default), the second λ here
  assert.equal(shownLambdaIndex(r), 1);
  assert.equal(markdownTables(md)[1]?.[0]?.[2], 'efficacy (λ=0.1)');
  // the rows left out, the plot and the sheets
  assert.match(md, /^## Rows left out\n\n- row 1 \(alignment\): line 3: alignment: `new` lacks old tokens$/m);
  assert.match(html, /<ul><li>row 1 \(alignment\): line 3: alignment: <code>new<\/code> lacks old tokens<\/li><\/ul>/);
  assert.match(md, /^!\[metrics vs λ\]\(lambda\.svg\)$/m);
  assert.equal((html.match(/<img src="sheets\/row-\d-lambda-[\d.]+\.png"/g) ?? []).length, 4);
  assert.match(md, /^fingerprint: `f{64}`$/m);
});

test('the terminal tables are the report tables, padded: same cells, rule of ─, the summary note', () => {
  const r = result();
  const md = markdownTables(renderEvaluateMarkdown(r));
  const summary = renderSummaryTable(r).split('\n');
  assert.match(summary[1] as string, /^─+( {2}─+)+$/);
  assert.deepEqual(textTableCells(summary.slice(0, 5)), md[0]);
  assert.equal(
    summary.at(-1),
    '2 TIMED rows (per-row), 10 images per prompt (seeds 0–109, 10 per prompt, the same before and after); 1 bad rows left out (see report)',
  );
  const shown = shownLambdaIndex(r);
  assert.deepEqual(textTableCells(renderRowsTable(r, shown).split('\n')), md[1]);
  // every column but the first right-aligned, as it always printed
  const lines = renderRowsTable(r, shown).split('\n');
  assert.ok(lines.slice(2).every((l) => l.length === lines[0]?.length));
});

test('the λ plot: one line per metric and its band, the before values dashed, well formed', () => {
  const svg = lambdaPlot(result());
  checkMarkup(svg, []);
  assert.equal((svg.match(/<polyline /g) ?? []).length, 3);
  assert.equal((svg.match(/<polygon /g) ?? []).length, 3);
  assert.equal((svg.match(/<circle /g) ?? []).length, 3 * 2);
  assert.match(svg, /before the edit/);
});
