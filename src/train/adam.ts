// Adam with global-norm gradient clipping over a named set of variables. The moments live on the backend;
// state() / restore() move them to and from the host for checkpoints (so --resume continues exactly).
import { tf } from '../tf/tf.js';
import { ADAM_KERNEL, nativeKernelReady, sumSquares } from '../tf/native.js';
import { ModelError } from '../errors.js';
import type { NamedArray } from '../model/io.js';

export interface AdamOptions {
  learningRate: number;
  beta1?: number;
  beta2?: number;
  epsilon?: number;
  /** Clip gradients so their global L2 norm is at most this (0 or undefined: no clipping). */
  clipNorm?: number;
}

export class Adam {
  learningRate: number;
  readonly beta1: number;
  readonly beta2: number;
  readonly epsilon: number;
  clipNorm: number;
  /** Updates applied so far. */
  iterations = 0;
  private readonly m: Record<string, tf.Variable> = {};
  private readonly v: Record<string, tf.Variable> = {};

  constructor(private readonly vars: Record<string, tf.Variable>, o: AdamOptions) {
    this.learningRate = o.learningRate;
    this.beta1 = o.beta1 ?? 0.9;
    this.beta2 = o.beta2 ?? 0.999;
    this.epsilon = o.epsilon ?? 1e-7;
    this.clipNorm = o.clipNorm ?? 0;
    for (const [name, w] of Object.entries(vars)) {
      // tidy frees the initial tensors; the variables keep their data
      this.m[name] = tf.tidy(() => tf.variable(tf.zerosLike(w), false));
      this.v[name] = tf.tidy(() => tf.variable(tf.zerosLike(w), false));
    }
  }

  /**
   * Apply one update. `grads` are keyed by variable name (tf.variableGrads keys them by the variable's
   * own name; pass `byVarName` to translate). Returns the global gradient norm before clipping (a scalar
   * tensor the caller disposes). Does not dispose `grads`.
   */
  apply(grads: Record<string, tf.Tensor>): tf.Scalar {
    this.iterations++;
    const t = this.iterations;
    const lr = (this.learningRate * Math.sqrt(1 - Math.pow(this.beta2, t))) / (1 - Math.pow(this.beta1, t));
    const names = Object.keys(this.vars);
    for (const n of names) if (!grads[n]) throw new ModelError(`optimizer: no gradient for "${n}"`);
    if (nativeKernelReady(ADAM_KERNEL)) return this.applyNative(names, grads, lr);
    return tf.tidy(() => {
      const norm = tf.sqrt(tf.addN(names.map((n) => tf.sum(tf.square(grads[n]))))) as tf.Scalar;
      const scale = this.clipNorm > 0 ? tf.div(this.clipNorm, tf.maximum(norm, this.clipNorm)) : tf.scalar(1);
      for (const n of names) {
        const g = tf.mul(grads[n], scale);
        const m = tf.add(tf.mul(this.m[n], this.beta1), tf.mul(g, 1 - this.beta1));
        const v = tf.add(tf.mul(this.v[n], this.beta2), tf.mul(tf.square(g), 1 - this.beta2));
        this.m[n].assign(m);
        this.v[n].assign(v);
        this.vars[n].assign(tf.sub(this.vars[n], tf.mul(tf.div(m, tf.add(tf.sqrt(v), this.epsilon)), lr)));
      }
      return tf.keep(norm);
    });
  }

  /** The same update by the native addon (wasm with OpenBLAS's addon): one pass per weight. */
  private applyNative(names: string[], grads: Record<string, tf.Tensor>, lr: number): tf.Scalar {
    const norm = Math.sqrt(sumSquares(names.map((n) => grads[n])));
    const gscale = this.clipNorm > 0 ? this.clipNorm / Math.max(norm, this.clipNorm) : 1;
    tf.tidy(() => {
      for (const n of names) {
        const [x, m, v] = tf.engine().runKernel(ADAM_KERNEL, { x: this.vars[n], g: grads[n], m: this.m[n], v: this.v[n] }, { gscale, beta1: this.beta1, beta2: this.beta2, lr, epsilon: this.epsilon }) as tf.Tensor[];
        this.vars[n].assign(x);
        this.m[n].assign(m);
        this.v[n].assign(v);
      }
    });
    return tf.scalar(norm);
  }

  /** Moments on the host, for a checkpoint. */
  async state(): Promise<{ iterations: number; learningRate: number; arrays: NamedArray[] }> {
    const arrays: NamedArray[] = [];
    for (const n of Object.keys(this.vars)) {
      arrays.push({ name: `m/${n}`, shape: this.m[n].shape, data: (await this.m[n].data()) as Float32Array });
      arrays.push({ name: `v/${n}`, shape: this.v[n].shape, data: (await this.v[n].data()) as Float32Array });
    }
    return { iterations: this.iterations, learningRate: this.learningRate, arrays };
  }

  restore(iterations: number, learningRate: number, arrays: Map<string, NamedArray>): void {
    for (const n of Object.keys(this.vars)) {
      for (const [kind, store] of [['m', this.m], ['v', this.v]] as const) {
        const a = arrays.get(`${kind}/${n}`);
        if (!a || a.data.length !== store[n].size) throw new ModelError(`optimizer state: "${kind}/${n}" is missing or has the wrong size`);
        tf.tidy(() => store[n].assign(tf.tensor(a.data, store[n].shape)));
      }
    }
    this.iterations = iterations;
    this.learningRate = learningRate;
  }

  dispose(): void {
    tf.dispose([...Object.values(this.m), ...Object.values(this.v)]);
  }
}

/** tf.variableGrads keys gradients by variable name; map them back to our weight names. */
export function byWeightName(vars: Record<string, tf.Variable>, grads: Record<string, tf.Tensor>): Record<string, tf.Tensor> {
  const out: Record<string, tf.Tensor> = {};
  for (const [n, v] of Object.entries(vars)) out[n] = grads[v.name];
  return out;
}
