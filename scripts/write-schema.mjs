// `npm run schema`: regenerate configs/captioner.schema.json from the zod config schema (built into dist/).
// `node scripts/write-schema.mjs --check` exits 1 when the committed file is stale.
import { readFileSync, writeFileSync, renameSync } from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const { SCHEMA_FILE, configJsonSchemaText } = await import(path.join(root, 'dist', 'config', 'jsonschema.js'));
const file = path.join(root, SCHEMA_FILE);
const text = configJsonSchemaText();
let current = null;
try {
  current = readFileSync(file, 'utf8');
} catch {}

if (process.argv.includes('--check')) {
  if (current !== text) {
    process.stderr.write(`${SCHEMA_FILE} is out of date with src/config/schema.ts: run \`npm run schema\`\n`);
    process.exit(1);
  }
  process.stderr.write(`${SCHEMA_FILE} is up to date\n`);
} else if (current === text) {
  process.stderr.write(`${SCHEMA_FILE} unchanged\n`);
} else {
  const tmp = `${file}.${process.pid}.tmp`;
  writeFileSync(tmp, text);
  renameSync(tmp, file);
  process.stderr.write(`wrote ${SCHEMA_FILE}\n`);
}
