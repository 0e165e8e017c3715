/**
 * Issue 11 from the command line: numbers that size memory or time are refused before any work
 * (no model is loaded: the model paths here do not even exist), outputs never inside a model.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { decode } from 'fast-png';
import { EXIT } from '../../src/cli/exit.js';
import { ensureDemoWorld } from '../../src/demo/world.js';
import { runCli } from './helpers.js';

const dir = mkdtempSync(join(tmpdir(), 'td-cli-guards-'));
after(() => rmSync(dir, { recursive: true, force: true }));

/** `generate` of a model that does not exist: anything refused must be refused before it is looked for. */
const generateArgs = (out: string, ...more: string[]) => [
  'generate',
  '--model',
  join(dir, 'no-model'),
  '--prompt',
  'x',
  '--seeds',
  '0',
  ...more,
  '--out',
  out,
];
/** `audit` of a model and classifier that do not exist. */
const auditArgs = (out: string, ...more: string[]) => [
  'audit',
  '--model',
  join(dir, 'no-model'),
  '--classifier',
  join(dir, 'no-clip'),
  '--professions',
  'winobias35',
  ...more,
  '--out',
  out,
];

test('generate --height 100000 --width 100000 is refused at once, before the model is loaded', async () => {
  const t0 = performance.now();
  const r = await runCli(generateArgs(join(dir, 'g'), '--height', '100000', '--width', '100000'));
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

test("the side limit comes from the model's unet/config.json when it declares sample_size (SD 2.x-768: 3072)", async () => {
  const args = (model: string) => [
    'generate',
    '--model',
    model,
    '--prompt',
    'x',
    '--seeds',
    '0',
    '--height',
    '2560',
    '--width',
    '64',
    // an output inside the model: refused right after the bounds, so no model is ever loaded here
    '--out',
    join(model, 'unet', 'imgs'),
  ];
  const sd2 = join(dir, 'sd2-768');
  mkdirSync(join(sd2, 'unet'), { recursive: true });
  writeFileSync(join(sd2, 'unet', 'config.json'), JSON.stringify({ sample_size: 96 }));
  const undeclared = join(dir, 'undeclared');
  mkdirSync(join(undeclared, 'unet'), { recursive: true });
  const [big, small] = await Promise.all([runCli(args(sd2)), runCli(args(undeclared))]);
  assert.equal(big.code, EXIT.output, big.stderr); // 2560 ≤ 4 × 768: past the bounds, stopped by --out
  assert.match(big.stderr, /--out: ".*imgs" is inside the model folder/);
  assert.equal(small.code, EXIT.generation, small.stderr);
  assert.match(small.stderr, /--height: 2560 is larger than 2048 \(rule: at most 4 × 512/);
});

test('audit --images 1e9 and --bootstrap 0 are refused before anything is loaded', async () => {
  const r = await runCli(auditArgs(join(dir, 'a'), '--images', '1000000000'));
  assert.equal(r.code, EXIT.usage, r.stderr);
  assert.match(r.stderr, /--images: \d+ images in all is more than this process can hold/);
  const b = await runCli(auditArgs(join(dir, 'a'), '--bootstrap', '0'));
  assert.equal(b.code, EXIT.usage, b.stderr);
  assert.match(b.stderr, /--bootstrap: 0 must be an integer ≥ 1/);
});

test('--threads 100000 is refused before anything is loaded (it was killed for memory after minutes)', async () => {
  for (const argv of [
    generateArgs(join(dir, 't'), '--threads', '100000'),
    auditArgs(join(dir, 't'), '--threads', '100000'),
  ]) {
    const r = await runCli(argv);
    assert.equal(r.code, EXIT.usage, r.stderr);
    assert.match(r.stderr, /--threads: 100000 is more than \d+ \(rule: at most 4 × the \d+ CPUs here/);
  }
});

test('generate onto a full disk: exit 8 naming --out and the file; every image left is whole, no temporary', async (t) => {
  if (process.platform !== 'linux' || process.getuid?.() !== 0) {
    t.skip('needs root on Linux to mount a small tmpfs');
    return;
  }
  const mnt = join(dir, 'full');
  mkdirSync(mnt);
  if (spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=160k', 'tmpfs', mnt]).status !== 0) {
    t.skip('cannot mount a tmpfs here');
    return;
  }
  try {
    const out = join(mnt, 'gen');
    const r = await runCli([
      'generate',
      '--model',
      ensureDemoWorld().modelDir,
      '--prompt',
      'a nurse',
      '--seeds',
      '0-63',
      '--steps',
      '2',
      '--height',
      '64',
      '--width',
      '64',
      '--out',
      out,
    ]);
    // was: a raw "ENOSPC: no space left on device, write" (exit 1), a truncated PNG under its final name
    assert.equal(r.code, EXIT.output, r.stderr);
    assert.match(r.stderr, /--out: cannot write ".*\.png": no space left on the device/);
    const names = readdirSync(out);
    assert.ok(names.length > 0 && names.length < 64, `${names.length} files`);
    assert.deepEqual(
      names.filter((n) => !/^\d{5}-\d+\.png$/.test(n)),
      [],
      'only whole images, no temporary',
    );
    for (const n of names) assert.equal(decode(readFileSync(join(out, n))).width, 64, n);
  } finally {
    spawnSync('umount', [mnt]);
  }
});

test('generate --out that cannot be made: exit 8 naming --out and the path, before the model is loaded', async () => {
  // was: rendered every image, then a raw "ENOTDIR: not a directory, mkdir …" (exit 1)
  const file = join(dir, 'a-file');
  writeFileSync(file, 'mine');
  const r = await runCli([
    'generate',
    '--model',
    join(dir, 'no-model'),
    '--prompt',
    'x',
    '--seeds',
    '0',
    '--out',
    join(file, 'imgs'),
  ]);
  assert.equal(r.code, EXIT.output, r.stderr);
  assert.match(
    r.stderr,
    /OutputError: --out: cannot write ".*a-file[/\\]imgs".*: a component of the path is not a folder/,
  );
  assert.equal(readFileSync(file, 'utf8'), 'mine');
});

test("generate into an earlier run's folder is refused before the model is loaded (was: after rendering every image)", async () => {
  const earlier = join(dir, 'earlier');
  mkdirSync(earlier);
  writeFileSync(join(earlier, 'generation.json'), '{}');
  writeFileSync(join(earlier, '00000-0.png'), 'an earlier image');
  const r = await runCli(generateArgs(earlier));
  assert.equal(r.code, EXIT.output, r.stderr);
  assert.match(r.stderr, /--out: ".*earlier" already holds a generation run \(generation\.json\)/);
  assert.equal(readFileSync(join(earlier, '00000-0.png'), 'utf8'), 'an earlier image');
});

test('audit and evaluate into a model folder are refused before anything is loaded', async () => {
  // was: audit ran and wrote its run folder into model/unet; evaluate (a later command) did the same
  const model = join(dir, 'model-ae');
  mkdirSync(join(model, 'unet'), { recursive: true });
  const out = join(model, 'unet', 'run');
  const audit = await runCli([
    'audit',
    '--model',
    model,
    '--classifier',
    join(dir, 'no-clip'),
    '--professions',
    'winobias35',
    '--out',
    out,
  ]);
  const evaluate = await runCli([
    'evaluate',
    '--dataset',
    'demo',
    '--model',
    model,
    '--classifier',
    join(dir, 'no-clip'),
    '--out',
    out,
  ]);
  for (const r of [audit, evaluate]) {
    assert.equal(r.code, EXIT.output, r.stderr);
    assert.match(r.stderr, /--out: ".*run" is inside the model folder/);
  }
  assert.deepEqual(readdirSync(join(model, 'unet')), []);
});

test('evaluate --images 1e9 and --height 100000 are refused before anything is loaded', async () => {
  // was: a V8 heap abort (exit 134) and a RangeError (exit 1)
  const common = [
    'evaluate',
    '--dataset',
    'demo',
    '--model',
    join(dir, 'no-model'),
    '--classifier',
    join(dir, 'no-clip'),
    '--lambda',
    '1',
    '--out',
    join(dir, 'ev'),
  ];
  const r = await runCli([...common, '--images', '1000000000']);
  assert.equal(r.code, EXIT.usage, r.stderr);
  assert.match(r.stderr, /--images: \d+ images in all is more than this process can hold/);
  const h = await runCli([...common, '--height', '100000', '--width', '100000']);
  assert.equal(h.code, EXIT.usage, h.stderr);
  assert.match(h.stderr, /--height: 100000 is larger than 2048/);
});
