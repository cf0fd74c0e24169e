// Logging and progress bars. Everything here writes to stderr; stdout is reserved for data.
// Progress bars only draw when stderr is a TTY; logs can be silenced with CAPTIONER_QUIET=1.
// While a bar is drawn, log lines go through it (cli-progress MultiBar.log + an immediate redraw), so each
// line prints ABOVE the bar instead of being glued onto it and overwritten by the next redraw.
import cliProgress from 'cli-progress';

/** The bar on screen now, if any: log lines are printed above it. */
let active: cliProgress.MultiBar | null = null;

function emit(line: string): void {
  if (active) {
    active.log(line);
    active.update(); // redraw now: prints the buffered line above the bar
  } else process.stderr.write(line);
}

export type Level = 'debug' | 'info' | 'warn' | 'error';

const quiet = () => process.env.CAPTIONER_QUIET === '1';
const debugOn = () => process.env.CAPTIONER_DEBUG === '1';

export const log = {
  debug(msg: string): void {
    if (debugOn()) emit(`debug: ${msg}\n`);
  },
  info(msg: string): void {
    if (!quiet()) emit(`${msg}\n`);
  },
  warn(msg: string): void {
    emit(`warning: ${msg}\n`);
  },
  error(msg: string): void {
    emit(`error: ${msg}\n`);
  },
};

export interface Progress {
  /** Advance by `n` items and refresh the extra fields shown after the bar. */
  tick(n?: number, fields?: Record<string, string | number>): void;
  /** Change the total (e.g. once it becomes known). */
  setTotal(total: number): void;
  stop(): void;
}

/** A progress bar on stderr, or a no-op when stderr is not a terminal. */
export function progress(
  label: string,
  total: number,
  format = '{bar} {percentage}% | {value}/{total} | {rate}/s | ETA {eta_formatted} {extra}',
): Progress {
  if (!process.stderr.isTTY || quiet()) {
    return { tick() {}, setTotal() {}, stop() {} };
  }
  const multi = new cliProgress.MultiBar(
    {
      format: `${label} ${format}`,
      stream: process.stderr,
      hideCursor: true,
      etaBuffer: 50,
      fps: 5,
      clearOnComplete: false,
    },
    cliProgress.Presets.shades_classic,
  );
  const bar = multi.create(total, 0, { rate: '0.0', extra: '' });
  const previous = active;
  active = multi;
  let stopped = false;
  const start = Date.now();
  let value = 0;
  return {
    tick(n = 1, fields = {}) {
      value += n;
      const secs = (Date.now() - start) / 1000;
      const extra = Object.entries(fields)
        .map(([k, v]) => `${k} ${typeof v === 'number' ? fmt(v) : v}`)
        .join(' ');
      bar.update(value, { rate: secs > 0 ? (value / secs).toFixed(1) : '0.0', extra });
    },
    setTotal(t) {
      bar.setTotal(t);
    },
    stop() {
      if (stopped) return;
      stopped = true;
      multi.stop();
      if (active === multi) active = previous;
    },
  };
}

function fmt(v: number): string {
  if (Number.isInteger(v)) return String(v);
  return Math.abs(v) >= 100 ? v.toFixed(0) : v.toPrecision(4);
}
