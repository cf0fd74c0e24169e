// Module hooks for tests that check what a command loads: every resolved module URL is appended, one a
// line, to the file named by CAPTIONER_LOAD_LOG. Use with `node --import <register-hooks.mjs>`.
import { appendFileSync } from 'node:fs';

const log = process.env.CAPTIONER_LOAD_LOG;

export async function resolve(specifier, context, next) {
  const r = await next(specifier, context);
  if (log) appendFileSync(log, r.url + '\n');
  return r;
}
