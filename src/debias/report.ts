/**
 * Rendering of a debias job's result (plain object in, text out): the before/after table the CLI
 * prints, and report.md / report.html in the run folder (with the compare report of the before and
 * after audits, rendered by src/report).
 */
import { join } from 'node:path';
import { compareAudits } from '../audit/compare.js';
import { readAudit } from '../audit/run.js';
import { writeCompareReports } from '../report/audit-report.js';
import { escapeXml, shareChart } from '../report/svg.js';
import { writeFileAtomic } from '../util/atomic.js';
import type { DebiasResult, ProfessionOutcome, ShareSummary } from './types.js';

const pct = (x: number | null | undefined) =>
  x === null || x === undefined || !Number.isFinite(x) ? '–' : `${(100 * x).toFixed(1)}%`;
const dec = (x: number | null | undefined, digits = 2) =>
  x === null || x === undefined || !Number.isFinite(x) ? '–' : x.toFixed(digits);
const share = (s: ShareSummary | null) =>
  s && s.share !== null ? `${pct(s.share)} [${pct(s.lower)}, ${pct(s.upper)}]` : '–';

function summaryLines(r: DebiasResult): string[] {
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
    lines.push(
      `unrelated prompts' text-side change ‖W'c − Wc‖/‖Wc‖: mean ${pct(s.unrelatedTextChange.mean)}, max ${pct(s.unrelatedTextChange.max)} (preserved); mean ${pct(s.unrelatedTextChange.heldOut.mean)}, max ${pct(s.unrelatedTextChange.heldOut.max)} (not preserved)`,
    );
  }
  lines.push(parityLine(r));
  lines.push(statusLine(r));
  return lines;
}

function parityLine(r: DebiasResult): string {
  const h = r.summary.heldOutParity;
  const band = `${pct(h.target)} ± ${pct(h.tolerance)}`;
  const m = h.meanDelta;
  const mean = m
    ? `; mean Δ after ${dec(m.value)} ${m.atFloor ? 'at' : 'ABOVE'} the parity floor ${dec(m.parityFloor)}${m.atFloor ? '' : ` (95% interval [${dec(m.lower)}, ${dec(m.upper)}] excludes it)`}`
    : '';
  return h.outside.length
    ? `held-out parity (${band}) NOT reached for ${h.outside.join(', ')}: their after interval lies outside${mean}`
    : `held-out parity (${band}): every edited profession's after interval meets it${mean}`;
}

function statusLine(r: DebiasResult): string {
  if (r.status === 'complete') return `status: complete; model: ${r.exported}`;
  if (r.status === 'held-out-parity-not-reached')
    return `status: done, but held-out parity NOT reached (${r.summary.heldOutParity.outside.join(', ')}); model: ${r.exported}`;
  return `status: tolerance NOT reached${r.exported ? `; partial model: ${r.exported}` : '; model not exported (use --export-partial)'}`;
}

/** The table the CLI prints: per profession, share of the target class before/after with 95% intervals. */
export function renderDebiasTable(r: DebiasResult): string {
  const header = [
    'profession',
    'edit →',
    `${r.summary.targetClass} before [95%]`,
    `after [95%]`,
    'Δ before',
    'Δ after',
    's = 1/λ',
    'tuning imgs',
  ];
  const rows = r.professions.map((p) => [
    p.profession,
    p.destinationClass,
    share(p.before),
    `${p.heldOutParity === 'outside' ? '! ' : ''}${share(p.after)}`,
    dec(p.before?.delta),
    dec(p.after?.delta),
    dec(p.strength, 3),
    String(p.tuningImages),
  ]);
  for (const h of r.heldOut)
    rows.push([
      `${h.profession} (held out)`,
      '–',
      share(h.before),
      share(h.after),
      dec(h.before?.delta),
      dec(h.after?.delta),
      '–',
      '–',
    ]);
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((row) => (row[i] as string).length)));
  const line = (cells: string[]) =>
    cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ');
  return [line(header), widths.map((w) => '─'.repeat(w)).join('  '), ...rows.map(line), '', ...summaryLines(r)].join(
    '\n',
  );
}

function jointCell(p: ProfessionOutcome): string {
  return p.jointShares.length ? p.jointShares.map((x) => pct(x)).join(' → ') : '–';
}

