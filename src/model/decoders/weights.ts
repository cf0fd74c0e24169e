// A decoder's trainable weights: checked against its shapes, then made into named tf variables, and read
// back to the host by name. Shared by every decoder in this folder.
import { tf } from '../../tf/tf.js';
import { ModelError } from '../../errors.js';

let instance = 0;

/**
 * One tf variable per weight of `shapes`, from `values`. Every weight is checked (present, right size)
 * before any variable is made, so a bad set leaves no tensors behind. Variable names are
 * `<prefix><n>/<name>`, unique per model.
 */
export function weightVariables(
  shapes: Record<string, number[]>,
  values: Record<string, Float32Array>,
  prefix: string,
): Record<string, tf.Variable> {
  for (const [name, shape] of Object.entries(shapes)) {
    const v = values[name];
    const size = shape.reduce((a, b) => a * b, 1);
    if (!v) throw new ModelError(`weights: "${name}" is missing`);
    if (v.length !== size)
      throw new ModelError(`weights: "${name}" has ${v.length} values, expected ${size} (shape [${shape.join(', ')}])`);
  }
  const id = instance++;
  const out: Record<string, tf.Variable> = {};
  for (const [name, shape] of Object.entries(shapes)) {
    out[name] = tf.tidy(() => tf.variable(tf.tensor(values[name], shape, 'float32'), true, `${prefix}${id}/${name}`));
  }
  return out;
}

/** Copy every weight to the host, by name. */
export async function readVariables(weights: Record<string, tf.Variable>): Promise<Record<string, Float32Array>> {
  const out: Record<string, Float32Array> = {};
  for (const [name, v] of Object.entries(weights)) out[name] = (await v.data()) as Float32Array;
  return out;
}
