/**
 * The crash-safe run store of an audit folder:
 *
 *   run.json        the settings that decide every image's result, and their fingerprint
 *                   (sha256 of the canonical JSON); written atomically when the run starts
 *   records.jsonl   one JSON object per line, appended and fsynced one record at a time:
 *                     {"kind":"generated", key, ...}   an image was generated and saved as PNG
 *                     {"kind":"classified", key, ...}  an image was classified (its result)
 *
 * A SIGKILL can leave at most one torn last line; opening the store drops it (truncating the file
 * to the last complete line). Re-opening with other settings is refused (OutputError) unless
 * `restart`, which discards the folder's results. One process at a time: the store holds the run
 * folder's lock (src/model/run-lock.ts) from open to close, and marks the folder as an audit run
 * (src/model/path-guard.ts). Leftover temporaries of interrupted writes are removed at open.
 */
import {
  closeSync,
  existsSync,
  fstatSync,
  fsyncSync,
  ftruncateSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  readSync,
  rmSync,
  statSync,
} from 'node:fs';
import { join } from 'node:path';
import { markRunFolder, RUN_MARKER } from '../model/path-guard.js';
import { lockRunFolder, RUN_LOCK, type RunLock } from '../model/run-lock.js';
import { removeTempLeftovers, writeAll, writeJsonAtomic } from '../util/atomic.js';
import { canonicalJson, fingerprint } from '../util/canonical-json.js';
import { OutputError, show } from '../util/errors.js';
import { fsErrorToOutput } from '../util/fs-errors.js';

export interface GeneratedRecord {
  kind: 'generated';
  key: string;
  profession: string;
  prompt: string;
  seed: number;
}

export interface ClassifiedRecord {
  kind: 'classified';
  key: string;
  profession: string;
  label: string;
  unclear: boolean;
  probabilities: Record<string, number>;
}

export type StoreRecord = GeneratedRecord | ClassifiedRecord;

export interface RunHeader {
  kind: 'audit-run';
  version: 1;
  fingerprint: string;
  settings: Record<string, unknown>;
}

export { folderDigest } from '../model/folder-digest.js';
export { canonicalJson, fingerprint } from '../util/canonical-json.js';

/**
 * What marks an audit run folder's settings as made with an earlier version's defaults: no recorded
 * classifier preprocessing, and (generated images) no record of how the image size was decided —
 * then it was a fixed 512 × 512 whatever the model.
 */
export function oldDefaultsOf(settings: unknown): string[] {
  const s = (settings ?? {}) as {
    classifier?: { preprocess?: unknown };
    source?: { kind?: unknown; sizeFrom?: unknown };
  };
  const out: string[] = [];
  if (s.classifier && s.classifier.preprocess === undefined) out.push('classifier preprocessing not recorded');
  if (s.source?.kind === 'generator' && s.source.sizeFrom === undefined)
    out.push("image size not decided from the model (512 × 512 by default, not the model's native size)");
  return out;
}

/** The settings that differ between two settings objects, as dotted paths. */
export function settingsDiff(a: unknown, b: unknown, prefix = ''): string[] {
  if (canonicalJson(a) === canonicalJson(b)) return [];
  const isObj = (x: unknown) => x !== null && typeof x === 'object' && !Array.isArray(x);
  if (!isObj(a) || !isObj(b)) return [prefix || '(root)'];
  const keys = [...new Set([...Object.keys(a as object), ...Object.keys(b as object)])].sort();
  return keys.flatMap((k) =>
    settingsDiff((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k], prefix ? `${prefix}.${k}` : k),
  );
}

const RUN_FILE = 'run.json';
const RECORDS_FILE = 'records.jsonl';
/** What a restart removes (the store's own files and everything derived from them). */
const DERIVED = [RECORDS_FILE, 'audit.json', 'report.md', 'report.html', 'images', 'sheets'];

export class RunStore {
  private fd: number;
  readonly records: StoreRecord[];
  private readonly lock: RunLock;

  private constructor(
    readonly dir: string,
    readonly header: RunHeader,
    fd: number,
    records: StoreRecord[],
    lock: RunLock,
  ) {
    this.fd = fd;
    this.records = records;
    this.lock = lock;
  }

  /**
   * Open (or create) the run folder `dir` for `settings`. An existing run with another fingerprint
   * is refused unless `restart`; a non-empty folder that is not a run folder is always refused.
   */
  static open(dir: string, settings: Record<string, unknown>, options: { restart?: boolean } = {}): RunStore {
    const fp = fingerprint(settings);
    const header: RunHeader = { kind: 'audit-run', version: 1, fingerprint: fp, settings };
    const runFile = join(dir, RUN_FILE);
    if (existsSync(dir) && !statSync(dir).isDirectory())
      throw new OutputError(`${show(dir)} exists and is not a folder`, { field: 'out' });
    const ownEntries = (names: string[]) => names.filter((n) => n !== RUN_LOCK && n !== RUN_MARKER);
    // A folder of someone else's files is refused before anything (the lock file included) is written.
    if (!existsSync(runFile) && existsSync(dir) && ownEntries(readdirSync(dir)).length > 0) {
      throw new OutputError(
        `${show(dir)} is a non-empty folder that is not an audit run folder (no ${RUN_FILE}); choose an empty or new folder`,
        { field: 'out' },
      );
    }
    const lock = lockRunFolder('out', dir);
    try {
      return RunStore.openLocked(dir, runFile, header, settings, lock, options);
    } catch (error) {
      lock.release();
      throw fsErrorToOutput(error, 'out', dir);
    }
  }

