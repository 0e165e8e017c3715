import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { augmentPrompts, buildRows, type EncodedRows } from '../../src/edit/rows.js';
import { EditError } from '../../src/util/errors.js';
import { fakeEncoder, TOKENS } from './fake-encoder.js';

describe('augmentPrompts', () => {
  test('three prefixes, leading article lower-cased', () => {
    assert.deepEqual(augmentPrompts('A nurse'), [
      'A nurse',
      'A photo of a nurse',
      'An image of a nurse',
      'A picture of a nurse',
    ]);
    assert.deepEqual(augmentPrompts('An attendant'), [
      'An attendant',
      'A photo of an attendant',
      'An image of an attendant',
      'A picture of an attendant',
    ]);
    assert.deepEqual(augmentPrompts('a doctor')[1], 'A photo of a doctor');
    // Only a leading article is changed.
    assert.deepEqual(augmentPrompts('Apples on a table')[2], 'An image of Apples on a table');
  });
});

describe('buildRows', () => {
  const d = 8;
  const L = 12;

  test('one pair: all L rows, targets are the aligned destination rows', async () => {
    const { encode, calls } = fakeEncoder(d, L);
    const rows = await buildRows(encode, {
      pairs: [{ source: 'a doctor', destination: 'a female doctor' }],
      tokens: TOKENS,
    });
    assert.equal(rows.n, L);
    assert.equal(rows.d, d);
    assert.equal(rows.length, L);
    assert.equal(rows.pairCount, 1);
    assert.equal(calls.length, 1, 'one batched encode call');
    const [src, dst] = (await encode(['a doctor', 'a female doctor'])) as [EncodedRows, EncodedRows];
    const group = rows.groups[0];
    assert.ok(group?.kind === 'pair');
    assert.deepEqual(group.alignment, [0, 1, 3, 4, 5, 6, 7, 8, 9, 10, 11, 11]);
    assert.deepEqual(rows.sources, src.hidden);
    for (let p = 0; p < L; p++) {
      const q = group.alignment[p] as number;
      assert.deepEqual(rows.targets.subarray(p * d, (p + 1) * d), dst.hidden.subarray(q * d, (q + 1) * d));
    }
    // Causality of the stand-in: BOS and "a" rows coincide, so those rows are unchanged targets.
    assert.deepEqual(rows.targets.subarray(0, 2 * d), rows.sources.subarray(0, 2 * d));
  });

  test('augmentations: 4 pairs of L rows per pair, all tied to their pair index; prompts encoded once', async () => {
    const { encode, calls } = fakeEncoder(d, L);
    const rows = await buildRows(encode, {
      pairs: [
        { source: 'a doctor', destination: 'a female doctor' },
        { source: 'an attendant', destination: 'a male attendant' },
      ],
      augment: true,
      preserve: ['a dog', 'a doctor'],
      tokens: TOKENS,
    });
    assert.equal(rows.n, (2 * 4 + 2) * L);
    assert.equal(rows.pairCount, 2);
    const pairGroups = rows.groups.filter((g) => g.kind === 'pair');
    assert.deepEqual(
      pairGroups.map((g) => g.kind === 'pair' && [g.pair, g.source, g.destination]),
      [
        [0, 'a doctor', 'a female doctor'],
        [0, 'A photo of a doctor', 'A photo of a female doctor'],
        [0, 'An image of a doctor', 'An image of a female doctor'],
        [0, 'A picture of a doctor', 'A picture of a female doctor'],
        [1, 'an attendant', 'a male attendant'],
        [1, 'A photo of an attendant', 'A photo of a male attendant'],
        [1, 'An image of an attendant', 'An image of a male attendant'],
        [1, 'A picture of an attendant', 'A picture of a male attendant'],
      ],
    );
    // Groups tile the rows in order.
    rows.groups.forEach((g, i) => {
      assert.equal(g.start, i * L);
    });
    // Every distinct prompt encoded exactly once ("a doctor" is both a source and a preserved prompt).
    assert.equal(calls.length, 1);
    const asked = calls[0] as string[];
    assert.equal(new Set(asked).size, asked.length);
    assert.equal(asked.length, 16 + 1);
    // Preservation rows map to themselves.
    const dog = rows.groups.find((g) => g.kind === 'preserve' && g.prompt === 'a dog');
    assert.ok(dog);
    assert.deepEqual(
      rows.targets.subarray(dog.start * d, (dog.start + L) * d),
      rows.sources.subarray(dog.start * d, (dog.start + L) * d),
    );
  });

  test('errors: no pairs, empty prompts, encoder results of the wrong shape, alignment failures', async () => {
    const { encode } = fakeEncoder(d, L);
    const tokens = TOKENS;
    await assert.rejects(buildRows(encode, { pairs: [], tokens }), /no prompt pairs/);
    await assert.rejects(buildRows(encode, { pairs: [], preserve: ['a dog'], tokens }), /only preservation prompts/);
    await assert.rejects(
      buildRows(encode, { pairs: [{ source: '  ', destination: 'a dog' }], tokens }),
      (e: unknown) => e instanceof EditError && /pairs\[0\]\.source: " {2}" is not a prompt/.test(e.message),
    );
    await assert.rejects(
      buildRows(async (p) => (await encode(p)).slice(1), {
        pairs: [{ source: 'a dog', destination: 'a male dog' }],
        tokens,
      }),
      /returned 1 results for 2 prompts/,
    );
    await assert.rejects(
      buildRows(
        async (p) => (await encode(p)).map((e, i) => (i === 1 ? { ids: e.ids, hidden: e.hidden.subarray(d) } : e)),
        { pairs: [{ source: 'a dog', destination: 'a male dog' }], tokens },
      ),
      /prompt "a male dog" encoded to 12 ids and 88 hidden values/,
    );
    await assert.rejects(
      buildRows(encode, { pairs: [{ source: 'a female doctor', destination: 'a doctor' }], tokens }),
      /destination "a doctor" does not contain the source "a female doctor"'s token id 103/,
    );
  });
});
