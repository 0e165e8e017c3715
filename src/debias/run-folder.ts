/**
 * A debias job's run folder `<output>/<name>/`: the saved state (state.json, the resume point), the
 * fingerprint of the settings that decide images and edits, the phase that only moves forward, and
 * the files the job writes there.
 *
 *   config.json          the config as run (defaults filled in)
 *   state.json           the job state (phase, tuners, joint rounds): resume point
 *   job.json             the log of every probe and round, and the result
 *   before/  after/      audit run folders (held-out templates, evaluation seeds); the after audit
 *                        of a model that was not exported (tolerance not reached) goes to
 *                        after-unexported/ (the in-memory edit: other settings, other folder)
 *   gendered-<class>/    audits of explicitly gendered prompts on the debiased model
 *   model/               the debiased model (diffusers layout + time-edit.json)
 *   report.md  report.html
 */
import { existsSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fingerprint } from '../audit/store.js';
import { checkReplaceable, checkRunName, markRunFolder } from '../model/path-guard.js';
import { lockRunFolder, RUN_LOCK, type RunLock } from '../model/run-lock.js';
import { removeExportLeftovers, removeTempLeftovers, writeJsonAtomic } from '../util/atomic.js';
import { OutputError } from '../util/errors.js';
import { fsErrorToOutput } from '../util/fs-errors.js';
import type { JobConfig } from './config.js';
import { type DebiasResult, type JobPhase, type JobState, PHASES } from './types.js';

const STATE = 'state.json';
const JOB = 'job.json';

/** Settings whose change invalidates a run folder (what decides images and edits). */
export function jobFingerprint(config: JobConfig): string {
  const { output: _o, concurrency: _c, threads: _t, queue: _q, ...decisive } = config;
  return fingerprint(decisive as unknown as Record<string, unknown>);
}

export function runDirOf(config: JobConfig): string {
  return resolve(config.output, checkRunName(config.name));
}

/** The field the run folder's errors name (the CLI shows config.output). */
const WHAT = 'outDir';

export class RunFolder {
  private constructor(
    readonly dir: string,
    readonly state: JobState,
    private readonly lock: RunLock,
  ) {}

  /**
   * Open (or create) the run folder of `config` and lock it for this process (a second process is
   * refused, naming the holder); `restart` empties it first. Only a folder of this tool (its marker,
   * or the state and config of an older run) is ever written into or emptied; anything else is
   * refused. Leftover temporaries (interrupted writes, `model.tmp-*` exports) are removed.
   * Writes config.json. Call `close` when the job ends.
   */
  static open(config: JobConfig, options: { restart?: boolean } = {}): RunFolder {
    const dir = runDirOf(config);
    const legacy = [STATE, 'config.json'];
    checkReplaceable(WHAT, dir, 'debias', { legacy, action: options.restart ? 'delete' : 'use' });
    const lock = lockRunFolder(WHAT, dir);
    try {
      if (options.restart) {
        for (const name of readdirSync(dir))
          if (name !== RUN_LOCK) rmSync(join(dir, name), { recursive: true, force: true });
      }
      markRunFolder(dir, 'debias');
      removeTempLeftovers(dir);
      removeExportLeftovers(join(dir, 'model'));
      const folder = new RunFolder(dir, loadState(dir, jobFingerprint(config)), lock);
      // the queue URL's password stays out of the run folder
      const shown = config.queue ? { ...config, queue: config.queue.replace(/:[^:@/]*@/, ':***@') } : config;
      writeJsonAtomic(join(dir, 'config.json'), shown, WHAT);
      return folder;
    } catch (error) {
      lock.release();
      throw fsErrorToOutput(error, WHAT, dir);
    }
  }

  /** Release the run folder's lock. */
  close(): void {
    this.lock.release();
  }

  /** Save the state (atomically): the resume point. */
  save(): void {
    writeJsonAtomic(join(this.dir, STATE), this.state, WHAT);
  }

  /** Move the phase forward to `phase` (never back) and save. */
  advance(phase: JobPhase): void {
    if (PHASES.indexOf(this.state.phase) < PHASES.indexOf(phase)) this.state.phase = phase;
    this.save();
  }

  path(...parts: string[]): string {
    return join(this.dir, ...parts);
  }

  /** The debiased model's folder. */
  get modelDir(): string {
    return join(this.dir, 'model');
  }

  /** job.json: the result, every probe (by profession and number) and the UCE loop's state. */
  writeJob(result: DebiasResult): void {
    // Professions are tuned concurrently, so the order probes were logged in depends on timing; a
    // resumed run must write the same file as an uninterrupted one.
    const probes = [...this.state.probeLog].sort(
      (a, b) => a.profession.localeCompare(b.profession) || a.probe - b.probe,
    );
    writeJsonAtomic(join(this.dir, JOB), { ...result, probes, uce: this.state.uce });
  }

  /** The result job.json holds, or null when there is none (a crash before it was written). */
  readResult(): DebiasResult | null {
    const path = join(this.dir, JOB);
    if (!existsSync(path)) return null;
    try {
      const {
        probes: _p,
        uce: _u,
        ...result
      } = JSON.parse(readFileSync(path, 'utf8')) as DebiasResult & {
        probes: unknown;
        uce: unknown;
      };
      // a result of an older version (without held-out parity or the comparison) is recomputed: the
      // audits resume complete
      return result.kind === 'debias' && result.summary?.heldOutParity && result.comparison ? result : null;
    } catch {
      return null;
    }
  }
}

/**
 * Why a run folder's config.json (the config as run) was made with the defaults of an earlier
 * version, or null: before image size and classifier preprocessing were decided per model, the
 * config as run held `classifier` as a plain folder and a fixed 512 × 512 size.
 */
function oldDefaultsOf(runDir: string): string | null {
  try {
    const config = JSON.parse(readFileSync(join(runDir, 'config.json'), 'utf8')) as { classifier?: unknown };
    return typeof config.classifier === 'string'
      ? "no classifier preprocessing recorded, generation size fixed at 512 × 512 instead of the model's native size"
      : null;
  } catch {
    return null;
  }
}

function loadState(runDir: string, fp: string): JobState {
  const path = join(runDir, STATE);
  if (existsSync(path)) {
    let saved: JobState;
    try {
      saved = JSON.parse(readFileSync(path, 'utf8')) as JobState;
    } catch (cause) {
      throw new OutputError(`${path} is not valid JSON; pass \`restart\` to start over`, {
        cause,
        field: WHAT,
        mentions: ['restart'],
      });
    }
    if (saved.fingerprint !== fp) {
      const old = oldDefaultsOf(runDir);
      if (old) {
        throw new OutputError(
          `${runDir} holds a run made by an earlier time-debias with the old defaults (${old}); it is not resumed with this version's settings. Pass \`restart\` to start over, or choose another \`name\` or \`outDir\` (README "Changed defaults")`,
          { field: WHAT, mentions: ['restart', 'name', 'outDir'] },
        );
      }
      throw new OutputError(
        `${runDir} holds a run made with other settings (its config.json); pass \`restart\` to start over, or choose another \`name\` or \`outDir\``,
        { field: WHAT, mentions: ['restart', 'name', 'outDir'] },
      );
    }
    return saved;
  }
  return {
    kind: 'debias-state',
    version: 1,
    fingerprint: fp,
    phase: 'baseline',
    pairs: null,
    tuners: {},
    uce: null,
    joint: { rounds: [], strengths: {}, pending: null, done: false },
    probeLog: [],
  };
}
