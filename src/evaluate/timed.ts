/**
 * TIMED, the TIME Dataset (Orgad et al., arXiv 2303.08084, Sec. 5; the official repository
 * bahjat-kawar/time-diffusion ships it as TIMED_test_set.csv / TIMED_validation_set.csv): one row per
 * edit, in the columns
 *
 *   old, new, positive1, gt1, …, positive5, gt5, negative1, gn1, …, negative5, gn5
 *
 * `old` → `new` is the edit ("A pack of roses" → "A pack of blue roses"); each positive should follow
 * it (its `gt` is the positive with the edit applied: "A rose garden" → "A blue rose garden"); each
 * negative should not (its `gn` is what the edit would wrongly make of it: "A tulip" → "A blue
 * tulip"). The project does not ship TIMED (its repository has no licence file): users pass the
 * file they downloaded.
 *
 * Parsing is RFC 4180 CSV (quoted fields, doubled quotes, CRLF or LF, a quoted field may span lines).
 * A file that is not CSV (an unterminated quote) or has no TIMED header is an error naming the
 * line; a bad row (missing or extra columns, an empty prompt) is reported as an issue of that row
 * and the other rows go on. The token checks (alignment of old → new, the 77-token limit) need the
 * model's tokenizer: see `checkRowTokens` in run.ts.
 */
import { UsageError } from '../util/errors.js';

export const TIMED_PAIRS = 5;

/** The TIMED column names, in order. */
export const TIMED_COLUMNS: readonly string[] = Object.freeze([
  'old',
  'new',
  ...Array.from({ length: TIMED_PAIRS }, (_, i) => [`positive${i + 1}`, `gt${i + 1}`]).flat(),
  ...Array.from({ length: TIMED_PAIRS }, (_, i) => [`negative${i + 1}`, `gn${i + 1}`]).flat(),
]);

/** A prompt and the text its images are classified against (its edited version). */
export interface TimedPrompt {
  prompt: string;
  /** `gt_i` for a positive, `gn_i` for a negative. */
  edited: string;
}

export interface TimedRow {
  /** 0-based index among the file's data rows. */
  index: number;
  /** 1-based line of the file where the row starts. */
  line: number;
  old: string;
  new: string;
  positives: TimedPrompt[];
  negatives: TimedPrompt[];
}

export type TimedIssueKind = 'columns' | 'empty-prompt' | 'alignment' | 'too-long';

/** Why a row is left out; the other rows are evaluated. */
export interface TimedRowIssue {
  index: number;
  line: number;
  kind: TimedIssueKind;
  message: string;
}

export interface TimedFile {
  kind: 'timed-file';
  /** The path given (for messages and the report). */
  file: string;
  /** Data rows (the header excluded). */
  rowCount: number;
  /** Rows that passed the column checks. */
  rows: TimedRow[];
  issues: TimedRowIssue[];
}

/** One CSV record with the line it starts on. */
export interface CsvRecord {
  line: number;
  fields: string[];
}

/**
 * RFC 4180 records of `text`, each with its first line (1-based). Blank lines are skipped. Throws
 * UsageError naming the line of an unterminated quoted field or a quote inside an unquoted field.
 */
export function parseCsvRecords(text: string, file: string, errorField = 'dataset'): CsvRecord[] {
  const records: CsvRecord[] = [];
  const src = text.charCodeAt(0) === 0xfeff ? text.slice(1) : text;
  let line = 1;
  let i = 0;
  const n = src.length;
  while (i < n) {
    const start = line;
    const fields: string[] = [];
    let field = '';
    let quotedAt = -1;
    let atFieldStart = true;
    let ended = false;
    while (i < n && !ended) {
      const ch = src[i] as string;
      if (quotedAt >= 0) {
        if (ch === '"') {
          if (src[i + 1] === '"') {
            field += '"';
            i += 2;
            continue;
          }
          quotedAt = -1;
          i++;
          continue;
        }
        if (ch === '\n') line++;
        field += ch;
        i++;
        continue;
      }
      if (ch === '"') {
        if (!atFieldStart) {
          throw new UsageError(
            `${file} line ${line} is not valid CSV: a quote inside an unquoted field (rule: quote the whole field and double inner quotes)`,
            { field: errorField },
          );
        }
        quotedAt = line;
        atFieldStart = false;
        i++;
        continue;
      }
      if (ch === ',') {
        fields.push(field);
        field = '';
        atFieldStart = true;
        i++;
        continue;
      }
      if (ch === '\r' || ch === '\n') {
        i += ch === '\r' && src[i + 1] === '\n' ? 2 : 1;
        line++;
        ended = true;
        continue;
      }
      field += ch;
      atFieldStart = false;
      i++;
    }
    if (quotedAt >= 0) {
      throw new UsageError(
        `${file} line ${quotedAt} is not valid CSV: a quoted field is never closed (rule: every opening quote needs a closing quote)`,
        { field: errorField },
      );
    }
    fields.push(field);
    if (fields.length === 1 && (fields[0] as string).trim() === '') continue; // blank line
    records.push({ line: start, fields });
  }
  return records;
}

