/**
 * The one module that imports @huggingface/transformers (style.md: one seam per outside library).
 * transformers.js runs the CLIP classifier (src/classify) and the CLIP BPE (src/text/tokenizer.ts).
 *
 * Its `env` is set once, here, when this module is first imported: local files only — nothing may
 * reach the Hugging Face hub or a cache (mission.md §3: "Load strictly locally"). `env` is exported
 * for tests that check it (and spy on its fetch); nothing else in the project writes it.
 */
import { env } from '@huggingface/transformers';

env.allowRemoteModels = false;
env.allowLocalModels = true;
env.useFSCache = false;
env.useBrowserCache = false;

export {
  AutoImageProcessor,
  AutoTokenizer,
  CLIPModel,
  CLIPTextModelWithProjection,
  CLIPTokenizer,
  CLIPVisionModelWithProjection,
  env,
  type ImageProcessor,
  type PreTrainedModel,
  type PreTrainedTokenizer,
  RawImage,
  Tensor,
} from '@huggingface/transformers';

/** True when the settings above hold (a test or a caller may check before loading). */
export function isLocalOnly(): boolean {
  return env.allowRemoteModels === false && env.allowLocalModels === true && env.useFSCache === false;
}
