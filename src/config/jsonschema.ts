// The JSON Schema of the config file, generated from the zod ConfigSchema (the single source of truth).
// Written to configs/captioner.schema.json by `npm run docs`; editors use it for completion and docs.
import { z } from 'zod';
import { ConfigSchema } from './schema.js';

/** Where the committed schema lives, relative to the repository root. */
export const SCHEMA_FILE = 'configs/captioner.schema.json';

/**
 * The JSON Schema of what a user may write (io: input, so fields with defaults are optional).
 * Draft 7: the dialect every editor's YAML/JSON language server understands.
 */
export function configJsonSchema(): Record<string, unknown> {
  const schema = z.toJSONSchema(ConfigSchema, { io: 'input', target: 'draft-7' }) as Record<string, unknown>;
  const { $schema, ...rest } = schema;
  return {
    $schema,
    title: 'captioner config',
    description:
      'Settings for the captioner CLI (prep, features, train, decode, eval, caption, serve). Fields with a default may be left out.',
    ...rest,
  };
}

/** The schema file's exact text (stable key order, 2-space indent, trailing newline). */
export function configJsonSchemaText(): string {
  return JSON.stringify(configJsonSchema(), null, 2) + '\n';
}
