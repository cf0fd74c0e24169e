// Greedy decoding with the one-step decoder (test-only reference): argmax at each step, stopping at the
// end token. Returns token ids without the start token. Beam search (src/decode) at beam 1 must agree.
import { tf } from '../../src/tf/tf.js';
import { disposeState } from '../../src/model/decoders/state.js';
import type { Decoder } from '../../src/model/decoders/types.js';

export async function greedyDecode(
  model: Decoder,
  images: Float32Array[],
  opts: { start: number; end: number; maxLength: number },
): Promise<number[][]> {
  const n = images.length;
  const out: number[][] = images.map(() => []);
  const done = new Array<boolean>(n).fill(false);
  let state = model.initState(images);
  let tokens = new Array<number>(n).fill(opts.start);
  try {
    for (let t = 0; t < opts.maxLength && done.some((d) => !d); t++) {
      const r = model.step(state, tokens);
      disposeState(state);
      state = r.state;
      const best = tf.tidy(() => tf.argMax(r.logProbs, 1));
      r.logProbs.dispose();
      const ids = Array.from(await best.data());
      best.dispose();
      tokens = ids;
      ids.forEach((id, i) => {
        if (done[i]) return;
        if (id === opts.end) done[i] = true;
        else out[i].push(id);
      });
    }
  } finally {
    disposeState(state);
  }
  return out;
}
