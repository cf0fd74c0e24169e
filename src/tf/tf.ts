// The one place the project gets TensorFlow.js from. Import `tf` from here (never from
// '@tensorflow/tfjs' directly) so every module shares one engine and one set of kernel patches.
// Pick and configure a backend with `initBackend` (src/tf/backend.ts) before heavy work.
import * as tf from '@tensorflow/tfjs';

// PROD silences tfjs's console chatter (e.g. the cpu backend's "install tfjs-node" banner);
// src/tf/backend.ts logs the chosen backend itself.
tf.env().set('PROD', true);

export { tf };
export type { Tensor, Tensor1D, Tensor2D, Tensor3D, Rank, TensorInfo } from '@tensorflow/tfjs';
