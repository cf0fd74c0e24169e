// `captioner config --init FILE`: a complete, commented YAML config generated from the zod schema.
// Every field appears with its default and its description; fields without a default are commented
// out. The first line points editors (yaml-language-server) at the JSON Schema of this installation,
// so a config kept anywhere still completes and checks.
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import YAML from 'yaml';
import { ConfigSchema } from './schema.js';
import { SCHEMA_FILE } from './jsonschema.js';

/** The JSON Schema file shipped with this installation (configs/captioner.schema.json). */
export function installedSchemaPath(): string {
  return path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', SCHEMA_FILE);
}

interface ZodLike {
  description?: string;
  _zod: { def: Record<string, unknown> & { type: string } };
}

const WIDTH = 100;

function wrap(text: string, indent: string): string[] {
  const lines: string[] = [];
  let line = '';
  for (const word of text.split(/\s+/)) {
    if (line && indent.length + 2 + line.length + 1 + word.length > WIDTH) {
      lines.push(`${indent}# ${line}`);
      line = word;
    } else line = line ? `${line} ${word}` : word;
  }
  if (line) lines.push(`${indent}# ${line}`);
  return lines;
}

/** Description, default and the inner (unwrapped) schema of a field. */
function inspect(schema: ZodLike): { description?: string; hasDefault: boolean; value?: unknown; inner: ZodLike } {
  let cur = schema;
  let description = schema.description;
  let hasDefault = false;
  let value: unknown;
  for (;;) {
    const def = cur._zod.def;
    if (def.type === 'default' && !hasDefault) {
      hasDefault = true;
      value = typeof def.defaultValue === 'function' ? (def.defaultValue as () => unknown)() : def.defaultValue;
    }
    if (['default', 'optional', 'nullable', 'prefault'].includes(def.type) && def.innerType) {
      cur = def.innerType as ZodLike;
      description ??= cur.description;
    } else break;
  }
  return { description, hasDefault, value, inner: cur };
}

function scalar(value: unknown): string {
  return YAML.stringify(value, { flowCollectionPadding: false, collectionStyle: 'flow' }).trimEnd();
}

function render(shape: Record<string, ZodLike>, indent: string, out: string[]): void {
  for (const [key, field] of Object.entries(shape)) {
    if (key === '$schema') continue;
    const f = inspect(field);
    if (f.description) out.push(...wrap(f.description, indent));
    const innerShape =
      f.inner._zod.def.type === 'object' ? (f.inner._zod.def.shape as Record<string, ZodLike>) : undefined;
    if (innerShape && f.hasDefault) {
      out.push(`${indent}${key}:`);
      render(innerShape, indent + '  ', out);
    } else if (innerShape) {
      // an optional section with no default: shown commented out
      const sub: string[] = [];
      render(innerShape, '  ', sub);
      out.push(`${indent}# ${key}:`, ...sub.map((l) => `${indent}# ${l}`));
    } else if (f.hasDefault) {
      out.push(`${indent}${key}: ${scalar(f.value)}`);
    } else {
      out.push(`${indent}# ${key}:`);
    }
  }
}

/** The commented config text; `schemaRef` is what its `$schema` line points at. */
export function configTemplate(schemaRef: string): string {
  const out = [
    `# yaml-language-server: $schema=${schemaRef}`,
    '#',
    '# A captioner config with every setting at its default (written by `captioner config --init`).',
    '# Delete what you do not change; `captioner config --config FILE` prints what a run will use.',
    '',
  ];
  render((ConfigSchema as unknown as ZodLike)._zod.def.shape as Record<string, ZodLike>, '', out);
  return out.join('\n') + '\n';
}

/** The `$schema` reference for a config written to `file`: relative when short, else absolute. */
export function schemaRefFor(file: string, schema = installedSchemaPath()): string {
  const rel = path.relative(path.dirname(path.resolve(file)), schema);
  return rel.split(path.sep).filter((p) => p === '..').length <= 2 ? rel.split(path.sep).join('/') : schema;
}
