// The one Adam (Kingma & Ba 2015) with global-norm gradient clipping, for the main thread and the data-
// parallel trainer alike. Defined here, once: the hyper-parameters and their defaults, the per-step factors
// (the bias-corrected learning rate and the clip scale: adamFactors), the step counter and learning rate,
// the moments and their checkpoint format (m/<weight>, v/<weight> in last/optimizer.bin, as every run folder
// has held them), and the elementwise update, adamLoop, the reference.
//
// Where the weights live decides only who runs that loop, over factors computed here:
//   host arrays (the data-parallel trainer's shared memory): adamArrays, the native addon's C loop where it
//     loads, else adamLoop itself;
//   tf variables on wasm with the addon: its heap kernel (ADAM_KERNEL), one pass per weight;
//   tf variables elsewhere (wasm alone, cpu, tfjs-node, tfjs-node-gpu): adamOps, the loop as tf ops on the
//     backend. On a device backend the gradient norm stays there too (clipScaleOn): no host round trip.
// test/train/adam.test.ts runs every implementation against adamLoop on the same inputs.
import { tf } from '../tf/tf.js';
import { ADAM_KERNEL, addonAdamArrays, addonKernelReady, sumSquares } from '../tf/addon.js';
import { assignFloats } from '../tf/copy.js';
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

/** Every hyper-parameter, defaults filled in. */
export interface AdamHyper {
  learningRate: number;
  beta1: number;
  beta2: number;
  epsilon: number;
  /** 0: no clipping. */
  clipNorm: number;
}

export function adamHyper(o: AdamOptions): AdamHyper {
  return {
    learningRate: o.learningRate,
    beta1: o.beta1 ?? 0.9,
    beta2: o.beta2 ?? 0.999,
    epsilon: o.epsilon ?? 1e-7,
    clipNorm: o.clipNorm ?? 0,
  };
}

/** What the elementwise update of one step needs. */
export interface AdamFactors {
  beta1: number;
  beta2: number;
  epsilon: number;
  /** The learning rate with the bias correction of step t: learningRate sqrt(1 - beta2^t) / (1 - beta1^t). */
  lr: number;
  /** The gradient's clip factor: clipNorm / max(norm, clipNorm); 1 without clipping. */
  scale: number;
}

/** The factors of step `t` (counted from 1) for a gradient of global L2 norm `norm`. */
export function adamFactors(h: AdamHyper, t: number, norm: number): AdamFactors {
  return {
    beta1: h.beta1,
    beta2: h.beta2,
    epsilon: h.epsilon,
    lr: correctedRate(h, t),
    scale: clipScale(norm, h.clipNorm),
  };
}

function correctedRate(h: AdamHyper, t: number): number {
  return (h.learningRate * Math.sqrt(1 - Math.pow(h.beta2, t))) / (1 - Math.pow(h.beta1, t));
}

export function clipScale(norm: number, clipNorm: number): number {
  return clipNorm > 0 ? clipNorm / Math.max(norm, clipNorm) : 1;
}

/** clipScale of a norm that stays on the backend (a device's), as a scalar tensor there. */
export function clipScaleOn(norm: tf.Scalar, clipNorm: number): tf.Scalar {
  return clipNorm > 0 ? tf.div(clipNorm, tf.maximum(norm, clipNorm)) : tf.onesLike(norm);
}

/**
 * The update, on [from, to) of the flat weights `w`, moments `m`, `v` and gradient `g`, in place:
 *   g' = scale g;  m = beta1 m + (1 - beta1) g';  v = beta2 v + (1 - beta2) g'^2;  w -= lr m / (sqrt(v) + epsilon)
 * The reference every other implementation is tested against.
 */
export function adamLoop(
  f: AdamFactors,
  w: Float32Array,
  m: Float32Array,
  v: Float32Array,
  g: Float32Array,
  from: number,
  to: number,
): void {
  const { beta1: b1, beta2: b2, epsilon: eps, lr, scale } = f;
  const c1 = 1 - b1;
  const c2 = 1 - b2;
  for (let i = from; i < to; i++) {
    const gi = g[i] * scale;
    const mi = Math.fround(m[i] * b1 + gi * c1);
    const vi = Math.fround(v[i] * b2 + gi * gi * c2);
    m[i] = mi;
    v[i] = vi;
    w[i] = w[i] - (mi / (Math.sqrt(vi) + eps)) * lr;
  }
}

