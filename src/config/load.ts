// Resolves the effective config: schema defaults < base (e.g. the run's decode settings) < YAML file <
// `--set key=value` < dedicated flags.
// Every problem is reported as `file: path: message`, all at once, as a ConfigError (exit 2).
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import YAML from 'yaml';
import type { z } from 'zod';
import { ConfigError } from '../errors.js';
import { ConfigSchema, type Config } from './schema.js';

export interface ConfigSources {
  /** Settings below the file (lowest precedence above the defaults), e.g. a run folder's decode settings. */
  base?: Record<string, unknown>;
  /** YAML file path (optional: defaults apply without it). */
  file?: string;
  /** `a.b=value` strings; values are parsed as YAML scalars/flow (so `3` is a number, `[a, b]` a list). */
  sets?: string[];
  /** Values from dedicated flags, as a nested partial object (highest precedence). */
  overrides?: Record<string, unknown>;
}

export interface LoadedConfig {
  config: Config;
  /** Where the config came from, for messages and manifests. */
  source: string;
}

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Deep-merge `b` into `a` (objects merge, everything else replaces). Returns a new object. */
export function deepMerge(a: Obj, b: Obj): Obj {
  const out: Obj = { ...a };
  for (const [k, v] of Object.entries(b)) {
    if (v === undefined) continue;
    out[k] = isObj(v) && isObj(out[k]) ? deepMerge(out[k] as Obj, v) : v;
  }
  return out;
}

/** Parse `a.b.c=value` into a nested object. */
export function parseSet(expr: string): Obj {
  const eq = expr.indexOf('=');
  if (eq <= 0) throw new ConfigError(`--set ${expr}: expected key=value (e.g. --set train.epochs=5)`);
  const key = expr.slice(0, eq).trim();
  const raw = expr.slice(eq + 1);
  if (!/^[A-Za-z_$][\w$]*(\.[A-Za-z_$][\w$]*)*$/.test(key)) throw new ConfigError(`--set ${expr}: "${key}" is not a dotted key`);
  let value: unknown;
  try {
    value = raw === '' ? '' : YAML.parse(raw);
  } catch {
    value = raw;
  }
  const parts = key.split('.');
  const root: Obj = {};
  let cur = root;
  parts.forEach((p, i) => {
    if (i === parts.length - 1) cur[p] = value;
    else cur = cur[p] = {} as Obj;
  });
  return root;
}

/** Turn zod issues into `path: message` lines. */
export function formatIssues(issues: z.core.$ZodIssue[]): string[] {
  return issues.map((iss) => {
    const p = iss.path.length ? iss.path.map(String).join('.') : '(root)';
    let msg = iss.message;
    if (iss.code === 'unrecognized_keys') {
      const keys = (iss as { keys: string[] }).keys;
      return keys.map((k) => `${iss.path.length ? p + '.' : ''}${k}: unknown key`).join('\n');
    }
    if (iss.code === 'invalid_value' && 'values' in iss) {
      const values = (iss as { values: unknown[] }).values;
      msg = `expected one of ${values.map((v) => JSON.stringify(v)).join(', ')}`;
    }
    return `${p}: ${msg}`;
  });
}

export async function readYamlFile(file: string): Promise<Obj> {
  let text: string;
  try {
    text = await fs.readFile(file, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new ConfigError(`${file}: cannot read config file${code === 'ENOENT' ? ': no such file' : `: ${code}`}`);
  }
  const doc = YAML.parseDocument(text, { prettyErrors: true });
  if (doc.errors.length) {
    throw new ConfigError(`${file}: invalid YAML:\n${doc.errors.map((e) => '  ' + e.message.split('\n')[0]).join('\n')}`);
  }
  const value = doc.toJS() as unknown;
  if (value === null || value === undefined) return {};
  if (!isObj(value)) throw new ConfigError(`${file}: the top level must be a mapping of settings`);
  return value;
}

/** Validate a raw object against the schema; throws ConfigError listing every problem. */
export function validateConfig(raw: unknown, source: string): Config {
  const result = ConfigSchema.safeParse(raw);
  if (!result.success) {
    const lines = formatIssues(result.error.issues);
    throw new ConfigError(`${source}: invalid config:\n${lines.map((l) => '  ' + l.replace(/\n/g, '\n  ')).join('\n')}`);
  }
  return result.data;
}

export async function loadConfig(sources: ConfigSources = {}): Promise<LoadedConfig> {
  let raw: Obj = sources.base ? deepMerge({}, sources.base) : {};
  const origin: string[] = [];
  if (sources.file) {
    raw = deepMerge(raw, await readYamlFile(sources.file));
    origin.push(sources.file);
  }
  for (const s of sources.sets ?? []) raw = deepMerge(raw, parseSet(s));
  if (sources.sets?.length) origin.push('--set');
  if (sources.overrides) raw = deepMerge(raw, sources.overrides);
  const source = origin.length ? origin.join(' + ') : 'defaults';
  return { config: validateConfig(raw, source), source };
}

/** Default output folders under `workdir` unless a stage names its own. */
export function stagePaths(config: Config): { prepared: string; features: string; model: string } {
  return {
    prepared: config.prep.out ?? path.join(config.workdir, 'prepared'),
    features: config.features.out ?? path.join(config.workdir, 'features'),
    model: config.train.out ?? path.join(config.workdir, 'model'),
  };
}