  private static openLocked(
    dir: string,
    runFile: string,
    header: RunHeader,
    settings: Record<string, unknown>,
    lock: RunLock,
    options: { restart?: boolean },
  ): RunStore {
    const fp = header.fingerprint;
    if (existsSync(runFile)) {
      let old: RunHeader;
      try {
        old = JSON.parse(readFileSync(runFile, 'utf8')) as RunHeader;
      } catch (cause) {
        throw new OutputError(`${show(dir)}: ${RUN_FILE} is not valid JSON; remove the folder or pass \`restart\``, {
          cause,
          field: 'out',
          mentions: ['restart'],
        });
      }
      if (old.fingerprint !== fp) {
        const outdated = oldDefaultsOf(old.settings);
        if (!options.restart && outdated.length) {
          throw new OutputError(
            `${show(dir)}: this run folder was made by an earlier time-debias with the old defaults (${outdated.join('; ')}); ` +
              'its results are not mixed with this run\'s. Use another `out`, or `restart` to discard its results (README "Changed defaults").',
            { field: 'out', mentions: ['out', 'restart'] },
          );
        }
        if (!options.restart) {
          const diff = settingsDiff(old.settings, settings);
          throw new OutputError(
            `${show(dir)}: this run folder was made with other settings (${diff.join(', ') || 'fingerprint'} differ); ` +
              'its results would not be comparable. Use another `out`, or `restart` to discard its results.',
            { field: 'out', mentions: ['out', 'restart'] },
          );
        }
        for (const f of DERIVED) rmSync(join(dir, f), { recursive: true, force: true });
        writeJsonAtomic(runFile, header);
      } else if (options.restart) {
        for (const f of DERIVED) rmSync(join(dir, f), { recursive: true, force: true });
      }
    } else {
      mkdirSync(dir, { recursive: true });
      writeJsonAtomic(runFile, header);
    }
    markRunFolder(dir, 'audit');
    removeTempLeftovers(dir);
    const images = join(dir, 'images');
    if (existsSync(images))
      for (const e of readdirSync(images, { withFileTypes: true }))
        if (e.isDirectory()) removeTempLeftovers(join(images, e.name));
    const path = join(dir, RECORDS_FILE);
    const fd = openSync(path, existsSync(path) ? 'r+' : 'w+');
    const records = readRecords(fd, path);
    return new RunStore(dir, header, fd, records, lock);
  }

  /** Append one record and fsync it. */
  append(record: StoreRecord): void {
    this.appendAll([record]);
  }

  /**
   * Append records in one write and one fsync (a task's images together). A crash can still leave
   * a prefix of them (whole lines are kept, a torn last line is cut off on open): callers treat
   * each record on its own, never a group as all-or-nothing.
   */
  appendAll(records: readonly StoreRecord[]): void {
    if (records.length === 0) return;
    const line = Buffer.from(records.map((r) => `${JSON.stringify(r)}\n`).join(''), 'utf8');
    const size = fstatSync(this.fd).size;
    try {
      writeAll(this.fd, line, size);
      fsyncSync(this.fd);
    } catch (error) {
      // a partial line would be a torn record: cut it off so the store stays readable
      try {
        ftruncateSync(this.fd, size);
      } catch {}
      throw fsErrorToOutput(error, 'out', join(this.dir, RECORDS_FILE));
    }
    this.records.push(...records);
  }

  close(): void {
    if (this.fd >= 0) {
      closeSync(this.fd);
      this.fd = -1;
    }
    this.lock.release();
  }
}

/** Parse the complete lines; drop (truncate) a torn last line left by a crash. */
function readRecords(fd: number, path: string): StoreRecord[] {
  const size = fstatSync(fd).size;
  const buf = Buffer.alloc(size);
  if (size) readSync(fd, buf, 0, size, 0);
  const records: StoreRecord[] = [];
  let at = 0;
  for (;;) {
    const nl = buf.indexOf(0x0a, at);
    if (nl < 0) break;
    const line = buf.toString('utf8', at, nl);
    try {
      records.push(JSON.parse(line) as StoreRecord);
    } catch (cause) {
      // A complete line that does not parse is corruption, not a torn write.
      throw new OutputError(
        `${path}: line ${records.length + 1} is not valid JSON; the run store is damaged (use \`restart\`)`,
        { cause, field: 'out', mentions: ['restart'] },
      );
    }
    at = nl + 1;
  }
  if (at < size) {
    ftruncateSync(fd, at);
    fsyncSync(fd);
  }
  return records;
}
