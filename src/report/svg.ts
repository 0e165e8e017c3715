/**
 * SVG charts of shares with intervals (no dependencies; plain strings). One row per profession,
 * sorted by share, the Wilson 95 % interval as a bar, the estimate as a dot, and a dashed parity line.
 */
import { shareText } from './text/format.js';

export function escapeXml(s: string): string {
  return s
    .replace(/&/g, '&amp;')
    .replace(/</g, '&lt;')
    .replace(/>/g, '&gt;')
    .replace(/"/g, '&quot;')
    .replace(/'/g, '&#39;');
}

export interface ChartSeries {
  name: string;
  color: string;
  /** per row: estimate and interval (null estimate: no data) */
  values: { p: number | null; lower: number; upper: number }[];
}

export interface ShareChartInput {
  title: string;
  /** axis label, e.g. "share female" */
  axis: string;
  rows: string[];
  series: ChartSeries[];
  /** parity share t */
  parity: number;
}

const fmt = (x: number) => Number(x.toFixed(2)).toString();

/** A horizontal interval chart; rows are drawn in the order given (sort before). */
export function shareChart(input: ShareChartInput): string {
  const labelWidth = Math.min(260, 16 + 7 * Math.max(8, ...input.rows.map((r) => r.length)));
  const plotWidth = 480;
  const rowHeight = 8 + 10 * input.series.length;
  const top = 44;
  const legend = input.series.length > 1 ? 18 : 0;
  const height = top + legend + rowHeight * input.rows.length + 34;
  const width = labelWidth + plotWidth + 30;
  const x = (v: number) => labelWidth + v * plotWidth;
  const parts: string[] = [];
  parts.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" role="img" aria-label="${escapeXml(input.title)}" font-family="system-ui, -apple-system, 'Segoe UI', sans-serif" font-size="12">`,
  );
  parts.push(`<title>${escapeXml(input.title)}</title>`);
  parts.push(`<rect width="${width}" height="${height}" fill="#ffffff"/>`);
  parts.push(
    `<text x="${width / 2}" y="20" text-anchor="middle" font-size="14" font-weight="600">${escapeXml(input.title)}</text>`,
  );
  const y0 = top + legend;
  const y1 = y0 + rowHeight * input.rows.length;
  if (legend) {
    input.series.forEach((s, i) => {
      const lx = labelWidth + i * 140;
      parts.push(`<circle cx="${lx + 6}" cy="${top + 4}" r="4" fill="${s.color}"/>`);
      parts.push(`<text x="${lx + 14}" y="${top + 8}">${escapeXml(s.name)}</text>`);
    });
  }
  for (const t of [0, 0.25, 0.5, 0.75, 1]) {
    parts.push(`<line x1="${fmt(x(t))}" y1="${y0}" x2="${fmt(x(t))}" y2="${y1}" stroke="#e3e3e3"/>`);
    parts.push(`<text x="${fmt(x(t))}" y="${y1 + 14}" text-anchor="middle" fill="#555">${Math.round(t * 100)}%</text>`);
  }
  parts.push(
    `<line class="parity" x1="${fmt(x(input.parity))}" y1="${y0 - 4}" x2="${fmt(x(input.parity))}" y2="${y1}" stroke="#c0392b" stroke-width="1.5" stroke-dasharray="5 3"/>`,
  );
  parts.push(
    `<text x="${fmt(x(input.parity))}" y="${y0 - 8}" text-anchor="middle" fill="#c0392b" font-size="10">parity</text>`,
  );
  parts.push(
    `<text x="${labelWidth + plotWidth / 2}" y="${y1 + 30}" text-anchor="middle" fill="#333">${escapeXml(input.axis)} (95% Wilson interval)</text>`,
  );
  input.rows.forEach((row, i) => {
    const yc = y0 + i * rowHeight + rowHeight / 2;
    if (i % 2 === 0)
      parts.push(
        `<rect x="0" y="${y0 + i * rowHeight}" width="${width}" height="${rowHeight}" fill="#f7f7f9" opacity="0.7"/>`,
      );
    parts.push(`<text x="${labelWidth - 8}" y="${fmt(yc + 4)}" text-anchor="end">${escapeXml(row)}</text>`);
    input.series.forEach((s, j) => {
      const v = s.values[i];
      if (!v) return;
      const yy = yc + (j - (input.series.length - 1) / 2) * 10;
      parts.push(
        `<line x1="${fmt(x(v.lower))}" y1="${fmt(yy)}" x2="${fmt(x(v.upper))}" y2="${fmt(yy)}" stroke="${s.color}" stroke-width="2.5" stroke-linecap="round" opacity="0.55"/>`,
      );
      if (v.p !== null) {
        parts.push(
          `<circle cx="${fmt(x(v.p))}" cy="${fmt(yy)}" r="4" fill="${s.color}"><title>${escapeXml(`${row} (${s.name}): ${shareText(v)}`)}</title></circle>`,
        );
      }
    });
  });
  parts.push('</svg>');
  return parts.join('\n');
}
