// `node --import ./test/helpers/register-hooks.mjs ...`: installs load-hooks.mjs for the whole process.
import { register } from 'node:module';

register('./load-hooks.mjs', import.meta.url);
