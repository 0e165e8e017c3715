/**
 * The render service in process: each request rendered on the pipeline and classified by the
 * classifier exactly as a queue worker does it with the task the request becomes (src/queue/worker.ts):
 *
 *   generate(prompt, the request's seeds as ONE batch, the fixed settings, text transform M)
 *   classify(those images, attribute, { profession, threshold })
 *   per image: the classification, sha256 of the RGB bytes, the PNG where the request keeps it
 *
 * so a caller that renders through a `RenderService` (evaluate) gets the same images and labels in
 * process and on workers, and a run folder can be started one way and finished the other. The
 * settings and identity are `generatorIdentity`'s (src/audit/source.ts), as for both audit sources. Requests run one at
 * a time, in order.
 */
import { createHash } from 'node:crypto';
import type { ClipClassifier } from '../classify/clip.js';
import { type TextSideEditOf, textSideEdit } from '../edit/text-transform.js';
import type { StableDiffusionPipeline } from '../generate/pipeline.js';
import { encodeRgbPng } from '../generate/png.js';
import { OutputError, show } from '../util/errors.js';
import type { RenderedImage, RenderService } from './run.js';
import { type GenerationSettings, generatorIdentity } from './source.js';
import { folderDigest } from './store.js';

export function pipelineRenderer(
  pipeline: StableDiffusionPipeline,
  classifier: ClipClassifier,
  settings: GenerationSettings = {},
  device = 'cpu',
): RenderService & { counters: { requests: number; images: number } } {
  const { fixed, identity } = generatorIdentity(
    { dir: pipeline.model.dir, digest: folderDigest(pipeline.model.dir) },
    pipeline,
    settings,
    device,
  );
  const edits = new WeakMap<Float32Array, TextSideEditOf>();
  const editOf = (m: Float32Array | undefined) => {
    if (!m) return undefined;
    let e = edits.get(m);
    if (!e) {
      e = textSideEdit(m);
      edits.set(m, e);
    }
    return e;
  };
  const counters = { requests: 0, images: 0 };
  return {
    kind: 'renderer',
    identity,
    counters,
    async render(requests, onResult) {
      for (const [i, r] of requests.entries()) {
        const made = await pipeline.generate({
          prompt: r.prompt,
          seeds: r.seeds,
          ...fixed,
          batchSize: r.seeds.length,
          textTransform: editOf(r.transform ?? settings.textTransform),
        });
        const rgb = made.images.map((img) => ({ width: img.width, height: img.height, data: img.rgb }));
        const classes = await classifier.classify(rgb, r.attribute, {
          profession: r.profession,
          threshold: r.threshold ?? undefined,
        });
        if (classes.length !== r.seeds.length)
          throw new OutputError(`${classes.length} results for the ${r.seeds.length} seeds of ${show(r.prompt)}`);
        const images: RenderedImage[] = rgb.map((img, j) => ({
          seed: r.seeds[j] as number,
          classification: classes[j] as RenderedImage['classification'],
          png: r.keep[j] ? encodeRgbPng(img.width, img.height, img.data) : null,
          digest: createHash('sha256').update(img.data).digest('hex'),
        }));
        counters.requests++;
        counters.images += images.length;
        await onResult(i, images);
      }
    },
  };
}
