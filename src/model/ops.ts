// Custom-gradient building blocks of the decoder: row gather with a scatter-add gradient that works on
// every backend, and the fused output layer + masked softmax cross-entropy, computed in row chunks so the
// [N, V] logits exist one chunk at a time and the gradient is formed in the same pass; and the LSTM cell
// every decoder shares (one native kernel with its own gradient where the addon runs).
import { tf } from '../tf/tf.js';
import { LSTM_GRAD_KERNEL, LSTM_KERNEL, XENT_KERNEL, addonKernelReady } from '../tf/addon.js';

/**
 * One LSTM cell. zx + rec [N, 4U] is the gates' pre-activation (gates input, forget, cell, output, each U
 * wide), c [N, U] the cell state. Returns [h, c'] with c' = sigmoid(f) c + sigmoid(i) tanh(g) and
 * h = sigmoid(o) tanh(c'). Differentiable; on wasm with the native addon it is one kernel each way.
 */
export function lstmCell(zx: tf.Tensor2D, rec: tf.Tensor2D, c: tf.Tensor2D): [tf.Tensor2D, tf.Tensor2D] {
  if (addonKernelReady(LSTM_KERNEL)) {
    const [h, c2] = tf.engine().runKernel(LSTM_KERNEL, { zx, rec, c }) as tf.Tensor[];
    return [h as tf.Tensor2D, c2 as tf.Tensor2D];
  }
  return tf.tidy(() => {
    const [zi, zf, zg, zo] = tf.split(tf.add(zx, rec), 4, 1);
    const c2 = tf.add(tf.mul(tf.sigmoid(zf), c), tf.mul(tf.sigmoid(zi), tf.tanh(zg))) as tf.Tensor2D;
    const h = tf.mul(tf.sigmoid(zo), tf.tanh(c2)) as tf.Tensor2D;
    return [h, c2];
  });
}

/**
 * The backward pass of lstmCell: the gradients dh and dc2 reaching its outputs h and c' give dz [N, 4U]
 * (the gradient of zx and of rec alike) and dc [N, U] (of the old cell state).
 */
export function lstmCellGrad(
  zx: tf.Tensor2D,
  rec: tf.Tensor2D,
  c: tf.Tensor2D,
  c2: tf.Tensor2D,
  dh: tf.Tensor2D,
  dc2: tf.Tensor2D,
): [tf.Tensor2D, tf.Tensor2D] {
  if (addonKernelReady(LSTM_GRAD_KERNEL)) {
    const [dz, dc] = tf.engine().runKernel(LSTM_GRAD_KERNEL, { zx, rec, c, c2, dh, dc2 }) as tf.Tensor[];
    return [dz as tf.Tensor2D, dc as tf.Tensor2D];
  }
  return tf.tidy(() => {
    const [zi, zf, zg, zo] = tf.split(tf.add(zx, rec), 4, 1);
    const [i, f, g, o] = [tf.sigmoid(zi), tf.sigmoid(zf), tf.tanh(zg), tf.sigmoid(zo)];
    const tc = tf.tanh(c2);
    const one = tf.scalar(1);
    const dct = tf.add(dc2, tf.mul(tf.mul(dh, o), tf.sub(one, tf.square(tc)))); // all of dL/dc'
    const sigGrad = (s: tf.Tensor) => tf.mul(s, tf.sub(one, s));
    const dz = tf.concat(
      [
        tf.mul(tf.mul(dct, g), sigGrad(i)),
        tf.mul(tf.mul(dct, c), sigGrad(f)),
        tf.mul(tf.mul(dct, i), tf.sub(one, tf.square(g))),
        tf.mul(tf.mul(dh, tc), sigGrad(o)),
      ],
      1,
    ) as tf.Tensor2D;
    return [dz, tf.mul(dct, f) as tf.Tensor2D];
  });
}

