import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { EXIT } from '../../src/cli/exit.js';
import { buildTinySdModel } from '../../src/demo/sd-model.js';
import { encodeNpy, parseNpy } from '../../src/generate/npy.js';
import { noise } from '../../src/generate/rng.js';

const repo = fileURLToPath(new URL('../../', import.meta.url));
const root = mkdtempSync(join(tmpdir(), 'td-cli-'));
after(() => rmSync(root, { recursive: true, force: true }));
const modelDir = join(root, 'model');
buildTinySdModel(modelDir, {});

function cli(...args: string[]) {
  const r = spawnSync(process.execPath, ['--import', 'tsx', join(repo, 'bin/time-debias.js'), 'generate', ...args], {
    cwd: repo,
    encoding: 'utf8',
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('time-debias generate', () => {
  it('writes images from seeds, then reproduces one from its saved starting latents', () => {
    const out = join(root, 'out');
    const r = cli(
      '--model',
      modelDir,
      '--prompt',
      'a photo of a doctor',
      '--seeds',
      '0-1',
      '--steps',
      '3',
      '--height',
      '64',
      '--width',
      '64',
      '--grid',
      '--save-latents',
      '--out',
      out,
      '--json',
    );
    assert.equal(r.code, 0, r.stderr);
    const summary = JSON.parse(r.stdout);
    assert.deepEqual(summary.images, ['00000-0.png', '00001-1.png']);
    assert.ok(existsSync(join(out, 'grid.png')));
    assert.deepEqual(parseNpy(readFileSync(join(out, 'latents.npy'))).shape, [2, 4, 8, 8]);

    // --latents: the initial noise of seed 1 as a .npy reproduces image 1's final latents
    const start = join(root, 'start.npy');
    writeFileSync(start, encodeNpy({ shape: [1, 4, 8, 8], data: noise(1, [1, 4, 8, 8]) }));
    const out2 = join(root, 'out2');
    const r2 = cli(
      '--model',
      modelDir,
      '--prompt',
      'a photo of a doctor',
      '--latents',
      start,
      '--steps',
      '3',
      '--height',
      '64',
      '--width',
      '64',
      '--save-latents',
      '--out',
      out2,
    );
    assert.equal(r2.code, 0, r2.stderr);
    const a = parseNpy(readFileSync(join(out, 'latents.npy'))).data.subarray(256, 512);
    const b = parseNpy(readFileSync(join(out2, 'latents.npy'))).data;
    assert.deepEqual(b, a);
    assert.ok(existsSync(join(out2, '00000-latents.png')));
  });
  it('bad inputs: clear message, non-zero exit', () => {
    const common = ['--model', modelDir, '--prompt', 'a doctor', '--out', join(root, 'bad')];
    const bad = cli(...common, '--seeds', '0', '--scheduler', 'karras');
    assert.equal(bad.code, EXIT.generation);
    assert.match(bad.stderr, /--scheduler: "karras" is not a known scheduler; valid schedulers are pndm/);
    const missing = cli('--model', join(root, 'nope'), '--prompt', 'x', '--seeds', '0', '--out', join(root, 'bad'));
    assert.equal(missing.code, EXIT.model);
  });
});
