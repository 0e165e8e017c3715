/**
 * A pairs file (the edit's `pairsFile`): many (source, destination) prompt pairs for one joint TIME solve (issue 2 item 7).
 *
 * Accepted files (a header row is required; header names are matched case-insensitively):
 *   - CSV or TSV with columns `source`, `destination` and optionally `weight` (a positive number:
 *     the pair's weight 1/λ_p in the joint objective);
 *   - the TIMED data set CSVs as they are: columns `old` (source) and `new` (destination); their other
 *     columns are ignored.
 * The delimiter follows the extension (.csv comma, .tsv tab), otherwise the header line decides (a tab
 * in it means TSV). Fields follow RFC 4180: a field that starts with `"` is quoted, may contain the
 * delimiter, line breaks and `""` for a quote (the TIMED CSVs quote prompts with commas). Every row
 * has as many fields as the header, so that an unquoted comma inside a prompt is an error, not a
 * silently shifted row. Blank lines are skipped. Prompts are trimmed and must not be empty.
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { extname } from 'node:path';
import { show, UsageError } from '../util/errors.js';

export interface PromptPair {
  source: string;
  destination: string;
  /** The pair's weight (1/λ_p); absent when the file has no weight column or the cell is empty. */
  weight?: number;
}

export type PairsDelimiter = ',' | '\t';

/**
 * Read and parse a pairs file; errors name the file, the line and the rule, and carry `field`, the
 * parameter the path came from (`pairsFile` by default).
 */
export function readPairsFile(path: string, field = 'pairsFile'): PromptPair[] {
  if (!existsSync(path)) throw new UsageError(`file ${show(path)} does not exist`, { field });
  if (!statSync(path).isFile()) throw new UsageError(`${show(path)} is not a file`, { field });
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (cause) {
    throw new UsageError(`${show(path)} could not be read: ${(cause as Error).message}`, { cause, field });
  }
  const ext = extname(path).toLowerCase();
  const delimiter: PairsDelimiter | undefined = ext === '.csv' ? ',' : ext === '.tsv' ? '\t' : undefined;
  return parsePairs(text, { file: path, delimiter, field });
}

/**
 * Parse the text of a pairs file. `file` names it in error messages, which carry `field` (the
 * parameter the text came from) when given; `delimiter` is sniffed from the header line when not given.
 */
