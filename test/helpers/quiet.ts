// Runs `fn` with stderr swallowed, for tests that exercise stages whose warnings are expected noise.
export async function quietly<T>(fn: () => Promise<T>): Promise<T> {
  const orig = process.stderr.write.bind(process.stderr);
  process.stderr.write = (() => true) as typeof process.stderr.write;
  try {
    return await fn();
  } finally {
    process.stderr.write = orig;
  }
}
