/**
 * Audit and comparison reports rendered from the plain result objects: the terminal tables,
 * `report.md` and `report.html` (with an inline SVG chart), `chart.svg`, and per-profession contact sheets.
 * Nothing here computes statistics; it only formats what src/audit returned.
 */
import { existsSync } from 'node:fs';
import { isAbsolute, join } from 'node:path';
import type { Comparison } from '../audit/compare.js';
import type { AuditResult } from '../audit/run.js';
import { readImageFile } from '../classify/clip.js';
import { writeFileAtomic } from '../util/atomic.js';
import { CLASS_COLORS, contactSheet, UNCLEAR_COLOR } from './sheet.js';
import { escapeXml, shareChart } from './svg.js';
import {
  dec,
  htmlTable,
  interval,
  markdownTable,
  pct,
  pValue,
  shareText,
  type TableSpec,
  textTable,
} from './text/index.js';

export function sheetSlug(s: string): string {
  return (
    s
      .toLowerCase()
      .replace(/[^a-z0-9]+/g, '-')
      .replace(/^-|-$/g, '') || 'x'
  );
}

/** Rows sorted by share (ascending; professions without data last), as the chart and table show them. */
function sortedProfessions(result: AuditResult) {
  return [...result.professions].sort(
    (a, b) => (a.share.p ?? 2) - (b.share.p ?? 2) || a.profession.localeCompare(b.profession),
  );
}

export function auditChart(result: AuditResult): string {
  const rows = sortedProfessions(result);
  return shareChart({
    title: `Share ${result.summary.targetClass} per profession`,
    axis: `share ${result.summary.targetClass}`,
    rows: rows.map((r) => r.profession),
    series: [
      {
        name: result.summary.targetClass,
        color: '#1e6fd9',
        values: rows.map((r) => ({ p: r.share.p, lower: r.share.lower, upper: r.share.upper })),
      },
    ],
    parity: result.summary.targetShare,
  });
}

function settingsLines(result: AuditResult): string[] {
  const s = result.settings as {
    source: Record<string, unknown>;
    classifier: { path: string; digest: string; logitScale: number; preprocess?: string };
    attribute: { name: string; classes: { name: string; prompts: string[] }[] };
    threshold: number | null;
  };
  const lines: string[] = [];
  const src = s.source;
  if (src.kind === 'images') lines.push(`source: images from folder \`${String(src.dir)}\``);
  else {
    const model = src.model as { path?: string; digest?: string } | undefined;
    lines.push(`model: \`${model?.path ?? '?'}\` (sha256 ${String(model?.digest ?? '?').slice(0, 12)}…)`);
    const gen = [
      'steps',
      'scheduler',
      'guidance',
      'height',
      'width',
      'sizeFrom',
      'vaeScale',
      'negativePrompt',
      'device',
    ]
      .filter((k) => src[k] !== undefined)
      .map((k) => `${k} ${JSON.stringify(src[k])}`);
    lines.push(`generation: ${gen.join(', ')}`);
    if (src.unetEdit || src.textTransform)
      lines.push(`in-memory edit: ${JSON.stringify(src.unetEdit ?? { textTransform: src.textTransform })}`);
  }
  lines.push(
    `classifier: \`${s.classifier.path}\` (sha256 ${s.classifier.digest.slice(0, 12)}…, logit scale ${dec(s.classifier.logitScale, 2)})`,
  );
  lines.push(
    `image preprocessing: ${
      s.classifier.preprocess === 'pil'
        ? "pil (PIL's antialiased bicubic resize, as the references)"
        : s.classifier.preprocess === 'transformers'
          ? "transformers (transformers.js' processor)"
          : "not recorded (an audit made before it was; transformers.js' processor)"
    }`,
  );
  lines.push(
    `attribute ${s.attribute.name}: ${s.attribute.classes.map((c) => `${c.name} = ${c.prompts.map((p) => `"${p}"`).join(' + ')}`).join('; ')}`,
  );
  lines.push(`unclear threshold: ${s.threshold === null ? 'off (argmax, as the references)' : s.threshold}`);
  if (result.plan.templates.length) lines.push(`templates: ${result.plan.templates.map((t) => `"${t}"`).join(', ')}`);
  const seeds = result.plan.seeds;
  if (seeds)
    lines.push(
      `seeds (${seeds.use}): ${seeds.start} … ${seeds.start + seeds.count - 1} (${seeds.count} per prompt, the same for every prompt)`,
    );
  lines.push(`professions: ${result.plan.professionList} (${result.plan.professions.length})`);
  lines.push(`fingerprint: ${result.fingerprint}`);
  return lines;
}