/** adamLoop on host arrays (plain or shared), by the native addon's C loop where it loads. */
export function adamArrays(
  f: AdamFactors,
  w: Float32Array,
  m: Float32Array,
  v: Float32Array,
  g: Float32Array,
  from: number,
  to: number,
): void {
  if (
    addonAdamArrays(w, m, v, g, from, to, {
      gscale: f.scale,
      beta1: f.beta1,
      beta2: f.beta2,
      lr: f.lr,
      epsilon: f.epsilon,
    })
  )
    return;
  adamLoop(f, w, m, v, g, from, to);
}

/** adamLoop as tf ops on one weight: [x', m', v'] (call inside tf.tidy). `scale` may be a tensor (clipScaleOn). */
export function adamOps(
  f: Omit<AdamFactors, 'scale'> & { scale: number | tf.Scalar },
  x: tf.Tensor,
  g: tf.Tensor,
  m: tf.Tensor,
  v: tf.Tensor,
): [tf.Tensor, tf.Tensor, tf.Tensor] {
  const gs = tf.mul(g, f.scale);
  const m2 = tf.add(tf.mul(m, f.beta1), tf.mul(gs, 1 - f.beta1));
  const v2 = tf.add(tf.mul(v, f.beta2), tf.mul(tf.square(gs), 1 - f.beta2));
  return [tf.sub(x, tf.mul(tf.div(m2, tf.add(tf.sqrt(v2), f.epsilon)), f.lr)), m2, v2];
}

/** Where an Adam's moments live: tf variables beside the weights, or the data-parallel trainer's host arrays. */
export interface AdamMoments {
  /** The weights' names, in save order. */
  readonly names: readonly string[];
  shape(name: string): number[];
  /** Copies of a weight's m and v (for a checkpoint). */
  read(name: string): Promise<[Float32Array, Float32Array]>;
  /** Set a weight's m and v (arrays of its size). */
  write(name: string, m: Float32Array, v: Float32Array): void;
  dispose(): void;
}

/**
 * An Adam over a set of named weights. Built over tf variables (a decoder's weights), apply() runs whole
 * updates on the current backend. Built over AdamMoments (the data-parallel trainer's host arrays), its owner
 * runs the inner loop itself, partitioned: factors() for the next step, then stepped() once it has run.
 */
export class Adam {
  readonly hyper: AdamHyper;
  /** Updates applied so far. */
  iterations = 0;
  readonly moments: AdamMoments;
  private readonly vars: Record<string, tf.Variable> | undefined;

  constructor(target: Record<string, tf.Variable> | AdamMoments, o: AdamOptions) {
    this.hyper = adamHyper(o);
    if (isMoments(target)) {
      this.moments = target;
    } else {
      this.vars = target;
      this.moments = variableMoments(target);
    }
  }

  get learningRate(): number {
    return this.hyper.learningRate;
  }
  set learningRate(lr: number) {
    this.hyper.learningRate = lr;
  }

  get clipNorm(): number {
    return this.hyper.clipNorm;
  }
  set clipNorm(c: number) {
    this.hyper.clipNorm = c;
  }

  /** The factors of the next update (step iterations + 1) for a gradient of global L2 norm `norm`. */
  factors(norm: number): AdamFactors {
    return adamFactors(this.hyper, this.iterations + 1, norm);
  }

  /** Count an update whose inner loop has run over every weight with factors(). */
  stepped(): void {
    this.iterations++;
  }

  /**
   * One update of the variables from `grads`, keyed by weight name (tf.variableGrads keys them by the
   * variable's own name: see byWeightName). Returns the global gradient norm before clipping (a scalar the
   * caller disposes). Does not dispose `grads`.
   */
  apply(grads: Record<string, tf.Tensor>): tf.Scalar {
    const vars = this.vars;
    if (!vars) throw new Error("Adam.apply: this optimizer's weights are host arrays; run adamArrays with factors()");
    const names = this.moments.names;
    for (const n of names) if (!grads[n]) throw new ModelError(`optimizer: no gradient for "${n}"`);
    const { m, v } = this.moments as VariableMoments;
    if (addonKernelReady(ADAM_KERNEL)) {
      // wasm with the addon: the norm in one native pass, then one heap kernel per weight
      const norm = Math.sqrt(sumSquares(names.map((n) => grads[n])));
      const f = this.factors(norm);
      tf.tidy(() => {
        for (const n of names) {
          const [x2, m2, v2] = tf
            .engine()
            .runKernel(
              ADAM_KERNEL,
              { x: vars[n], g: grads[n], m: m[n], v: v[n] },
              { gscale: f.scale, beta1: f.beta1, beta2: f.beta2, lr: f.lr, epsilon: f.epsilon },
            ) as tf.Tensor[];
          vars[n].assign(x2);
          m[n].assign(m2);
          v[n].assign(v2);
        }
      });
      this.stepped();
      return tf.scalar(norm);
    }
    const norm = tf.tidy(() => tf.sqrt(tf.addN(names.map((n) => tf.sum(tf.square(grads[n]))))) as tf.Scalar);
    try {
      tf.tidy(() => {
        // on the host's memory (wasm, cpu) the norm is read here, and the factors are adamFactors' numbers;
        // on a device backend it stays there and only the clip scale is computed on it
        const f = onHost()
          ? this.factors(norm.dataSync()[0])
          : { ...this.factors(0), scale: clipScaleOn(norm, this.hyper.clipNorm) };
        for (const n of names) {
          const [x2, m2, v2] = adamOps(f, vars[n], grads[n], m[n], v[n]);
          vars[n].assign(x2);
          m[n].assign(m2);
          v[n].assign(v2);
        }
      });
    } catch (e) {
      norm.dispose();
      throw e;
    }
    this.stepped();
    return norm;
  }

