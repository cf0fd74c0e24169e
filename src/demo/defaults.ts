// The demo's defaults, apart from the demo itself so that `captioner demo --help` can show them without
// loading the pipeline (TensorFlow.js, sharp, onnxruntime).
import * as path from 'node:path';
import type { SceneKind } from '../prep/demo-scene.js';

export const DEMO_RUN_DEFAULTS = {
  out: path.join('work', 'demo'),
  multiOut: path.join('work', 'demo-multi'),
  scenes: 'single' as SceneKind,
  images: 1000,
  quickImages: 300,
  samples: 24,
  quickSamples: 8,
} as const;
