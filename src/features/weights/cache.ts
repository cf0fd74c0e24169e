// Where downloaded weights live, and what Keras publishes: the VGG16 ImageNet weight files, their
// official URLs and md5 sums (as keras.applications.vgg16 checks them).
import * as os from 'node:os';
import * as path from 'node:path';

/** The command that fills the cache (quoted in error messages). */
export const WEIGHTS_COMMAND = 'captioner weights vgg16';

/** Keras's own download location (keras.applications.vgg16 WEIGHTS_PATH), without the file name. */
export const KERAS_VGG16_URL_BASE = 'https://storage.googleapis.com/tensorflow/keras-applications/vgg16/';

export interface WeightsFile {
  /** File name, both in the URL and in the cache. */
  name: string;
  md5: string;
  /** Size in bytes, for messages (the download trusts Content-Length and the md5). */
  approxBytes: number;
  includeTop: boolean;
}

export const KERAS_VGG16_FILES = {
  top: {
    name: 'vgg16_weights_tf_dim_ordering_tf_kernels.h5',
    md5: '64373286793e3c8b2b4e3219cbf3544b',
    approxBytes: 553_467_096,
    includeTop: true,
  },
  notop: {
    name: 'vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5',
    md5: '6d6bbae143d832006294945121d1f1fc',
    approxBytes: 58_889_256,
    includeTop: false,
  },
} as const satisfies Record<string, WeightsFile>;

/** The captioner cache root: $CAPTIONER_CACHE, else $XDG_CACHE_HOME/captioner, else ~/.cache/captioner. */
export function captionerCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env.CAPTIONER_CACHE) return path.resolve(env.CAPTIONER_CACHE);
  const base = env.XDG_CACHE_HOME ? path.resolve(env.XDG_CACHE_HOME) : path.join(os.homedir(), '.cache');
  return path.join(base, 'captioner');
}

/** Folder for downloaded weights: <cache root>/weights. */
export function weightsCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  return path.join(captionerCacheDir(env), 'weights');
}

/** URL base for downloads: $CAPTIONER_WEIGHTS_URL (tests point it at a loopback server), else Keras's. */
export function weightsUrlBase(env: NodeJS.ProcessEnv = process.env): string {
  const base = env.CAPTIONER_WEIGHTS_URL || KERAS_VGG16_URL_BASE;
  return base.endsWith('/') ? base : base + '/';
}
