/**
 * A small causal stand-in for the CLIP text encoder (test helper): words → ids from a fixed
 * vocabulary, padded with EOS to L, and hidden row p a pseudo-random vector determined by the ids
 * 0…p (like a causal transformer: rows before the first difference of two prompts are identical).
 */
import type { EncodedRows } from '../../src/edit/rows.js';
import { gaussian32, rng } from '../linalg/reference.js';

export const BOS = 49406;
export const EOS = 49407;
export const WORDS = [
  'a',
  'an',
  'doctor',
  'female',
  'male',
  'nurse',
  'attendant',
  'photo',
  'image',
  'picture',
  'of',
  'dog',
  'cat',
  'ceo',
  'pack',
  'roses',
  'blue',
  'man',
  'woman',
];
export const ID: Record<string, number> = Object.fromEntries(WORDS.map((w, i) => [w, 100 + i]));
export const TOKENS = { a: ID.a as number, an: ID.an as number, eos: EOS };

export function tokenize(prompt: string, L: number): number[] {
  const words = prompt.toLowerCase().split(/\s+/).filter(Boolean);
  const ids = [
    BOS,
    ...words.map((w) => {
      const id = ID[w];
      if (id === undefined) throw new Error(`fake encoder: no word ${w}`);
      return id;
    }),
    EOS,
  ];
  return [...ids, ...new Array<number>(L - ids.length).fill(EOS)];
}

export function fakeEncoder(d: number, L = 77, scale = 1) {
  const calls: string[][] = [];
  const encode = async (prompts: string[]): Promise<EncodedRows[]> => {
    calls.push([...prompts]);
    return prompts.map((prompt) => {
      const ids = tokenize(prompt, L);
      const hidden = new Float32Array(L * d);
      let h = 2166136261;
      for (let p = 0; p < L; p++) {
        h = Math.imul(h ^ (ids[p] as number), 16777619) >>> 0;
        h = Math.imul(h ^ p, 16777619) >>> 0;
        hidden.set(gaussian32(rng(h), d, scale), p * d);
      }
      return { ids, hidden };
    });
  };
  return { encode, calls };
}
