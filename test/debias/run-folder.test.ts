/**
 * The debias run folder (issue 11): only this tool's own folders are written into or emptied by
 * --restart, one process at a time, leftover temporaries removed.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { normalizeConfig } from '../../src/debias/config.js';
import { RunFolder, runDirOf } from '../../src/debias/run-folder.js';
import { RUN_MARKER } from '../../src/model/path-guard.js';
import { ConfigError, OutputError } from '../../src/util/errors.js';

const tmp = mkdtempSync(join(tmpdir(), 'td-runfolder-'));
after(() => rmSync(tmp, { recursive: true, force: true }));
const minimal = { model: 'demo', classifier: 'demo', professions: { list: 'demo' } };
const configOf = (output: string, name = 'debias') => normalizeConfig({ ...minimal, output, name }, tmp);

test('config names "." and "..": refused by the loader and by the run folder itself', () => {
  for (const name of ['.', '..']) {
    assert.throws(() => configOf(join(tmp, 'o'), name), ConfigError);
    const config = { ...configOf(join(tmp, 'o')), name };
    assert.throws(
      () => runDirOf(config),
      (e: unknown) => e instanceof ConfigError && e.field === 'name' && /^name: .* is not a run name/.test(e.message),
    );
  }
});

test('--restart on a folder that is not a run of this tool: refused, its files untouched', () => {
  const output = join(tmp, 'user');
  mkdirSync(join(output, 'debias'), { recursive: true });
  writeFileSync(join(output, 'debias', 'thesis.tex'), 'years of work');
  for (const restart of [true, false]) {
    assert.throws(
      () => RunFolder.open(configOf(output), { restart }),
      (e: unknown) =>
        e instanceof OutputError && e.message.includes('thesis.tex') && e.message.includes('not a debias run folder'),
    );
  }
  assert.deepEqual(readdirSync(join(output, 'debias')), ['thesis.tex']);
});

test('own run folder: marked, locked, leftovers removed; --restart empties only it', () => {
  const output = join(tmp, 'runs');
  const a = RunFolder.open(configOf(output));
  assert.ok(existsSync(join(a.dir, RUN_MARKER)));
  writeFileSync(join(output, 'sibling.txt'), 'other run');
  assert.throws(() => RunFolder.open(configOf(output)), /in use by this process/);
  a.close();
  // an interrupted export and an interrupted state write
  mkdirSync(join(a.dir, 'model.tmp-0123456789ab'));
  writeFileSync(join(a.dir, 'state.json.tmp-99-abcd'), '{');
  const b = RunFolder.open(configOf(output));
  assert.deepEqual(readdirSync(b.dir).sort(), ['.time-debias-run.json', '.time-debias.lock', 'config.json']);
  b.save();
  b.close();
  const c = RunFolder.open(configOf(output), { restart: true });
  assert.equal(c.state.phase, 'baseline');
  c.close();
  assert.equal(readFileSync(join(output, 'sibling.txt'), 'utf8'), 'other run');
});

test('two processes on one run folder: the second is refused at once, naming the first', async () => {
  const output = join(tmp, 'two');
  const mod = fileURLToPath(new URL('../../src/debias/run-folder.ts', import.meta.url));
  const cfg = fileURLToPath(new URL('../../src/debias/config.ts', import.meta.url));
  const script = `
    import { RunFolder } from ${JSON.stringify(mod)};
    import { normalizeConfig } from ${JSON.stringify(cfg)};
    RunFolder.open(normalizeConfig(${JSON.stringify({ ...minimal, output, name: 'debias' })}, '/'));
    process.stdout.write('open\\n');
    setInterval(() => {}, 1000);`;
  const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  await new Promise<void>((res) => child.stdout.once('data', () => res()));
  try {
    assert.throws(
      () => RunFolder.open(configOf(output), { restart: true }),
      (e: unknown) => e instanceof OutputError && e.message.includes(`in use by process ${child.pid}`),
    );
    assert.ok(existsSync(join(output, 'debias', 'config.json')), 'the restart deleted nothing');
  } finally {
    child.kill('SIGTERM');
    await new Promise((res) => child.once('exit', res));
  }
  // SIGTERM released the lock
  RunFolder.open(configOf(output)).close();
});
