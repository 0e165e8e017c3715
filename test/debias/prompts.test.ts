import assert from 'node:assert/strict';
import { test } from 'node:test';
import { normalizeConfig } from '../../src/debias/config.js';
import {
  attributedPrompts,
  preservationPrompts,
  UNRELATED_PROMPTS,
  unrelatedPreservationWeights,
} from '../../src/debias/prompts.js';

const doctor = { profession: 'doctor', article: 'a' as const };

test('preservation: attributed prompts keep μ = preserve.weight, the unrelated ones get preserve.unrelatedWeight', () => {
  const config = normalizeConfig(
    {
      model: 'demo',
      classifier: 'demo',
      professions: { list: 'demo' },
      preserve: { prompts: ['a red car'], unrelatedWeight: 7 },
    },
    '/base',
  );
  const all = preservationPrompts(config, [doctor]);
  const attributed = attributedPrompts(config, [doctor]);
  assert.deepEqual(attributed, ['a female person', 'a female doctor', 'a male person', 'a male doctor']);
  const weights = unrelatedPreservationWeights(config, [doctor]);
  assert.deepEqual([...weights.keys()], [...UNRELATED_PROMPTS, 'a red car']);
  assert.ok([...weights.values()].every((w) => w === 7));
  assert.deepEqual(all, [...attributed, ...UNRELATED_PROMPTS, 'a red car']);
  // without the defaults only the config's own prompts are preserved, all as unrelated
  const own = normalizeConfig(
    {
      model: 'demo',
      classifier: 'demo',
      professions: { list: 'demo' },
      preserve: { defaults: false, prompts: ['a tree'] },
    },
    '/base',
  );
  assert.deepEqual([...unrelatedPreservationWeights(own, [doctor]).entries()], [['a tree', 10]]);
});
