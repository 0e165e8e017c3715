/**
 * Issue 11 from the command line: numbers that size memory or time are refused before any work
 * (no model is loaded: the model paths here do not even exist), outputs never inside a model.
 */
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { EXIT } from '../../src/cli/exit.js';
import { runCli } from './helpers.js';

const dir = mkdtempSync(join(tmpdir(), 'td-cli-guards-'));
after(() => rmSync(dir, { recursive: true, force: true }));

test('generate --height 100000 --width 100000 is refused at once, before the model is loaded', async () => {
  const t0 = performance.now();
  const r = await runCli([
    'generate',
    '--model',
    join(dir, 'no-model'),
    '--prompt',
    'x',
    '--seeds',
    '0',
    '--height',
    '100000',
    '--width',
    '100000',
    '--out',
    join(dir, 'g'),
  ]);
  assert.equal(r.code, EXIT.generation, r.stderr);
  assert.match(r.stderr, /--height: 100000 is larger than 2048/);
  assert.ok(performance.now() - t0 < 30_000);
});

test('generate into a model folder is refused before rendering', async () => {
  const model = join(dir, 'model');
  mkdirSync(join(model, 'unet'), { recursive: true });
  const r = await runCli([
    'generate',
    '--model',
    model,
    '--prompt',
    'x',
    '--seeds',
    '0',
    '--out',
    join(model, 'unet', 'imgs'),
  ]);
  assert.equal(r.code, EXIT.output, r.stderr);
  assert.match(r.stderr, /--out: ".*imgs" is inside the model folder/);
});

test('audit --images 1e9 and --bootstrap 0 are refused before anything is loaded', async () => {
  const common = [
    'audit',
    '--model',
    join(dir, 'no-model'),
    '--classifier',
    join(dir, 'no-clip'),
    '--professions',
    'winobias35',
    '--out',
    join(dir, 'a'),
  ];
  const r = await runCli([...common, '--images', '1000000000']);
  assert.equal(r.code, EXIT.usage, r.stderr);
  assert.match(r.stderr, /--images: \d+ images in all is more than this process can hold/);
  const b = await runCli([...common, '--bootstrap', '0']);
  assert.equal(b.code, EXIT.usage, b.stderr);
  assert.match(b.stderr, /--bootstrap: 0 must be an integer ≥ 1/);
});
