/**
 * A tiny audit world for the tests: a real-format Stable Diffusion folder (src/demo/sd-model.ts,
 * random weights, 64 × 64 images) and the tiny designed CLIP folder of test/classify, in one
 * temporary folder.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildClipFolder } from '../../src/demo/clip-model.js';
import { buildTinySdModel } from '../../src/demo/sd-model.js';
import { tinySpec } from '../classify/fixtures.js';

export interface TinyWorld {
  root: string;
  model: string;
  classifier: string;
  cleanup: () => void;
}

export function makeTinyWorld(): TinyWorld {
  const root = mkdtempSync(join(tmpdir(), 'td-audit-'));
  const model = join(root, 'sd');
  const classifier = join(root, 'clip');
  buildTinySdModel(model, { sites: 4, seed: 3 });
  buildClipFolder(classifier, tinySpec());
  return { root, model, classifier, cleanup: () => rmSync(root, { recursive: true, force: true }) };
}

/** Generation settings of the tests: few steps, the tiny model's 64 × 64. */
export const GEN = { steps: 3, height: 64, width: 64 } as const;

/**
 * A minimal well-formedness check of HTML/SVG markup: every non-void element closed in order.
 * Returns the tag names seen (lower case).
 */
export function checkMarkup(
  text: string,
  voidTags: readonly string[] = ['meta', 'img', 'br', 'hr', 'link', 'input'],
): string[] {
  const body = text.replace(/<!doctype[^>]*>/i, '').replace(/<!--[\s\S]*?-->/g, '');
  const stack: string[] = [];
  const seen: string[] = [];
  for (const m of body.matchAll(/<(\/?)([a-zA-Z][\w:-]*)((?:[^>"']|"[^"]*"|'[^']*')*?)(\/?)>/g)) {
    const [, closing, rawName, , selfClosing] = m;
    const name = (rawName as string).toLowerCase();
    seen.push(name);
    if (closing) {
      const top = stack.pop();
      if (top !== name) throw new Error(`markup: </${name}> closes <${top ?? 'nothing'}> at offset ${m.index}`);
    } else if (!selfClosing && !voidTags.includes(name)) stack.push(name);
  }
  if (stack.length) throw new Error(`markup: unclosed <${stack.join('>, <')}>`);
  if (/<[a-zA-Z][^>]*$/.test(body)) throw new Error('markup: truncated tag at the end');
  return seen;
}
