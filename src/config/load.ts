// Resolves the effective config: schema defaults < base (e.g. the run's decode settings) < YAML file <
// `--set key=value` < dedicated flags.
// Every problem is reported as `file: path: message`, all at once, as a ConfigError (exit 2). Deprecated keys
// (schema.ts DEPRECATED_KEYS) are moved to their new names first, with one warning each.
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import YAML from 'yaml';
import type { z } from 'zod';
import { ConfigError } from '../errors.js';
import { log } from '../log.js';
import { ConfigSchema, DEPRECATED_KEYS, RENAMED_KEYS, type Config } from './schema.js';

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
  if (!/^[A-Za-z_$][\w$]*(\.[A-Za-z_$][\w$]*)*$/.test(key))
    throw new ConfigError(`--set ${expr}: "${key}" is not a dotted key`);
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

/** Edit distance (insertions, deletions, substitutions, swaps of neighbours), for "did you mean". */
export function editDistance(a: string, b: string): number {
  const d: number[][] = Array.from({ length: a.length + 1 }, (_, i) =>
    Array.from({ length: b.length + 1 }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)),
  );
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      d[i][j] = Math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1])
        d[i][j] = Math.min(d[i][j], d[i - 2][j - 2] + 1);
    }
  }
  return d[a.length][b.length];
}

/** The known key closest to `key` (same letters in another case, or a small typo), if any is close. */
export function closestKey(key: string, known: readonly string[]): string | undefined {
  const lower = key.toLowerCase();
  const exact = known.find((k) => k.toLowerCase() === lower);
  if (exact) return exact;
  let best: string | undefined;
  let bestD = Infinity;
  for (const k of known) {
    const d = editDistance(lower, k.toLowerCase());
    if (d < bestD) [best, bestD] = [k, d];
  }
  return best !== undefined && bestD <= Math.max(1, Math.floor(key.length / 4)) ? best : undefined;
}

/** The keys the config schema allows at a dotted path ([] where there is no object). */
export function schemaKeysAt(pathParts: readonly PropertyKey[]): string[] {
  // walk through default/optional wrappers down the object shapes
  const unwrap = (s: unknown): { _zod: { def: Record<string, unknown> } } => {
    let cur = s as { _zod: { def: Record<string, unknown> } };
    while (
      ['default', 'optional', 'nullable', 'prefault'].includes(cur._zod.def.type as string) &&
      cur._zod.def.innerType
    ) {
      cur = cur._zod.def.innerType as typeof cur;
    }
    return cur;
  };
  let node = unwrap(ConfigSchema);
  for (const part of pathParts) {
    const shape = node._zod.def.shape as Record<string, unknown> | undefined;
    if (!shape || !(String(part) in shape)) return [];
    node = unwrap(shape[String(part)]);
  }
  const shape = node._zod.def.shape as Record<string, unknown> | undefined;
  return shape ? Object.keys(shape) : [];
}

/** Turn zod issues into `path: message` lines; an unknown key gets a "did you mean" where one is close. */
export function formatIssues(issues: z.core.$ZodIssue[]): string[] {
  return issues.map((iss) => {
    const p = iss.path.length ? iss.path.map(String).join('.') : '(root)';
    let msg = iss.message;
    if (iss.code === 'unrecognized_keys') {
      const keys = (iss as { keys: string[] }).keys;
      const known = schemaKeysAt(iss.path);
      return keys
        .map((k) => {
          const full = `${iss.path.length ? p + '.' : ''}${k}`;
          const renamed = RENAMED_KEYS[full.replace(/\.\d+(?=\.|$)/g, '')];
          if (renamed) return `${full}: renamed to ${renamed}`;
          const near = closestKey(k, known);
          return `${full}: unknown key${near ? ` (did you mean ${near}?)` : ''}`;
        })
        .join('\n');
    }
    if (iss.code === 'invalid_value' && 'values' in iss) {
      const values = (iss as { values: unknown[] }).values;
      msg = `expected one of ${values.map((v) => JSON.stringify(v)).join(', ')}`;
    }
    return `${p}: ${msg}`;
  });
}

