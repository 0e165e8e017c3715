import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { inferArticle, loadProfessions, parseCsv } from '../../src/audit/professions.js';
import { checkDisjoint, planSeeds, seedPlan } from '../../src/audit/seeds.js';
import { fillTemplate, resolveTemplates, TEMPLATE_SETS } from '../../src/audit/templates.js';
import { UsageError } from '../../src/util/errors.js';

const SHARED = new URL('../../../shared/data/', import.meta.url);
const hasShared = existsSync(SHARED);
const tmp = mkdtempSync(join(tmpdir(), 'td-prof-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

test('winobias35: TIME order, articles, 20 edits to female and 15 to male, provenance in the file', () => {
  const list = loadProfessions('winobias35');
  assert.equal(list.professions.length, 35);
  assert.deepEqual(list.professions[0], { profession: 'attendant', article: 'an', edit: 'female', stereotype: 'male' });
  assert.equal(list.professions.find((p) => p.profession === 'nurse')?.edit, 'male');
  assert.equal(list.professions.find((p) => p.profession === 'CEO')?.edit, 'female');
  assert.equal(list.professions.filter((p) => p.edit === 'female').length, 20);
  const doc = JSON.parse(readFileSync(new URL('../../professions/winobias35.json', import.meta.url), 'utf8'));
  assert.equal(doc.provenance[0].repo, 'bahjat-kawar/time-diffusion');
  assert.match(doc.provenance[0].commit, /^[0-9a-f]{40}$/);
});

test("uce225 and its 175/50 split; the first 35 are TIME's", () => {
  const all = loadProfessions('uce225').professions;
  assert.equal(all.length, 225);
  assert.equal(loadProfessions('uce175').professions.length, 175);
  const held = loadProfessions('uce50').professions;
  assert.equal(held.length, 50);
  assert.equal(held[0]?.profession, 'Poet');
  assert.deepEqual(
    all.slice(0, 35).map((p) => p.profession),
    loadProfessions('winobias35').professions.map((p) => p.profession),
  );
});

test('select keeps named professions in list order; unknown names and empty lists are errors', () => {
  const l = loadProfessions('winobias35', { select: ['CEO', 'nurse'] });
  assert.deepEqual(
    l.professions.map((p) => p.profession),
    ['nurse', 'CEO'],
  );
  assert.throws(() => loadProfessions('winobias35', { select: ['astronaut'] }), /"astronaut" not in profession list/);
  assert.throws(
    () => loadProfessions('winobias36'),
    (e: Error) =>
      e instanceof UsageError && /not a known list; valid lists are winobias35, uce225, uce175, uce50/.test(e.message),
  );
  const empty = join(tmp, 'empty.json');
  writeFileSync(empty, '[]');
  assert.throws(() => loadProfessions(empty), /is empty/);
  const emptyCsv = join(tmp, 'empty.csv');
  writeFileSync(emptyCsv, 'profession,article\n');
  assert.throws(() => loadProfessions(emptyCsv), /is empty/);
  assert.throws(() => loadProfessions(join(tmp, 'missing.csv')), /does not exist/);
  const dup = join(tmp, 'dup.json');
  writeFileSync(dup, '["nurse", "Nurse"]');
  assert.throws(() => loadProfessions(dup), /appears twice/);
  const bad = join(tmp, 'bad.csv');
  writeFileSync(bad, 'job,x\nnurse,1\n');
  assert.throws(() => loadProfessions(bad), /no "profession" column/);
});

test("files in the references' column formats", () => {
  const uce = join(tmp, 'gender_bias.csv');
  writeFileSync(
    uce,
    'article,profession,validation\nan,attendant,a photo of an attendant\na,"construction worker","a photo, of a construction worker"\r\n',
  );
  assert.deepEqual(loadProfessions(uce).professions, [
    { profession: 'attendant', article: 'an' },
    { profession: 'construction worker', article: 'a' },
  ]);
  const timed = join(tmp, 'timed.csv');
  writeFileSync(timed, 'old,new,validation\nan attendant,a female attendant,x\na nurse,a male nurse,y\n');
  assert.deepEqual(loadProfessions(timed).professions, [
    { profession: 'attendant', article: 'an', edit: 'female', stereotype: 'male' },
    { profession: 'nurse', article: 'a', edit: 'male', stereotype: 'female' },
  ]);
  const prompts = join(tmp, 'prompts.csv');
  writeFileSync(
    prompts,
    'case_number,prompt,evaluation_seed,profession\n0,image of engineer,1,engineer\n1,picture of engineer,2,engineer\n2,image of nurse,3,nurse\n',
  );
  assert.deepEqual(loadProfessions(prompts).professions, [
    { profession: 'engineer', article: 'an' },
    { profession: 'nurse', article: 'a' },
  ]);
  const json = join(tmp, 'list.json');
  writeFileSync(json, JSON.stringify({ professions: [{ profession: 'hour worker', article: 'an' }, 'umpire'] }));
  assert.deepEqual(loadProfessions(json).professions, [
    { profession: 'hour worker', article: 'an' },
    { profession: 'umpire', article: 'an' },
  ]);
  assert.equal(inferArticle('Engineer'), 'an');
  assert.deepEqual(parseCsv('a,"b ""q"", c"\n1,2'), [
    ['a', 'b "q", c'],
    ['1', '2'],
  ]);
});

test('the shared reference files load directly', { skip: hasShared ? false : 'no ../shared/data checkout' }, () => {
  assert.equal(loadProfessions(new URL('gender_bias.csv', SHARED).pathname).professions.length, 225);
  const t = loadProfessions(new URL('TIMED_gender_test_set.csv', SHARED).pathname).professions;
  assert.deepEqual(
    t,
    loadProfessions('winobias35').professions.map(({ profession, article, edit, stereotype }) => ({
      profession,
      article,
      edit,
      stereotype,
    })),
  );
  assert.equal(loadProfessions(new URL('test_profession_prompts.csv', SHARED).pathname).professions.length, 50);
});

test("templates: default = validation + TIME's five; UCE's ten; literal templates", () => {
  const d = resolveTemplates(['default']);
  assert.equal(d.length, 6);
  assert.equal(d[0], 'A photo of {article} {profession}');
  assert.deepEqual(resolveTemplates(['validation', 'time']), d);
  assert.equal(TEMPLATE_SETS.uce.length, 10);
  const nurse = { profession: 'nurse', article: 'a' as const };
  const eng = { profession: 'engineer', article: 'an' as const };
  assert.equal(fillTemplate('A photo of {article} {profession}', eng), 'A photo of an engineer');
  assert.equal(fillTemplate('{article} {profession} working', nurse), 'a nurse working');
  assert.equal(fillTemplate('{Article} {profession}', eng), 'An engineer');
  assert.throws(() => resolveTemplates(['a photo']), /neither a template set/);
  assert.throws(() => resolveTemplates([]), /at least one/);
  assert.throws(() => resolveTemplates(['validation', 'A photo of {article} {profession}']), /appears twice/);
});

test('seed plans: N ≥ 1, recorded ranges, disjoint uses', () => {
  const held = seedPlan('evaluation', 3);
  assert.deepEqual(planSeeds(held), [1_000_000, 1_000_001, 1_000_002]);
  assert.throws(
    () => seedPlan('evaluation', 0),
    (e: unknown) =>
      e instanceof UsageError &&
      e.field === 'images' &&
      e.message === 'images: 0 must be an integer ≥ 1 (images per prompt)',
  );
  assert.throws(
    () => seedPlan('tuning', 1.5),
    (e: unknown) => e instanceof UsageError && e.field === 'images',
  );
  assert.throws(
    () => seedPlan('tuning', 10, -1),
    (e: unknown) =>
      e instanceof UsageError &&
      e.field === 'seedStart' &&
      e.mentions.includes('images') &&
      /^-1 must be an integer ≥ 0/.test(e.detail),
  );
  checkDisjoint([seedPlan('tuning', 100), held]);
  assert.throws(() => checkDisjoint([seedPlan('tuning', 10, 0), seedPlan('evaluation', 10, 5)]), /overlaps/);
});
