/**
 * The demo world's designed semantics: hand-set weights (no training) for the tiny SD model
 * (src/demo/sd-model.ts) and the tiny CLIP classifier (src/demo/clip-model.ts), so that the
 * debiasing demo shows a real, graded gender bias that TIME can remove.
 *
 * Notation
 *   d            text width (128); dims: 0 anchor, 1 gender axis g (female +, male −), 2 object axis,
 *                3 … d−2 one identity dim per vocabulary word, d−1 reference (always 0 before the norm)
 *   e_w          the token embedding of word w: its identity dim = 1 (template words: 0.25), plus
 *                its axis coordinates, scaled by textScale τ = 0.1: gender words ±4τ, professions
 *                τ·offset (src/demo/professions.ts); unrelated nouns +1 on the object axis; BOS
 *                carries the anchor A = 32; EOS/pad are 0
 *   h_j          = Σ_{i ≤ j} e_{t_i}  (causal mix = lower-triangular ones: row j sums tokens 0..j, so
 *                EOS and padding rows carry the whole prompt, as in CLIP)
 *   c_j          = LN(h_j) with γ₀ = 0 and β_k = 1/√(d−1) (k ≥ 1): the text encoder's last_hidden_state
 *                rows (what TIME edits against). A dominates std(h_j) ≈ A/√d, so the norm is nearly
 *                linear in the content (< 1 % variation); γ₀ = 0 drops the anchor and β cancels the
 *                BOS row's mean shift, so the BOS row and the empty prompt are exactly 0 and no large
 *                direction is shared by all rows (it would carry every edit into every prompt)
 *   ḡ            = (1/77) Σ_j (c_j[1] − c_j[d−1]) = (1/77) Σ_j h_j[1] / std(h_j)   (the reference dim
 *                removes the norm's mean shift exactly)
 *
 * Why the small τ and template identities: a profession's row is then mostly its own identity
 * direction, so the minimal-norm TIME update for "a doctor" → "a female doctor" acts through the
 * doctor direction and barely through the shared gender axis or "a" (measured: the edit at λ = 0.1
 * moves "a doctor" from 10 % to 100 % female while "a nurse", "a carpenter", "a teacher", "a woman"
 * and "a man" move by at most 1 image in 100).
 *
 * UNet, per cross-attention site s (of S): attention is uniform (to_q = 0 ⇒ all scores equal), so
 * attn2's output is the mean of the values; to_v reads v[0] = κ (c[1] − c[d−1]) and v[1] = κ (c[2] −
 * c[d−1]) with κ = 1/S; to_out.0, proj_out and the resnet shortcuts carry those two channels along the
 * residual stream unchanged (the down/upsampler convs are centre-tap identities, so the spatially
 * constant stream survives every resolution change); every other branch (conv_in, resnet convs,
 * attn1's output, ff's output, proj_in) is zero. So after the last site the stream holds (ḡ, ō), each site contributing 1/S of it
 * — a TIME edit of a subset of sites moves μ by that subset's share. conv_out sets the data mean
 *   μ = (G·ḡ, b, O·ō, 0)   over the latent channels (gender, brightness, object, texture)
 * and the ε-head (sd-model.ts eq. 1–2) is the exact denoiser for x_0 ~ N(μ, Σ). With guidance w the
 * sampler sees μ_eff = μ_u + w (μ_c − μ_u) (μ_u = 0 on the gender channel: the empty prompt has no
 * gender), and a deterministic sampler ends near μ_eff·ρ + σ·z on a channel's spatial mean, z ~ N(0,1)
 * from the seed's initial noise (ρ < 1 is the start-up shrinkage of a sampler started from N(0, I)).
 * Hence the share of "female" images of a prompt is Φ(k · offset) — smooth in the offset, with k set
 * by GENDER_GAIN so that k ≈ 1 at the demo's generation settings (measured in test/demo/world.test.ts).
 *
 * VAE decoder: the gender channel tints the image warm (+, red/orange) or cool (−, blue/teal), the
 * brightness and texture channels shade it, the object channel greens it; nearest ×2 upsampling with
 * blur kernels makes smooth colour fields. CLIP classifier: the image tower reads mean(R) − mean(B)
 * (in [0,1] pixel units) on its first embedding dim and a constant on the second; the text tower puts
 * woman/female/… at +1 and man/male/… at −1 on the first dim and every other token at +1 on the
 * second, so "a photo of a woman" / "a photo of a man" (and "a female {p}" / "a male {p}", "image of
 * female" / "image of male") have equal norms and the zero-shot argmax is the sign of the warmth.
 */

