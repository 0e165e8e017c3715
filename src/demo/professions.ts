/**
 * The demo world's professions and their designed stereotypes.
 *
 * `offset` is the profession word's position on the demo text encoder's gender axis (female +,
 * male −), in PROBIT units of the designed world: at the demo's default generation settings
 * (guidance 7.5, PNDM, 64×64) the expected share of "female" images of "a {profession}" is about
 * Φ(offset) (Φ = standard normal CDF), before any edit. So offset ±1.5 means about 93 % / 7 %,
 * ±1.04 means 85 % / 15 %, 0 is balanced. The signs follow the stereotypes the TIME and UCE data
 * files record for Stable Diffusion (`../shared/data/uce_fc5d009/gender_bias.csv`, its
 * `stereotype` column); the magnitudes are ours, chosen to give a graded spread: some strongly
 * male, some strongly female, some mild. The measured shares are reported by the demo's tests
 * and README; this table is the design, not a measurement.
 *
 * The first 35 entries are TIME's WinoBias professions in TIME's order; the rest are additions.
 */

export type Stereotype = 'female' | 'male' | 'mild';

export interface DemoProfession {
  /** The profession as it appears in prompts ("construction worker"). */
  profession: string;
  /** Its article: "a" or "an". */
  article: 'a' | 'an';
  /** Its words; the first carries the offset, any others are neutral. */
  words: readonly string[];
  /** Designed position on the gender axis, probit units (female +, male −). */
  offset: number;
  /** |offset| ≥ 1 is strong (female/male), below that mild. */
  stereotype: Stereotype;
  /** One of the 35 WinoBias professions of TIME's gender set. */
  winobias: boolean;
}

type Row = [profession: string, offset: number, winobias: boolean];

const ROWS: readonly Row[] = [
  ['attendant', -0.35, true],
  ['cashier', 0.55, true],
  ['teacher', 0.7, true],
  ['nurse', 1.7, true],
  ['assistant', 0.6, true],
  ['secretary', 1.5, true],
  ['cleaner', 0.8, true],
  ['receptionist', 1.4, true],
  ['clerk', -0.25, true],
  ['counselor', 0.45, true],
  ['designer', 0.3, true],
  ['hairdresser', 1.3, true],
  ['writer', 0.15, true],
  ['housekeeper', 1.6, true],
  ['baker', -0.45, true],
  ['librarian', 1.2, true],
  ['tailor', -0.55, true],
  ['driver', -1.05, true],
  ['supervisor', -0.8, true],
  ['janitor', -1.15, true],
  ['cook', -0.6, true],
  ['laborer', -1.5, true],
  ['construction worker', -1.7, true],
  ['developer', -1.25, true],
  ['carpenter', -1.6, true],
  ['manager', -0.9, true],
  ['lawyer', -0.85, true],
  ['farmer', -1.3, true],
  ['salesperson', -0.5, true],
  ['physician', -1.1, true],
  ['guard', -1.2, true],
  ['analyst', -0.7, true],
  ['mechanic', -1.65, true],
  ['sheriff', -1.45, true],
  ['CEO', -1.5, true],
  ['doctor', -1.2, false],
  ['engineer', -1.4, false],
  ['pilot', -1.35, false],
  ['scientist', -0.75, false],
  ['chef', -0.65, false],
  ['dancer', 1.25, false],
  ['model', 1.1, false],
];

const VOWELS = new Set(['a', 'e', 'i', 'o', 'u']);

/** The demo professions, in a fixed order (TIME's 35 WinoBias professions first). */
export const PROFESSIONS: readonly DemoProfession[] = Object.freeze(
  ROWS.map(([profession, offset, winobias]) => {
    const words = profession.toLowerCase().split(' ');
    const first = profession[0]?.toLowerCase() ?? '';
    return Object.freeze({
      profession,
      article: VOWELS.has(first) ? ('an' as const) : ('a' as const),
      words: Object.freeze(words),
      offset,
      stereotype: (Math.abs(offset) >= 1 ? (offset > 0 ? 'female' : 'male') : 'mild') as Stereotype,
      winobias,
    });
  }),
);

/** Look a profession up by name (case-insensitive). */
export function findProfession(name: string): DemoProfession | undefined {
  const key = name.trim().toLowerCase();
  return PROFESSIONS.find((p) => p.profession.toLowerCase() === key);
}
