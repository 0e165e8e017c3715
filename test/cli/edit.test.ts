/**
 * `time-debias edit` as a user runs it (node bin/time-debias.js): a successful edit (human summary
 * and --json, one pair and a --pairs file), and every bad input of issue 2's list — each must exit
 * non-zero with a message naming what is wrong, and write NOTHING (the output path does not exist
 * afterwards, no temporary folder is left, the input folder is unchanged).
 */
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { requestFromArgs } from '../../src/cli/commands/edit.js';
import { EXIT } from '../../src/cli/exit.js';
import { buildTinySdModel } from '../../src/demo/sd-model.js';
import { UsageError } from '../../src/util/errors.js';
import { checksums, tempDir } from '../onnx/helpers.js';
import {
  type BrokenKind,
  buildBrokenModel,
  type CliRun,
  exportLeftovers,
  inBatches,
  listFiles,
  runCli,
} from './helpers.js';

const tmp = tempDir('cli-edit');
after(tmp.cleanup);

const good = join(tmp.dir, 'good', 'model');
const PAIR = ['--source', 'a pack of roses', '--destination', 'a pack of blue roses'];

describe('time-debias edit: success', () => {
  before(() => {
    buildTinySdModel(good, { sites: 2 });
  });

  test('human summary (--pairs TSV, --augment) and --json (one pair, --lambda, --no-keys)', async () => {
    const sums = checksums(good);
    const tsv = join(tmp.dir, 'pairs.tsv');
    writeFileSync(tsv, 'source\tdestination\tweight\na doctor\ta female doctor\t2\na nurse\ta male nurse\t\n');
    const outHuman = join(tmp.dir, 'ok-human');
    const outJson = join(tmp.dir, 'ok-json');
    const [human, json] = await Promise.all([
      runCli(['edit', '--model', good, '--pairs', tsv, '--augment', '--out', outHuman, '--threads', '1']),
      runCli([...edit(good, outJson), '--lambda', '0.5', '--no-keys', '--json', '--threads', '1']),
    ]);
    assert.equal(human.code, EXIT.ok, human.stderr);
    assert.match(human.stdout, /Edited model written to .*ok-human/);
    assert.match(
      human.stdout,
      /2 pairs, λ = 0\.1, with augmentations; 616 rows; woodbury solve|2 pairs, λ = 0\.1, with augmentations; 616 rows; cholesky solve/,
    );
    assert.match(human.stdout, /"a doctor" → "a female doctor" {2}\(λ_p = 0\.05, 308 rows\)/);
    assert.match(human.stdout, /site\s+shape \[out, d\]\s+dtype\s+‖ΔW‖\/‖W‖/);
    assert.match(
      human.stdout,
      /down_blocks\.0\.attentions\.0\.transformer_blocks\.0\.attn2\.to_k\s+\[8, 32\]\s+float32\s+\d\.\d+e-?\d+/,
    );
    assert.match(human.stderr, /edit: solving for M \(616 rows, d = 32\)/);
    assert.deepEqual(listFiles(outHuman), [...listFiles(good), 'edit.safetensors', 'time-edit.json'].sort());
    const manifest = JSON.parse(readFileSync(join(outHuman, 'time-edit.json'), 'utf8'));
    assert.equal(manifest.pairsFile, tsv);
    assert.equal(manifest.rows.total, 616);

    assert.equal(json.code, EXIT.ok, json.stderr);
    const result = JSON.parse(json.stdout);
    assert.equal(result.kind, 'time-edit');
    assert.equal(result.lambda, 0.5);
    assert.deepEqual(result.projections, ['to_v']);
    assert.equal(result.sites.length, 2);
    assert.ok(
      result.sites.every(
        (s: { projection: string; relativeChange: number }) => s.projection === 'to_v' && s.relativeChange > 0,
      ),
    );
    assert.equal(json.stderr, '', '--json prints no progress lines');
    assert.deepEqual(checksums(good), sums);
  });
});