export function parsePairs(
  text: string,
  options: { file: string; delimiter?: PairsDelimiter; field?: string },
): PromptPair[] {
  const { file, field } = options;
  const fail = (message: string) => new UsageError(message, { field });
  const body = text.startsWith('\uFEFF') ? text.slice(1) : text;
  const firstLine = body.split(/\r?\n/, 1)[0] ?? '';
  const delimiter = options.delimiter ?? (firstLine.includes('\t') ? '\t' : ',');
  const records = parseDelimited(body, delimiter, file, fail);
  const header = records[0];
  if (!header) throw fail(`${file}: the file is empty; it needs a header row (source,destination[,weight])`);

  const names = header.fields.map((f) => f.trim().toLowerCase());
  const column = (name: string) => {
    const at = names.indexOf(name);
    if (at !== -1 && names.indexOf(name, at + 1) !== -1) {
      throw fail(`${file} line ${header.line}: the header names column ${show(name)} twice`);
    }
    return at === -1 ? undefined : at;
  };
  const explicit = { source: column('source'), destination: column('destination') };
  const timed = { source: column('old'), destination: column('new') };
  const hasExplicit = explicit.source !== undefined || explicit.destination !== undefined;
  const hasTimed = timed.source !== undefined || timed.destination !== undefined;
  if (hasExplicit && hasTimed) {
    throw fail(
      `${file} line ${header.line}: the header has both source/destination and old/new columns; keep one pair of names`,
    );
  }
  const chosen = hasTimed ? timed : explicit;
  const [sourceName, destinationName] = hasTimed ? ['old', 'new'] : ['source', 'destination'];
  for (const [name, at] of [
    [sourceName, chosen.source],
    [destinationName, chosen.destination],
  ] as const) {
    if (at === undefined) {
      throw fail(
        `${file} line ${header.line}: missing column ${show(name)}; the header must name source,destination[,weight] ` +
          `or old,new (found ${header.fields.map((f) => show(f)).join(', ')})`,
      );
    }
  }
  const sourceAt = chosen.source as number;
  const destinationAt = chosen.destination as number;
  const weightAt = column('weight');

  const pairs: PromptPair[] = [];
  for (const record of records.slice(1)) {
    const where = `${file} line ${record.line}`;
    if (record.fields.length !== header.fields.length) {
      throw fail(
        `${where}: ${record.fields.length} fields but the header has ${header.fields.length}; quote fields that ` +
          `contain ${delimiter === ',' ? 'commas' : 'tabs'} ("...")`,
      );
    }
    const prompt = (at: number, name: string): string => {
      const value = (record.fields[at] as string).trim();
      if (value.length === 0) throw fail(`${where}: column ${show(name)} is an empty prompt`);
      return value;
    };
    const pair: PromptPair = {
      source: prompt(sourceAt, sourceName),
      destination: prompt(destinationAt, destinationName),
    };
    if (weightAt !== undefined) {
      const cell = (record.fields[weightAt] as string).trim();
      if (cell.length > 0) {
        const weight = Number(cell);
        if (!Number.isFinite(weight) || weight <= 0) {
          throw fail(`${where}: weight ${show(cell)} is not a positive number`);
        }
        pair.weight = weight;
      }
    }
    pairs.push(pair);
  }
  if (pairs.length === 0) throw fail(`${file}: no pairs below the header`);
  return pairs;
}

interface DelimitedRecord {
  /** 1-based line where the record starts. */
  line: number;
  fields: string[];
}

/**
 * RFC 4180 records: CRLF or LF line ends, quoted fields with `""` escapes and embedded line breaks.
 * Blank lines (no characters at all) are skipped.
 */
function parseDelimited(
  text: string,
  delimiter: PairsDelimiter,
  file: string,
  fail: (message: string) => Error,
): DelimitedRecord[] {
  const records: DelimitedRecord[] = [];
  let line = 1;
  let i = 0;
  const n = text.length;
  while (i < n) {
    // A blank line: skip it.
    if (text[i] === '\n' || (text[i] === '\r' && text[i + 1] === '\n')) {
      i += text[i] === '\r' ? 2 : 1;
      line++;
      continue;
    }
    const start = line;
    const fields: string[] = [];
    for (;;) {
      let value = '';
      if (text[i] === '"') {
        i++;
        for (;;) {
          if (i >= n) throw fail(`${file} line ${start}: a quoted field is not closed (missing ")`);
          const c = text[i] as string;
          if (c === '"') {
            if (text[i + 1] === '"') {
              value += '"';
              i += 2;
              continue;
            }
            i++;
            break;
          }
          if (c === '\n') line++;
          value += c;
          i++;
        }
        const next = text[i];
        if (i < n && next !== delimiter && next !== '\n' && !(next === '\r' && text[i + 1] === '\n')) {
          throw fail(
            `${file} line ${line}: text after a closing quote (${show(text.slice(i, i + 10))}); a quoted field ends at the ` +
              'delimiter or the end of the line',
          );
        }
      } else {
        while (i < n && text[i] !== delimiter && text[i] !== '\n' && !(text[i] === '\r' && text[i + 1] === '\n')) {
          value += text[i];
          i++;
        }
      }
      fields.push(value);
      if (i < n && text[i] === delimiter) {
        i++;
        continue;
      }
      // End of record: line end or end of text.
      if (i < n) {
        i += text[i] === '\r' ? 2 : 1;
        line++;
      }
      break;
    }
    records.push({ line: start, fields });
  }
  return records;
}
