/**
 * The one table writer: the same header and rows as a terminal table (columns padded, a rule under
 * the header), a Markdown table or an HTML table. Cells are plain text; HTML escapes them.
 */
import { escapeXml } from '../svg.js';

export type Align = 'left' | 'right';

export interface TableSpec {
  header: readonly string[];
  rows: readonly (readonly string[])[];
  /** per column (default: the first left, the others right) */
  align?: readonly Align[];
}

function alignOf(spec: TableSpec, i: number): Align {
  return spec.align?.[i] ?? (i === 0 ? 'left' : 'right');
}

/** Terminal: columns two spaces apart, padded to their widest cell, a rule of `rule` under the header. */
export function textTable(spec: TableSpec & { rule?: string }): string[] {
  const { header, rows } = spec;
  const rule = spec.rule ?? '-';
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: readonly string[]) =>
    widths
      .map((w, i) => {
        const c = cells[i] ?? '';
        return alignOf(spec, i) === 'right' ? c.padStart(w) : c.padEnd(w);
      })
      .join('  ')
      .trimEnd();
  return [line(header), widths.map((w) => rule.repeat(w)).join('  '), ...rows.map(line)];
}

/** GitHub Markdown (pipes in cells escaped). */
export function markdownTable(spec: TableSpec): string[] {
  const cell = (c: string) => c.replace(/\|/g, '\\|');
  return [
    `| ${spec.header.map(cell).join(' | ')} |`,
    `|${spec.header.map((_, i) => (alignOf(spec, i) === 'right' ? '---:' : '---')).join('|')}|`,
    ...spec.rows.map((r) => `| ${r.map(cell).join(' | ')} |`),
  ];
}

/** HTML; `rowClass` gives a row a class (e.g. to mark rows), `raw` columns hold trusted HTML. */
export function htmlTable(
  spec: TableSpec & { rowClass?: (row: number) => string | undefined; raw?: readonly number[] },
): string {
  const td = (c: string, i: number, tag: 'td' | 'th') =>
    `<${tag}${alignOf(spec, i) === 'left' ? ' class="l"' : ''}>${spec.raw?.includes(i) && tag === 'td' ? c : escapeXml(c)}</${tag}>`;
  const body = spec.rows
    .map((r, k) => {
      const cls = spec.rowClass?.(k);
      return `<tr${cls ? ` class="${cls}"` : ''}>${r.map((c, i) => td(c, i, 'td')).join('')}</tr>`;
    })
    .join('\n');
  return `<table><thead><tr>${spec.header.map((h, i) => td(h, i, 'th')).join('')}</tr></thead>\n<tbody>\n${body}\n</tbody></table>`;
}
