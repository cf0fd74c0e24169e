// Attention through serve (issue #13): a real attention run, and a transformer run (tiny ONNX grid encoder
// + untrained decoder, test/caption/fixtures.ts), loaded in the model worker answers /api/caption with
// `attention` {grid, words, rows}; a merge run's answer has no such field; the page carries the attention
// view's script and style. The worker runs src/serve/worker.ts and loads src/caption/load.ts (test/helpers/ts-hooks.mjs).
import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigSchema } from '../../src/config/schema.js';
import { startServer } from '../../src/serve/server.js';
import { startModelWorker } from '../../src/serve/threaded-captioner.js';
import { imageFile, makeAttentionRun, makeRun } from '../caption/fixtures.js';
import { serveConfig } from './fixtures.js';

process.env.CAPTIONER_QUIET = '1';

let tmp: string;
let attentionRun: string;
let transformerRun: string;
let mergeRun: string;
let image: Buffer;

beforeAll(async () => {
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'serve-attention-'));
  ({ run: attentionRun } = await makeAttentionRun(path.join(tmp, 'att')));
  ({ run: transformerRun } = await makeAttentionRun(path.join(tmp, 'transformer'), { type: 'transformer' }));
  ({ run: mergeRun } = await makeRun(path.join(tmp, 'merge')));
  await imageFile(path.join(tmp, 'a.jpg'), 4);
  image = await fs.readFile(path.join(tmp, 'a.jpg'));
});
afterAll(async () => {
  await fs.rm(tmp, { recursive: true, force: true });
});

interface Answer {
  caption: string;
  logprob: number;
  ms: number;
  attention?: { grid: number[]; words: string[]; rows: number[][] };
}

async function ask(run: string): Promise<{ body: Answer; page: string }> {
  const worker = await startModelWorker(run, ConfigSchema.parse({ threads: 1 }));
  let server;
  try {
    server = await startServer(worker, serveConfig(), { title: 'attention' });
    const res = await fetch(server.url + '/api/caption', { method: 'POST', body: new Uint8Array(image) });
    expect(res.status).toBe(200);
    const page = await (await fetch(server.url + '/')).text();
    return { body: (await res.json()) as Answer, page };
  } finally {
    await server?.close();
    await worker.dispose();
  }
}

describe('serve with an attention model', () => {
  it.each([
    ['attention', () => attentionRun],
    ["transformer (its last layer's cross-attention, averaged over heads)", () => transformerRun],
  ])(
    '%s: the JSON answer carries attention {grid, words, rows}: one row of H * W weights per caption word',
    async (_name, run) => {
      const { body, page } = await ask(run());
      expect(typeof body.caption).toBe('string');
      expect(body.attention).toBeDefined();
      const a = body.attention!;
      expect(a.grid).toEqual([4, 4]);
      expect(a.words).toEqual(body.caption.split(' ').filter(Boolean));
      expect(a.words.length).toBeGreaterThan(0);
      expect(a.rows).toHaveLength(a.words.length);
      for (const row of a.rows) {
        expect(row).toHaveLength(16);
        for (const v of row) expect(v).toBeGreaterThanOrEqual(0);
        expect(row.reduce((s, v) => s + v, 0)).toBeCloseTo(1, 2); // softmax over the grid positions
      }
      expect(page).toContain('window.captionerAttention');
      expect(page).toContain('.attn-view{');
      expect(page).toContain('captionerAttention.build(');
    },
    60_000,
  );

  it('a merge model answers without attention', async () => {
    const { body } = await ask(mergeRun);
    expect(typeof body.caption).toBe('string');
    expect(Object.keys(body).sort()).toEqual(['caption', 'logprob', 'ms']);
  });
});
