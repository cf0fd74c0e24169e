// A fake Captioner that starts an onnxruntime session (a one-node Relu graph), loaded INSIDE the model
// worker of src/serve/threaded-captioner.ts: the telemetry test checks onnxruntime's telemetry stays off there.
import { DataType, model, node, valueInfo } from '../../../dist/features/onnx/proto.js';
import { createSession, floatTensor } from '../../../dist/features/onnx/runtime.js';

export async function createOrtCaptioner() {
  const bytes = model({
    name: 'relu',
    nodes: [node('Relu', ['x'], ['y'], 'r')],
    initializers: [],
    inputs: [valueInfo('x', DataType.FLOAT, ['N', 2])],
    outputs: [valueInfo('y', DataType.FLOAT, ['N', 2])],
  }).encode();
  const session = await createSession(bytes, { threads: 1 });
  const out = await session.run({ x: await floatTensor(new Float32Array([1, -1]), [1, 2]) });
  const y = Array.from(out.y.data);
  return {
    info: { name: 'ort-fake', encoder: `relu ${JSON.stringify(y)}`, backend: 'onnxruntime' },
    async captionBatch(inputs) {
      return inputs.map(() => ({ ok: true, caption: 'relu', tokens: ['relu'], logprob: 0 }));
    },
    async dispose() {
      await session.release();
    },
  };
}
