/**
 * Progress of an image run on a non-terminal stderr (logs, CI): a line every `1/parts` of the run
 * and at the end — images done, what is being rendered, images per second since the first report,
 * and the queue's workers when the run goes through one.
 */
export interface ImageProgress {
  done: number;
  total: number;
  /** what is being rendered now (a profession, a phase) */
  label: string;
  workers?: { connected: number; seen: string[] };
}

export function imageProgressLines(prefix: string, parts: number): (p: ImageProgress) => void {
  let last = 0;
  let first: { t: number; done: number } | null = null;
  return (p) => {
    const now = performance.now();
    first ??= { t: now, done: p.done };
    const due = p.done - last >= Math.max(1, Math.floor(p.total / parts)) || (p.done === p.total && last !== p.total);
    if (!due) return;
    last = p.done;
    const s = (now - first.t) / 1000;
    const rate = s > 1 && p.done > first.done ? `, ${((p.done - first.done) / s).toFixed(2)} images/s` : '';
    const w = p.workers ? `, ${p.workers.connected} workers (seen: ${p.workers.seen.join(', ') || 'none yet'})` : '';
    process.stderr.write(`${prefix}: ${p.done}/${p.total} images (${p.label})${rate}${w}\n`);
  };
}
