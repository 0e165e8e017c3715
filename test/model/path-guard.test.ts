import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import {
  checkOutsideModel,
  checkReplaceable,
  checkRunName,
  markRunFolder,
  RUN_MARKER,
} from '../../src/model/path-guard.js';
import { ConfigError, OutputError } from '../../src/util/errors.js';

const tmp = mkdtempSync(join(tmpdir(), 'td-guard-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

test('run names: one path segment, not "." or ".."', () => {
  for (const ok of ['debias', 'run-1', 'a.b_c', '...']) assert.equal(checkRunName(ok), ok);
  for (const bad of ['.', '..', '', 'a/b', '../x', 'a\\b', 7]) {
    assert.throws(
      () => checkRunName(bad),
      (e: unknown) => e instanceof ConfigError && /^name: .* is not a run name \(rule: one folder name/.test(e.message),
      String(bad),
    );
  }
});

test('outputs never inside a model or a component folder, symbolic links resolved', () => {
  // the layout model caches use: snap/unet -> ../store/unet
  const store = join(tmp, 'cache', 'store');
  const snap = join(tmp, 'cache', 'snap');
  mkdirSync(join(store, 'unet'), { recursive: true });
  writeFileSync(join(store, 'unet', 'model.onnx'), 'weights');
  mkdirSync(join(snap, 'text_encoder'), { recursive: true });
  symlinkSync('../store/unet', join(snap, 'unet'));
  const refused = (path: string, replacing = false) =>
    assert.throws(
      () => checkOutsideModel('out', path, snap, { replacing }),
      (e: unknown) => e instanceof OutputError && e.field === 'out' && e.message.startsWith('out: '),
      path,
    );
  refused(snap);
  refused(join(snap, 'images'));
  refused(join(snap, 'unet', 'x'));
  refused(join(store, 'unet')); // the real folder of a component
  refused(join(store, 'unet', 'out'));
  refused(store, true); // contains a component: replacing it deletes the UNet
  refused(join(tmp, 'cache'), true);
  checkOutsideModel('--out', join(tmp, 'cache', 'out'), snap, { replacing: true });
  checkOutsideModel('--out', store, snap); // writing next to the UNet is not replacing it
});

test("a folder is replaced only if it is the tool's own; otherwise the refusal says what is there", () => {
  const mine = join(tmp, 'replace', 'mine');
  mkdirSync(mine, { recursive: true });
  writeFileSync(join(mine, 'thesis.tex'), 'years of work');
  assert.throws(
    () => checkReplaceable('--out', mine, 'model'),
    (e: unknown) =>
      e instanceof OutputError &&
      e.message.includes('a folder of 1 entry (thesis.tex)') &&
      e.message.includes('refusing to delete it'),
  );
  const file = join(tmp, 'replace', 'file.txt');
  writeFileSync(file, 'hello');
  assert.throws(() => checkReplaceable('--out', file, 'model'), /a file of 5 bytes/);
  const link = join(tmp, 'replace', 'link');
  symlinkSync(mine, link);
  assert.throws(() => checkReplaceable('--out', link, 'model'), /a symbolic link to/);
  // absent, empty, exported model, marked run folder: allowed
  checkReplaceable('--out', join(tmp, 'replace', 'absent'), 'model');
  mkdirSync(join(tmp, 'replace', 'empty'));
  checkReplaceable('--out', join(tmp, 'replace', 'empty'), 'model');
  const exported = join(tmp, 'replace', 'exported');
  mkdirSync(exported);
  writeFileSync(join(exported, 'time-edit.json'), JSON.stringify({ tool: { name: 'time-debias' } }));
  checkReplaceable('--out', exported, 'model');
  const run = join(tmp, 'replace', 'run');
  markRunFolder(run, 'debias');
  writeFileSync(join(run, 'state.json'), '{}');
  checkReplaceable('run folder', run, 'debias');
  assert.throws(() => checkReplaceable('run folder', run, 'audit'), new RegExp(`no ${RUN_MARKER.replace('.', '\\.')}`));
});
