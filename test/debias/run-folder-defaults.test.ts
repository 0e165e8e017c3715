/**
 * The debias run folder refuses a run made with other settings; one made by an earlier version with
 * the old defaults (classifier a plain folder, fixed 512 × 512) is refused with that reason.
 */
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { normalizeConfig } from '../../src/debias/config.js';
import { RunFolder, runDirOf } from '../../src/debias/run-folder.js';
import { OutputError } from '../../src/util/errors.js';

const tmp = mkdtempSync(join(tmpdir(), 'td-run-folder-defaults-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

const config = normalizeConfig(
  { model: 'demo', classifier: 'demo', professions: { list: 'demo' }, output: tmp, name: 'job' },
  tmp,
);

test('a folder of the old defaults is refused with the reason; one of other settings with the generic message', () => {
  const dir = runDirOf(config);
  mkdirSync(dir, { recursive: true });
  writeFileSync(
    join(dir, 'state.json'),
    JSON.stringify({ kind: 'debias-state', version: 1, fingerprint: 'f'.repeat(64) }),
  );
  // the config as run of an earlier version: classifier a plain folder, size filled in as 512
  writeFileSync(
    join(dir, 'config.json'),
    JSON.stringify({ ...config, classifier: '/c', generation: { ...config.generation, height: 512, width: 512 } }),
  );
  assert.throws(
    () => RunFolder.open(config),
    (e: Error) =>
      e instanceof OutputError &&
      /made by an earlier time-debias with the old defaults \(no classifier preprocessing recorded, generation size fixed at 512 × 512/.test(
        e.message,
      ) &&
      (e as OutputError).field === 'outDir' &&
      /Pass `restart` to start over, or choose another `name` or `outDir`/.test(e.message) &&
      (e as OutputError).mentions.includes('restart'),
  );
  writeFileSync(join(dir, 'config.json'), JSON.stringify(config));
  assert.throws(() => RunFolder.open(config), /holds a run made with other settings/);
  const fresh = RunFolder.open(config, { restart: true });
  assert.equal(fresh.state.phase, 'baseline');
  fresh.close();
});
