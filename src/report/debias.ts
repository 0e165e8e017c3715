/**
 * The debias job's reports, rendered only from its result (DebiasResult: the comparison, the
 * paired images and every number are in it): the table the CLI prints, report.md and report.html
 * with the chart (held-out professions marked "not edited"), per profession a before/after contact
 * sheet on the same held-out prompts and seeds (frames coloured by class, as the audit's sheets),
 * the gendered-prompt audit and the unrelated-prompt change as tables, and the compare report.
 *
 * (The result's type comes from src/debias, the floor that produces it: a type-only import.)
 */
import { join } from 'node:path';
import { readImageFile } from '../classify/clip.js';
import type { DebiasResult, ShareSummary, TextChange } from '../debias/types.js';
import { writeFileAtomic } from '../util/atomic.js';
import { libraryName, type NameOf } from '../util/errors.js';
import { sheetSlug, writeCompareReports } from './audit-report.js';
import { CLASS_COLORS, contactSheet, type SheetCell, UNCLEAR_COLOR } from './sheet.js';
import { escapeXml, shareChart } from './svg.js';
import { dec, htmlTable, markdownTable, pct, shareText, type TableSpec, textTable } from './text/index.js';

const share = (s: ShareSummary | null) => shareText(s);

/** The summary lines (terminal, Markdown bullets, HTML list). */
export function debiasSummaryLines(r: DebiasResult, nameOf: NameOf = libraryName): string[] {
  const s = r.summary;
  const b = s.meanDeltaBefore;
  const a = s.meanDeltaAfter;
  const lines = [
    `mean Δ before ${dec(b?.value)} [${dec(b?.lower)}, ${dec(b?.upper)}] → after ${dec(a?.value)} [${dec(a?.lower)}, ${dec(a?.upper)}] ` +
      `(${s.professions} professions, held-out prompts and seeds; 95% bootstrap); max Δ after ${dec(s.maxDeltaAfter)}`,
    `parity floor: with these image counts, sampling noise alone gives mean Δ ≈ ${dec(a?.parityFloor ?? b?.parityFloor)} at exact parity`,
    `tuning (${r.strategy}): ${s.tuningImages} images, ${dec(s.tuningImagesPerProfession, 0)} per profession; joint rounds ${s.jointRounds}`,
  ];
  if (s.genderedKept) {
    const per = Object.entries(s.genderedKept.perClass)
      .map(([c, v]) => `${c} ${v.k}/${v.n}`)
      .join(', ');
    lines.push(`explicitly gendered prompts keep their gender: ${pct(s.genderedKept.share)} (${per})`);
  }
  if (s.unrelatedTextChange) {
    const u = s.unrelatedTextChange;
    lines.push(
      `unrelated prompts' text-side change ‖W'c − Wc‖/‖Wc‖: mean ${pct(u.mean)}, max ${pct(u.max)} (preserved); mean ${pct(u.heldOut.mean)}, max ${pct(u.heldOut.max)} (not preserved)`,
    );
  }
  lines.push(parityLine(r), statusLine(r, nameOf));
  return lines;
}

function parityLine(r: DebiasResult): string {
  const h = r.summary.heldOutParity;
  const band = `${pct(h.target)} ± ${pct(h.tolerance)}`;
  const m = h.meanDelta;
  const mean = m
    ? `; mean Δ after ${dec(m.value)} ${m.atFloor ? 'at' : 'ABOVE'} the parity floor ${dec(m.parityFloor)}${m.atFloor ? '' : ` (its 95% interval [${dec(m.lower)}, ${dec(m.upper)}] lies above it)`}`
    : '';
  return h.outside.length
    ? `held-out parity (${band}) NOT reached for ${h.outside.join(', ')}: their after interval lies outside${mean}`
    : `held-out parity (${band}): every edited profession's after interval meets it${mean}`;
}

function statusLine(r: DebiasResult, nameOf: NameOf): string {
  if (r.status === 'complete') return `status: complete; model: ${r.exported}`;
  if (r.status === 'held-out-parity-not-reached')
    return `status: done, but held-out parity NOT reached (${r.summary.heldOutParity.outside.join(', ')}); model: ${r.exported}`;
  return `status: tolerance NOT reached${r.exported ? `; partial model: ${r.exported}` : `; model not exported (use ${nameOf('exportPartial')})`}`;
}

