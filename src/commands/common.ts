// Shared command-line plumbing: the --config/--set options every stage takes, and config resolution.
import { InvalidArgumentError, type Command } from 'commander';
import { loadConfig, stagePaths, type LoadedConfig } from '../config/load.js';
import { DecodeSchema } from '../config/schema.js';
import { log } from '../log.js';

export interface ConfigFlags {
  config?: string;
  set?: string[];
}

const collect = (value: string, previous: string[] = []) => [...previous, value];

/** Add `--config FILE` and repeatable `--set key=value` to a command. */
export function withConfig(cmd: Command): Command {
  return cmd
    .option('-c, --config <file>', 'YAML config file')
    .option('--set <key=value>', 'override a config value (repeatable), e.g. --set train.epochs=5', collect);
}

/** Resolve the config from the common flags plus this command's dedicated flag values. */
export function resolveConfig(flags: ConfigFlags, overrides: Record<string, unknown> = {}): Promise<LoadedConfig> {
  return loadConfig({ file: flags.config, sets: flags.set ?? [], overrides: prune(overrides) });
}

/**
 * Resolve the config of a command that uses a trained run (caption, eval): the run's own decode settings
 * (its config.yaml) come first, then --config, --set and the dedicated flags override them, in that order.
 * Settings the run records that this version does not know are left out.
 */
export async function resolveConfigForRun(
  flags: ConfigFlags,
  overrides: Record<string, unknown>,
  model: string | undefined,
): Promise<LoadedConfig & { runDir: string }> {
  const first = await resolveConfig(flags, overrides);
  const runDir = model ?? stagePaths(first.config).model;
  const { runDecodeSettings } = await import('../model/runfolder.js'); // loaded on use: keeps --help fast
  const recorded = await runDecodeSettings(runDir);
  const shape = DecodeSchema.shape as Record<string, { safeParse(v: unknown): { success: boolean } }>;
  const decode = Object.fromEntries(Object.entries(recorded).filter(([k, v]) => shape[k]?.safeParse(v).success));
  if (!Object.keys(decode).length) return { ...first, runDir };
  const loaded = await loadConfig({
    base: { decode },
    file: flags.config,
    sets: flags.set ?? [],
    overrides: prune(overrides),
  });
  return { ...loaded, runDir };
}

/** Drop undefined leaves so unset flags do not override the file. */
function prune(o: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(o)) {
    if (v === undefined) continue;
    if (v && typeof v === 'object' && !Array.isArray(v)) {
      const inner = prune(v as Record<string, unknown>);
      if (Object.keys(inner).length) out[k] = inner;
    } else out[k] = v;
  }
  return out;
}

/** Parse an integer flag value, for commander's argParser. */
export function intArg(name: string) {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isInteger(n)) throw new InvalidArgumentError(`${name} must be an integer, got "${value}"`);
    return n;
  };
}

/**
 * First Ctrl-C aborts the returned signal (the stage finishes its step and saves); a second one quits at
 * once with exit 130 (every artifact write is atomic, so this loses at most the work since the last save).
 * Call `release` when the stage is done.
 */
export function onInterrupt(message: string): { signal: AbortSignal; release(): void } {
  const controller = new AbortController();
  const handler = () => {
    if (controller.signal.aborted) {
      log.warn('interrupt: quitting at once');
      // the one exit outside cli.ts: the user asked for it, and waiting for the stage is what they refused
      process.exit(130);
    }
    log.warn(message);
    controller.abort();
  };
  process.on('SIGINT', handler);
  return { signal: controller.signal, release: () => process.removeListener('SIGINT', handler) };
}