import { BOS_TOKEN, buildWordVocab } from '../text/bpe-files.js';
import { CLIP_MEAN, CLIP_STD, type ClipModelSpec } from './clip-model.js';
import { PROFESSIONS } from './professions.js';
import { type ParamRequest, seededNormal, type TinySdDesign } from './sd-model.js';
import { COLOUR_DEFAULTS, COLOUR_WORDS, GENDER_WORDS, TEMPLATE_WORDS, UNRELATED_WORDS } from './words.js';

/** Latent channels of the demo world. */
export const LATENT = Object.freeze({ gender: 0, brightness: 1, object: 2, texture: 3 });

export const DEMO_DESIGN = Object.freeze({
  name: 'demo-gender-colour-v2',
  /** Text width d. */
  d: 128,
  /** Anchor A on BOS (dominates the norm's std so the norm is nearly linear in the content). */
  anchor: 32,
  /** |gender coordinate| of gender words ("woman", "male", ...), probit units. */
  genderWord: 4,
  /**
   * |warmth coordinate| of colour words ("red" +, "blue" −), probit units: larger than a thing's
   * default colour (±2.5, words.ts COLOUR_DEFAULTS), so "a blue rose" is cool and "a red sky" warm.
   */
  colourWord: 6,
  /**
   * Text-side scale of the gender axis: a word's gender coordinate before the norm is
   * textScale × (its probit offset). Small next to the words' identity dims (1), so a profession's
   * row is mostly its own identity direction and a TIME edit of one profession barely touches
   * another through the shared gender axis; the UNet's gain undoes the scale.
   */
  textScale: 0.1,
  /**
   * Identity magnitude of template words (articles, "photo", "of", ...): small, so that an edit of
   * "a doctor" has little reason to act through "a" and leak into every prompt that has an "a".
   */
  templateIdentity: 0.25,
  /** Object-axis coordinate of unrelated nouns. */
  objectWord: 1,
  /** conv_out gain G from ḡ to the gender channel's data mean (calibrated: share ≈ Φ(offset) at guidance 7.5). */
  genderGain: 1.45,
  /**
   * Cross-attention widths of the 16 sites (SD 1.x's 320/640/1280 layout scaled to 4/8/16): the
   * demo images are generated thousands of times, and the key/value projections of the 77 text rows
   * dominate the UNet's cost.
   */
  siteWidths: [4, 4, 8, 8, 16, 16, 16, 16, 16, 16, 8, 8, 8, 4, 4, 4] as readonly number[],
  /** One attention head per site: the batched attention products of tiny heads cost more than their FLOPs. */
  heads: 1,
  /** conv_out gain O from ō to the object channel. */
  objectGain: 0.25,
  /** Brightness channel data mean b. */
  brightness: 0.1,
  /** σ_c²: variance of each latent channel's spatial mean, per image (gender, brightness, object, texture). */
  varMean: [0.09, 0.04, 0.02, 0.02] as readonly number[],
  /** s_⊥,c²: per-pixel variance around the spatial mean. */
  varPerp: [0.02, 0.15, 0.03, 0.4] as readonly number[],
});

function identity2d(rows: number, cols: number, scale = 1): Float32Array {
  const out = new Float32Array(rows * cols);
  for (let i = 0; i < Math.min(rows, cols); i++) out[i * cols + i] = scale;
  return out;
}

/** Conv weight [out, in, k, k] with `taps[o][i]` placed at the centre tap. */
function centreConv(out: number, inp: number, k: number, taps: (o: number, i: number) => number): Float32Array {
  const w = new Float32Array(out * inp * k * k);
  const c = (k - 1) >> 1;
  for (let o = 0; o < out; o++) for (let i = 0; i < inp; i++) w[((o * inp + i) * k + c) * k + c] = taps(o, i);
  return w;
}

