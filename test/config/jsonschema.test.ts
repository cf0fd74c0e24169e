import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { SCHEMA_FILE, configJsonSchema, configJsonSchemaText } from '../../src/config/jsonschema.js';
import { ConfigSchema } from '../../src/config/schema.js';
import { repoRoot } from '../helpers/cli.js';

type Json = Record<string, any>;

/** Every `.describe()` text in a zod schema, with its dotted path. */
function zodDescriptions(schema: any, at = ''): [string, string][] {
  const out: [string, string][] = [];
  let s = schema;
  for (;;) {
    if (s.description) out.push([at, s.description]);
    const def = s._zod.def;
    if ((def.type === 'default' || def.type === 'optional' || def.type === 'nullable') && def.innerType)
      s = def.innerType;
    else break;
  }
  if (s._zod.def.type === 'object') {
    for (const [k, v] of Object.entries(s._zod.def.shape)) out.push(...zodDescriptions(v, at ? `${at}.${k}` : k));
  }
  return out;
}

/** The JSON Schema node for a dotted config path. */
function node(schema: Json, dotted: string): Json {
  return dotted.split('.').reduce((n, k) => n.properties[k], schema);
}

describe('configs/captioner.schema.json', () => {
  it('matches the schema generated from src/config/schema.ts', () => {
    const committed = readFileSync(path.join(repoRoot, SCHEMA_FILE), 'utf8');
    const fresh = configJsonSchemaText();
    if (committed !== fresh) {
      throw new Error(
        `${SCHEMA_FILE} is out of date with src/config/schema.ts: run \`npm run docs\` and commit the result`,
      );
    }
  });

  it('carries every .describe() text at its field', () => {
    const schema = configJsonSchema();
    const described = zodDescriptions(ConfigSchema).filter(([p]) => p !== '');
    expect(described.length).toBeGreaterThan(40);
    for (const [p, text] of described) expect(node(schema, p).description, p).toBe(text);
  });

  it('describes input: defaulted fields are optional, objects are closed', () => {
    const schema = configJsonSchema();
    expect(schema.$schema).toBe('http://json-schema.org/draft-07/schema#');
    expect(schema.required ?? []).toEqual([]);
    expect(node(schema, 'train.epochs').default).toBe(20);
    expect(node(schema, 'train').required ?? []).toEqual([]);
    expect(node(schema, 'encoder.onnx').required).toEqual(['path']);
    expect(node(schema, 'dataset.format').enum).toContain('karpathy');
    const walk = (n: Json, p: string) => {
      if (n.type === 'object' && n.properties) {
        expect(n.additionalProperties, p).toBe(false);
        for (const [k, v] of Object.entries(n.properties)) walk(v as Json, `${p}.${k}`);
      }
    };
    walk(schema, '(root)');
  });
});

describe('editor help', () => {
  it('every field of the JSON Schema has a description (hover text)', () => {
    const missing: string[] = [];
    const walk = (n: Json, at: string) => {
      for (const [k, v] of Object.entries((n.properties ?? {}) as Record<string, Json>)) {
        const p = at ? `${at}.${k}` : k;
        if (!v.description) missing.push(p);
        walk(v, p);
        for (const alt of [...(v.anyOf ?? []), ...(v.oneOf ?? [])]) walk(alt, p);
      }
    };
    walk(configJsonSchema(), '');
    expect(missing).toEqual([]);
  });
});