  /** The moments in the checkpoint format (m/<weight>, v/<weight>, weight by weight in save order). */
  async state(): Promise<{ iterations: number; learningRate: number; arrays: NamedArray[] }> {
    const arrays: NamedArray[] = [];
    for (const n of this.moments.names) {
      const [m, v] = await this.moments.read(n);
      const shape = this.moments.shape(n);
      arrays.push({ name: `m/${n}`, shape, data: m }, { name: `v/${n}`, shape, data: v });
    }
    return { iterations: this.iterations, learningRate: this.hyper.learningRate, arrays };
  }

  /** Continue from a checkpoint written by state() (any implementation's: the format is this one). */
  restore(iterations: number, learningRate: number, arrays: Map<string, NamedArray>): void {
    const size = (n: string) => this.moments.shape(n).reduce((a, b) => a * b, 1);
    const got = this.moments.names.map((n) => {
      const [m, v] = (['m', 'v'] as const).map((kind) => {
        const a = arrays.get(`${kind}/${n}`);
        if (!a || a.data.length !== size(n))
          throw new ModelError(`optimizer state: "${kind}/${n}" is missing or has the wrong size`);
        return a.data;
      });
      return [n, m, v] as const;
    });
    for (const [n, m, v] of got) this.moments.write(n, m, v);
    this.iterations = iterations;
    this.hyper.learningRate = learningRate;
  }

  dispose(): void {
    this.moments.dispose();
  }
}

/** Backends whose tensors live in this process's memory (reading a scalar is a copy, not a device sync). */
function onHost(): boolean {
  const b = tf.getBackend();
  return b === 'wasm' || b === 'cpu';
}

function isMoments(t: Record<string, tf.Variable> | AdamMoments): t is AdamMoments {
  return typeof (t as AdamMoments).read === 'function' && Array.isArray((t as AdamMoments).names);
}

interface VariableMoments extends AdamMoments {
  m: Record<string, tf.Variable>;
  v: Record<string, tf.Variable>;
}

/** Moments as tf variables of the weights' shapes on the current backend, zero to start. */
function variableMoments(vars: Record<string, tf.Variable>): VariableMoments {
  const m: Record<string, tf.Variable> = {};
  const v: Record<string, tf.Variable> = {};
  for (const [name, w] of Object.entries(vars)) {
    // tidy frees the initial tensors; the variables keep their data
    m[name] = tf.tidy(() => tf.variable(tf.zerosLike(w), false));
    v[name] = tf.tidy(() => tf.variable(tf.zerosLike(w), false));
  }
  return {
    m,
    v,
    names: Object.keys(vars),
    shape: (n) => vars[n].shape,
    read: async (n) => [(await m[n].data()) as Float32Array, (await v[n].data()) as Float32Array],
    write: (n, mm, vv) => {
      assignFloats(m[n], mm);
      assignFloats(v[n], vv);
    },
    dispose: () => tf.dispose([...Object.values(m), ...Object.values(v)]),
  };
}

/** tf.variableGrads keys gradients by variable name; map them back to our weight names. */
export function byWeightName(
  vars: Record<string, tf.Variable>,
  grads: Record<string, tf.Tensor>,
): Record<string, tf.Tensor> {
  const out: Record<string, tf.Tensor> = {};
  for (const [n, v] of Object.entries(vars)) out[n] = grads[v.name];
  return out;
}