function legend(result: AuditResult): string {
  return [
    ...result.classes.map((c, i) => `${c} ${CLASS_COLORS[i % CLASS_COLORS.length]}`),
    `unclear ${UNCLEAR_COLOR} (dashed)`,
  ].join(', ');
}

/** The terminal rendering: per profession share with interval and Δ, sorted by share, then the summary. */
export function renderAuditTable(r: AuditResult): string {
  const t = r.summary.targetClass;
  const body = sortedProfessions(r).map((p) => [
    p.profession,
    String(p.share.n),
    pct(p.share.p),
    interval(p.share.lower, p.share.upper, (x) => pct(x)),
    dec(p.delta.value),
    String(p.unclear),
  ]);
  const s = r.summary;
  const md = s.meanDelta;
  return [
    ...textTable({ header: ['profession', 'n', `share ${t}`, '95% interval', 'Δ', 'unclear'], rows: body }),
    '',
    `mean Δ ${dec(md.value, 3)} ${interval(md.lower, md.upper, (x) => dec(x, 3))} over ${md.professions} professions (at exact parity: ≈ ${dec(md.parityFloor, 3)}); ` +
      `seed groups ${dec(s.seedGroups.mean, 3)} ± ${dec(s.seedGroups.std, 3)}; ${s.images} images, ${s.unclear} unclear`,
    '',
  ].join('\n');
}

/** report.md's and report.html's table: per profession (sorted by share) the counts, the share and Δ. */
function professionTable(result: AuditResult): TableSpec {
  const classes = result.classes;
  return {
    header: ['profession', 'images', ...classes, 'unclear', `share ${result.summary.targetClass} [95%]`, 'Δ [95%]'],
    rows: sortedProfessions(result).map((p) => [
      p.profession,
      String(p.images),
      ...classes.map((c) => String(p.counts[c] ?? 0)),
      String(p.unclear),
      shareText(p.share),
      `${dec(p.delta.value)} ${interval(p.delta.lower, p.delta.upper)}`,
    ]),
  };
}

export function renderAuditMarkdown(result: AuditResult, options: { sheets?: string[] } = {}): string {
  const s = result.summary;
  const t = s.targetClass;
  const md: string[] = [];
  md.push(`# Bias audit: ${result.plan.professionList}`, '');
  md.push(
    `**Mean Δ = ${dec(s.meanDelta.value)} ${interval(s.meanDelta.lower, s.meanDelta.upper, (x) => dec(x))}** ` +
      `(95% bootstrap interval, ${s.meanDelta.bootstrap.samples} resamples, seed ${s.meanDelta.bootstrap.seed}; ${s.meanDelta.professions} professions; ` +
      `sampling noise alone gives ≈ ${dec(s.meanDelta.parityFloor ?? null)} at exact parity)  `,
  );
  md.push(
    `Seed groups: Δ = ${dec(s.seedGroups.mean)} ± ${dec(s.seedGroups.std)} (mean ± sd over ${s.seedGroups.groups} groups of seeds)  `,
  );
  md.push(
    `Share ${t} over all images: ${shareText(s.share)}; ${s.images} images, ${s.classified} classified, ${s.unclear} unclear`,
    '',
  );
  md.push(
    `Δ = |p − ${s.targetShare}| / ${Math.max(s.targetShare, 1 - s.targetShare)} per profession, with p the share of "${t}" among its classified images ` +
      '(unclear images excluded): 0 is parity, 1 is every image one class. Intervals are 95% (Wilson for shares).',
    '',
  );
  md.push(`![share ${t} per profession](chart.svg)`, '');
  md.push(...markdownTable(professionTable(result)));
  md.push('', '## Settings', '');
  for (const l of settingsLines(result)) md.push(`- ${l}`);
  if (options.sheets?.length) {
    md.push('', '## Contact sheets', '', `Frames: ${legend(result)}.`, '');
    for (const sheet of options.sheets) md.push(`- [${sheet.replace(/^sheets\/|\.png$/g, '')}](${sheet})`);
  }
  md.push('');
  return md.join('\n');
}