/**
 * An LSTM over B sequences of T steps from a zero state, as one op with a hand-written backward pass
 * (backpropagation through time). x [B*T, E] (row b*T + t), kernel [E, 4U], recurrent [U, 4U], bias [4U]
 * -> h [B*T, U] (row b*T + t). Autograd through T cell steps would form the recurrent kernel's gradient
 * as T small products and T - 1 additions; here the weight gradients are three products over every
 * step at once: x^T dZ, H_{t-1}^T dZ and the column sums of dZ.
 */
export function lstmSequence(
  x: tf.Tensor2D,
  kernel: tf.Tensor2D,
  recurrent: tf.Tensor2D,
  bias: tf.Tensor1D,
  B: number,
  T: number,
): tf.Tensor2D {
  const U = recurrent.shape[0];
  if (x.shape[0] !== B * T || kernel.shape[1] !== 4 * U || recurrent.shape[1] !== 4 * U || bias.shape[0] !== 4 * U) {
    throw new Error(
      `lstmSequence: x [${x.shape}], kernel [${kernel.shape}], recurrent [${recurrent.shape}], bias [${bias.shape}] do not fit ${B} x ${T} steps`,
    );
  }
  if (B * T === 0) return tf.zeros([0, U]); // no steps: nothing to run (and nothing to differentiate)
  const f = tf.customGrad(((xx: tf.Tensor, k: tf.Tensor, r: tf.Tensor, b: tf.Tensor, save: tf.GradSaveFunc) => {
    const zs = tf.unstack(
      tf.reshape(tf.add(tf.matMul(xx as tf.Tensor2D, k as tf.Tensor2D), b), [B, T, 4 * U]),
      1,
    ) as tf.Tensor2D[]; // T x [B, 4U]
    const hs: tf.Tensor2D[] = [tf.zeros([B, U])]; // h_0 .. h_T
    const cs: tf.Tensor2D[] = [tf.zeros([B, U])]; // c_0 .. c_T
    const recs: tf.Tensor2D[] = []; // h_{t-1} W_rec, T x [B, 4U]
    for (let t = 0; t < T; t++) {
      recs.push(tf.matMul(hs[t], r as tf.Tensor2D));
      const [h, c] = lstmCell(zs[t], recs[t], cs[t]);
      hs.push(h);
      cs.push(c);
    }
    save([xx, k, r, ...zs, ...recs, ...cs, ...hs.slice(0, T)]);
    const value = tf.reshape(tf.stack(hs.slice(1), 1), [B * T, U]); // [B*T, U]
    const gradFunc = (dy: tf.Tensor, saved: tf.Tensor[]) => {
      const [x0, k0, r0] = saved as tf.Tensor2D[];
      const zsS = saved.slice(3, 3 + T) as tf.Tensor2D[];
      const recS = saved.slice(3 + T, 3 + 2 * T) as tf.Tensor2D[];
      const cS = saved.slice(3 + 2 * T, 4 + 3 * T) as tf.Tensor2D[];
      const hPrev = saved.slice(4 + 3 * T) as tf.Tensor2D[];
      const dys = tf.unstack(tf.reshape(dy, [B, T, U]), 1) as tf.Tensor2D[]; // T x [B, U]
      const dzs: tf.Tensor2D[] = new Array(T);
      let dhRec: tf.Tensor2D | null = null; // the gradient reaching h_t through step t+1
      let dc: tf.Tensor2D = tf.zeros([B, U]);
      for (let t = T - 1; t >= 0; t--) {
        const dh = dhRec ? (tf.add(dys[t], dhRec) as tf.Tensor2D) : dys[t];
        [dzs[t], dc] = lstmCellGrad(zsS[t], recS[t], cS[t], cS[t + 1], dh, dc);
        dhRec = t > 0 ? (tf.matMul(dzs[t], r0, false, true) as tf.Tensor2D) : null; // [B, U]
      }
      const dZ = tf.reshape(tf.stack(dzs, 1), [B * T, 4 * U]); // [B*T, 4U], row b*T + t
      const hP = tf.reshape(tf.stack(hPrev, 1), [B * T, U]); // h_{t-1} in the same rows
      return [
        tf.matMul(dZ, k0, false, true), // dx [B*T, E]
        tf.matMul(x0, dZ, true, false), // dkernel [E, 4U]
        tf.matMul(hP, dZ, true, false), // drecurrent [U, 4U]
        tf.reshape(tf.matMul(tf.ones([1, B * T]), dZ), [4 * U]), // dbias [4U]: column sums as a product
      ];
    };
    return { value, gradFunc };
  }) as unknown as Parameters<typeof tf.customGrad>[0]);
  return f(x, kernel, recurrent, bias) as tf.Tensor2D;
}

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
 * The native CaptionerSoftmaxXent kernel on one chunk: logits z [m, V] (hidden x w, before the bias) + b against targets [m]:
 * loss = summed cross-entropy (a scalar), d = scale (softmax - onehot) [m, V], db = column sums of d [V].
 */
