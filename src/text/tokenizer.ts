/**
 * The CLIP tokenizer of a Stable Diffusion model, loaded from the model's own `tokenizer/` folder and
 * padded with the model's own rules (mission.md §3, issue 2 item 4).
 *
 * Two folder layouts are read, strictly from local files:
 *   - diffusers: `vocab.json` + `merges.txt` (+ `tokenizer_config.json`, `special_tokens_map.json`);
 *     turned into a Hugging Face `tokenizer.json` object by `clipTokenizerJson` (bpe-files.ts);
 *   - transformers.js: `tokenizer.json` (+ `tokenizer_config.json`).
 * When a folder has both, vocab.json + merges.txt win: that is what diffusers' pipelines load.
 *
 * The BPE itself runs in `@huggingface/transformers`' CLIPTokenizer. Padding and truncation are done
 * here, as diffusers asks the tokenizer for them (`padding="max_length", max_length=77,
 * truncation=True`):
 *   - the pad token comes from the config (SD 1.x `<|endoftext|>` = 49407, SD 2.x `!` = 0), falling
 *     back to the EOS token like `transformers` does;
 *   - the length is the config's `model_max_length` (77 for every SD text encoder);
 *   - an over-long prompt keeps BOS, its first `max − 2` tokens and EOS (EOS stays last), and says so
 *     in `truncated` so that callers can warn.
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { CLIPTokenizer } from '../runtime/transformers.js';
import { ModelFormatError, show, UsageError } from '../util/errors.js';
import { BOS_TOKEN, type BpeVocab, clipTokenizerJson, EOS_TOKEN, mergesFromMergesTxt } from './bpe-files.js';

/** CLIP's context length; used when a config has no `model_max_length` or the "no limit" sentinel. */
export const CLIP_CONTEXT_LENGTH = 77;

/** One prompt, tokenised and padded to the model's length. */
export interface TokenizedPrompt {
  /** Token ids, exactly `maxLength` of them: BOS, the prompt's tokens, EOS, then the pad id. */
  ids: number[];
  /** The token strings of `ids` (e.g. "photo</w>", "<|endoftext|>"). */
  tokens: string[];
  /** Tokens before padding, BOS and EOS included (at most `maxLength`). */
  length: number;
  /** True when the prompt was longer than `maxLength` tokens and was cut (EOS kept last). */
  truncated: boolean;
}

export type TokenizerLayout = 'diffusers' | 'tokenizer-json';

/** The special tokens and length rules of a tokenizer, resolved from its config files. */
export interface TokenizerRules {
  bosToken: string;
  eosToken: string;
  padToken: string;
  unkToken: string;
  maxLength: number;
}

export class ClipTokenizer {
  readonly bosId: number;
  readonly eosId: number;
  readonly padId: number;
  readonly vocabSize: number;
  readonly maxLength: number;
  private readonly idToToken: string[];
  private readonly tokenToId: Map<string, number>;

  private constructor(
    private readonly inner: CLIPTokenizer,
    readonly rules: TokenizerRules,
    /** Where it came from: a folder path, or a description for in-memory vocabularies. */
    readonly source: string,
    readonly layout: TokenizerLayout | 'in-memory',
  ) {
    this.tokenToId = inner.get_vocab();
    this.vocabSize = this.tokenToId.size;
    this.idToToken = [];
    for (const [token, id] of this.tokenToId) this.idToToken[id] = token;
    const need = (what: string, token: string): number => {
      const id = this.tokenToId.get(token);
      if (id === undefined) {
        throw new ModelFormatError(`tokenizer ${source}: the ${what} token ${show(token)} is not in the vocabulary`);
      }
      return id;
    };
    this.bosId = need('BOS', rules.bosToken);
    this.eosId = need('EOS', rules.eosToken);
    this.padId = need('pad', rules.padToken);
    this.maxLength = rules.maxLength;
  }

