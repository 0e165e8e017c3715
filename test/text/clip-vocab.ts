/** Test helpers: the real CLIP BPE vocabulary from ../shared/data (when present) and temp folders. */
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gunzipSync } from 'node:zlib';
import { type BpeVocab, mergesFromClipBpeText, vocabFromMerges } from '../../src/text/bpe-files.js';

export const SHARED_DATA = fileURLToPath(new URL('../../../shared/data/', import.meta.url));
export const CLIP_BPE_PATH = join(SHARED_DATA, 'clip-bpe', 'bpe_simple_vocab_16e6.txt.gz');

/** Reason to skip when the real CLIP vocabulary is absent, else false (node:test `skip` option). */
export const skipWithoutClip: string | false = existsSync(CLIP_BPE_PATH)
  ? false
  : `real CLIP vocabulary not found at ${CLIP_BPE_PATH} (../shared/data is absent)`;

let cached: BpeVocab | undefined;
/** CLIP's vocabulary built from bpe_simple_vocab_16e6.txt.gz (49408 tokens). */
export function clipVocab(): BpeVocab {
  cached ??= vocabFromMerges(mergesFromClipBpeText(gunzipSync(readFileSync(CLIP_BPE_PATH)).toString('utf8')));
  return cached;
}

/** A fresh temp folder and its cleanup. */
export function tempDir(prefix: string): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), `time-debias-${prefix}-`));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}
