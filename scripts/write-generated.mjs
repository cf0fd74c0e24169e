// `npm run docs`: regenerate every file derived from the zod config schema (src/config/schema.ts, built into
// dist/): configs/captioner.schema.json (editors' completion) and the generated part of docs/configuration.md.
// `node scripts/write-generated.mjs --check` writes nothing and exits 1 when a committed file is stale.
import { readFileSync, writeFileSync, renameSync } from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const dist = (file) => import(path.join(root, 'dist', 'config', file));
const { SCHEMA_FILE, configJsonSchemaText } = await dist('jsonschema.js');
const { CONFIG_DOC_FILE, spliceConfigReference } = await dist('reference.js');

/** Each generated file: its path and its fresh text, given the committed text (null when missing). */
const targets = [
  { file: SCHEMA_FILE, fresh: () => configJsonSchemaText() },
  {
    file: CONFIG_DOC_FILE,
    fresh: (current) => {
      if (current === null)
        throw new Error(`${CONFIG_DOC_FILE} is missing: it holds the prose around the generated part`);
      return spliceConfigReference(current);
    },
  },
];

const check = process.argv.includes('--check');
let stale = 0;
for (const { file, fresh } of targets) {
  const abs = path.join(root, file);
  let current = null;
  try {
    current = readFileSync(abs, 'utf8');
  } catch {}
  let text;
  try {
    text = fresh(current);
  } catch (err) {
    process.stderr.write(`${err.message}\n`);
    process.exit(1);
  }
  if (current === text) {
    process.stderr.write(`${file} is up to date\n`);
  } else if (check) {
    process.stderr.write(`${file} is out of date with src/config/schema.ts: run \`npm run docs\`\n`);
    stale++;
  } else {
    const tmp = `${abs}.${process.pid}.tmp`;
    writeFileSync(tmp, text);
    renameSync(tmp, abs);
    process.stderr.write(`wrote ${file}\n`);
  }
}
process.exit(stale ? 1 : 0);