/** The most alias expansions a config file may use (the yaml package's default, stated here on purpose). */
export const MAX_YAML_ALIASES = 100;

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
    throw new ConfigError(
      `${file}: invalid YAML:\n${doc.errors.map((e) => '  ' + e.message.split('\n')[0]).join('\n')}`,
    );
  }
  let value: unknown;
  try {
    // maxAliasCount bounds how far aliases may expand: a "billion laughs" file is refused, not expanded.
    value = doc.toJS({ maxAliasCount: MAX_YAML_ALIASES });
  } catch (e) {
    const msg = (e as Error).message.split('\n')[0];
    throw new ConfigError(
      `${file}: invalid YAML: ${msg}${/alias/i.test(msg) ? ` (more than ${MAX_YAML_ALIASES} alias expansions)` : ''}`,
    );
  }
  if (value === null || value === undefined) return {};
  if (!isObj(value)) throw new ConfigError(`${file}: the top level must be a mapping of settings`);
  return value;
}

/** A copy of `o` with the value at `parts` replaced (deleted when `value` is undefined); `o` is left as it was. */
function withValueAt(o: Obj, parts: readonly string[], value: unknown): Obj {
  const [head, ...rest] = parts;
  const out: Obj = { ...o };
  if (rest.length) out[head] = withValueAt(isObj(o[head]) ? o[head] : {}, rest, value);
  else if (value === undefined) delete out[head];
  else out[head] = value;
  return out;
}

const valueAt = (o: unknown, parts: readonly string[]): unknown =>
  parts.reduce<unknown>((cur, p) => (isObj(cur) ? cur[p] : undefined), o);

/**
 * Move the deprecated keys of a raw config (DEPRECATED_KEYS in schema.ts) to their new names, before the
 * strict schema sees them. Returns the new object (`raw` is not changed), the keys moved ([old, new]), and a
 * `path: message` line for each key given under both names (its old name is dropped from `raw`, so the
 * schema does not also call it unknown).
 */
export function renameDeprecatedKeys(raw: unknown): { raw: unknown; moved: [string, string][]; conflicts: string[] } {
  const moved: [string, string][] = [];
  const conflicts: string[] = [];
  if (!isObj(raw)) return { raw, moved, conflicts };
  let out: Obj = raw;
  for (const [from, to] of Object.entries(DEPRECATED_KEYS)) {
    const oldParts = from.split('.');
    const newParts = to.split('.');
    const value = valueAt(out, oldParts);
    if (value === undefined) continue;
    out = withValueAt(out, oldParts, undefined);
    if (valueAt(out, newParts) !== undefined)
      conflicts.push(`${from}: is the old name of ${to}, which is also given; keep only ${to}`);
    else {
      out = withValueAt(out, newParts, value);
      moved.push([from, to]);
    }
  }
  return { raw: out, moved, conflicts };
}

/** Deprecation warnings given so far: each once per process (a command may load its config twice). */
const warned = new Set<string>();

/** Validate a raw object against the schema; throws ConfigError listing every problem. */
export function validateConfig(raw: unknown, source: string): Config {
  const renamed = renameDeprecatedKeys(raw);
  const result = ConfigSchema.safeParse(renamed.raw);
  if (!result.success || renamed.conflicts.length) {
    // a bad value given under a deprecated name is reported under the name the user wrote
    const issues = (result.success ? [] : formatIssues(result.error.issues)).map((line) => {
      const hit = renamed.moved.find(([, to]) => line.startsWith(`${to}:`));
      return hit ? `${hit[0]} (now ${hit[1]})${line.slice(hit[1].length)}` : line;
    });
    // a value can fail two checks with one message (1e20: not an integer, too big)
    const lines = [...new Set([...renamed.conflicts, ...issues])];
    throw new ConfigError(
      `${source}: invalid config:\n${lines.map((l) => '  ' + l.replace(/\n/g, '\n  ')).join('\n')}`,
    );
  }
  for (const [from, to] of renamed.moved) {
    const msg = `${source}: ${from} is deprecated: it is now ${to} (the old name still works, for now)`;
    if (!warned.has(msg)) log.warn(msg);
    warned.add(msg);
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
  if (sources.overrides) {
    raw = deepMerge(raw, sources.overrides);
    if (Object.keys(sources.overrides).length) origin.push('command-line flags');
  }
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
