// Whether a browser test runs: Debian's chromium (or CAPTIONER_CHROMIUM). Without it the test skips,
// loudly, except where the env var CI is set (.ci/run sets it and installs chromium): there it is
// required and fails. CAPTIONER_SKIP_BROWSER=1 skips it anywhere, loudly too.
import { existsSync, mkdirSync } from 'node:fs';
import * as path from 'node:path';
import { chromium, type Browser } from 'playwright-core';
import { repoRoot } from './cli.js';

/** Where browser tests save their screenshots. */
export const artifacts = path.join(repoRoot, 'test-artifacts');

export interface BrowserGate {
  chromium: string;
  haveChromium: boolean;
  /** Skip the test file (announced on stderr). */
  skip: boolean;
}

export function browserGate(what: string): BrowserGate {
  const chromium = process.env.CAPTIONER_CHROMIUM ?? '/usr/bin/chromium';
  const haveChromium = existsSync(chromium);
  const required = Boolean(process.env.CI) && process.env.CI !== 'false' && process.env.CI !== '0';
  const optedOut = process.env.CAPTIONER_SKIP_BROWSER === '1';
  const skip = !haveChromium && (optedOut || !required);
  if (skip) {
    const why = optedOut
      ? 'CAPTIONER_SKIP_BROWSER=1'
      : 'CI is not set, so the browser test is optional here (apt-get install chromium, or set CAPTIONER_CHROMIUM, to run it)';
    process.stderr.write(`\n*** SKIPPING the ${what} browser test: ${chromium} not found; ${why} ***\n`);
  }
  return { chromium, haveChromium, skip };
}

/**
 * Launch the gate's chromium, headless, once the test has not been skipped: fails, saying how to fix
 * it, when chromium is missing (where the test is required); makes the screenshot folder.
 */
export async function launchChromium(gate: BrowserGate): Promise<Browser> {
  if (!gate.haveChromium) {
    throw new Error(
      `chromium not found at ${gate.chromium}: install it (apt-get install chromium) or set CAPTIONER_SKIP_BROWSER=1 to skip this test`,
    );
  }
  mkdirSync(artifacts, { recursive: true });
  return chromium.launch({
    executablePath: gate.chromium,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu'],
  });
}
