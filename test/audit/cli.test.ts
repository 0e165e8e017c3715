/** The classify, audit --from-images and compare commands through the real CLI, and their exit codes. */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { encode } from 'fast-png';
import { ClipClassifier } from '../../src/classify/clip.js';
import { attributeFromLabels } from '../../src/classify/labels.js';
import { CLASSIFY_EXAMPLES, renderClassifyTable } from '../../src/cli/commands/classify.js';
import { EXIT } from '../../src/cli/exit.js';
import { testImage } from '../classify/fixtures.js';
import { checkMarkup, makeTinyWorld } from './world.js';

const CLI = fileURLToPath(new URL('../../src/cli.ts', import.meta.url));
const world = makeTinyWorld();
const images = join(world.root, 'images');
after(() => world.cleanup());

function cli(...argv: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--import', 'tsx', CLI, ...argv], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => {
      stdout += d;
    });
    child.stderr.on('data', (d) => {
      stderr += d;
    });
    child.on('exit', (code) => resolve({ code, stdout, stderr }));
  });
}

before(() => {
  // a folder of images per profession, as another generator would leave them
  ['nurse', 'construction_worker'].forEach((p, j) => {
    mkdirSync(join(images, p), { recursive: true });
    for (let k = 0; k < 5; k++) {
      const img = testImage(k + 5 * j);
      writeFileSync(
        join(images, p, `img-${k}.png`),
        encode({ width: img.width, height: img.height, data: img.data, channels: 3, depth: 8 }),
      );
    }
  });
});

test('classify prints the probabilities the library computes', async () => {
  const files = [join(images, 'nurse', 'img-0.png'), join(images, 'nurse', 'img-1.png')];
  const labels = ['a photo of a woman', 'a photo of a man'];
  const r = await cli('classify', '--classifier', world.classifier, '--labels', ...labels, '--json', ...files);
  assert.equal(r.code, EXIT.ok, r.stderr);
  const out = JSON.parse(r.stdout);
  const clf = await ClipClassifier.load(world.classifier);
  try {
    const expected = await clf.classify(files, attributeFromLabels(labels));
    out.images.forEach((img: { probabilities: Record<string, number>; label: string }, i: number) => {
      assert.equal(img.label, expected[i]!.label);
      assert.ok(Math.abs(img.probabilities[labels[0]!]! - expected[i]!.probabilities[labels[0]!]!) < 1e-6);
    });
  } finally {
    await clf.dispose();
  }
  const table = renderClassifyTable(out.images, labels);
  assert.match(table, /image\s+label\s+a photo of a woman\s+a photo of a man/);
  assert.equal(table.trimEnd().split('\n').length, 2 + files.length);
});

test('audit --from-images, then compare; a changed setting on the same folder exits with the output code', async () => {
  const run = join(world.root, 'run-images');
  const a = await cli(
    'audit',
    '--from-images',
    images,
    '--classifier',
    world.classifier,
    '--out',
    run,
    '--bootstrap',
    '200',
    '--json',
  );
  assert.equal(a.code, EXIT.ok, a.stderr);
  const summary = JSON.parse(a.stdout);
  assert.deepEqual(
    summary.professions.map((p: { profession: string; images: number }) => [p.profession, p.images]),
    [
      ['construction worker', 5],
      ['nurse', 5],
    ],
  );
  const audit = JSON.parse(readFileSync(join(run, 'audit.json'), 'utf8'));
  assert.equal(audit.images.length, 10);
  assert.equal(audit.plan.source, 'images');
  checkMarkup(readFileSync(join(run, 'report.html'), 'utf8'));
  const [c, changed] = await Promise.all([
    cli('compare', run, run, '--out', join(world.root, 'cmp'), '--json'),
    cli('audit', '--from-images', images, '--classifier', world.classifier, '--out', run, '--threshold', '0.9'),
  ]);
  assert.equal(c.code, EXIT.ok, c.stderr);
  assert.equal(JSON.parse(c.stdout).summary.significant, 0);
  assert.equal(changed.code, EXIT.output);
  assert.match(changed.stderr, /other settings \(threshold differ\).*--restart/);
});

test("bad inputs exit with their area's code and a message naming the argument", async () => {
  const audit = (out: string, ...more: string[]) =>
    cli('audit', '--model', world.model, '--classifier', world.classifier, ...more, '--out', join(world.root, out));
  const [n0, noClassifier, unknownList, negativeSheet] = await Promise.all([
    audit('x', '--professions', 'winobias35', '--images', '0'),
    cli('classify', '--classifier', join(world.root, 'missing'), join(images, 'nurse', 'img-0.png')),
    audit('y', '--professions', 'nope'),
    audit('z', '--professions', 'winobias35', '--select', 'nurse', '--images', '1', '--sheet-images', '-1'),
  ]);
  assert.equal(n0.code, EXIT.usage);
  assert.match(n0.stderr, /--images: 0 must be an integer ≥ 1/);
  assert.equal(negativeSheet.code, EXIT.usage, negativeSheet.stderr);
  assert.match(negativeSheet.stderr, /--sheet-images: -1 must be an integer ≥ 0/);
  assert.ok(!existsSync(join(world.root, 'z', 'records.jsonl')), 'refused before any image');
  assert.equal(noClassifier.code, EXIT.classifier);
  assert.match(noClassifier.stderr, /--classifier: ".*missing" does not exist/);
  assert.equal(unknownList.code, EXIT.usage);
  assert.match(unknownList.stderr, /--professions: "nope" is not a known list/);
});

test('classify: the README/--help examples run as written; images and labels cannot be confused', async () => {
  const a = join(images, 'nurse', 'img-0.png');
  const b = join(images, 'nurse', 'img-1.png');
  const labels = ['a photo of a woman', 'a photo of a man'];
  // the --help examples (the README's first), with this world's classifier and images substituted
  for (const example of CLASSIFY_EXAMPLES) {
    const words = [...example.matchAll(/"([^"]*)"|(\S+)/g)].map((m) => (m[1] ?? m[2]) as string).slice(1);
    const argv = words.map((w) =>
      w === './clip' ? world.classifier : w === 'img1.png' ? a : w === 'img2.png' ? b : w,
    );
    const r = await cli(argv[0] as string, '--json', ...argv.slice(1));
    assert.equal(r.code, EXIT.ok, `${example}\n${r.stderr}`);
    const out = JSON.parse(r.stdout);
    assert.deepEqual(out.classes, labels);
    assert.deepEqual(
      out.images.map((i: { image: string }) => i.image),
      [a, b],
    );
  }
  const readme = readFileSync(fileURLToPath(new URL('../../README.md', import.meta.url)), 'utf8');
  assert.ok(
    readme.includes(
      CLASSIFY_EXAMPLES[0]!.replace('$0 ', 'npx time-debias ').replace('./clip', 'models/clip-vit-base-patch32'),
    ),
  );
  // `good.png --labels A B one.png`: one.png used to become a third label; now refused
  const r = await cli('classify', '--classifier', world.classifier, a, '--labels', ...labels, b);
  assert.equal(r.code, EXIT.usage, r.stderr);
  assert.match(
    r.stderr,
    /--labels: ".*img-1\.png" is an existing file, not a label prompt; give the images before --labels or after "--"/,
  );
  // the old README form: every image taken as a label → refused, not "Not enough non-option arguments"
  const old = await cli('classify', '--classifier', world.classifier, '--labels', ...labels, a);
  assert.equal(old.code, EXIT.usage, old.stderr);
  assert.match(old.stderr, /is an existing file, not a label prompt/);
});