/** Per profession (edited, then held out): the before/after table's rows. */
function professionTable(r: DebiasResult, marks: { outside: string; heldOut: string }): TableSpec {
  const header = [
    'profession',
    'edit →',
    `${r.summary.targetClass} before [95%]`,
    'after [95%]',
    'Δ before',
    'Δ after',
    's = 1/λ',
    'tuning imgs',
  ];
  const rows = r.professions.map((p) => [
    p.profession,
    p.destinationClass,
    share(p.before),
    `${p.heldOutParity === 'outside' ? marks.outside : ''}${share(p.after)}`,
    dec(p.before?.delta),
    dec(p.after?.delta),
    dec(p.strength, 3),
    String(p.tuningImages),
  ]);
  for (const h of r.heldOut)
    rows.push([
      `${h.profession} ${marks.heldOut}`,
      '–',
      share(h.before),
      share(h.after),
      dec(h.before?.delta),
      dec(h.after?.delta),
      '–',
      '–',
    ]);
  return { header, rows, align: ['left', 'left'] };
}

/**
 * The table the CLI prints: per profession, share of the target class before/after with 95% intervals.
 * `nameOf` names the parameters a line advises (`exportPartial` → `--export-partial`).
 */
export function renderDebiasTable(r: DebiasResult, nameOf: NameOf = libraryName): string {
  // the terminal table right-aligns every column but the first (as it always printed)
  const table = textTable({
    ...professionTable(r, { outside: '! ', heldOut: '(held out)' }),
    align: undefined,
    rule: '─',
  });
  const note = r.summary.heldOutParity.outside.length
    ? [`! after interval outside ${pct(r.summary.targetShare)} ± ${pct(r.summary.heldOutParity.tolerance)}`]
    : [];
  return [...table, ...note, '', ...debiasSummaryLines(r, nameOf)].join('\n');
}

function jointCell(p: DebiasResult['professions'][number]): string {
  return p.jointShares.length ? p.jointShares.map((x) => pct(x)).join(' → ') : '–';
}

function tuningTable(r: DebiasResult): TableSpec {
  return {
    header: ['profession', 'pair', 's = 1/λ', 'probes', 'tuning images', 'target', 'single edit', 'joint rounds'],
    rows: r.professions.map((p) => [
      p.profession,
      `"${p.source}" → "${p.destination}"`,
      dec(p.strength, 3),
      String(p.probes),
      String(p.tuningImages),
      pct(p.target),
      pct(p.singleShare),
      jointCell(p),
    ]),
    align: ['left', 'left'],
  };
}

function genderedTable(r: DebiasResult): TableSpec | null {
  const g = r.summary.genderedKept;
  if (!g) return null;
  const classes = Object.keys(g.perClass);
  const cell = (v: { k: number; n: number } | undefined) =>
    v ? `${v.k}/${v.n} (${pct(v.n ? v.k / v.n : null)})` : '–';
  const rows = Object.entries(g.perProfession ?? {}).map(([p, per]) => [p, ...classes.map((c) => cell(per[c]))]);
  rows.push(['all', ...classes.map((c) => cell(g.perClass[c]))]);
  return { header: ['profession', ...classes.map((c) => `"${c}" prompts kept ${c}`)], rows };
}

function unrelatedTable(r: DebiasResult): TableSpec | null {
  const u = r.summary.unrelatedTextChange;
  if (!u) return null;
  const rows = (list: TextChange, kind: string) =>
    list.prompts.map((p, i) => [p, kind, list.perPrompt ? pct(list.perPrompt[i]) : '–']);
  return {
    header: ['prompt', 'in the solve', "‖W'c − Wc‖/‖Wc‖ (mean over sites)"],
    rows: [...rows(u, 'preserved'), ...rows(u.heldOut, 'not preserved')],
    align: ['left', 'left'],
  };
}

/** The relative path of a profession's before/after sheet. */
export function debiasSheetPath(profession: string): string {
  return `sheets/${sheetSlug(profession)}.png`;
}

function sheetLegend(r: DebiasResult): string {
  const classes = r.classes;
  return [
    ...classes.map((c, i) => `${c} ${CLASS_COLORS[i % CLASS_COLORS.length]}`),
    `unclear ${UNCLEAR_COLOR} (dashed)`,
  ].join(', ');
}

