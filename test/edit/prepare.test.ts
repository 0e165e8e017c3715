import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  alignmentTokens,
  type EditTokenizer,
  matchesLayerPrefix,
  planEdit,
  prepareEdit,
  selectSites,
} from '../../src/edit/prepare.js';
import type { EditSite } from '../../src/model/sites.js';
import { EditError, UsageError } from '../../src/util/errors.js';
import { EOS, fakeEncoder, ID, tokenize } from './fake-encoder.js';

function site(module: string, projection: 'to_k' | 'to_v'): EditSite {
  return {
    name: `${module}.transformer_blocks.0.attn2.${projection}`,
    projection,
    nodeName: `/${module}/${projection}/MatMul`,
    opType: 'MatMul',
    initializer: `onnx::MatMul_${module}_${projection}`,
    layout: 'transposed',
    d: 8,
    out: 4,
    dtype: 'float32',
    dataType: 1,
    storedDims: [8, 4],
  };
}
const MODULES = [
  'down_blocks.0.attentions.0',
  'mid_block.attentions.0',
  'up_blocks.1.attentions.0',
  'up_blocks.10.attentions.0',
];
const SITES = MODULES.flatMap((m) => [site(m, 'to_k'), site(m, 'to_v')]);

describe('selectSites: one rule for projections and layers', () => {
  test('a prefix matches at a "." boundary: up_blocks.1 is not up_blocks.10', () => {
    assert.ok(matchesLayerPrefix('up_blocks.1.attentions.0', 'up_blocks.1'));
    assert.ok(matchesLayerPrefix('up_blocks.1', 'up_blocks.1'));
    assert.ok(!matchesLayerPrefix('up_blocks.10.attentions.0', 'up_blocks.1'));
    const names = (s: EditSite[]) => s.map((x) => x.name.replace(/\.transformer_blocks.*\./, ' '));
    assert.deepEqual(names(selectSites(SITES, ['to_k', 'to_v'], ['up_blocks.1'])), [
      'up_blocks.1.attentions.0 to_k',
      'up_blocks.1.attentions.0 to_v',
    ]);
    assert.deepEqual(names(selectSites(SITES, ['to_v'], ['up_blocks.1.', 'mid_block'])), [
      'mid_block.attentions.0 to_v',
      'up_blocks.1.attentions.0 to_v',
    ]);
    assert.equal(selectSites(SITES, ['to_k', 'to_v'], null).length, SITES.length);
    assert.equal(selectSites(SITES, ['to_v'], undefined).length, MODULES.length);
  });
  test('a prefix that matches nothing, or a selection of none, is a UsageError naming the field', () => {
    for (const layers of [['up_blocks.2'], ['up_blocks.1', 'up_block'], ['down_blocks.0.attn']]) {
      assert.throws(
        () => selectSites(SITES, ['to_k', 'to_v'], layers),
        (e: unknown) =>
          e instanceof UsageError && e.field === 'layers' && /matches no cross-attention site/.test(e.message),
      );
    }
    assert.throws(
      () =>
        selectSites(
          SITES.filter((s) => s.projection === 'to_k'),
          ['to_v'],
          null,
        ),
      (e: unknown) => e instanceof UsageError && e.field === 'projections',
    );
  });
});

/** A tokenizer over the fake encoder's vocabulary (words → ids, padded with EOS). */
function tokenizer(options: { withoutAn?: boolean; maxLength?: number } = {}): EditTokenizer {
  const L = options.maxLength ?? 77;
  return {
    maxLength: L,
    eosId: EOS,
    encode: (text: string) => {
      const words = text.split(/\s+/).filter(Boolean).length;
      const ids = tokenize(
        text
          .split(/\s+/)
          .slice(0, L - 2)
          .join(' '),
        L,
      );
      return { ids, truncated: words > L - 2 } as ReturnType<EditTokenizer['encode']>;
    },
    idOf: (token: string) => {
      const word = token.replace(/<\/w>$/, '');
      if (options.withoutAn && word === 'an') return undefined;
      return ID[word];
    },
    tokenOf: (id: number) => {
      const word = Object.entries(ID).find(([, v]) => v === id)?.[0];
      if (word === undefined) throw new Error(`no token ${id}`);
      return `${word}</w>`;
    },
  };
}

describe('alignment tokens: "an" read as "a", one rule for every caller', () => {
  test('ids from the vocabulary; a token the vocabulary lacks is −1 (no prompt can hold it), never an error', () => {
    const t = alignmentTokens(tokenizer());
    assert.equal(t.a, ID.a);
    assert.equal(t.an, ID.an);
    assert.equal(t.eos, EOS);
    assert.equal(t.tokenText?.(ID.doctor as number), 'doctor</w>');
    assert.equal(t.tokenText?.(3), undefined);
    assert.equal(alignmentTokens(tokenizer({ withoutAn: true })).an, -1);
  });
});

describe('planEdit and prepareEdit', () => {
  test('augmented pairs are aligned and encoded once each; rows per pair and preserved prompt', async () => {
    const plan = planEdit(tokenizer(), {
      pairs: [
        { source: 'a doctor', destination: 'a female doctor' },
        { source: 'an attendant', destination: 'a male attendant' },
      ],
      augment: true,
      preserve: ['a dog'],
    });
    assert.equal(plan.expanded.length, 8);
    assert.deepEqual(
      plan.expanded.slice(0, 4).map((e) => e.source),
      ['a doctor', 'A photo of a doctor', 'An image of a doctor', 'A picture of a doctor'],
    );
    assert.deepEqual(plan.warnings, []);
    const { encode, calls } = fakeEncoder(6);
    const prepared = await prepareEdit(plan, async (prompts) => encode(prompts.map((p) => p.toLowerCase())));
    assert.equal(calls.length, 1);
    assert.deepEqual(prepared.pairRows, [4 * 77, 4 * 77]);
    assert.equal(prepared.preserveRows, 77);
    assert.equal(prepared.rows.n, 9 * 77);
    assert.equal(prepared.rows.d, 6);
  });
  test('an unalignable pair fails in the plan (before any encoding); long prompts warn once', () => {
    assert.throws(
      () => planEdit(tokenizer(), { pairs: [{ source: 'a doctor', destination: 'a female nurse' }], augment: false }),
      (e: unknown) => e instanceof EditError && /"a female nurse".*"a doctor".*"doctor<\/w>"/.test(e.message),
    );
    assert.throws(
      () => planEdit(tokenizer(), { pairs: [], augment: false }),
      (e: unknown) => e instanceof EditError && e.field === 'pairs',
    );
    const long = Array.from({ length: 10 }, () => 'dog').join(' ');
    const plan = planEdit(tokenizer({ maxLength: 8 }), {
      pairs: [{ source: long, destination: long }],
      augment: false,
      preserve: [long],
    });
    assert.equal(plan.warnings.length, 1);
    assert.match(plan.warnings[0] as string, /longer than 8 tokens; it was cut/);
  });
});