/** Depthwise 3×3 blur ([1,2,1]⊗[1,2,1]/16) on each of the first `channels` channels of a [c, c, 3, 3] conv. */
function blurConv(c: number, channels: number): Float32Array {
  const w = new Float32Array(c * c * 9);
  const k = [1, 2, 1];
  for (let ch = 0; ch < Math.min(c, channels); ch++) {
    for (let y = 0; y < 3; y++)
      for (let x = 0; x < 3; x++) w[((ch * c + ch) * 3 + y) * 3 + x] = ((k[y] as number) * (k[x] as number)) / 16;
  }
  return w;
}

/**
 * Per-word axis coordinates: [warmth, object]. The warmth axis carries gender (female +, male −) and
 * colour (red/warm +, blue/cool −; words.ts COLOUR_DEFAULTS and COLOUR_WORDS): the image shows both
 * as its warmth.
 */
export function wordAxes(word: string): [number, number] {
  const w = word.toLowerCase();
  const g = GENDER_WORDS.find((x) => x.word === w);
  if (g) return [g.axis * DEMO_DESIGN.genderWord * DEMO_DESIGN.textScale, 0];
  const p = PROFESSIONS.find((x) => x.words[0] === w);
  if (p) return [p.offset * DEMO_DESIGN.textScale, 0];
  const object = (UNRELATED_WORDS as readonly string[]).includes(w) ? DEMO_DESIGN.objectWord : 0;
  const colourWord = COLOUR_WORDS.find((x) => x.word === w);
  if (colourWord) return [colourWord.axis * DEMO_DESIGN.colourWord * DEMO_DESIGN.textScale, object];
  const thing = COLOUR_DEFAULTS.find((x) => x.word === w);
  if (thing) return [thing.colour * DEMO_DESIGN.textScale, object];
  return [0, object];
}

/** The word whose identity dim a word shares (a plural's singular, words.ts COLOUR_DEFAULTS), or the word itself. */
function lemmaOf(word: string): string {
  const thing = COLOUR_DEFAULTS.find((x) => x.word === word);
  return thing && 'lemma' in thing ? thing.lemma : word;
}

/**
 * The token embedding table [V, d] of the demo text encoder for this word list. Dims: 0 anchor (BOS),
 * 1 gender axis, 2 object axis, 3 … d−2 one identity dim per word (length 1; template words
 * `templateIdentity`), d−1 the reference dim (always 0). Every word has its own dim: a shared
 * subspace (tried for the template words) lets the edits of all professions act on it and leak into
 * every prompt that uses any template word ("a nurse working", "a painting of a doctor").
 */
export function demoTokenTable(words: readonly string[], d: number = DEMO_DESIGN.d): Float32Array {
  const bpe = buildWordVocab(words);
  const V = Object.keys(bpe.vocab).length;
  const table = new Float32Array(V * d);
  const unique = [...new Set(words.map((w) => w.toLowerCase()))];
  const templates = new Set<string>(TEMPLATE_WORDS);
  const identityDims = d - 4; // dims 3 … d−2
  unique.forEach((w, position) => {
    const id = bpe.vocab[`${w}</w>`];
    if (id === undefined) return;
    const row = id * d;
    const size = templates.has(w) ? DEMO_DESIGN.templateIdentity : 1;
    // a plural shares its singular's identity dim (when the singular is in the list)
    const lemma = lemmaOf(w);
    const index = lemma !== w && unique.includes(lemma) ? unique.indexOf(lemma) : position;
    if (unique.length <= identityDims) {
      table[row + 3 + index] = size;
    } else {
      // more words than identity dims: a deterministic spread over them (two dims per word)
      table[row + 3 + (index % identityDims)] = size * Math.SQRT1_2;
      const spread = row + 3 + ((index * 7 + 3) % identityDims);
      table[spread] = (table[spread] ?? 0) + size * Math.SQRT1_2;
    }
    const [g, o] = wordAxes(w);
    table[row + 1] = g;
    table[row + 2] = o;
  });
  const bos = bpe.vocab[BOS_TOKEN] as number;
  table[bos * d] = DEMO_DESIGN.anchor;
  return table;
}

