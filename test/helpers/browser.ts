// Whether a browser test runs: Debian's chromium (or CAPTIONER_CHROMIUM). Without it the test skips,
// loudly, except where the env var CI is set (.ci/run sets it and installs chromium): there it is
// required and fails. CAPTIONER_SKIP_BROWSER=1 skips it anywhere, loudly too.
import { existsSync } from 'node:fs';

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
    const why = optedOut ? 'CAPTIONER_SKIP_BROWSER=1' : 'CI is not set, so the browser test is optional here (apt-get install chromium, or set CAPTIONER_CHROMIUM, to run it)';
    process.stderr.write(`\n*** SKIPPING the ${what} browser test: ${chromium} not found; ${why} ***\n`);
  }
  return { chromium, haveChromium, skip };
}
