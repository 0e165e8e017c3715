import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { gunzipSync } from 'node:zlib';
import { checkRowTokens } from '../../src/evaluate/run.js';
import { parseCsvRecords, parseRowSpec, parseTimed, TIMED_COLUMNS } from '../../src/evaluate/timed.js';
import { mergesFromClipBpeText, vocabFromMerges } from '../../src/text/bpe-files.js';
import { ClipTokenizer } from '../../src/text/tokenizer.js';
import { UsageError } from '../../src/util/errors.js';

const HEADER = TIMED_COLUMNS.join(',');
const row = (old: string, neu: string, tag = 'x') =>
  [
    old,
    neu,
    ...Array.from({ length: 5 }, (_, i) => [`p${i} ${tag}`, `gt${i} ${tag}`]).flat(),
    ...Array.from({ length: 5 }, (_, i) => [`n${i} ${tag}`, `gn${i} ${tag}`]).flat(),
  ].join(',');

describe('TIMED CSV parsing', () => {
  test('columns, quoted fields with commas, quotes and line breaks, CRLF, line numbers', () => {
    const quoted = row('"A bear, sitting"', '"A ""polar"" bear,\nsitting"');
    const text = `${HEADER}\r\n${row('A pack of roses', 'A pack of blue roses')}\r\n\r\n${quoted}\n${row('A sky', 'A red sky')}`;
    const t = parseTimed(text, 'f.csv');
    assert.equal(t.rowCount, 3);
    assert.deepEqual(t.issues, []);
    assert.deepEqual(
      t.rows.map((r) => [r.index, r.line, r.old, r.new]),
      [
        [0, 2, 'A pack of roses', 'A pack of blue roses'],
        [1, 4, 'A bear, sitting', 'A "polar" bear,\nsitting'],
        [2, 6, 'A sky', 'A red sky'],
      ],
    );
    assert.deepEqual(t.rows[0]?.positives[4], { prompt: 'p4 x', edited: 'gt4 x' });
    assert.deepEqual(t.rows[0]?.negatives[0], { prompt: 'n0 x', edited: 'gn0 x' });
  });

  test('bad rows are reported with their line and reason; the others are kept', () => {
    const short = row('A rose', 'A blue rose').split(',').slice(0, 20).join(',');
    const long = `${row('A rose', 'A blue rose')},extra`;
    const empty = row('A rose', 'A blue rose').replace('gt2 x', '  ');
    const text = [HEADER, short, row('A rose', 'A blue rose'), long, empty].join('\n');
    const t = parseTimed(text, 'f.csv');
    assert.equal(t.rowCount, 4);
    assert.deepEqual(
      t.rows.map((r) => r.index),
      [1],
    );
    assert.deepEqual(
      t.issues.map((i) => [i.index, i.line, i.kind]),
      [
        [0, 2, 'columns'],
        [2, 4, 'columns'],
        [3, 5, 'empty-prompt'],
      ],
    );
    assert.match(t.issues[0]?.message ?? '', /line 2: 20 columns where the header has 22 \(missing columns/);
    assert.match(t.issues[1]?.message ?? '', /23 columns .*extra columns/);
    assert.match(t.issues[2]?.message ?? '', /line 5: empty prompt in gt3/);
  });

  test('a malformed file is an error naming the line', () => {
    assert.throws(() => parseTimed('', 'e.csv'), /UsageError: dataset: e\.csv is empty/);
    assert.throws(
      () => parseTimed(`${HEADER}\n${row('a', 'b')}\n"A rose,b`, 'q.csv'),
      (e: Error) =>
        e instanceof UsageError &&
        e.field === 'dataset' &&
        /^dataset: q\.csv line 3 is not valid CSV: a quoted field is never closed/.test(e.message),
    );
    assert.throws(
      () => parseTimed(`${HEADER}\nA r"ose,b`, 'q.csv'),
      /line 2 is not valid CSV: a quote inside an unquoted field/,
    );
    assert.throws(
      () => parseTimed(`${row('a', 'b')}\n${row('c', 'd')}`, 'h.csv'),
      /UsageError: dataset: h\.csv line 1 is not a TIMED header \(rule: the columns old,new,positive1,gt1,…,negative5,gn5; missing/,
    );
    assert.throws(() => parseTimed(`${HEADER},note\n`, 'x.csv'), /line 1: unknown column\(s\) note/);
    assert.throws(() => parseTimed('old,new\0', 'b.bin'), /b\.bin line 1 is not text/);
    assert.throws(
      () => parseTimed('old,new,validation,ex1,ex2,ex3,ex4,ex5\na,b,c,d,e,f,g,h\n', 'g.csv'),
      /TIMED's gender file .* use `debias`\/`audit`/,
    );
  });

  test('CSV records keep empty fields and skip blank lines', () => {
    assert.deepEqual(parseCsvRecords('a,,b\n\n,\n', 'f'), [
      { line: 1, fields: ['a', '', 'b'] },
      { line: 3, fields: ['', ''] },
    ]);
  });

  test('--rows selections', () => {
    assert.deepEqual(parseRowSpec('all', 3), [0, 1, 2]);
    assert.deepEqual(parseRowSpec('4,0-2,2', 5), [0, 1, 2, 4]);
    assert.throws(
      () => parseRowSpec('7', 5),
      /UsageError: rows: row 7 does not exist \(rule: 0-based indices below the file's 5 data rows\)/,
    );
    assert.throws(() => parseRowSpec('3-1', 5), /ends before it starts/);
    assert.throws(() => parseRowSpec('x', 5), /"x" is not a row index or range/);
  });
});

const SHARED = fileURLToPath(new URL('../../../shared/data/', import.meta.url));
const CLIP_BPE = join(SHARED, 'clip-bpe/bpe_simple_vocab_16e6.txt.gz');
describe('the TIMED files of ../shared/data', {
  skip: !existsSync(join(SHARED, 'TIMED_test_set.csv')) && `${SHARED} not found (../shared/data is absent)`,
}, () => {
  test('parse without issues; every row aligns and fits 77 tokens with the real CLIP tokenizer', (t) => {
    const counts: Record<string, number> = {
      'TIMED_test_set.csv': 147,
      'TIMED_test_set_filtered_SD14.csv': 104,
      'TIMED_validation_set.csv': 8,
    };
    const tok = existsSync(CLIP_BPE)
      ? ClipTokenizer.fromBpe(
          vocabFromMerges(mergesFromClipBpeText(gunzipSync(readFileSync(CLIP_BPE)).toString('utf8'))),
        )
      : null;
    if (!tok) t.diagnostic(`${CLIP_BPE} not found: token checks skipped`);
    for (const [file, n] of Object.entries(counts)) {
      const timed = parseTimed(readFileSync(join(SHARED, file), 'utf8'), file);
      assert.equal(timed.rowCount, n, file);
      assert.deepEqual(timed.issues, [], file);
      assert.equal(timed.rows.length, n);
      if (tok) for (const r of timed.rows) assert.equal(checkRowTokens(r, tok), null, `${file} line ${r.line}`);
    }
    const first = parseTimed(readFileSync(join(SHARED, 'TIMED_test_set.csv'), 'utf8'), 'TIMED_test_set.csv').rows[0];
    assert.equal(first?.old, 'A banana');
    assert.equal(first?.new, 'A blue banana');
    assert.deepEqual(first?.negatives[0], { prompt: 'An apple', edited: 'A blue apple' });
  });
});