const CSS = `body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;max-width:1100px;margin:2rem auto;padding:0 1rem;color:#222}
table{border-collapse:collapse;margin:1rem 0;font-size:13px}th,td{padding:3px 8px;border-bottom:1px solid #e5e5e5;text-align:right}
.l{text-align:left}th{background:#f3f4f6}.big{font-size:1.3rem}.muted{color:#666}
.sheets{display:flex;flex-wrap:wrap;gap:1rem}.sheets figure{margin:0}.sheets img{max-width:520px;image-rendering:pixelated;border:1px solid #ddd}
code{background:#f3f4f6;padding:0 3px;border-radius:3px}.sig{font-weight:600}`;

function mdInlineToHtml(s: string): string {
  return escapeXml(s)
    .replace(/`([^`]+)`/g, '<code>$1</code>')
    .replace(/\*\*([^*]+)\*\*/g, '<strong>$1</strong>');
}

export function renderAuditHtml(result: AuditResult, options: { sheets?: string[] } = {}): string {
  const s = result.summary;
  const t = s.targetClass;
  const h: string[] = [];
  h.push('<!doctype html>', '<html lang="en"><head><meta charset="utf-8">');
  h.push(`<title>Bias audit: ${escapeXml(result.plan.professionList)}</title><style>${CSS}</style></head><body>`);
  h.push(`<h1>Bias audit: ${escapeXml(result.plan.professionList)}</h1>`);
  h.push(
    `<p class="big"><strong>Mean Δ = ${dec(s.meanDelta.value)}</strong> ${interval(s.meanDelta.lower, s.meanDelta.upper, (x) => dec(x))} ` +
      `<span class="muted">(95% bootstrap, ${s.meanDelta.bootstrap.samples} resamples, seed ${s.meanDelta.bootstrap.seed}; ${s.meanDelta.professions} professions; ` +
      `≈ ${dec(s.meanDelta.parityFloor ?? null)} at exact parity from sampling noise alone)</span></p>`,
  );
  h.push(
    `<p>Seed groups: Δ = ${dec(s.seedGroups.mean)} ± ${dec(s.seedGroups.std)} (mean ± sd over ${s.seedGroups.groups} groups). ` +
      `Share ${escapeXml(t)} over all images: ${shareText(s.share)}; ${s.images} images, ${s.classified} classified, ${s.unclear} unclear.</p>`,
  );
  h.push(
    `<p class="muted">Δ = |p − ${s.targetShare}| / ${Math.max(s.targetShare, 1 - s.targetShare)} per profession; p = share of “${escapeXml(t)}” among classified images (unclear excluded). 0 is parity, 1 is every image one class.</p>`,
  );
  h.push(`<figure>${auditChart(result)}</figure>`);
  h.push(htmlTable(professionTable(result)));
  h.push('<h2>Settings</h2><ul>');
  for (const l of settingsLines(result)) h.push(`<li>${mdInlineToHtml(l)}</li>`);
  h.push('</ul>');
  if (options.sheets?.length) {
    h.push(`<h2>Contact sheets</h2><p class="muted">Frames: ${escapeXml(legend(result))}.</p><div class="sheets">`);
    for (const sheet of options.sheets) {
      const name = sheet.replace(/^sheets\/|\.png$/g, '');
      h.push(
        `<figure><img src="${escapeXml(sheet)}" alt="contact sheet ${escapeXml(name)}"><figcaption>${escapeXml(name)}</figcaption></figure>`,
      );
    }
    h.push('</div>');
  }
  h.push('</body></html>', '');
  return h.join('\n');
}

export interface WrittenReports {
  kind: 'reports';
  files: string[];
}

/**
 * Write report.md, report.html, chart.svg and sheets/<profession>.png into the run folder. Contact
 * sheets use the images the audit kept (`file` set), at most `sheetImages` per profession.
 */
export async function writeAuditReports(
  runDir: string,
  result: AuditResult,
  options: { sheetImages?: number } = {},
): Promise<WrittenReports> {
  const files: string[] = [];
  const sheets: string[] = [];
  const limit = options.sheetImages ?? 16;
  for (const p of result.professions) {
    const imgs = result.images.filter((i) => i.profession === p.profession && i.file !== null).slice(0, limit);
    const cells = [];
    for (const img of imgs) {
      const path = isAbsolute(img.file as string) ? (img.file as string) : join(runDir, img.file as string);
      if (!existsSync(path)) continue;
      cells.push({
        image: await readImageFile(path),
        classIndex: img.kind === 'unclear' ? -1 : result.classes.indexOf(img.label),
      });
    }
    if (cells.length === 0) continue;
    const rel = `sheets/${sheetSlug(p.profession)}.png`;
    writeFileAtomic(join(runDir, rel), contactSheet(cells));
    sheets.push(rel);
    files.push(rel);
  }
  writeFileAtomic(join(runDir, 'chart.svg'), auditChart(result));
  writeFileAtomic(join(runDir, 'report.md'), renderAuditMarkdown(result, { sheets }));
  writeFileAtomic(join(runDir, 'report.html'), renderAuditHtml(result, { sheets }));
  files.push('chart.svg', 'report.md', 'report.html');
  return { kind: 'reports', files };
}

// ------------------------------------------------------------------------------------------------
// Comparison reports

export function compareChart(c: Comparison): string {
  const rows = [...c.professions].sort((a, b) => (a.before.share.p ?? 2) - (b.before.share.p ?? 2));
  return shareChart({
    title: `Share ${c.targetClass} before and after`,
    axis: `share ${c.targetClass}`,
    rows: rows.map((r) => r.profession),
    series: [
      { name: 'before', color: '#9aa0a6', values: rows.map((r) => r.before.share) },
      { name: 'after', color: '#1e6fd9', values: rows.map((r) => r.after.share) },
    ],
    parity: c.targetShare,
  });
}

function comparisonRows(c: Comparison) {
  return [...c.professions].sort((a, b) => (a.deltaChange ?? 0) - (b.deltaChange ?? 0));
}

/** The terminal rendering of a comparison: per profession, sorted by Δ change, then the summary. */
export function renderCompareTable(c: Comparison): string {
  const body = comparisonRows(c).map((r) => {
    const p = r.change.paired ? r.change.paired.pValue : r.change.pValue;
    return [
      r.profession,
      pct(r.before.share.p),
      pct(r.after.share.p),
      pct(r.change.difference),
      interval(r.change.lower, r.change.upper, (x) => pct(x)),
      `${pValue(p)}${r.change.significant ? ' *' : ''}`,
      dec(r.before.delta.value),
      dec(r.after.delta.value),
    ];
  });
  const m = c.summary.meanDelta;
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
  return [
    ...textTable({ header, rows: body }),
    '',
    `mean Δ ${dec(m.before, 3)} → ${dec(m.after, 3)} (change ${dec(m.difference, 3)} ${interval(m.lower, m.upper, (x) => dec(x, 3))}); ` +
      `${c.summary.significant}/${c.summary.professions} significant (* p < 0.05, ${c.summary.paired ? 'McNemar, paired by prompt and seed' : 'two-proportion z'})`,
    '',
  ].join('\n');
}

/**
 * compare.md's and compare.html's table: per profession (sorted by Δ change) the shares, the change
 * and its test; `mark` writes the p-value cell (set off when significant).
 */
function compareTable(c: Comparison, mark: (p: string, significant: boolean) => string): TableSpec {
  return {
    header: [
      'profession',
      `share ${c.targetClass} before`,
      'after',
      `change [95% Newcombe${c.summary.paired ? ', paired' : ''}]`,
      'p',
      'Δ before → after',
    ],
    rows: comparisonRows(c).map((r) => [
      r.profession,
      shareText(r.before.share),
      shareText(r.after.share),
      shareText({ p: r.change.difference, lower: r.change.lower, upper: r.change.upper }),
      mark(pValue(r.change.paired ? r.change.paired.pValue : r.change.pValue), r.change.significant),
      `${dec(r.before.delta.value)} → ${dec(r.after.delta.value)}`,
    ]),
  };
}

export function renderCompareMarkdown(c: Comparison, names: { before: string; after: string }): string {
  const m = c.summary.meanDelta;
  const md: string[] = [];
  md.push(`# Before / after: ${names.before} → ${names.after}`, '');
  md.push(
    `**Mean Δ ${dec(m.before)} → ${dec(m.after)}** (change ${dec(m.difference)} ${interval(m.lower, m.upper, (x) => dec(x))}, 95% bootstrap, ${m.bootstrap.samples} resamples, seed ${m.bootstrap.seed})  `,
  );
  md.push(
    `${c.summary.professions} professions compared; ${c.summary.significant} with a significant share change at 5% (${c.summary.improved} toward parity, ${c.summary.worsened} away); ` +
      `${c.summary.paired ? "images paired by prompt and seed (McNemar's exact test; Newcombe's interval for paired data)" : 'images not paired (two-proportion z test)'}.`,
    '',
  );
  md.push('![before and after](compare.svg)', '');
  md.push(...markdownTable(compareTable(c, (p, significant) => (significant ? `**${p}**` : p))));
  if (c.onlyBefore.length || c.onlyAfter.length) {
    md.push(
      '',
      `Not compared (in one run only): ${[...c.onlyBefore.map((p) => `${p} (before)`), ...c.onlyAfter.map((p) => `${p} (after)`)].join(', ')}`,
    );
  }
  md.push(
    '',
    '## Runs',
    '',
    `- before: ${names.before} (fingerprint ${c.before.fingerprint.slice(0, 12)}…, ${c.before.images} images)`,
  );
  md.push(`- after: ${names.after} (fingerprint ${c.after.fingerprint.slice(0, 12)}…, ${c.after.images} images)`, '');
  return md.join('\n');
}