/** Parse a TIMED file's text. Throws UsageError when it is not CSV or has no TIMED header. */
export function parseTimed(text: string, file: string, errorField = 'dataset'): TimedFile {
  if (text.includes('\0')) {
    throw new UsageError(`${file} line 1 is not text (a NUL byte); a TIMED CSV file is expected`, {
      field: errorField,
    });
  }
  const records = parseCsvRecords(text, file, errorField);
  const head = records[0];
  if (!head)
    throw new UsageError(`${file} is empty; a TIMED CSV file with a header is expected`, {
      field: errorField,
    });
  const header = head.fields.map((h) => h.trim().toLowerCase());
  const missing = TIMED_COLUMNS.filter((c) => !header.includes(c));
  if (header[0] !== 'old' || header[1] !== 'new' || missing.length) {
    const gender = header.includes('validation') && header.includes('ex1');
    throw new UsageError(
      `${file} line ${head.line} is not a TIMED header (rule: the columns ${TIMED_COLUMNS.slice(0, 4).join(',')},…,negative5,gn5` +
        `${missing.length ? `; missing ${missing.slice(0, 4).join(', ')}${missing.length > 4 ? ', …' : ''}` : ''})` +
        (gender
          ? "; this is TIMED's gender file (old,new,validation,ex1…ex5), which has no positives and negatives: use `debias`/`audit` for it"
          : ''),
      { field: errorField },
    );
  }
  const extraHeader = header.filter((h) => !TIMED_COLUMNS.includes(h));
  if (extraHeader.length) {
    throw new UsageError(
      `${file} line ${head.line}: unknown column(s) ${extraHeader.join(', ')} (rule: exactly the TIMED columns old,new,positive1,gt1,…,negative5,gn5)`,
      { field: errorField },
    );
  }
  const col = new Map(header.map((h, i) => [h, i]));
  const rows: TimedRow[] = [];
  const issues: TimedRowIssue[] = [];
  records.slice(1).forEach((rec, index) => {
    const issue = (kind: TimedIssueKind, message: string) => issues.push({ index, line: rec.line, kind, message });
    if (rec.fields.length !== header.length) {
      const which = rec.fields.length < header.length ? 'missing' : 'extra';
      issue(
        'columns',
        `line ${rec.line}: ${rec.fields.length} columns where the header has ${header.length} (${which} columns; rule: one value per TIMED column)`,
      );
      return;
    }
    const get = (c: string) => (rec.fields[col.get(c) as number] as string).trim();
    const empty = TIMED_COLUMNS.filter((c) => get(c) === '');
    if (empty.length) {
      issue(
        'empty-prompt',
        `line ${rec.line}: empty prompt in ${empty.join(', ')} (rule: every TIMED cell is a prompt)`,
      );
      return;
    }
    const pairs = (p: string, e: string) =>
      Array.from({ length: TIMED_PAIRS }, (_, i) => ({ prompt: get(`${p}${i + 1}`), edited: get(`${e}${i + 1}`) }));
    rows.push({
      index,
      line: rec.line,
      old: get('old'),
      new: get('new'),
      positives: pairs('positive', 'gt'),
      negatives: pairs('negative', 'gn'),
    });
  });
  return { kind: 'timed-file', file, rowCount: records.length - 1, rows, issues };
}

/**
 * Parse a `--rows` selection: "all", or comma-separated 0-based indices and ranges ("0-4,7").
 * Returns the sorted unique indices (all when the spec is "all").
 */
export function parseRowSpec(spec: string, rowCount: number, errorField = 'rows'): number[] {
  const s = spec.trim();
  if (s === '' || s === 'all') return Array.from({ length: rowCount }, (_, i) => i);
  const out = new Set<number>();
  for (const part of s.split(',')) {
    const m = /^\s*(\d+)\s*(?:-\s*(\d+)\s*)?$/.exec(part);
    if (!m) {
      throw new UsageError(
        `${JSON.stringify(part)} is not a row index or range (rule: "all" or 0-based indices and ranges like 0-4,7)`,
        { field: errorField },
      );
    }
    const a = Number(m[1]);
    const b = m[2] === undefined ? a : Number(m[2]);
    if (b < a) throw new UsageError(`range ${JSON.stringify(part)} ends before it starts`, { field: errorField });
    if (b >= rowCount) {
      throw new UsageError(`row ${b} does not exist (rule: 0-based indices below the file's ${rowCount} data rows)`, {
        field: errorField,
      });
    }
    for (let i = a; i <= b; i++) out.add(i);
  }
  return [...out].sort((x, y) => x - y);
}
