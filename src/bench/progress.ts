// The bench's progress bar: how far through the run it is, by expected time rather than by
// step count (a 5 s throughput test and a 1 s ping burst are not the same size of step), with
// what it is doing now and an estimate of what is left. On a terminal it redraws one line; to
// a file or pipe it writes one line per step, so a CI log reads as a list.

export interface ProgressSink {
  isTTY?: boolean;
  columns?: number;
  write(s: string): unknown;
}

export class Progress {
  private done = 0;
  private readonly started = Date.now();
  private current = '';
  private lastLine = '';

  /** `total`: the expected seconds of the whole run (the sum of every step's weight). */
  constructor(
    private readonly total: number,
    private readonly out: ProgressSink,
    private readonly now: () => number = Date.now,
  ) {}

  /** A step of expected `weight` seconds starts. */
  step(label: string): void {
    this.current = label;
    this.draw();
  }

  /** The current step (of `weight` expected seconds) ended. */
  advance(weight: number): void {
    this.done = Math.min(this.total, this.done + weight);
  }

  /** A message that is not a step (a warning), kept above the bar. */
  note(msg: string): void {
    if (this.out.isTTY) this.out.write(`\r\x1b[K${msg}\n`);
    else this.out.write(`${msg}\n`);
    if (this.out.isTTY && this.lastLine) this.out.write(this.lastLine);
  }

  finish(msg: string): void {
    if (this.out.isTTY) this.out.write(`\r\x1b[K`);
    this.out.write(`${msg}\n`);
    this.lastLine = '';
  }

  /** The line as drawn now: bar, percent, step, time left. */
  line(): string {
    const frac = this.total > 0 ? this.done / this.total : 1;
    const width = 24;
    const filled = Math.round(frac * width);
    const bar = '#'.repeat(filled) + '-'.repeat(width - filled);
    const elapsed = (this.now() - this.started) / 1000;
    // Left: what the plan still holds, scaled by how the run has kept to the plan so far.
    const pace = this.done > 0 && elapsed > 5 ? elapsed / this.done : 1;
    const left = Math.max(0, (this.total - this.done) * pace);
    return `[${bar}] ${String(Math.floor(frac * 100)).padStart(3)}%  ${fmtDuration(left)} left  ${this.current}`;
  }

  private draw(): void {
    let l = this.line();
    if (this.out.isTTY) {
      const cols = this.out.columns ?? 100;
      if (l.length > cols - 1) l = l.slice(0, cols - 2) + '…';
      this.lastLine = `\r\x1b[K${l}`;
      this.out.write(this.lastLine);
    } else {
      this.out.write(`${l}\n`);
    }
  }
}

export function fmtDuration(sec: number): string {
  const s = Math.round(sec);
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  return `${m}m${String(s % 60).padStart(2, '0')}s`;
}