describe('time-debias edit: options to request (in process)', () => {
  const args = {
    model: 'm',
    out: 'o',
    augment: false,
    keys: true,
    force: false,
    json: false,
    device: 'cpu',
  };
  test('one pair, defaults left to the library', () => {
    const r = requestFromArgs({ ...args, source: 'a cat', destination: 'a blue cat' });
    assert.deepEqual(r.pairs, [{ source: 'a cat', destination: 'a blue cat' }]);
    assert.equal(r.lambda, undefined);
    assert.deepEqual(r.projections, ['to_k', 'to_v']);
    assert.equal(r.pairsFile, undefined);
  });
  test('--no-keys, --layers, --preserve with --preserve-weight, numbers parsed', () => {
    const r = requestFromArgs({
      ...args,
      source: 'a cat',
      destination: 'a blue cat',
      keys: false,
      layers: ['up_blocks.3'],
      preserve: ['a dog'],
      'preserve-weight': '0.5',
      lambda: '1e-2',
      threads: '2',
    });
    assert.deepEqual(r.projections, ['to_v']);
    assert.deepEqual(r.layers, ['up_blocks.3']);
    assert.deepEqual(r.preserve, { prompts: ['a dog'], weight: 0.5 });
    assert.equal(r.lambda, 0.01);
    assert.equal(r.threads, 2);
  });
  test('conflicting or incomplete options are rejected with the option named', () => {
    const bad: [Record<string, unknown>, RegExp][] = [
      [{ source: 'a cat' }, /--destination is missing/],
      [{ destination: 'a cat' }, /--source is missing/],
      [{}, /no edit given: pass --source TEXT --destination TEXT, or --pairs FILE/],
      [{ source: 'a', destination: 'b', pairs: 'p.tsv' }, /--pairs "p\.tsv" cannot be combined/],
      [{ pairs: join(tmp.dir, 'no-such.tsv') }, /--pairs: file ".*no-such\.tsv" does not exist/],
      [{ source: 'a', destination: 'b', 'preserve-weight': '2' }, /--preserve-weight "2" was given without --preserve/],
      [{ source: 'a', destination: 'b', lambda: 'abc' }, /--lambda: "abc" is not a finite number/],
      [{ source: 'a', destination: 'b', lambda: '' }, /--lambda: "" is not a finite number/],
      [{ source: 'a', destination: 'b', threads: 'two' }, /--threads: "two" is not a finite number/],
    ];
    for (const [extra, pattern] of bad) {
      assert.throws(
        () => requestFromArgs({ ...args, ...extra } as Parameters<typeof requestFromArgs>[0]),
        (e: Error) => e instanceof UsageError && pattern.test(e.message),
        JSON.stringify(extra),
      );
    }
  });
});

interface BadCase {
  name: string;
  /** Build what the case needs; returns the model folder. */
  model: () => string;
  args: (model: string, out: string) => string[];
  exit: number;
  message: RegExp;
}

const broken = (kind: BrokenKind) => () => {
  const dir = join(tmp.dir, kind, 'model');
  buildBrokenModel(dir, join(tmp.dir, kind, 'outside'), kind);
  return dir;
};
const goodModel = () => {
  if (!existsSync(good)) buildTinySdModel(good, { sites: 2 });
  return good;
};
const edit = (model: string, out: string, ...extra: string[]) => [
  'edit',
  '--model',
  model,
  ...PAIR,
  '--out',
  out,
  ...extra,
];

