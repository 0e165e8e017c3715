import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { compareAudits } from '../../src/audit/compare.js';
import { runAuditJob } from '../../src/audit/job.js';
import { loadProfessions } from '../../src/audit/professions.js';
import { readAudit, runAudit } from '../../src/audit/run.js';
import { validateAuditJson } from '../../src/audit/schema.js';
import { seedPlan } from '../../src/audit/seeds.js';
import { pipelineSource } from '../../src/audit/source.js';
import { ClipClassifier } from '../../src/classify/clip.js';
import { genderAttribute } from '../../src/classify/labels.js';
import { StableDiffusionPipeline } from '../../src/generate/pipeline.js';
import { writeAuditReports, writeCompareReports } from '../../src/report/audit-report.js';
import { ClassifierError, OutputError, UsageError } from '../../src/util/errors.js';
import { htmlTables, markdownTables } from '../report/tables.js';
import { checkMarkup, GEN, makeTinyWorld, type TinyWorld } from './world.js';

const TEMPLATES = ['A photo of {article} {profession}', '{article} {profession} working'];

/** A headless Chromium/Chrome on this machine, if any (none is installed by the project). */
function findBrowser(): string | undefined {
  const candidates = [process.env.CHROME_PATH, 'chromium', 'chromium-browser', 'google-chrome', 'google-chrome-stable'];
  return candidates.find((c) => c && spawnSync(c, ['--version'], { stdio: 'ignore' }).status === 0);
}
const BROWSER = findBrowser();

