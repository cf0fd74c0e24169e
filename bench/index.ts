// `npm run bench`: runs every benchmark group (or those named on the command line), prints a table on
// stdout and writes all rows as JSON to bench-results/bench-<date>.json. `--quick` shrinks sizes.
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';
import type { BenchModule, BenchRow } from './types.js';

/** Groups in the order they run; each lives in bench/<group>.ts. */
export const GROUPS = [
  'cli',
  'prep',
  'score',
  'kernels',
  'features',
  'train',
  'scst',
  'decode',
  'caption',
  'serve',
  'demo',
  'parity',
  'recipe',
];

export function formatTable(rows: BenchRow[]): string {
  const header = ['bench', 'name', 'value', 'unit', 'peer', 'peer value', 'ratio', 'notes'];
  const cells = rows.map((r) => [
    r.bench,
    r.name,
    fmt(r.value),
    r.unit,
    r.peer ?? '',
    r.peerValue === undefined ? '' : fmt(r.peerValue),
    r.ratio === undefined ? '' : `${r.ratio.toFixed(2)}x`,
    r.notes ?? '',
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...cells.map((c) => c[i].length)));
  const line = (c: string[]) => '| ' + c.map((s, i) => s.padEnd(widths[i])).join(' | ') + ' |';
  return [line(header), '|' + widths.map((w) => '-'.repeat(w + 2)).join('|') + '|', ...cells.map(line)].join('\n');
}

function fmt(v: number): string {
  if (!Number.isFinite(v)) return String(v);
  const a = Math.abs(v);
  return a >= 1000 ? v.toFixed(0) : a >= 10 ? v.toFixed(1) : v.toPrecision(3);
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const quick = args.includes('--quick');
  const wanted = args.filter((a) => !a.startsWith('--'));
  const groups = wanted.length ? wanted : GROUPS;
  const here = path.dirname(new URL(import.meta.url).pathname);
  const rows: BenchRow[] = [];
  const failures: string[] = [];
  // every group is loaded before any runs: bench/kernels.ts captures the stock wasm kernels when it loads,
  // before a group starts the wasm backend (which replaces them)
  const loaded: { g: string; mod?: { bench: BenchModule }; error?: Error }[] = [];
  for (const g of groups) {
    const file = path.join(here, `${g}.js`);
    try {
      await fs.access(file);
    } catch {
      if (wanted.length) failures.push(`${g}: no such benchmark`);
      continue;
    }
    loaded.push(
      await import(pathToFileURL(file).href).then(
        (mod: { bench: BenchModule }) => ({ g, mod }),
        (error: Error) => ({ g, error }),
      ),
    );
  }
  for (const { g, mod, error } of loaded) {
    process.stderr.write(`bench: ${g}...\n`);
    try {
      if (!mod) throw error;
      const got = await mod.bench.run({ quick });
      rows.push(...got);
      for (const r of got)
        process.stderr.write(
          `  ${r.name}: ${fmt(r.value)} ${r.unit}${r.ratio !== undefined ? ` (${r.ratio.toFixed(2)}x ${r.peer})` : ''}\n`,
        );
    } catch (e) {
      failures.push(`${g}: ${(e as Error).message}`);
      process.stderr.write(`bench: ${g} failed: ${(e as Error).stack}\n`);
    }
  }
  process.stdout.write(formatTable(rows) + '\n');
  const outDir = path.resolve('bench-results');
  await fs.mkdir(outDir, { recursive: true });
  const stamp = new Date().toISOString().replace(/[:.]/g, '-');
  const os = await import('node:os');
  const result = {
    date: new Date().toISOString(),
    quick,
    machine: {
      cpus: os.cpus().length,
      cpu: os.cpus()[0]?.model,
      memGiB: Math.round(os.totalmem() / 2 ** 30),
      node: process.version,
    },
    rows,
    failures,
  };
  const file = path.join(outDir, `bench-${stamp}.json`);
  await fs.writeFile(file, JSON.stringify(result, null, 2) + '\n');
  await fs.writeFile(path.join(outDir, 'latest.json'), JSON.stringify(result, null, 2) + '\n');
  process.stderr.write(`bench: wrote ${file}\n`);
  if (failures.length) {
    process.stderr.write(`bench: failures:\n  ${failures.join('\n  ')}\n`);
    process.exitCode = 1;
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  void main();
}