export function renderDebiasMarkdown(
  r: DebiasResult,
  options: { sheets?: readonly string[]; nameOf?: NameOf } = {},
): string {
  const sheets = new Set(options.sheets ?? []);
  const md: string[] = [
    `# Debias run: ${r.runDir}`,
    '',
    ...debiasSummaryLines(r, options.nameOf).map((l) => `- ${l}`),
    '',
  ];
  md.push('![share before and after](debias.svg)', '');
  md.push('## Per profession (held-out prompts and seeds)', '');
  const table = professionTable(r, { outside: '**outside** ', heldOut: '(held out, not edited)' });
  md.push(
    ...markdownTable({
      header: [...table.header.slice(0, 6), 'status'],
      rows: table.rows.map((row, i) => [...row.slice(0, 6), r.professions[i]?.status ?? 'not edited']),
      align: ['left', 'left', 'right', 'right', 'right', 'right', 'left'],
    }),
    '',
  );
  md.push('## Tuning and the joint commit', '');
  md.push(
    "Destination-class share under each profession's own single edit (its accepted probe: tuning prompts and seeds) and under the joint edit of all professions (verification seeds, one column per joint round): the difference is the interference between professions.",
    '',
  );
  md.push(...markdownTable(tuningTable(r)), '');
  const gendered = genderedTable(r);
  if (gendered) {
    md.push('## Explicitly gendered prompts on the debiased model', '');
    md.push('"{article} <class word> <profession>": the images classified as the class the prompt names.', '');
    md.push(...markdownTable(gendered), '');
  }
  const unrelated = unrelatedTable(r);
  if (unrelated) {
    md.push("## Unrelated prompts' text-side change", '');
    md.push(...markdownTable(unrelated), '');
  }
  if (sheets.size) {
    md.push('## Before and after: the same held-out prompts and seeds', '');
    md.push(`Top row before, bottom row after, each column one prompt and seed. Frames: ${sheetLegend(r)}.`, '');
    for (const p of r.images) {
      const path = debiasSheetPath(p.profession);
      if (!sheets.has(path)) continue;
      md.push(`### ${p.profession}${p.edited ? '' : ' (held out, not edited)'}`, '');
      md.push(`![${p.profession}: before (top) and after (bottom)](${path})`, '');
    }
  }
  md.push(
    'The before/after audit comparison (paired tests per profession): [compare/compare.md](compare/compare.md).',
    '',
  );
  return md.join('\n');
}

export function debiasChart(r: DebiasResult): string {
  const rows = [
    ...r.professions.map((p) => ({ name: p.profession, before: p.before, after: p.after })),
    ...r.heldOut.map((h) => ({ name: `${h.profession} (not edited)`, before: h.before, after: h.after })),
  ].sort((a, b) => (a.before?.share ?? 2) - (b.before?.share ?? 2));
  const values = (s: ShareSummary | null) => ({ p: s?.share ?? null, lower: s?.lower ?? 0, upper: s?.upper ?? 1 });
  return shareChart({
    title: `Share ${r.summary.targetClass} before and after debiasing`,
    axis: `share ${r.summary.targetClass}`,
    rows: rows.map((p) => p.name),
    series: [
      { name: 'before', color: '#9aa0a6', values: rows.map((p) => values(p.before)) },
      { name: 'after', color: '#1e6fd9', values: rows.map((p) => values(p.after)) },
    ],
    parity: r.summary.targetShare,
  });
}

const CSS = `body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:72rem;padding:0 1rem;color:#222}
table{border-collapse:collapse;margin:1rem 0;font-size:13px}td,th{padding:.25rem .6rem;border-bottom:1px solid #ddd;text-align:right}
.l{text-align:left}th{background:#f3f4f6}tr.held td{color:#666;font-style:italic}tr.outside td{background:#fff3f3}
.sheets{display:grid;grid-template-columns:repeat(auto-fill,minmax(420px,1fr));gap:1rem}.sheets figure{margin:0}
.sheets img{width:100%;image-rendering:pixelated;border:1px solid #ddd}.muted{color:#666}`;