  /**
   * Load the tokenizer of a model folder's `tokenizer/` directory (diffusers layout) or of a folder
   * holding `tokenizer.json` (transformers.js layout). Errors name the path that is missing or bad.
   */
  static async fromFolder(tokenizerDir: string): Promise<ClipTokenizer> {
    if (!existsSync(tokenizerDir)) {
      throw new ModelFormatError(`tokenizer folder ${show(tokenizerDir)} does not exist`);
    }
    if (!statSync(tokenizerDir).isDirectory()) {
      throw new ModelFormatError(`tokenizer folder ${show(tokenizerDir)} is not a directory`);
    }
    const file = (name: string) => join(tokenizerDir, name);
    const has = (name: string) => existsSync(file(name));
    const config = {
      ...(has('special_tokens_map.json') ? readJsonObject(file('special_tokens_map.json')) : {}),
      ...(has('tokenizer_config.json') ? readJsonObject(file('tokenizer_config.json')) : {}),
    };
    const rulesFrom = (where: string) => resolveRules(config, where);

    if (has('vocab.json') || has('merges.txt')) {
      for (const name of ['vocab.json', 'merges.txt']) {
        if (!has(name)) {
          throw new ModelFormatError(
            `tokenizer folder ${show(tokenizerDir)}: ${show(file(name))} is missing (a diffusers tokenizer folder ` +
              'needs both vocab.json and merges.txt)',
          );
        }
      }
      const vocab = readVocabJson(file('vocab.json'));
      const merges = mergesFromMergesTxt(readText(file('merges.txt')));
      if (merges.length === 0) throw new ModelFormatError(`${show(file('merges.txt'))} holds no merges`);
      const rules = rulesFrom(tokenizerDir);
      for (const [what, token] of [
        ['BOS', rules.bosToken],
        ['EOS', rules.eosToken],
      ] as const) {
        if (vocab[token] === undefined) {
          throw new ModelFormatError(
            `${show(file('vocab.json'))}: the ${what} token ${show(token)} is not in the vocabulary`,
          );
        }
      }
      return ClipTokenizer.build({ vocab, merges }, rules, tokenizerDir, 'diffusers');
    }
    if (has('tokenizer.json')) {
      const json = readJsonObject(file('tokenizer.json'));
      const model = json.model as { type?: unknown } | undefined;
      if (!model || typeof model !== 'object' || model.type !== 'BPE') {
        throw new ModelFormatError(
          `${show(file('tokenizer.json'))}: model.type is ${show(model?.type)}; a CLIP tokenizer is a BPE model`,
        );
      }
      return ClipTokenizer.fromTokenizerJson(json, rulesFrom(tokenizerDir), tokenizerDir, 'tokenizer-json');
    }
    throw new ModelFormatError(
      `tokenizer folder ${show(tokenizerDir)} has neither vocab.json + merges.txt (diffusers layout) nor ` +
        'tokenizer.json (transformers.js layout)',
    );
  }

  /** A tokenizer over an in-memory CLIP BPE vocabulary (bpe-files.ts), with SD 1.x rules by default. */
  static fromBpe(bpe: BpeVocab, rules: Partial<TokenizerRules> = {}, source = 'in-memory vocabulary'): ClipTokenizer {
    return ClipTokenizer.build(bpe, resolveRules({}, source, rules), source, 'in-memory');
  }

  private static build(
    bpe: BpeVocab,
    rules: TokenizerRules,
    source: string,
    layout: TokenizerLayout | 'in-memory',
  ): ClipTokenizer {
    return ClipTokenizer.fromTokenizerJson(clipTokenizerJson(bpe), rules, source, layout);
  }

  private static fromTokenizerJson(
    json: Record<string, unknown>,
    rules: TokenizerRules,
    source: string,
    layout: TokenizerLayout | 'in-memory',
  ): ClipTokenizer {
    let inner: CLIPTokenizer;
    try {
      inner = new CLIPTokenizer(json, {
        tokenizer_class: 'CLIPTokenizer',
        model_max_length: rules.maxLength,
        bos_token: rules.bosToken,
        eos_token: rules.eosToken,
        pad_token: rules.padToken,
        unk_token: rules.unkToken,
        padding_side: 'right',
      });
    } catch (cause) {
      throw new ModelFormatError(`tokenizer ${show(source)} could not be built: ${(cause as Error).message}`, {
        cause,
      });
    }
    return new ClipTokenizer(inner, rules, source, layout);
  }

  /**
   * Tokenise one prompt and pad it to `maxLength` (see the module comment for the rules). Empty and
   * whitespace-only prompts are valid: they give the unconditional embedding's ids (BOS, EOS, pads).
   */
  encode(text: string): TokenizedPrompt {
    if (typeof text !== 'string') throw new UsageError(`prompt: ${show(text)} is not a string`);
    const raw = this.inner.encode(text);
    if (raw[0] !== this.bosId || raw[raw.length - 1] !== this.eosId) {
      throw new ModelFormatError(
        `tokenizer ${show(this.source)}: encoding does not start with BOS ${this.bosId} and end with EOS ${this.eosId} ` +
          `(got ${raw.slice(0, 3).join(' ')} ... ${raw.slice(-3).join(' ')}); its post-processor is not CLIP's`,
      );
    }
    const max = this.maxLength;
    const truncated = raw.length > max;
    const ids = truncated ? [...raw.slice(0, max - 1), this.eosId] : raw;
    const length = ids.length;
    while (ids.length < max) ids.push(this.padId);
    return { ids, tokens: ids.map((id) => this.tokenOf(id)), length, truncated };
  }

