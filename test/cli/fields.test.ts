import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { flagOfEditField } from '../../src/cli/commands/edit.js';
import { EXIT, exitCodeFor } from '../../src/cli/exit.js';
import { configPathOf, flagOf, relabelForUser } from '../../src/cli/fields.js';
import { RuntimeError as OrtRuntimeError, validateDevice } from '../../src/runtime/ort.js';
import { GenerationError, OutputError, RuntimeError, TimeDebiasError, UsageError } from '../../src/util/errors.js';
import { runCli } from './helpers.js';

describe('library fields → the user’s names', () => {
  test('flags: the table, else the kebab-cased name; indices and sub-keys follow', () => {
    assert.equal(flagOf('steps'), '--steps');
    assert.equal(flagOf('negativePrompt'), '--negative-prompt');
    assert.equal(flagOf('batchSize'), '--batch-size');
    assert.equal(flagOf('modelDir'), '--model');
    assert.equal(flagOf('outDir'), '--out');
    assert.equal(flagOf('preserve.weight'), '--preserve-weight');
    assert.equal(flagOf('preserve.prompts[1]'), '--preserve #2');
    assert.equal(flagOf('seeds[3]'), '--seeds #4');
    assert.equal(flagOf('not a field'), 'not a field');
  });
  test('config paths: configs/schema.json keys; unknown fields stay as they are', () => {
    assert.equal(configPathOf('steps'), 'config.generation.steps');
    assert.equal(configPathOf('negativePrompt'), 'config.generation.negativePrompt');
    assert.equal(configPathOf('layers'), 'config.edit.layers');
    assert.equal(configPathOf('preserve.prompts[1]'), 'config.preserve.prompts[1]');
    assert.equal(configPathOf('device'), 'config.device');
    assert.equal(configPathOf('pairs[0].source'), 'pairs[0].source');
  });
  test('edit pairs: --source/--destination for the one pair, the file row for a pairs file', () => {
    assert.equal(flagOfEditField('pairs[0].source', undefined), '--source');
    assert.equal(flagOfEditField('pairs[0].destination', undefined), '--destination');
    assert.equal(flagOfEditField('pairs[1].destination', 'p.tsv'), '--pairs p.tsv pair 2 destination');
    assert.equal(flagOfEditField('pairs[2].weight', 'p.tsv'), '--pairs p.tsv pair 3 weight');
    assert.equal(flagOfEditField('lambda', undefined), '--lambda');
  });
  test('relabel rewrites the message once and keeps field and detail', () => {
    const e = new GenerationError('0 must be an integer ≥ 1', { field: 'steps' });
    assert.equal(e.message, 'steps: 0 must be an integer ≥ 1');
    assert.equal(e.field, 'steps');
    relabelForUser(e, configPathOf);
    assert.equal(e.message, 'config.generation.steps: 0 must be an integer ≥ 1');
    relabelForUser(e, flagOf); // already relabelled: left alone
    assert.equal(e.message, 'config.generation.steps: 0 must be an integer ≥ 1');
    assert.equal(e.detail, '0 must be an integer ≥ 1');
    const plain = new OutputError('disk full');
    assert.equal(relabelForUser(plain, flagOf), plain);
    assert.equal(plain.message, 'disk full');
    const other = new Error('x');
    assert.equal(relabelForUser(other, flagOf), other);
  });

  test('parameters mentioned in the detail are renamed with the field', () => {
    const e = new OutputError('"out" already exists; replace it (`force`), or `keepImages` stays', {
      field: 'outDir',
      mentions: ['force', 'keepImages'],
    });
    assert.equal(e.message, 'outDir: "out" already exists; replace it (`force`), or `keepImages` stays');
    relabelForUser(e, flagOf);
    assert.equal(e.message, '--out: "out" already exists; replace it (--force), or --keep-images stays');
    assert.deepEqual(e.mentions, ['force', 'keepImages']);
  });
});

describe('one error family', () => {
  test('RuntimeError is a TimeDebiasError (the one class, re-exported by runtime/ort.ts)', () => {
    assert.equal(OrtRuntimeError, RuntimeError);
    const e = new RuntimeError('unet: run failed', { cause: new Error('inner') });
    assert.ok(e instanceof TimeDebiasError);
    assert.equal(e.name, 'RuntimeError');
    assert.equal(exitCodeFor(e), EXIT.failure);
  });
  test('a bad device name is a UsageError naming the field `device`, exit code 2', () => {
    assert.throws(
      () => validateDevice('tpu'),
      (e: unknown) => {
        assert.ok(e instanceof UsageError);
        assert.equal(e.field, 'device');
        assert.match(e.message, /^device: "tpu" is not a known device; valid devices are cpu, cuda$/);
        assert.equal(exitCodeFor(e), EXIT.usage);
        return true;
      },
    );
  });
  test('time-debias generate --device tpu exits 2 and names --device', async () => {
    const r = await runCli(
      ['generate', '--model', 'nowhere', '--prompt', 'a cat', '--seeds', '0', '--out', 'x', '--device', 'tpu'],
      180_000,
    );
    assert.equal(r.code, EXIT.usage, r.stderr);
    assert.match(r.stderr, /^time-debias: UsageError: --device: "tpu" is not a known device/m);
  });
});