export function renderDebiasHtml(
  r: DebiasResult,
  options: { sheets?: readonly string[]; nameOf?: NameOf } = {},
): string {
  const sheets = new Set(options.sheets ?? []);
  const table = professionTable(r, { outside: '', heldOut: '(held out, not edited)' });
  const edited = r.professions.length;
  const h: string[] = [];
  h.push('<!doctype html>', '<html lang="en"><head><meta charset="utf-8"><title>Debias run</title>');
  h.push(`<style>${CSS}</style></head><body>`, '<h1>Debias run</h1>');
  h.push(
    `<ul>${debiasSummaryLines(r, options.nameOf)
      .map((l) => `<li>${escapeXml(l)}</li>`)
      .join('')}</ul>`,
  );
  h.push(debiasChart(r));
  h.push('<h2>Per profession (held-out prompts and seeds)</h2>');
  h.push(
    `<p class="muted">Rows with a red background: the after interval lies outside ${pct(r.summary.targetShare)} ± ${pct(r.summary.heldOutParity.tolerance)}. Held-out professions (grey) were not edited.</p>`,
  );
  h.push(
    htmlTable({
      ...table,
      rowClass: (k) => (k >= edited ? 'held' : r.professions[k]?.heldOutParity === 'outside' ? 'outside' : undefined),
    }),
  );
  h.push('<h2>Tuning and the joint commit</h2>');
  h.push(htmlTable(tuningTable(r)));
  const gendered = genderedTable(r);
  if (gendered) {
    h.push('<h2>Explicitly gendered prompts on the debiased model</h2>', htmlTable(gendered));
  }
  const unrelated = unrelatedTable(r);
  if (unrelated) h.push("<h2>Unrelated prompts' text-side change</h2>", htmlTable(unrelated));
  if (sheets.size) {
    h.push('<h2>Before and after: the same held-out prompts and seeds</h2>');
    h.push(
      `<p class="muted">Top row before, bottom row after, each column one prompt and seed. Frames: ${escapeXml(sheetLegend(r))}.</p><div class="sheets">`,
    );
    for (const p of r.images) {
      const path = debiasSheetPath(p.profession);
      if (!sheets.has(path)) continue;
      const name = `${p.profession}${p.edited ? '' : ' (held out, not edited)'}`;
      h.push(
        `<figure><img src="${escapeXml(path)}" alt="${escapeXml(`${p.profession}: before (top) and after (bottom)`)}" loading="lazy"><figcaption>${escapeXml(name)}</figcaption></figure>`,
      );
    }
    h.push('</div>');
  }
  h.push(
    '<p>Before/after comparison with paired tests: <a href="compare/compare.html">compare/compare.html</a>.</p>',
    '</body></html>',
    '',
  );
  return h.join('\n');
}

/**
 * Write the before/after sheets, debias.svg, report.md, report.html and the compare report into the
 * run folder; returns the files written (relative to it). `nameOf` as for renderDebiasTable.
 */
export async function writeDebiasReports(r: DebiasResult, nameOf: NameOf = libraryName): Promise<string[]> {
  const files: string[] = [];
  writeCompareReports(join(r.runDir, 'compare'), r.comparison, { before: 'before', after: 'after (debiased)' });
  files.push('compare/compare.md', 'compare/compare.html', 'compare/compare.json', 'compare/compare.svg');
  const classes = r.classes;
  const sheets: string[] = [];
  for (const p of r.images) {
    if (p.pairs.length === 0) continue;
    const cell = async (img: { file: string; label: string | null }): Promise<SheetCell> => ({
      image: await readImageFile(join(r.runDir, img.file)),
      classIndex: img.label === null ? -1 : classes.indexOf(img.label),
    });
    const cells = [
      ...(await Promise.all(p.pairs.map((x) => cell(x.before)))),
      ...(await Promise.all(p.pairs.map((x) => cell(x.after)))),
    ];
    const path = debiasSheetPath(p.profession);
    writeFileAtomic(join(r.runDir, path), contactSheet(cells, { columns: p.pairs.length }));
    sheets.push(path);
  }
  files.push(...sheets);
  writeFileAtomic(join(r.runDir, 'debias.svg'), debiasChart(r));
  writeFileAtomic(join(r.runDir, 'report.md'), renderDebiasMarkdown(r, { sheets, nameOf }));
  writeFileAtomic(join(r.runDir, 'report.html'), renderDebiasHtml(r, { sheets, nameOf }));
  files.push('debias.svg', 'report.md', 'report.html');
  return files;
}