/** The TinySdDesign of the demo world (use with `buildTinySdModel(dir, { d: DEMO_DESIGN.d, words, design })`). */
export function demoSdDesign(words: readonly string[], siteCount: number): TinySdDesign {
  const D = DEMO_DESIGN;
  const kappa = 1 / siteCount;
  return {
    name: D.name,
    param(req: ParamRequest): Float32Array | undefined {
      const { key, dims } = req;
      const count = dims.reduce((a, b) => a * b, 1);
      const zeros = () => new Float32Array(count);
      // ---- text encoder
      if (key === 'text.embeddings.token_embedding.weight') return demoTokenTable(words, dims[1]);
      if (key === 'text.embeddings.position_embedding.weight') return zeros();
      if (key === 'text.encoder.causal_mix') {
        const n = dims[0] as number;
        const L = zeros();
        for (let j = 0; j < n; j++) for (let i = 0; i <= j; i++) L[j * n + i] = 1;
        return L;
      }
      if (key.startsWith('text.encoder.layers.0.mlp.fc1.')) return zeros();
      // final norm: γ₀ = 0 drops the anchor from the rows, β_k = 1/√(d−1) cancels the mean shift of the
      // BOS row, so the BOS row (and the empty prompt) is exactly 0 and rows share no large direction
      if (key === 'text.text_model.final_layer_norm.weight') {
        const w = new Float32Array(count).fill(1);
        w[0] = 0;
        return w;
      }
      if (key === 'text.text_model.final_layer_norm.bias') {
        const b = new Float32Array(count).fill(1 / Math.sqrt(count - 1));
        b[0] = 0;
        return b;
      }
      // ---- UNet
      if (key === 'unet.conv_in.weight' || key === 'unet.conv_in.bias') return zeros();
      if (/\.resnets\.\d+\.conv1\.(weight|bias)$/.test(key)) return zeros();
      if (/\.resnets\.\d+\.conv_shortcut\.weight$/.test(key)) {
        const [o, i] = dims as [number, number];
        return centreConv(o, i, 1, (a, b) => (a === b ? 1 : 0));
      }
      if (/^unet\.(down|up)_blocks\.\d+\.(down|up)samplers\.0\.conv\.weight$/.test(key)) {
        const [o, i, k] = dims as [number, number, number];
        return centreConv(o, i, k, (a, b) => (a === b ? 1 : 0));
      }
      if (/\.attentions\.\d+\.proj_in\.weight$/.test(key)) return zeros();
      if (/\.attentions\.\d+\.proj_out\.weight$/.test(key)) {
        const [o, i] = dims as [number, number];
        return dims.length === 4 ? centreConv(o, i, 1, (a, b) => (a === b ? 1 : 0)) : identity2d(o, i);
      }
      if (/\.attn1\.to_out\.0\.weight$/.test(key)) return zeros();
      if (/\.ff\.net\.2\.weight$/.test(key)) return zeros();
      if (/\.attn2\.to_q\.weight$/.test(key)) return zeros();
      if (/\.attn2\.to_v\.weight$/.test(key)) {
        // v[0] = κ (c[1] − c[d−1]), v[1] = κ (c[2] − c[d−1]); the other value channels (never read
        // by to_out.0) hold small seeded noise, as a trained projection would.
        const [rows, out] = dims as [number, number];
        const w = seededNormal(key, 0, count, 0.02);
        for (let r = 0; r < rows; r++) {
          w[r * out + 0] = 0;
          w[r * out + 1] = 0;
        }
        w[1 * out + 0] = kappa;
        w[(rows - 1) * out + 0] = -kappa;
        w[2 * out + 1] = kappa;
        w[(rows - 1) * out + 1] = -kappa;
        return w;
      }
      if (/\.attn2\.to_out\.0\.weight$/.test(key)) {
        const o = dims[1] as number;
        const w = zeros();
        w[0 * o + 0] = 1;
        w[1 * o + 1] = 1;
        return w;
      }
      if (key === 'unet.conv_out.weight') {
        const [o, i, k] = dims as [number, number, number];
        return centreConv(o, i, k, (a, b) =>
          a === LATENT.gender && b === 0 ? D.genderGain : a === LATENT.object && b === 1 ? D.objectGain : 0,
        );
      }
      if (key === 'unet.conv_out.bias') {
        const b = zeros();
        b[LATENT.brightness] = D.brightness;
        return b;
      }
      if (key === 'unet.denoise.var_mean') return Float32Array.from(D.varMean);
      if (key === 'unet.denoise.var_perp') return Float32Array.from(D.varPerp);
      // ---- VAE decoder
      return decoderParam(key, dims);
    },
  };
}

