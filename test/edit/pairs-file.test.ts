import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { parsePairs, readPairsFile } from '../../src/edit/pairs-file.js';
import { UsageError } from '../../src/util/errors.js';

const SHARED_DATA = fileURLToPath(new URL('../../../shared/data/', import.meta.url));
const TIMED = join(SHARED_DATA, 'TIMED_test_set.csv');
const TIMED_GENDER = join(SHARED_DATA, 'TIMED_gender_test_set.csv');

const tmp = mkdtempSync(join(tmpdir(), 'time-debias-pairs-'));
after(() => rmSync(tmp, { recursive: true, force: true }));
let counter = 0;
function file(name: string, text: string): string {
  const dir = join(tmp, String(counter++));
  mkdirSync(dir);
  const path = join(dir, name);
  writeFileSync(path, text);
  return path;
}

/** Assert a UsageError whose message contains every part. */
function rejects(fn: () => unknown, ...parts: string[]): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof UsageError, `expected a UsageError, got ${e}`);
    for (const part of parts) assert.ok(e.message.includes(part), `"${e.message}" lacks "${part}"`);
    return true;
  });
}

describe('TIMED data set CSVs as they are', () => {
  test('TIMED_test_set.csv: 147 pairs from old,new; quoted commas inside other columns', {
    skip: !existsSync(TIMED) && `${TIMED} not found (../shared/data is absent)`,
  }, () => {
    const pairs = readPairsFile(TIMED);
    assert.equal(pairs.length, 147);
    assert.deepEqual(pairs[0], { source: 'A banana', destination: 'A blue banana' });
    assert.deepEqual(pairs[1], { source: 'A bear', destination: 'A polar bear' });
    for (const p of pairs) {
      assert.ok(p.source.length > 0 && p.destination.length > 0);
      assert.equal(p.weight, undefined);
    }
    const fern = pairs.find((p) => p.source === 'A fern');
    assert.deepEqual(fern, { source: 'A fern', destination: 'A purple fern' });
    // Every row's source/destination agree with a naive split of the first two columns (no quotes there).
    const lines = readFileSync(TIMED, 'utf8').trim().split(/\r?\n/).slice(1);
    assert.deepEqual(
      pairs.map((p) => [p.source, p.destination]),
      lines.map((l) => l.split(',').slice(0, 2)),
    );
  });

  test('TIMED_gender_test_set.csv: 35 professions', {
    skip: !existsSync(TIMED_GENDER) && `${TIMED_GENDER} not found (../shared/data is absent)`,
  }, () => {
    const pairs = readPairsFile(TIMED_GENDER);
    assert.equal(pairs.length, 35);
    assert.deepEqual(pairs[0], { source: 'an attendant', destination: 'a female attendant' });
    assert.deepEqual(pairs[1], { source: 'a cashier', destination: 'a male cashier' });
    const female = pairs.filter((p) => p.destination.includes(' female ')).length;
    const male = pairs.filter((p) => p.destination.includes(' male ')).length;
    assert.deepEqual({ female, male }, { female: 20, male: 15 }); // mission.md §2
  });
});

describe('source,destination[,weight] files', () => {
  test('CSV with weights, RFC 4180 quoting (commas, quotes, line breaks), CRLF, BOM, blank lines', () => {
    const path = file(
      'pairs.csv',
      '\uFEFFsource,destination,weight\r\n' +
        'a nurse,a male nurse,2\r\n' +
        '\r\n' +
        '"a rose, red","a rose, blue",0.5\r\n' +
        '"the ""best"" chef",a female chef,\r\n' +
        '"a cat\non two lines",a dog,1e-2\r\n' +
        '  a CEO  ,  a female CEO ,  3  \r\n',
    );
    assert.deepEqual(readPairsFile(path), [
      { source: 'a nurse', destination: 'a male nurse', weight: 2 },
      { source: 'a rose, red', destination: 'a rose, blue', weight: 0.5 },
      { source: 'the "best" chef', destination: 'a female chef' },
      { source: 'a cat\non two lines', destination: 'a dog', weight: 0.01 },
      { source: 'a CEO', destination: 'a female CEO', weight: 3 },
    ]);
  });

  test('TSV by extension, and by a tab in the header when the extension says nothing', () => {
    const text = 'Source\tDestination\na pack of roses\ta pack of blue roses\na bear, sitting\ta polar bear, sitting\n';
    const wanted = [
      { source: 'a pack of roses', destination: 'a pack of blue roses' },
      { source: 'a bear, sitting', destination: 'a polar bear, sitting' },
    ];
    assert.deepEqual(readPairsFile(file('pairs.tsv', text)), wanted);
    assert.deepEqual(readPairsFile(file('pairs.txt', text)), wanted);
    assert.deepEqual(parsePairs(text, { file: 'inline' }), wanted);
  });

  test('column order is free and extra columns are ignored', () => {
    const text = 'note,weight,destination,source\nfirst,1.5,a female doctor,a doctor\n';
    assert.deepEqual(parsePairs(text, { file: 'inline', delimiter: ',' }), [
      { source: 'a doctor', destination: 'a female doctor', weight: 1.5 },
    ]);
  });
});

