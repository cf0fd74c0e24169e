// HttpError (an answer with a status and a message for the client) and the wording of sizes, durations and
// rates in those messages. Part of the HTTP server of `captioner serve` (entry: src/serve/server.ts).

/** An answer with a status and a message for the client. */
export class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }
}

/** "10 MB", "512 KB", "300 bytes": a size in messages. */
export function sizeText(n: number): string {
  return n >= 1024 * 1024
    ? `${+(n / 1024 / 1024).toFixed(1)} MB`
    : n >= 1024
      ? `${+(n / 1024).toFixed(1)} KB`
      : `${n} bytes`;
}

/** "0.3 s", "20 s": a duration in messages. */
export function seconds(ms: number): string {
  return `${+(ms / 1000).toFixed(ms < 10_000 ? 1 : 0)} s`;
}

/** "1 KB/s", "12 B/s": a data rate in messages. */
export function byteRate(bytesPerSecond: number): string {
  return bytesPerSecond >= 1024 ? `${+(bytesPerSecond / 1024).toFixed(1)} KB/s` : `${Math.round(bytesPerSecond)} B/s`;
}
