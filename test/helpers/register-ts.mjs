// `node --import ./test/helpers/register-ts.mjs`: installs ts-hooks.mjs (TypeScript worker entries from src/)
// in this thread; worker threads inherit the flag from process.execArgv and install it too.
import { register } from 'node:module';

register('./ts-hooks.mjs', import.meta.url);