function fusedXent(
  z: tf.Tensor2D,
  b: tf.Tensor1D,
  targets: tf.Tensor1D,
  scale: number,
): { loss: tf.Scalar; d: tf.Tensor2D; db: tf.Tensor1D } {
  const [loss, d, db] = tf.engine().runKernel(XENT_KERNEL, { logits: z, bias: b, targets }, { scale }) as tf.Tensor[];
  return { loss: loss as tf.Scalar, d: d as tf.Tensor2D, db: db as tf.Tensor1D };
}

/**
 * Rows per chunk so that one chunk of logits holds at most about `budget` floats (64 MB by default), the
 * chunks as even as can be. Each chunk costs a pass over the whole [H, V] output kernel and its gradient
 * whatever its rows, so 2,112 rows at V 8,000 run as two chunks of 1,056, not 1,048 + 1,048 + 16.
 */
export function chunkRows(n: number, vocab: number, budget = 1 << 24): number {
  const most = Math.max(1, Math.min(n, Math.floor(budget / vocab)));
  return Math.max(1, Math.ceil(n / Math.ceil(n / most)));
}

/**
 * Label smoothing's part of one chunk (see softmaxCrossEntropy): with q = (1 - e) onehot + e / V the
 * cross-entropy of a row is lse - z_t + e (z_t - mean z), and its gradient softmax - q = (softmax - onehot)
 * + e (onehot - 1 / V). Returns the summed loss term e sum_rows (z_t - mean z) and the gradient term
 * scale e (onehot - 1 / V) [m, V]. logits [m, V] with the bias, onehot [m, V], picked = z_t [m].
 */
function smoothingTerms(
  logits: tf.Tensor2D,
  onehot: tf.Tensor2D,
  picked: tf.Tensor1D,
  e: number,
  scale: number,
): { loss: tf.Scalar; d: tf.Tensor2D } {
  const vocab = logits.shape[1];
  const loss = tf.mul(tf.sum(tf.sub(picked, tf.mean(logits, 1))), e) as tf.Scalar;
  const d = tf.mul(tf.sub(onehot, 1 / vocab), scale * e) as tf.Tensor2D; // [m, V]
  return { loss, d };
}

/**
 * Mean cross-entropy of softmax(hidden W + b) against `targets` (one per row of `hidden`).
 * hidden [N, H], w [H, V], b [V]. With `withGrad` the value carries a custom gradient computed during the
 * forward pass (dlogits = (softmax - onehot) / N, chunk by chunk), so backprop never revisits the logits.
 * `smoothing` e (label smoothing, with `withGrad` only: validation figures stay plain cross-entropy) makes the
 * target distribution (1 - e) onehot + e / V over the whole vocabulary, as torch.nn.CrossEntropyLoss's
 * label_smoothing does.
 */
