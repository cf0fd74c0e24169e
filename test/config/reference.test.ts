import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { configJsonSchema } from '../../src/config/jsonschema.js';
import {
  BEGIN_MARKER,
  CONFIG_DOC_FILE,
  END_MARKER,
  configReferenceMarkdown,
  spliceConfigReference,
  typeText,
} from '../../src/config/reference.js';
import { repoRoot } from '../helpers/cli.js';

type Json = Record<string, any>;

/** Every dotted key of the JSON Schema (sections included), with its node. */
function keys(node: Json, at = ''): [string, Json][] {
  const out: [string, Json][] = [];
  for (const [k, v] of Object.entries((node.properties ?? {}) as Record<string, Json>)) {
    if (k === '$schema') continue;
    const p = at ? `${at}.${k}` : k;
    out.push([p, v], ...keys(v, p));
  }
  return out;
}

/** The table row of a dotted key in the generated text, split into its four cells. */
function row(markdown: string, key: string): string[] {
  const line = markdown.split('\n').find((l) => l.startsWith(`| \`${key}\` |`));
  if (!line) throw new Error(`no row for ${key}`);
  return line
    .slice(2, -2)
    .split(/ (?<!\\)\| /)
    .map((c) => c.trim());
}

describe(CONFIG_DOC_FILE, () => {
  it('holds the reference generated from src/config/schema.ts', () => {
    const committed = readFileSync(path.join(repoRoot, CONFIG_DOC_FILE), 'utf8');
    if (spliceConfigReference(committed) !== committed) {
      throw new Error(
        `${CONFIG_DOC_FILE} is out of date with src/config/schema.ts: run \`npm run docs\` and commit the result`,
      );
    }
  });

  it('has a row for every key, with its description', () => {
    const md = configReferenceMarkdown();
    const all = keys(configJsonSchema());
    expect(all.length).toBeGreaterThan(80);
    const unescapeCell = (text: string) => text.replace(/\\([|*\\])/g, '$1').replace(/&lt;/g, '<');
    for (const [key, node] of all) {
      if (!key.includes('.') && node.type === 'object') {
        // a top-level section: its heading, then its description
        const at = md.indexOf(`\n### ${key}\n\n`);
        expect(at, key).toBeGreaterThan(0);
        expect(unescapeCell(md.slice(at).split('\n')[3]), key).toBe(node.description);
        continue;
      }
      // the description as written, apart from the markdown escapes
      expect(unescapeCell(row(md, key)[3]), key).toBe(node.description);
    }
  });

  it('shows types, bounds and defaults as the schema has them', () => {
    const md = configReferenceMarkdown();
    expect(row(md, 'train.epochs').slice(0, 3)).toEqual(['`train.epochs`', 'integer from 1 to 10,000', '`20`']);
    expect(row(md, 'train.learningRate').slice(1, 3)).toEqual(['number above 0, at most 1', '`0.001`']);
    expect(row(md, 'train.seed')[1]).toBe('integer from 0 to 4,294,967,295');
    expect(row(md, 'train.workers').slice(1, 3)).toEqual(['`auto` or integer from 1 to 256', '`1`']);
    expect(row(md, 'decode.workers')[2]).toBe('`auto`');
    expect(row(md, 'model.type')[1]).toBe('one of `merge`, `attention`, `transformer`');
    expect(row(md, 'encoder.onnx.mean').slice(1, 3)).toEqual([
      'list of 3 numbers from -1,000,000 to 1,000,000',
      '`[0.485, 0.456, 0.406]`',
    ]);
    expect(row(md, 'encoder.onnx.path')[2]).toBe('required');
    expect(row(md, 'encoder.onnx')[1]).toBe('section');
    expect(row(md, 'train.out')[2]).toBe('not set');
    expect(row(md, 'serve.allowedHosts').slice(1, 3)).toEqual(['list of strings', '`[]`']);
    // one heading per section, linked from the list at the top
    for (const s of [
      'top level',
      'dataset',
      'prep',
      'encoder',
      'features',
      'model',
      'train',
      'decode',
      'eval',
      'caption',
      'serve',
    ]) {
      expect(md).toContain(`\n### ${s}\n`);
    }
  });

  it('escapes what markdown would swallow: <tags>, | inside cells, * emphasis', () => {
    const md = configReferenceMarkdown();
    expect(row(md, 'train.out')[3]).toBe('Run folder (default: &lt;workdir>/model).');
    expect(row(md, 'dataset.format')[3]).toContain('(image_name\\|comment_number\\|comment)');
    expect(row(md, 'dataset.format')[3]).toContain('dataset_\\*.json');
    // code spans keep their text (only a | would need escaping there)
    expect(row(md, 'encoder.weights')[3]).toContain('`captioner weights vgg16`');
    expect(typeText({ enum: ['a|b'] })).toBe('one of `a|b`');
  });

  it('replaces only the text between the markers, and refuses a file without them', () => {
    const doc = `# Title\n\nprose\n\n${BEGIN_MARKER}\nold table\n${END_MARKER}\n\nmore prose\n`;
    const out = spliceConfigReference(doc);
    expect(out.startsWith(`# Title\n\nprose\n\n${BEGIN_MARKER}\n\n`)).toBe(true);
    expect(out.endsWith(`\n${END_MARKER}\n\nmore prose\n`)).toBe(true);
    expect(out).not.toContain('old table');
    expect(spliceConfigReference(out)).toBe(out);
    expect(() => spliceConfigReference('# no markers\n')).toThrow(CONFIG_DOC_FILE);
    expect(() => spliceConfigReference(`${END_MARKER}\n${BEGIN_MARKER}\n`)).toThrow(/expected one/);
    expect(() => spliceConfigReference(`${BEGIN_MARKER}\n${BEGIN_MARKER}\n${END_MARKER}\n`)).toThrow(/expected one/);
  });
});
