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