export function renderCompareHtml(c: Comparison, names: { before: string; after: string }): string {
  const m = c.summary.meanDelta;
  const h: string[] = [];
  h.push('<!doctype html>', '<html lang="en"><head><meta charset="utf-8">');
  h.push(
    `<title>Before / after: ${escapeXml(names.before)} → ${escapeXml(names.after)}</title><style>${CSS}</style></head><body>`,
  );
  h.push(`<h1>Before / after: ${escapeXml(names.before)} → ${escapeXml(names.after)}</h1>`);
  h.push(
    `<p class="big"><strong>Mean Δ ${dec(m.before)} → ${dec(m.after)}</strong> <span class="muted">(change ${dec(m.difference)} ${interval(m.lower, m.upper, (x) => dec(x))}, 95% bootstrap)</span></p>`,
  );
  h.push(
    `<p>${c.summary.professions} professions; ${c.summary.significant} significant share changes at 5% (${c.summary.improved} toward parity, ${c.summary.worsened} away); ${c.summary.paired ? 'paired images (McNemar)' : 'unpaired (z test)'}.</p>`,
  );
  h.push(`<figure>${compareChart(c)}</figure>`);
  // the p column is trusted HTML: escaped here, a significant one set off in <strong class="sig">
  const p = (text: string, significant: boolean) =>
    significant ? `<strong class="sig">${escapeXml(text)}</strong>` : escapeXml(text);
  h.push(htmlTable({ ...compareTable(c, p), raw: [4] }), '</body></html>', '');
  return h.join('\n');
}

export function writeCompareReports(
  outDir: string,
  c: Comparison,
  names: { before: string; after: string },
): WrittenReports {
  writeFileAtomic(join(outDir, 'compare.json'), `${JSON.stringify(c, null, 2)}\n`);
  writeFileAtomic(join(outDir, 'compare.svg'), compareChart(c));
  writeFileAtomic(join(outDir, 'compare.md'), renderCompareMarkdown(c, names));
  writeFileAtomic(join(outDir, 'compare.html'), renderCompareHtml(c, names));
  return { kind: 'reports', files: ['compare.json', 'compare.svg', 'compare.md', 'compare.html'] };
}
