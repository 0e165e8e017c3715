/**
 * Profession lists: the project's curated lists in `professions/` (by name) or a file in the
 * references' formats.
 *
 * Names: `winobias35` (TIME's 35), `uce225` (UCE's 225), `uce175` / `uce50` (its edit / held-out
 * split). Files (.json or .csv):
 *   - JSON: the project's list format `{ "professions": [{ "profession", "article", ... }] }`, a bare
 *     array of such objects, or a bare array of strings;
 *   - CSV with a header, in any of the references' column formats:
 *       UCE gender_bias.csv      article,profession[,stereotype],validation,ex1..
 *       TIMED gender set         old,new,...            ("a nurse" → "a male nurse": edit = male)
 *       UCE prompt files         case_number,prompt,evaluation_seed,profession   (unique professions)
 *       plain                    profession[,article]
 * A missing article is inferred from the first letter (a/e/i/o/u → "an"), which is wrong for words
 * like "hour" or "unicorn": give articles in the file where it matters.
 */
import { existsSync, readFileSync } from 'node:fs';
import { extname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { show, UsageError } from '../util/errors.js';

export interface Profession {
  /** As it appears in prompts, e.g. "construction worker". */
  profession: string;
  article: 'a' | 'an';
  /** The gender an edit inserts (toward the under-represented one), when the list says. */
  edit?: string;
  /** The stereotyped gender, when the list says. */
  stereotype?: string;
  /** UCE's split: 'edit' (first 175) or 'heldout' (last 50). */
  split?: 'edit' | 'heldout';
}

export interface ProfessionList {
  kind: 'profession-list';
  /** The list name, or the file's path. */
  name: string;
  /** Where it came from: 'builtin:<file>' or the absolute path. */
  source: string;
  professions: Profession[];
}

const BUILTIN_DIR = fileURLToPath(new URL('../../professions/', import.meta.url));

const BUILTIN: Record<string, { file: string; split?: 'edit' | 'heldout' }> = {
  winobias35: { file: 'winobias35.json' },
  uce225: { file: 'uce225.json' },
  uce175: { file: 'uce225.json', split: 'edit' },
  uce50: { file: 'uce225.json', split: 'heldout' },
};

export const PROFESSION_LIST_NAMES = Object.freeze(Object.keys(BUILTIN));

/** "an" before a vowel letter, else "a" (a heuristic; lists give articles explicitly). */
export function inferArticle(profession: string): 'a' | 'an' {
  return /^[aeiou]/i.test(profession.trim()) ? 'an' : 'a';
}

function looksLikePath(s: string): boolean {
  return /[\\/]/.test(s) || /\.(json|csv)$/i.test(s);
}

/**
 * Load a list by name or file. `select` keeps only the named professions (in the list's order;
 * an unknown name is an error).
 */
export function loadProfessions(nameOrPath: string, options: { select?: readonly string[] } = {}): ProfessionList {
  if (typeof nameOrPath !== 'string' || nameOrPath.trim() === '') {
    throw new UsageError(
      `${show(nameOrPath)} must name a list (${PROFESSION_LIST_NAMES.join(', ')}) or a .json/.csv file`,
      { field: 'professions' },
    );
  }
  let list: ProfessionList;
  const builtin = BUILTIN[nameOrPath];
  if (builtin) {
    const path = resolve(BUILTIN_DIR, builtin.file);
    const professions = parseJsonList(readFileSync(path, 'utf8'), path).filter(
      (p) => !builtin.split || p.split === builtin.split,
    );
    list = { kind: 'profession-list', name: nameOrPath, source: `builtin:professions/${builtin.file}`, professions };
  } else if (looksLikePath(nameOrPath) || existsSync(nameOrPath)) {
    const path = resolve(nameOrPath);
    if (!existsSync(path)) throw new UsageError(`file ${show(nameOrPath)} does not exist`, { field: 'professions' });
    const text = readFileSync(path, 'utf8');
    const ext = extname(path).toLowerCase();
    const professions = ext === '.csv' ? parseCsvList(text, path) : parseJsonList(text, path);
    list = { kind: 'profession-list', name: nameOrPath, source: path, professions };
  } else {
    throw new UsageError(
      `${show(nameOrPath)} is not a known list; valid lists are ${PROFESSION_LIST_NAMES.join(', ')} (or give a .json/.csv file path)`,
      { field: 'professions' },
    );
  }
  if (options.select) {
    const byKey = new Map(list.professions.map((p) => [p.profession.toLowerCase(), p]));
    const unknown = options.select.filter((s) => !byKey.has(s.toLowerCase()));
    if (unknown.length) {
      throw new UsageError(`${unknown.map((u) => show(u)).join(', ')} not in profession list ${show(list.name)}`, {
        field: 'select',
      });
    }
    const wanted = new Set(options.select.map((s) => s.toLowerCase()));
    list = { ...list, professions: list.professions.filter((p) => wanted.has(p.profession.toLowerCase())) };
  }
  if (list.professions.length === 0)
    throw new UsageError(`list ${show(list.name)} is empty (rule: at least one profession)`, { field: 'professions' });
  const seen = new Set<string>();
  for (const p of list.professions) {
    const key = p.profession.toLowerCase();
    if (seen.has(key))
      throw new UsageError(`${show(p.profession)} appears twice in ${show(list.name)} (rule: distinct professions)`, {
        field: 'professions',
      });
    seen.add(key);
  }
  return list;
}

function profession(raw: unknown, where: string): Profession {
  if (typeof raw === 'string') {
    const name = raw.trim();
    if (!name) throw new UsageError(`${where}: empty profession name`);
    return { profession: name, article: inferArticle(name) };
  }
  if (typeof raw !== 'object' || raw === null)
    throw new UsageError(`${where}: ${show(raw)} must be a string or an object with "profession"`);
  const r = raw as Record<string, unknown>;
  const name = typeof r.profession === 'string' ? r.profession.trim() : '';
  if (!name) throw new UsageError(`${where}.profession: ${show(r.profession)} must be a non-empty string`);
  let article: 'a' | 'an';
  if (r.article === undefined) article = inferArticle(name);
  else if (r.article === 'a' || r.article === 'an') article = r.article;
  else throw new UsageError(`${where}.article: ${show(r.article)} must be "a" or "an"`);
  const out: Profession = { profession: name, article };
  if (typeof r.edit === 'string' && r.edit) out.edit = r.edit;
  if (typeof r.stereotype === 'string' && r.stereotype) out.stereotype = r.stereotype;
  if (r.split === 'edit' || r.split === 'heldout') out.split = r.split;
  return out;
}

function parseJsonList(text: string, path: string): Profession[] {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (cause) {
    throw new UsageError(`${show(path)} is not valid JSON (${(cause as Error).message})`, {
      cause,
      field: 'professions',
    });
  }
  const items = Array.isArray(doc) ? doc : (doc as { professions?: unknown })?.professions;
  if (!Array.isArray(items))
    throw new UsageError(`${show(path)} must hold an array or an object with a "professions" array`, {
      field: 'professions',
    });
  return items.map((item, i) => profession(item, `${path}: professions[${i}]`));
}

/** RFC 4180 CSV: quoted fields with "" escapes, CRLF or LF line ends. */
export function parseCsv(text: string): string[][] {
  const rows: string[][] = [];
  let row: string[] = [];
  let field = '';
  let quoted = false;
  for (let i = 0; i < text.length; i++) {
    const ch = text[i] as string;
    if (quoted) {
      if (ch === '"') {
        if (text[i + 1] === '"') {
          field += '"';
          i++;
        } else quoted = false;
      } else field += ch;
    } else if (ch === '"' && field === '') quoted = true;
    else if (ch === ',') {
      row.push(field);
      field = '';
    } else if (ch === '\n' || ch === '\r') {
      if (ch === '\r' && text[i + 1] === '\n') i++;
      row.push(field);
      rows.push(row);
      row = [];
      field = '';
    } else field += ch;
  }
  if (field !== '' || row.length) {
    row.push(field);
    rows.push(row);
  }
  return rows.filter((r) => !(r.length === 1 && r[0] === ''));
}

function parseCsvList(text: string, path: string): Profession[] {
  const rows = parseCsv(text.replace(/^\uFEFF/, ''));
  const header = (rows[0] ?? []).map((h) => h.trim().toLowerCase());
  const body = rows.slice(1);
  const col = (name: string) => header.indexOf(name);
  const at = (r: string[], i: number) => (i >= 0 ? (r[i] ?? '').trim() : '');
  if (col('old') >= 0 && col('new') >= 0) {
    // TIMED gender set: "a nurse" → "a male nurse"
    return body.map((r, i) => {
      const old = at(r, col('old'));
      const m = /^(a|an)\s+(.+)$/i.exec(old);
      if (!m) throw new UsageError(`${path}: line ${i + 2}: old ${show(old)} must be "a/an <profession>"`);
      const name = m[2] as string;
      const p: Profession = { profession: name, article: (m[1] as string).toLowerCase() as 'a' | 'an' };
      const d = new RegExp(`^an?\\s+(\\S+)\\s+${name.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}$`, 'i').exec(
        at(r, col('new')),
      );
      if (d) {
        p.edit = (d[1] as string).toLowerCase();
        if (p.edit === 'female') p.stereotype = 'male';
        else if (p.edit === 'male') p.stereotype = 'female';
      }
      return p;
    });
  }
  if (col('profession') < 0) {
    throw new UsageError(
      `${path}: no "profession" column (header: ${header.join(',')}); expected UCE's article,profession,... or case_number,prompt,evaluation_seed,profession, TIMED's old,new,..., or profession[,article]`,
    );
  }
  // UCE's prompt files repeat each profession once per prompt; other files list each once.
  const dedupe = col('prompt') >= 0;
  const seen = new Set<string>();
  const out: Profession[] = [];
  body.forEach((r, i) => {
    const name = at(r, col('profession'));
    if (!name) throw new UsageError(`${path}: line ${i + 2}: empty profession`);
    if (dedupe && seen.has(name.toLowerCase())) return;
    seen.add(name.toLowerCase());
    out.push(
      profession(
        {
          profession: name,
          article: at(r, col('article')) || undefined,
          stereotype: at(r, col('stereotype')) || undefined,
        },
        `${path}: line ${i + 2}`,
      ),
    );
  });
  return out;
}