describe('errors name the file, the line and the rule', () => {
  test('missing file', () => {
    const path = join(tmp, 'nope.csv');
    rejects(() => readPairsFile(path), 'pairsFile: file', path, 'does not exist');
    // the field is the parameter the path came from; the CLI names it --pairs
    assert.throws(
      () => readPairsFile(path, 'pairs'),
      (e: unknown) => e instanceof UsageError && e.field === 'pairs' && e.message.startsWith('pairs: file '),
    );
  });

  test('a folder instead of a file', () => {
    rejects(() => readPairsFile(tmp), 'is not a file');
  });

  test('missing column', () => {
    const path = file('p.csv', 'source,target\na,b\n');
    rejects(() => readPairsFile(path), path, 'line 1', 'missing column "destination"');
    assert.throws(
      () => readPairsFile(path),
      (e: unknown) =>
        e instanceof UsageError && e.field === 'pairsFile' && e.message.startsWith(`pairsFile: ${path} line 1:`),
    );
    rejects(() => parsePairs('old,weight\na,1\n', { file: 'x.csv' }), 'x.csv line 1', 'missing column "new"');
  });

  test('both naming schemes in one header', () => {
    rejects(
      () => parsePairs('old,new,source,destination\na,b,c,d\n', { file: 'x.csv' }),
      'both source/destination and old/new',
    );
  });

  test('a column named twice', () => {
    rejects(() => parsePairs('source,destination,source\na,b,c\n', { file: 'x.csv' }), 'names column "source" twice');
  });

  test('empty prompt', () => {
    const path = file('p.csv', 'source,destination\na nurse,a male nurse\n  ,a female doctor\n');
    rejects(() => readPairsFile(path), path, 'line 3', 'column "source" is an empty prompt');
    rejects(
      () => parsePairs('old,new\nan attendant,""\n', { file: 'x.csv' }),
      'line 2',
      'column "new" is an empty prompt',
    );
  });

  test('weight not a positive number', () => {
    for (const weight of ['0', '-1', 'abc', 'Infinity', 'NaN', '1e400']) {
      rejects(
        () => parsePairs(`source,destination,weight\na,b,1\nc,d,${weight}\n`, { file: 'w.csv' }),
        'w.csv line 3',
        `weight "${weight}" is not a positive number`,
      );
    }
  });

  test('a row with more fields than the header (an unquoted comma in a prompt)', () => {
    rejects(
      () => parsePairs('source,destination\na rose, red,a blue rose\n', { file: 'x.csv' }),
      'x.csv line 2',
      '3 fields but the header has 2',
      'quote fields that contain commas',
    );
  });

  test('unterminated quote and text after a closing quote', () => {
    rejects(() => parsePairs('source,destination\n"a rose,a blue rose\n', { file: 'x.csv' }), 'line 2', 'not closed');
    rejects(
      () => parsePairs('source,destination\n"a rose" red,a blue rose\n', { file: 'x.csv' }),
      'line 2',
      'after a closing quote',
    );
  });

  test('the line number counts line breaks inside quoted fields', () => {
    rejects(
      () => parsePairs('source,destination\n"a\nb",c\n\nd,\n', { file: 'x.csv' }),
      'x.csv line 5',
      'column "destination" is an empty prompt',
    );
  });

  test('empty file and header-only file', () => {
    rejects(() => parsePairs('', { file: 'e.csv' }), 'e.csv', 'empty', 'header');
    rejects(() => parsePairs('source,destination\n', { file: 'h.csv' }), 'h.csv', 'no pairs');
  });
});