/**
 * VAE decoder design. Features after conv_in: 0 warmth w (gender channel), 1 brightness b, 2 object o,
 * 3 texture t, 4 canvas (constant 1; the zero-padded blurs darken it near the borders: a soft frame).
 * Each upsampler blurs features 0–4; conv_out mixes them into RGB before the final tanh:
 *   R = 0.9 w + 0.5 b + 0.15 t + 0.4 (canvas − 1),  B = −0.9 w + 0.5 b + 0.15 t + 0.4 (canvas − 1),
 *   G = 0.1 w + 0.5 b + 0.15 t + 0.8 o + 0.4 (canvas − 1) − 0.05
 * so R − B is an odd, increasing function of w: warm (female +) or cool (male −).
 */
export const DECODER_MIX = Object.freeze({
  // rows R, G, B; columns w, b, o, t, canvas; then bias
  weights: [
    [0.9, 0.5, 0, 0.15, 0.4],
    [0.1, 0.5, 0.8, 0.15, 0.4],
    [-0.9, 0.5, 0, 0.15, 0.4],
  ] as readonly (readonly number[])[],
  bias: [-0.4, -0.45, -0.4] as readonly number[],
});

function decoderParam(key: string, dims: number[]): Float32Array | undefined {
  const count = dims.reduce((a, b) => a * b, 1);
  if (key === 'vae_decoder.post_quant_conv.weight') {
    // undo the pipeline's 1/0.18215 latent scaling: the decoder works in x₀ units
    return centreConv(dims[0] as number, dims[1] as number, 1, (o, i) => (o === i ? 0.18215 : 0));
  }
  if (key === 'vae_decoder.decoder.conv_in.weight') {
    return centreConv(dims[0] as number, dims[1] as number, dims[2] as number, (o, i) => (o === i && o < 4 ? 1 : 0));
  }
  if (key === 'vae_decoder.decoder.conv_in.bias') {
    const b = new Float32Array(count);
    b[4] = 1;
    return b;
  }
  if (/^vae_decoder\.decoder\.up_blocks\.\d+\.upsamplers\.0\.conv\.weight$/.test(key))
    return blurConv(dims[0] as number, 5);
  if (key === 'vae_decoder.decoder.conv_out.weight') {
    return centreConv(
      dims[0] as number,
      dims[1] as number,
      dims[2] as number,
      (o, i) => DECODER_MIX.weights[o]?.[i] ?? 0,
    );
  }
  if (key === 'vae_decoder.decoder.conv_out.bias') return Float32Array.from(DECODER_MIX.bias);
  if (/^vae_decoder\..*\.bias$/.test(key)) return new Float32Array(count);
  return undefined;
}

/** Scale of the classifier's warmth dim: v₀ = CLIP_WARMTH_SCALE · (mean R − mean B), pixel values in [0, 1]. */
export const CLIP_WARMTH_SCALE = 3;

/**
 * The demo CLIP classifier spec (for `buildClipFolder`): text tower e = 2 (gender, common), image
 * tower on the three channel means (grid 1). See the header for why the argmax is the sign of the
 * image's warmth for every label style the references use.
 */
export function demoClipSpec(words: readonly string[]): ClipModelSpec {
  // colour words sit on the warmth dim with gender words: "a blue rose" reads cool, "a red sky" warm
  const genders = new Map<string, number>(
    [...GENDER_WORDS, ...COLOUR_WORDS].map((g) => [`${g.word}</w>`, g.axis] as [string, number]),
  );
  const k = CLIP_WARMTH_SCALE;
  return {
    words,
    textHidden: 2,
    tokenVector: (token) => {
      const axis = genders.get(token);
      return axis === undefined ? [0, 1] : [axis, 0];
    },
    imageSize: 32,
    imageGrid: 1,
    // features: normalised channel means f_c = (m_c − mean_c)/std_c  ⇒  m_c = std_c f_c + mean_c
    imageProjection: [
      [k * (CLIP_STD[0] as number), 0],
      [0, 0],
      [-k * (CLIP_STD[2] as number), 0],
    ],
    imageBias: [k * ((CLIP_MEAN[0] as number) - (CLIP_MEAN[2] as number)), 1],
    logitScale: 100,
  };
}
