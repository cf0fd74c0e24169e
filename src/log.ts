// Logging and progress bars. Everything here writes to stderr; stdout is reserved for data.
// Progress bars only draw when stderr is a TTY; logs can be silenced with CAPTIONER_QUIET=1.
import cliProgress from 'cli-progress';

export type Level = 'debug' | 'info' | 'warn' | 'error';

const quiet = () => process.env.CAPTIONER_QUIET === '1';
const debugOn = () => process.env.CAPTIONER_DEBUG === '1';

export const log = {
  debug(msg: string): void {
    if (debugOn()) process.stderr.write(`debug: ${msg}\n`);
  },
  info(msg: string): void {
    if (!quiet()) process.stderr.write(`${msg}\n`);
  },
  warn(msg: string): void {
    process.stderr.write(`warning: ${msg}\n`);
  },
  error(msg: string): void {
    process.stderr.write(`error: ${msg}\n`);
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
export function progress(label: string, total: number, format = '{bar} {percentage}% | {value}/{total} | {rate}/s | ETA {eta_formatted} {extra}'): Progress {
  if (!process.stderr.isTTY || quiet()) {
    return { tick() {}, setTotal() {}, stop() {} };
  }
  const bar = new cliProgress.SingleBar(
    { format: `${label} ${format}`, stream: process.stderr, hideCursor: true, etaBuffer: 50, fps: 5, clearOnComplete: false },
    cliProgress.Presets.shades_classic,
  );
  const start = Date.now();
  let value = 0;
  bar.start(total, 0, { rate: '0.0', extra: '' });
  return {
    tick(n = 1, fields = {}) {
      value += n;
      const secs = (Date.now() - start) / 1000;
      const extra = Object.entries(fields).map(([k, v]) => `${k} ${typeof v === 'number' ? fmt(v) : v}`).join(' ');
      bar.update(value, { rate: secs > 0 ? (value / secs).toFixed(1) : '0.0', extra });
    },
    setTotal(t) {
      bar.setTotal(t);
    },
    stop() {
      bar.stop();
    },
  };
}

function fmt(v: number): string {
  if (Number.isInteger(v)) return String(v);
  return Math.abs(v) >= 100 ? v.toFixed(0) : v.toPrecision(4);
}
