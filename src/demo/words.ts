/**
 * The demo world's vocabulary: every word the demo prompts, templates, classifier labels and tests
 * use, each one token in the tiny CLIP-convention BPE vocabulary (`buildWordVocab`). The order is
 * part of the generator's identity (token ids follow it), so append, never reorder.
 */
import { PROFESSIONS } from './professions.js';

/** Articles, prepositions and the template words of TIME/UCE-style prompts. */
export const TEMPLATE_WORDS = Object.freeze([
  'a',
  'an',
  'the',
  'of',
  'in',
  'on',
  'at',
  'with',
  'and',
  'is',
  'photo',
  'image',
  'picture',
  'painting',
  'portrait',
  'headshot',
  'working',
  'laughing',
  'smiling',
  'talking',
  'phone',
  'workplace',
  'office',
  'digital',
  'art',
  'person',
  'people',
  'face',
  'close',
  'up',
  'realistic',
  'professional',
  'high',
  'quality',
] as const);

/** Words that name a gender; `axis` is the sign on the demo's gender axis (female +, male −). */
export const GENDER_WORDS = Object.freeze([
  { word: 'female', axis: 1 },
  { word: 'woman', axis: 1 },
  { word: 'women', axis: 1 },
  { word: 'girl', axis: 1 },
  { word: 'she', axis: 1 },
  { word: 'her', axis: 1 },
  { word: 'lady', axis: 1 },
  { word: 'male', axis: -1 },
  { word: 'man', axis: -1 },
  { word: 'men', axis: -1 },
  { word: 'boy', axis: -1 },
  { word: 'he', axis: -1 },
  { word: 'his', axis: -1 },
  { word: 'gentleman', axis: -1 },
] as const);

/** Unrelated nouns: prompts about them must keep their images through any profession edit. */
export const UNRELATED_WORDS = Object.freeze([
  'dog',
  'cat',
  'car',
  'tree',
  'house',
  'flower',
  'rose',
  'roses',
  'pack',
  'blue',
  'red',
  'mountain',
  'river',
  'bird',
  'apple',
  'book',
  'chair',
  'city',
  'beach',
  'horse',
] as const);

/** All demo words, deduplicated, in their fixed order. */
export function demoWords(): string[] {
  const words = [
    ...TEMPLATE_WORDS,
    ...GENDER_WORDS.map((g) => g.word),
    ...PROFESSIONS.flatMap((p) => p.words),
    ...UNRELATED_WORDS,
  ];
  return [...new Set(words)];
}

/**
 * TIME's own kind of edit in the demo world (issue 13): implicit colour assumptions. Colour lives on
 * the same text axis as gender (dim 1, the *warmth* axis: the VAE paints it warm red/orange (+) or
 * cool blue/teal (−)), so a thing's designed default colour is its coordinate there, in probit
 * units like a profession's offset: "a rose" is red (warm) in about Φ(2.5) ≈ 99 % of the images
 * unless said otherwise ("a blue rose": 2.5 − 6 = −3.5, cool). `lemma` makes a plural the same
 * concept as its singular (one identity dim), so that an edit of "roses" reaches "a rose" as it
 * does in CLIP's text space; words without a colour are neutral.
 *
 * Only words that no gender-demo prompt uses get a colour: the gender demo's prompts, and with them
 * `npm run demo`'s numbers, are unchanged.
 */
export const COLOUR_DEFAULTS = Object.freeze([
  { word: 'rose', colour: 2.5 },
  { word: 'roses', colour: 2.5, lemma: 'rose' },
  { word: 'tulip', colour: 2.5 },
  { word: 'tulips', colour: 2.5, lemma: 'tulip' },
  { word: 'strawberry', colour: 2.5 },
  { word: 'strawberries', colour: 2.5, lemma: 'strawberry' },
  { word: 'sky', colour: -2.5 },
  { word: 'sea', colour: -2.5 },
  { word: 'lake', colour: -2.5 },
] as const);

/** Colour words: their sign on the warmth axis (red +, blue −); magnitude DEMO_DESIGN.colourWord. */
export const COLOUR_WORDS = Object.freeze([
  { word: 'red', axis: 1 },
  { word: 'blue', axis: -1 },
] as const);

/** Words the demo TIMED file (src/demo/timed-demo.csv) adds to the vocabulary, appended after demoWords(). */
export const TIMED_DEMO_WORDS = Object.freeze([
  'garden',
  'bouquet',
  'vase',
  'tulip',
  'tulips',
  'strawberry',
  'strawberries',
  'sky',
  'clear',
  'sea',
  'lake',
  'bowl',
] as const);

/**
 * The demo world's vocabulary: demoWords() (the tiny SD builder's default, whose bytes are pinned)
 * followed by the TIMED demo's words. Appending keeps every existing word's token id and dims.
 */
export function demoWorldWords(): string[] {
  return [...new Set([...demoWords(), ...TIMED_DEMO_WORDS])];
}
