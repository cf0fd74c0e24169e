// Custom-gradient building blocks of the decoder: row gather with a scatter-add gradient that works on
// every backend, and the fused output layer + masked softmax cross-entropy, computed in row chunks so the
// [N, V] logits exist one chunk at a time and the gradient is formed in the same pass.
import { tf } from '../tf/tf.js';
import { XENT_KERNEL, nativeKernelReady } from '../tf/native.js';

/** Sum rows of `dy` [N, F] into `rows` buckets by `ids` (scatter-add). Uses the backend kernel when it has one. */
export function scatterAddRows(dy: tf.Tensor2D, ids: Int32Array, rows: number): tf.Tensor2D {
  if (tf.getKernel('UnsortedSegmentSum', tf.getBackend()) != null) {
    return tf.tidy(() => tf.unsortedSegmentSum(dy, tf.tensor1d(ids, 'int32'), rows) as tf.Tensor2D);
  }
  const f = dy.shape[1];
  const src = dy.dataSync() as Float32Array;
  const out = new Float32Array(rows * f);
  for (let i = 0; i < ids.length; i++) {
    const o = ids[i] * f;
    const s = i * f;
    for (let k = 0; k < f; k++) out[o + k] += src[s + k];
  }
  return tf.tensor2d(out, [rows, f]);
}

/** x[ids] for a 2-D x [R, F] -> [N, F]; the gradient is a scatter-add into [R, F]. */
export function gatherRows(x: tf.Tensor2D, ids: Int32Array): tf.Tensor2D {
  const rows = x.shape[0];
  const idsT = tf.tensor1d(ids, 'int32');
  try {
    const f = tf.customGrad(((xx: tf.Tensor) => {
      const value = tf.gather(xx, idsT) as tf.Tensor2D;
      return { value, gradFunc: (dy: tf.Tensor) => scatterAddRows(dy as tf.Tensor2D, ids, rows) };
    }) as unknown as Parameters<typeof tf.customGrad>[0]);
    return f(x) as tf.Tensor2D;
  } finally {
    idsT.dispose();
  }
}

/**
 * The native CaptionerSoftmaxXent kernel on one chunk: hidden [m, H] x w [H, V] (+ b) against targets [m]:
 * loss = summed cross-entropy (a scalar), d = scale (softmax - onehot) [m, V], db = column sums of d [V].
 */
function fusedXent(h: tf.Tensor2D, w: tf.Tensor2D, b: tf.Tensor1D, targets: tf.Tensor1D, scale: number): { loss: tf.Scalar; d: tf.Tensor2D; db: tf.Tensor1D } {
  const z = tf.matMul(h, w); // [m, V]
  const [loss, d, db] = tf.engine().runKernel(XENT_KERNEL, { logits: z, bias: b, targets }, { scale }) as tf.Tensor[];
  z.dispose();
  return { loss: loss as tf.Scalar, d: d as tf.Tensor2D, db: db as tf.Tensor1D };
}

/** Rows per chunk so that one chunk of logits holds about `budget` floats. */
export function chunkRows(n: number, vocab: number, budget = 1 << 23): number {
  return Math.max(1, Math.min(n, Math.floor(budget / vocab)));
}

/**
 * Mean cross-entropy of softmax(hidden W + b) against `targets` (one per row of `hidden`).
 * hidden [N, H], w [H, V], b [V]. With `withGrad` the value carries a custom gradient computed during the
 * forward pass (dlogits = (softmax - onehot) / N, chunk by chunk), so backprop never revisits the logits.
 */
export function softmaxCrossEntropy(hidden: tf.Tensor2D, w: tf.Tensor2D, b: tf.Tensor1D, targets: Int32Array, withGrad: boolean, budget?: number): tf.Scalar {
  const n = hidden.shape[0];
  const vocab = w.shape[1];
  if (targets.length !== n) throw new Error(`softmaxCrossEntropy: ${targets.length} targets for ${n} rows`);
  const step = chunkRows(n, vocab, budget);
  const tgt = tf.tensor1d(targets, 'int32');
  const fused = nativeKernelReady(XENT_KERNEL); // the one-pass native kernel (wasm with the addon); same maths
  try {
    if (!withGrad) {
      return tf.tidy(() => {
        let total: tf.Tensor = tf.scalar(0);
        for (let r0 = 0; r0 < n; r0 += step) {
          const m = Math.min(step, n - r0);
          const part = tf.tidy(() => {
            if (fused) return fusedXent(tf.slice(hidden, [r0, 0], [m, -1]), w, b, tf.slice(tgt, [r0], [m]), 1).loss;
            const logits = tf.add(tf.matMul(tf.slice(hidden, [r0, 0], [m, -1]), w), b); // [m, V]
            const lse = tf.logSumExp(logits, 1); // [m]
            const picked = tf.sum(tf.mul(logits, tf.oneHot(tf.slice(tgt, [r0], [m]), vocab)), 1); // [m]
            return tf.sum(tf.sub(lse, picked));
          });
          const next = tf.add(total, part);
          total.dispose();
          part.dispose();
          total = next;
        }
        return tf.div(total, n) as tf.Scalar;
      });
    }
    const f = tf.customGrad(((h: tf.Tensor, ww: tf.Tensor, bb: tf.Tensor, save: tf.GradSaveFunc) => {
      const h2 = h as tf.Tensor2D;
      const w2 = ww as tf.Tensor2D;
      let total: tf.Tensor = tf.scalar(0);
      let dW: tf.Tensor = tf.zerosLike(w2);
      let db: tf.Tensor = tf.zerosLike(bb);
      const dHs: tf.Tensor[] = [];
      for (let r0 = 0; r0 < n; r0 += step) {
        const m = Math.min(step, n - r0);
        const [part, dHc, dWc, dbc] = tf.tidy(() => {
          const hc = tf.slice(h2, [r0, 0], [m, -1]); // [m, H]
          if (fused) {
            const { loss, d, db } = fusedXent(hc, w2, bb as tf.Tensor1D, tf.slice(tgt, [r0], [m]), 1 / n); // d [m, V]
            return [loss, tf.matMul(d, w2, false, true), tf.matMul(hc, d, true, false), db];
          }
          const logits = tf.add(tf.matMul(hc, w2), bb); // [m, V]
          const lse = tf.logSumExp(logits, 1, true); // [m, 1]
          const onehot = tf.oneHot(tf.slice(tgt, [r0], [m]), vocab); // [m, V]
          const picked = tf.sum(tf.mul(logits, onehot), 1); // [m]
          const loss = tf.sum(tf.sub(tf.reshape(lse, [m]), picked));
          const dlog = tf.div(tf.sub(tf.exp(tf.sub(logits, lse)), onehot), n); // [m, V]
          return [loss, tf.matMul(dlog, w2, false, true), tf.matMul(hc, dlog, true, false), tf.sum(dlog, 0)];
        });
        const t2 = tf.add(total, part);
        const w3 = tf.add(dW, dWc);
        const b3 = tf.add(db, dbc);
        tf.dispose([total, part, dW, dWc, db, dbc]);
        total = t2;
        dW = w3;
        db = b3;
        dHs.push(dHc);
      }
      const dH = dHs.length === 1 ? dHs[0] : tf.concat(dHs, 0);
      save([dH, dW, db]);
      const value = tf.div(total, n) as tf.Scalar;
      return {
        value,
        gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => saved.map((g) => tf.mul(g, dy)),
      };
    }) as unknown as Parameters<typeof tf.customGrad>[0]);
    return f(hidden, w, b) as tf.Scalar;
  } finally {
    tgt.dispose();
  }
}