export function renderDebiasMarkdown(r: DebiasResult): string {
  const md: string[] = [`# Debias run: ${r.runDir}`, '', ...summaryLines(r).map((l) => `- ${l}`), ''];
  md.push('![share before and after](debias.svg)', '');
  md.push(`## Per profession (held-out prompts and seeds)`, '');
  md.push(
    `| profession | edit → | ${r.summary.targetClass} before [95%] | after [95%] | Δ before | Δ after | status |`,
  );
  md.push('|---|---|---:|---:|---:|---:|---|');
  for (const p of r.professions) {
    md.push(
      `| ${p.profession} | ${p.destinationClass} | ${share(p.before)} | ${share(p.after)} | ${dec(p.before?.delta)} | ${dec(p.after?.delta)} | ${p.status} |`,
    );
  }
  for (const h of r.heldOut)
    md.push(
      `| ${h.profession} (held out, not edited) | – | ${share(h.before)} | ${share(h.after)} | ${dec(h.before?.delta)} | ${dec(h.after?.delta)} | – |`,
    );
  md.push('', '## Tuning and the joint commit', '');
  md.push(
    "Destination-class share under each profession's own single edit (its accepted probe: tuning prompts and seeds) and under the joint edit of all professions (verification seeds, one column per joint round): the difference is the interference between professions.",
    '',
  );
  md.push('| profession | pair | s = 1/λ | probes | tuning images | target | single edit | joint rounds |');
  md.push('|---|---|---:|---:|---:|---:|---:|---|');
  for (const p of r.professions) {
    md.push(
      `| ${p.profession} | "${p.source}" → "${p.destination}" | ${dec(p.strength, 3)} | ${p.probes} | ${p.tuningImages} | ${pct(p.target)} | ${pct(p.singleShare)} | ${jointCell(p)} |`,
    );
  }
  md.push(
    '',
    'The before/after audit comparison (paired tests per profession): [compare/compare.md](compare/compare.md).',
    '',
  );
  return md.join('\n');
}

export function debiasChart(r: DebiasResult): string {
  const rows = [...r.professions].sort((a, b) => (a.before?.share ?? 2) - (b.before?.share ?? 2));
  const values = (s: ShareSummary | null) => ({ p: s?.share ?? null, lower: s?.lower ?? 0, upper: s?.upper ?? 1 });
  return shareChart({
    title: `Share ${r.summary.targetClass} before and after debiasing`,
    axis: `share ${r.summary.targetClass}`,
    rows: rows.map((p) => p.profession),
    series: [
      { name: 'before', color: '#9aa0a6', values: rows.map((p) => values(p.before)) },
      { name: 'after', color: '#1e6fd9', values: rows.map((p) => values(p.after)) },
    ],
    parity: r.summary.targetShare,
  });
}

export function renderDebiasHtml(r: DebiasResult): string {
  const rows = r.professions
    .map(
      (p) =>
        `<tr><td>${escapeXml(p.profession)}</td><td>${escapeXml(p.destinationClass)}</td><td>${share(p.before)}</td><td>${share(p.after)}</td><td>${dec(p.before?.delta)}</td><td>${dec(p.after?.delta)}</td><td>${dec(p.strength, 3)}</td><td>${p.tuningImages}</td><td>${pct(p.singleShare)}</td><td>${escapeXml(jointCell(p))}</td></tr>`,
    )
    .join('\n');
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Debias run</title>
<style>body{font-family:system-ui,sans-serif;margin:2rem;max-width:70rem}table{border-collapse:collapse}td,th{padding:.25rem .6rem;border-bottom:1px solid #ddd;text-align:right}td:first-child,th:first-child{text-align:left}</style>
</head><body>
<h1>Debias run</h1>
<ul>${summaryLines(r)
    .map((l) => `<li>${escapeXml(l)}</li>`)
    .join('')}</ul>
${debiasChart(r)}
<h2>Per profession</h2>
<table><thead><tr><th>profession</th><th>edit →</th><th>${escapeXml(r.summary.targetClass)} before [95%]</th><th>after [95%]</th><th>Δ before</th><th>Δ after</th><th>s = 1/λ</th><th>tuning images</th><th>single edit</th><th>joint rounds</th></tr></thead>
<tbody>
${rows}
</tbody></table>
<p>Before/after comparison with paired tests: <a href="compare/compare.html">compare/compare.html</a>.</p>
</body></html>
`;
}

/** Write report.md, report.html, debias.svg and the compare report of the before/after audits. */
export function writeDebiasReports(r: DebiasResult): string[] {
  const files: string[] = [];
  const before = readAudit(join(r.runDir, r.audits.before));
  const after = readAudit(join(r.runDir, r.audits.after));
  const comparison = compareAudits(before, after, { bootstrap: { seed: 1 } });
  writeCompareReports(join(r.runDir, 'compare'), comparison, { before: 'before', after: 'after (debiased)' });
  files.push('compare/compare.md', 'compare/compare.html', 'compare/compare.json');
  writeFileAtomic(join(r.runDir, 'debias.svg'), debiasChart(r));
  writeFileAtomic(join(r.runDir, 'report.md'), renderDebiasMarkdown(r));
  writeFileAtomic(join(r.runDir, 'report.html'), renderDebiasHtml(r));
  files.push('debias.svg', 'report.md', 'report.html');
  return files;
}
