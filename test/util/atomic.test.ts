import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { exitCodeFor } from '../../src/cli/exit.js';
import { removeTempLeftovers, writeFileAtomic, writeJsonAtomic } from '../../src/util/atomic.js';
import { OutputError } from '../../src/util/errors.js';
import { floatToHalfBits, fromHalf, halfBitsToFloat, toHalf } from '../../src/util/half.js';

test('writeJsonAtomic replaces the file and leaves no temporary file', () => {
  const dir = mkdtempSync(join(tmpdir(), 'atomic-'));
  try {
    const path = join(dir, 'sub', 'state.json');
    writeJsonAtomic(path, { a: 1 });
    writeJsonAtomic(path, { a: 2, b: [1, 2] });
    assert.deepEqual(JSON.parse(readFileSync(path, 'utf8')), { a: 2, b: [1, 2] });
    assert.deepEqual(readdirSync(join(dir, 'sub')), ['state.json']);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('float16 conversion: known bit patterns and round trip', () => {
  assert.equal(floatToHalfBits(1), 0x3c00);
  assert.equal(floatToHalfBits(-2), 0xc000);
  assert.equal(floatToHalfBits(65504), 0x7bff);
  assert.equal(floatToHalfBits(1e6), 0x7c00);
  assert.equal(floatToHalfBits(2 ** -24), 0x0001);
  assert.equal(floatToHalfBits(0.1), 0x2e66);
  assert.equal(halfBitsToFloat(0x3555), 0.333251953125);
  assert.ok(Number.isNaN(halfBitsToFloat(0x7e00)));
  const values = Float32Array.from([0, 1, -1, 0.5, 3.140625, -1024, 6.103515625e-5]);
  assert.deepEqual(Array.from(fromHalf(toHalf(values))), Array.from(values));
  // round to nearest even at a tie: 1 + 2^-11 is halfway between 1 and 1 + 2^-10 → 1
  assert.equal(floatToHalfBits(1 + 2 ** -11), 0x3c00);
  assert.equal(floatToHalfBits(1 + 3 * 2 ** -11), 0x3c02);
});

/** A small tmpfs (root only): a real full disk. null where it cannot be mounted. */
function smallTmpfs(kb: number): { dir: string; unmount: () => void } | null {
  if (process.platform !== 'linux' || process.getuid?.() !== 0) return null;
  const dir = mkdtempSync(join(tmpdir(), 'atomic-full-'));
  const r = spawnSync('mount', ['-t', 'tmpfs', '-o', `size=${kb}k`, 'tmpfs', dir]);
  if (r.status !== 0) {
    rmSync(dir, { recursive: true, force: true });
    return null;
  }
  return {
    dir,
    unmount: () => {
      spawnSync('umount', [dir]);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

test('full disk: writeFileAtomic throws OutputError (exit 8) naming the path; the old content stays, no temporary is left', (t) => {
  const fs = smallTmpfs(64);
  if (!fs) {
    t.skip('cannot mount a small tmpfs here (needs root on Linux)');
    return;
  }
  try {
    const path = join(fs.dir, 'audit.json');
    writeFileAtomic(path, 'previous content\n');
    // 200 KB into 64 KB: the kernel takes part of the first write (a short write), then ENOSPC.
    const big = Buffer.alloc(200 * 1024, 0x61);
    let caught: unknown;
    try {
      writeFileAtomic(path, big, 'out');
    } catch (error) {
      caught = error;
    }
    assert.ok(caught instanceof OutputError, `expected OutputError, got ${String(caught)}`);
    assert.equal(caught.field, 'out');
    assert.match(caught.message, /^out: cannot write ".*audit\.json": no space left on the device/);
    assert.match(caught.message, /ENOSPC/);
    assert.equal(exitCodeFor(caught), 8);
    assert.equal(readFileSync(path, 'utf8'), 'previous content\n');
    assert.deepEqual(readdirSync(fs.dir), ['audit.json']);
  } finally {
    fs.unmount();
  }
});

test('removeTempLeftovers removes only temporaries (of the given prefix)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'atomic-left-'));
  try {
    writeFileSync(join(dir, 'audit.json'), '{}');
    writeFileSync(join(dir, 'audit.json.tmp-123-abcd'), '{');
    mkdirSync(join(dir, 'model.tmp-0a1b2c3d4e5f'));
    writeFileSync(join(dir, 'model.tmp-0a1b2c3d4e5f', 'x'), 'x');
    writeFileSync(join(dir, 'notes.tmp'), 'mine');
    assert.deepEqual(removeTempLeftovers(dir, 'model.'), [join(dir, 'model.tmp-0a1b2c3d4e5f')]);
    assert.deepEqual(removeTempLeftovers(dir), [join(dir, 'audit.json.tmp-123-abcd')]);
    assert.deepEqual(readdirSync(dir).sort(), ['audit.json', 'notes.tmp']);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('SIGINT while a temporary is registered: it is removed and the process exits 130', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'atomic-sig-'));
  try {
    const atomic = fileURLToPath(new URL('../../src/util/atomic.ts', import.meta.url));
    const script = `
      import { mkdirSync, writeFileSync } from 'node:fs';
      import { trackTemp } from ${JSON.stringify(atomic)};
      const tmp = ${JSON.stringify(join(dir, 'model.tmp-feedbeef'))};
      mkdirSync(tmp); writeFileSync(tmp + '/weights.pb', 'x'); trackTemp(tmp);
      process.stdout.write('ready\\n');
      setInterval(() => {}, 1000);`;
    const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    await new Promise<void>((res) => child.stdout.once('data', () => res()));
    assert.ok(existsSync(join(dir, 'model.tmp-feedbeef')));
    child.kill('SIGINT');
    const code = await new Promise<number | null>((res) => child.once('exit', (c) => res(c)));
    assert.equal(code, 130);
    assert.deepEqual(readdirSync(dir), []);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
