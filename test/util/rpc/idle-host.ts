// Run as a child process by test/util/rpc.test.ts (node --import test/helpers/register-ts.mjs): starts a worker,
// gets one answer that arrives late (the process must wait for it), prints it, and neither terminates the
// worker nor disposes anything: the process must still exit by itself. With `pool`, the same with a decoding
// pool of 2 workers (src/decode/pool.ts), as a library caller that forgets dispose() would leave it.
import { tf } from '../../../src/tf/tf.js';
import { startDecoder } from '../../../src/decode/pool.js';
import { Vocab } from '../../../src/text/vocab.js';
import { startWorker, workerEntry } from '../../../src/util/rpc.js';
import { mergeSpec, randomFeatures, tinyMerge } from '../../helpers/tiny-decoders.js';
import type { EchoApi } from './echo-worker.js';

if (process.argv[2] === 'pool') {
  await tf.setBackend('cpu');
  const { decoder } = tinyMerge(3);
  const vocab = new Vocab(['<pad>', '<unk>', 'startseq', 'endseq', 'a', 'b', 'c', 'd', 'e', 'f', 'g']);
  const pool = await startDecoder({ decoder, vocab }, { workers: 2 });
  const out = await pool.decode(randomFeatures(4, mergeSpec.featureDim, 1), {
    beam: 2,
    maxLength: 4,
    lengthPenalty: 'none',
    alpha: 0.7,
    batchSize: 2,
  });
  process.stdout.write(`decoded ${out.length}\n`);
} else {
  const w = startWorker<EchoApi>({ entry: workerEntry(import.meta.url, 'echo-worker'), data: {}, label: 'idle test' });
  await w.ready;
  process.stdout.write(`${await w.call('later', 'answered')}\n`);
}