  /** The text of a prompt's tokens past the context (what `encode` drops when it truncates); '' when it fits. */
  truncatedPart(text: string): string {
    return this.tokenize(text)
      .slice(this.maxLength - 2)
      .join('')
      .replaceAll('</w>', ' ')
      .trim();
  }

  /** The prompt's tokens without BOS/EOS and without padding or truncation. */
  tokenize(text: string): string[] {
    return this.inner.tokenize(text);
  }

  /** The id of a vocabulary token (e.g. "a</w>"), or undefined when the vocabulary lacks it. */
  idOf(token: string): number | undefined {
    return this.tokenToId.get(token);
  }

  /** The token string of an id; throws a UsageError for an id outside the vocabulary. */
  tokenOf(id: number): string {
    const token = this.idToToken[id];
    if (token === undefined) {
      throw new UsageError(
        `token id ${show(id)} is not in the vocabulary of ${show(this.source)} (size ${this.vocabSize})`,
      );
    }
    return token;
  }
}

/**
 * Reject a missing or empty prompt where one is required; `field` names the library parameter (e.g.
 * `pairs[0].source`), which the CLI relabels with its flag. The unconditional prompt "" is not
 * checked with this.
 */
export function assertPrompt(field: string, value: unknown): asserts value is string {
  if (typeof value !== 'string') {
    throw new UsageError(`${show(value)} is not a prompt; give a non-empty text`, { field });
  }
  if (value.trim().length === 0) {
    throw new UsageError(`${show(value)} is empty; a prompt with at least one word is required`, { field });
  }
}

/**
 * Resolve the special tokens and the padded length from a tokenizer's config (tokenizer_config.json
 * over special_tokens_map.json). Tokens may be strings, `AddedToken` objects (`{__type, content}`),
 * or plain `{content}` objects as in special_tokens_map.json.
 */
export function resolveRules(
  config: Record<string, unknown>,
  where: string,
  overrides: Partial<TokenizerRules> = {},
): TokenizerRules {
  const token = (key: string): string | undefined => {
    const value = config[key];
    if (value === undefined || value === null) return undefined;
    if (typeof value === 'string') return value;
    if (typeof value === 'object' && typeof (value as { content?: unknown }).content === 'string') {
      return (value as { content: string }).content;
    }
    throw new ModelFormatError(
      `tokenizer ${show(where)}: ${key} is ${show(JSON.stringify(value))}; expected a token string`,
    );
  };
  const eosToken = overrides.eosToken ?? token('eos_token') ?? EOS_TOKEN;
  const rules: TokenizerRules = {
    bosToken: overrides.bosToken ?? token('bos_token') ?? BOS_TOKEN,
    eosToken,
    // transformers falls back to the EOS token when no pad token is configured.
    padToken: overrides.padToken ?? token('pad_token') ?? eosToken,
    unkToken: overrides.unkToken ?? token('unk_token') ?? eosToken,
    maxLength: overrides.maxLength ?? maxLengthFrom(config.model_max_length, where),
  };
  return rules;
}

function maxLengthFrom(value: unknown, where: string): number {
  // transformers writes a huge sentinel (int(1e30)) for "no limit"; CLIP's context length applies.
  if (value === undefined || value === null || (typeof value === 'number' && value > 1e12)) return CLIP_CONTEXT_LENGTH;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 2) {
    throw new ModelFormatError(
      `tokenizer ${show(where)}: model_max_length is ${show(value)}; it must be an integer ≥ 2 (BOS and EOS)`,
    );
  }
  return value;
}

function readText(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (cause) {
    throw new ModelFormatError(`${show(path)} could not be read: ${(cause as Error).message}`, { cause });
  }
}

function readJsonObject(path: string): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(readText(path));
  } catch (cause) {
    if (cause instanceof ModelFormatError) throw cause;
    throw new ModelFormatError(`${show(path)} is not valid JSON: ${(cause as Error).message}`, { cause });
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new ModelFormatError(`${show(path)} must hold a JSON object`);
  }
  return value as Record<string, unknown>;
}

function readVocabJson(path: string): Record<string, number> {
  const json = readJsonObject(path);
  const vocab: Record<string, number> = Object.create(null);
  for (const [token, id] of Object.entries(json)) {
    if (typeof id !== 'number' || !Number.isInteger(id) || id < 0) {
      throw new ModelFormatError(`${show(path)}: token ${show(token)} has id ${show(id)}; ids are integers ≥ 0`);
    }
    vocab[token] = id;
  }
  if (Object.keys(vocab).length === 0) throw new ModelFormatError(`${show(path)} is an empty vocabulary`);
  return vocab;
}