export function softmaxCrossEntropy(
  hidden: tf.Tensor2D,
  w: tf.Tensor2D,
  b: tf.Tensor1D,
  targets: Int32Array,
  withGrad: boolean,
  budget?: number,
  smoothing = 0,
): tf.Scalar {
  const n = hidden.shape[0];
  const vocab = w.shape[1];
  if (targets.length !== n) throw new Error(`softmaxCrossEntropy: ${targets.length} targets for ${n} rows`);
  if (!(smoothing >= 0 && smoothing < 1))
    throw new Error(`softmaxCrossEntropy: label smoothing must be in [0, 1), got ${smoothing}`);
  const e = withGrad ? smoothing : 0;
  const step = chunkRows(n, vocab, budget);
  const tgt = tf.tensor1d(targets, 'int32');
  const fused = addonKernelReady(XENT_KERNEL); // the one-pass native kernel (wasm with the addon); same maths
  try {
    if (!withGrad) {
      return tf.tidy(() => {
        let total: tf.Tensor = tf.scalar(0);
        for (let r0 = 0; r0 < n; r0 += step) {
          const m = Math.min(step, n - r0);
          const part = tf.tidy(() => {
            if (fused)
              return fusedXent(tf.matMul(tf.slice(hidden, [r0, 0], [m, -1]), w), b, tf.slice(tgt, [r0], [m]), 1).loss;
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
      // running sums over the chunks; the first chunk's parts start them (no [H, V] zeros to add into)
      let total: tf.Tensor | undefined;
      let dW: tf.Tensor | undefined;
      let db: tf.Tensor | undefined;
      const dHs: tf.Tensor[] = [];
      for (let r0 = 0; r0 < n; r0 += step) {
        const m = Math.min(step, n - r0);
        const [part, dHc, dWc, dbc] = tf.tidy(() => {
          const hc = tf.slice(h2, [r0, 0], [m, -1]); // [m, H]
          const tc = tf.slice(tgt, [r0], [m]); // [m]
          if (fused) {
            const z = tf.matMul(hc, w2) as tf.Tensor2D; // [m, V]
            const { loss, d, db } = fusedXent(z, bb as tf.Tensor1D, tc, 1 / n); // d [m, V]
            if (e > 0) {
              const logits = tf.add(z, bb) as tf.Tensor2D; // [m, V]
              const onehot = tf.oneHot(tc, vocab) as tf.Tensor2D; // [m, V]
              const picked = tf.sum(tf.mul(logits, onehot), 1) as tf.Tensor1D; // [m]
              const s = smoothingTerms(logits, onehot, picked, e, 1 / n);
              const ds = tf.add(d, s.d); // [m, V]
              return [
                tf.add(loss, s.loss),
                tf.matMul(ds, w2, false, true),
                tf.matMul(hc, ds, true, false),
                tf.sum(ds, 0),
              ];
            }
            return [loss, tf.matMul(d, w2, false, true), tf.matMul(hc, d, true, false), db];
          }
          const logits = tf.add(tf.matMul(hc, w2), bb) as tf.Tensor2D; // [m, V]
          const lse = tf.logSumExp(logits, 1, true); // [m, 1]
          const onehot = tf.oneHot(tc, vocab) as tf.Tensor2D; // [m, V]
          const picked = tf.sum(tf.mul(logits, onehot), 1) as tf.Tensor1D; // [m]
          let loss = tf.sum(tf.sub(tf.reshape(lse, [m]), picked));
          let dlog = tf.div(tf.sub(tf.exp(tf.sub(logits, lse)), onehot), n); // [m, V]
          if (e > 0) {
            const s = smoothingTerms(logits, onehot, picked, e, 1 / n);
            loss = tf.add(loss, s.loss);
            dlog = tf.add(dlog, s.d);
          }
          return [loss, tf.matMul(dlog, w2, false, true), tf.matMul(hc, dlog, true, false), tf.sum(dlog, 0)];
        });
        dHs.push(dHc);
        if (total === undefined || dW === undefined || db === undefined) {
          [total, dW, db] = [part, dWc, dbc];
          continue;
        }
        const t2 = tf.add(total, part);
        const w3 = tf.add(dW, dWc);
        const b3 = tf.add(db, dbc);
        tf.dispose([total, part, dW, dWc, db, dbc]);
        total = t2;
        dW = w3;
        db = b3;
      }
      if (total === undefined || dW === undefined || db === undefined)
        [total, dW, db] = [tf.scalar(0), tf.zerosLike(w2), tf.zerosLike(bb)]; // no rows
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
