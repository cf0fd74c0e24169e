// Module hooks that let worker threads started by the tests run src/*.ts directly, as vitest runs the tests
// themselves: a thread's entry is src/.../worker.ts when its host module is src/... (src/util/rpc.ts
// workerEntry), so tests never run a stale dist/. Installed for every test process and its worker threads by
// vitest.config.ts (execArgv: --import test/helpers/register-ts.mjs); nothing in src/ knows of it.
//  - resolve: `./x.js` imported from a .ts file is ./x.ts when that exists (src/ imports with .js, as tsc wants)
//  - load: .ts files are stripped of their types by vite's oxc transform (what vitest 4 with vite 8 uses for the
//    tests themselves; vite comes with vitest), or by typescript's transpileModule (slower) where that is missing
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';

let transform;

export async function resolve(specifier, context, next) {
  const parent = context.parentURL;
  if (
    parent?.startsWith('file:') &&
    parent.endsWith('.ts') &&
    /^\.\.?\//.test(specifier) &&
    specifier.endsWith('.js')
  ) {
    const ts = new URL(specifier.slice(0, -3) + '.ts', parent);
    if (!existsSync(new URL(specifier, parent)) && existsSync(ts)) return { url: ts.href, shortCircuit: true };
  }
  return next(specifier, context);
}

export async function load(url, context, next) {
  if (!url.startsWith('file:') || !url.endsWith('.ts')) return next(url, context);
  const file = fileURLToPath(url);
  transform ??= await transformer();
  return { format: 'module', source: await transform(await readFile(file, 'utf8'), file), shortCircuit: true };
}

/** (code, file) => JavaScript with an inline source map. */
async function transformer() {
  const { transformWithOxc } = await import('vite').catch(() => ({}));
  if (transformWithOxc) {
    return async (code, file) => {
      const out = await transformWithOxc(code, file, { sourcemap: true });
      return `${out.code}\n//# sourceMappingURL=data:application/json;base64,${Buffer.from(JSON.stringify(out.map)).toString('base64')}\n`;
    };
  }
  const ts = (await import('typescript')).default;
  return async (code, file) =>
    ts.transpileModule(code, {
      fileName: file,
      compilerOptions: {
        module: ts.ModuleKind.ESNext,
        target: ts.ScriptTarget.ES2022,
        inlineSourceMap: true,
        useDefineForClassFields: true,
      },
    }).outputText;
}