const BAD: BadCase[] = [
  {
    name: 'missing model folder',
    model: () => join(tmp.dir, 'no-such-model'),
    args: edit,
    exit: EXIT.model,
    message: /ModelFormatError: model folder ".*no-such-model" does not exist/,
  },
  {
    name: 'missing file (unet/model.onnx)',
    model: broken('missing-unet'),
    args: edit,
    exit: EXIT.model,
    message: /the unet component: ".*unet\/model\.onnx" does not exist/,
  },
  {
    name: 'not an ONNX file',
    model: broken('not-onnx'),
    args: edit,
    exit: EXIT.model,
    message: /is not an ONNX model/,
  },
  {
    name: 'truncated external data',
    model: broken('truncated-external'),
    args: edit,
    exit: EXIT.model,
    message: /runs past the end of ".*weights\.pb".*truncated/,
  },
  {
    name: 'absolute location',
    model: broken('absolute-location'),
    args: edit,
    exit: EXIT.model,
    message: /external data location ".*" is absolute/,
  },
  {
    name: '.. in location',
    model: broken('dotdot-location'),
    args: edit,
    exit: EXIT.model,
    message: /location "\.\.\/unet\/weights\.pb" contains '\.\.'/,
  },
  {
    name: 'symlink out of the folder',
    model: broken('symlink-location'),
    args: edit,
    exit: EXIT.model,
    message: /location "linked\.pb" resolves to .*outside the model folder/,
  },
  {
    name: 'no cross-attention sites',
    model: broken('no-sites'),
    args: edit,
    exit: EXIT.model,
    message: /no cross-attention sites found/,
  },
  {
    name: 'd mismatch',
    model: broken('d-mismatch'),
    args: edit,
    exit: EXIT.model,
    message: /text width mismatch.*48.*32/,
  },
  {
    name: 'empty prompt',
    model: goodModel,
    args: (m, o) => ['edit', '--model', m, '--source', ' ', '--destination', 'a cat', '--out', o],
    exit: EXIT.usage,
    message: /--source: " " is empty/,
  },
  {
    name: 'λ = 0',
    model: goodModel,
    args: (m, o) => edit(m, o, '--lambda', '0'),
    exit: EXIT.usage,
    message: /--lambda: 0 is not valid; λ must be a finite number > 0/,
  },

  {
    name: 'λ not a number',
    model: goodModel,
    args: (m, o) => edit(m, o, '--lambda', 'abc'),
    exit: EXIT.usage,
    message: /--lambda: "abc" is not a finite number/,
  },
  {
    name: 'output exists',
    model: goodModel,
    args: (m, o) => {
      mkdirSync(o, { recursive: true });
      return edit(m, o);
    },
    exit: EXIT.output,
    message: /OutputError: --out: ".*" already exists; choose another folder, or replace it \(--force\)/,
  },
  {
    name: '--pairs with --source',
    model: goodModel,
    args: (m, o) => edit(m, o, '--pairs', join(tmp.dir, 'pairs.tsv')),
    exit: EXIT.usage,
    message: /--pairs ".*" cannot be combined with --source\/--destination/,
  },

  {
    name: 'destination lacks a source token',
    model: goodModel,
    args: (m, o) => ['edit', '--model', m, '--source', 'a pack of roses', '--destination', 'a blue flower', '--out', o],
    exit: EXIT.edit,
    message:
      /EditError: alignment: destination "a blue flower" does not contain the source "a pack of roses"'s token "pack<\/w>"/,
  },
];

describe('time-debias edit: bad inputs exit non-zero and write nothing', () => {
  const results = new Map<
    string,
    { run: CliRun; out: string; model: string; sumsBefore: Record<string, string> | null }
  >();

  before(async () => {
    // Spawn the cases a few at a time (each is a fresh node process).
    const prepared = BAD.map((c, i) => {
      const model = c.model();
      const out = join(tmp.dir, `bad-out-${i}`, 'edited');
      const sumsBefore = existsSync(model) ? checksums(model) : null;
      const args = c.args(model, out);
      return { c, model, out, args, sumsBefore };
    });
    const runs = await inBatches(
      prepared.map((p) => () => runCli(p.args)),
      4,
    );
    prepared.forEach((p, i) => {
      results.set(p.c.name, { run: runs[i] as CliRun, out: p.out, model: p.model, sumsBefore: p.sumsBefore });
    });
  });

  for (const c of BAD) {
    test(c.name, () => {
      const r = results.get(c.name);
      assert.ok(r);
      assert.equal(r.run.code, c.exit, `exit code; stderr: ${r.run.stderr}`);
      assert.match(r.run.stderr, c.message);
      assert.match(r.run.stderr.trimEnd().split('\n').at(-1) ?? '', /^time-debias: /, 'the error is the last line');
      assert.equal(r.run.stdout, '');
      if (c.name === 'output exists') {
        assert.deepEqual(listFiles(r.out), [], 'the existing output folder is left as it was');
      } else {
        assert.equal(existsSync(r.out), false, `nothing may be written at ${r.out}`);
      }
      assert.deepEqual(exportLeftovers(r.out), []);
      if (r.sumsBefore) assert.deepEqual(checksums(r.model), r.sumsBefore, 'the input folder is unchanged');
    });
  }
});