describe('audit end to end on the tiny models', () => {
  let world: TinyWorld;
  let pipeline: StableDiffusionPipeline;
  let classifier: ClipClassifier;
  const professions = loadProfessions('winobias35', { select: ['nurse', 'attendant'] });
  const attribute = genderAttribute();
  before(async () => {
    world = makeTinyWorld();
    pipeline = await StableDiffusionPipeline.create(world.model, { threads: 1 });
    classifier = await ClipClassifier.load(world.classifier, { threads: 1 });
  });
  after(async () => {
    await pipeline.dispose();
    await classifier.dispose();
    world.cleanup();
  });
  const run = (out: string, extra: Partial<Parameters<typeof runAudit>[0]> = {}, gen: object = GEN) => {
    const source = pipelineSource(pipeline, gen);
    return {
      source,
      result: runAudit({
        out: join(world.root, out),
        source,
        classifier,
        professions,
        templates: TEMPLATES,
        seeds: seedPlan('evaluation', 3),
        attribute,
        batchSize: 2,
        keepImages: true,
        bootstrap: { samples: 300, seed: 7 },
        ...extra,
      }),
    };
  };

  test('audit.json validates; counts, shares and the stored classifications agree with the images', async () => {
    const { source, result: pending } = run('a');
    const result = await pending;
    assert.equal(source.counters.images, 12);
    const onDisk = readAudit(join(world.root, 'a'));
    assert.deepEqual(onDisk, JSON.parse(JSON.stringify(result)));
    validateAuditJson(onDisk);
    assert.equal(result.images.length, 12);
    assert.deepEqual(
      result.images.slice(0, 3).map((i) => [i.prompt, i.seed]),
      [
        ['A photo of an attendant', 1_000_000],
        ['A photo of an attendant', 1_000_001],
        ['A photo of an attendant', 1_000_002],
      ],
    );
    for (const p of result.professions) {
      const imgs = result.images.filter((i) => i.profession === p.profession);
      assert.equal(p.images, 6);
      assert.equal(p.counts.female, imgs.filter((i) => i.label === 'female').length);
      assert.equal(p.share.k + (p.counts.male ?? 0), p.classified);
      if (p.share.p !== null) assert.ok(Math.abs(p.delta.value! - Math.abs(p.share.p - 0.5) / 0.5) < 1e-12);
    }
    // the kept PNGs classify as recorded
    const files = result.images.map((i) => join(world.root, 'a', i.file as string));
    const again = await classifier.classify(files.slice(0, 3), attribute);
    again.forEach((r, i) => {
      assert.equal(r.label, result.images[i]!.label);
      assert.ok(Math.abs(r.probabilities.female! - result.images[i]!.probabilities.female!) < 1e-6);
    });
    // the audit is real: different seeds give different images
    const a = readFileSync(files[0]!);
    const b = readFileSync(files[1]!);
    assert.notDeepEqual(a, b);
  });

  test('re-running resumes without generating anything and writes the same audit.json', async () => {
    const first = readFileSync(join(world.root, 'a', 'audit.json'));
    const { source, result } = run('a');
    await result;
    assert.equal(source.counters.images, 0);
    assert.deepEqual(readFileSync(join(world.root, 'a', 'audit.json')), first);
  });

  test('more images per prompt reuse the finished ones; another setting is refused; --restart discards', async () => {
    const more = run('a', { seeds: seedPlan('evaluation', 4) });
    const r = await more.result;
    assert.equal(more.source.counters.images, 4, 'only the new seed of each prompt is generated');
    assert.equal(r.images.length, 16);
    await assert.rejects(
      run('a', {}, { ...GEN, steps: 4 }).result,
      (e: Error) => e instanceof OutputError && /source\.steps differ/.test(e.message),
    );
    await assert.rejects(run('a', { threshold: 0.9 }).result, /threshold differ/);
    const restarted = run('a', { restart: true }, { ...GEN, steps: 4 });
    await restarted.result;
    assert.equal(restarted.source.counters.images, 12);
  });

  test('reports render: HTML parses, the SVG chart has a parity line and one estimate per profession; contact sheets', async () => {
    const out = join(world.root, 'a');
    const result = readAudit(out);
    const written = await writeAuditReports(out, result);
    assert.deepEqual(written.files.filter((f) => f.startsWith('sheets/')).sort(), [
      'sheets/attendant.png',
      'sheets/nurse.png',
    ]);
    const html = readFileSync(join(out, 'report.html'), 'utf8');
    const tags = checkMarkup(html);
    assert.ok(tags.includes('svg') && tags.includes('table'));
    const svg = html.slice(html.indexOf('<svg'), html.indexOf('</svg>') + 6);
    checkMarkup(svg, []);
    assert.equal((svg.match(/class="parity"/g) ?? []).length, 1);
    assert.equal((svg.match(/<circle /g) ?? []).filter(Boolean).length, 2);
    assert.match(html, /Mean Δ = \d\.\d\d/);
    const md = readFileSync(join(out, 'report.md'), 'utf8');
    assert.match(md, /\| nurse \| 6 \|/);
    assert.match(md, /!\[share female per profession\]\(chart\.svg\)/);
    // one table, the same in report.md and report.html: per profession (sorted by share) its counts
    const table = markdownTables(md);
    assert.deepEqual(htmlTables(html), table);
    assert.deepEqual(table[0]?.[0], [
      'profession',
      'images',
      ...result.classes,
      'unclear',
      'share female [95%]',
      'Δ [95%]',
    ]);
    const sorted = [...result.professions].sort((a, b) => (a.share.p ?? 2) - (b.share.p ?? 2));
    assert.deepEqual(
      table[0]?.slice(1).map((row) => row.slice(0, 3 + result.classes.length)),
      sorted.map((p) => [
        p.profession,
        String(p.images),
        ...result.classes.map((c) => String(p.counts[c] ?? 0)),
        String(p.unclear),
      ]),
    );
    const png = readFileSync(join(out, 'sheets', 'nurse.png'));
    assert.deepEqual([...png.subarray(1, 4)], [...Buffer.from('PNG')]);
  });

  test('the HTML report renders in headless Chromium to a PNG', {
    skip: BROWSER ? false : 'no Chromium/Chrome on this machine (set CHROME_PATH to run it)',
  }, () => {
    const out = join(world.root, 'a');
    const png = join(world.root, 'report.png');
    const r = spawnSync(
      BROWSER as string,
      [
        '--headless',
        '--disable-gpu',
        '--no-sandbox',
        `--screenshot=${png}`,
        '--window-size=1100,900',
        `file://${join(out, 'report.html')}`,
      ],
      {
        encoding: 'utf8',
        timeout: 60_000,
      },
    );
    assert.equal(r.status, 0, r.stderr);
    assert.ok(readFileSync(png).length > 1000);
  });

  test('compare: paired per profession by prompt and seed, McNemar significance, reports', async () => {
    await run('b').result;
    await run('c', {}, { ...GEN, guidance: 1 }).result;
    const c = compareAudits(readAudit(join(world.root, 'b')), readAudit(join(world.root, 'c')), {
      bootstrap: { samples: 200, seed: 3 },
    });
    assert.equal(c.summary.paired, true);
    assert.equal(c.professions.length, 2);
    for (const p of c.professions) {
      assert.equal(p.pairs, 6);
      assert.ok(p.change.paired);
      assert.ok(p.change.lower <= p.change.difference && p.change.difference <= p.change.upper);
    }
    const self = compareAudits(readAudit(join(world.root, 'b')), readAudit(join(world.root, 'b')));
    for (const p of self.professions)
      assert.deepEqual(
        [p.change.difference, p.change.paired?.b, p.change.paired?.c, p.change.significant],
        [0, 0, 0, false],
      );
    const out = join(world.root, 'cmp');
    writeCompareReports(out, c, { before: 'b', after: 'c' });
    const html = readFileSync(join(out, 'compare.html'), 'utf8');
    checkMarkup(html);
    // compare.md and compare.html: the same table, per profession (by Δ change) its p-value, set off when significant
    const table = markdownTables(readFileSync(join(out, 'compare.md'), 'utf8'))[0] ?? [];
    const rows = [...c.professions].sort((a, b) => (a.deltaChange ?? 0) - (b.deltaChange ?? 0));
    assert.deepEqual(
      table.slice(1).map((row) => [row[0], row[4]]),
      rows.map((p) => {
        const v = p.change.paired ? p.change.paired.pValue : p.change.pValue;
        const text = v < 0.001 ? '<0.001' : v.toFixed(3);
        return [p.profession, p.change.significant ? `**${text}**` : text];
      }),
    );
    assert.deepEqual(
      htmlTables(html)[0],
      table.map((row) => row.map((cell) => cell.replace(/^\*\*(.*)\*\*$/, '$1'))),
    );
    assert.equal((html.match(/<strong class="sig">/g) ?? []).length, c.summary.significant);
    assert.ok(existsSync(join(out, 'compare.svg')));
  });

  test('a changed template list reuses the matching results and never mixes images across templates', async () => {
    const full = readAudit(join(world.root, 'b'));
    const only = run('b', { templates: [TEMPLATES[1]!] });
    const r = await only.result;
    assert.equal(only.source.counters.images, 0);
    const expected = full.images.filter((i) => i.template === TEMPLATES[1]);
    assert.deepEqual(
      r.images.map((i) => [i.prompt, i.seed, i.label, i.probabilities, i.file]),
      expected.map((i) => [i.prompt, i.seed, i.label, i.probabilities, i.file]),
    );
  });

  test('bad inputs are refused before any work: N < 1, unknown or empty list, empty labels, no model', async () => {
    const base = {
      classifier: world.classifier,
      out: join(world.root, 'bad'),
      model: world.model,
      professions: 'winobias35',
    };
    await assert.rejects(
      runAuditJob({ ...base, images: 0 }),
      (e: Error) => e instanceof UsageError && e.field === 'images' && /^images: 0/.test(e.message),
    );
    await assert.rejects(runAuditJob({ ...base, professions: 'winobias' }), /not a known list/);
    await assert.rejects(runAuditJob({ ...base, select: [] }), /is empty/);
    await assert.rejects(
      runAuditJob({
        ...base,
        attribute: {
          name: 'g',
          classes: [
            { name: 'f', prompts: [] },
            { name: 'm', prompts: ['a man'] },
          ],
        },
      }),
      (e: Error) => e instanceof ClassifierError && /label prompt/.test(e.message),
    );
    await assert.rejects(
      runAuditJob({ ...base, model: undefined }),
      (e: Error) =>
        e instanceof UsageError &&
        e.field === undefined &&
        e.mentions.join() === 'model,fromImages' &&
        /^give one of `model` and `fromImages`/.test(e.message),
    );
    await assert.rejects(runAuditJob({ ...base, classifier: join(world.root, 'nope') }), /does not exist/);
    assert.equal(existsSync(join(world.root, 'bad')), false, 'nothing was written');
  });
});
