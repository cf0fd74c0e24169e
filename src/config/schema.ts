// The config schema: the single source of truth for every setting, its type, its default and its
// documentation. Types are inferred from it; the JSON Schema in configs/captioner.schema.json and the
// reference in docs/configuration.md are generated from it (`npm run docs`), so every key needs a
// `.describe()` text. Every object is strict: unknown keys are errors.
import { z } from 'zod';

const num = (what = 'a number') => z.number({ error: (i) => expected(what, i.input) });
const str = (what = 'a string') => z.string({ error: (i) => expected(what, i.input) });
const bool = () => z.boolean({ error: (i) => expected('true or false', i.input) });
/**
 * An integer in min..max. Upper bounds keep a typo or a hostile config from crashing (out of memory,
 * wasm "memory access out of bounds") or hanging a stage; each bound is well past any useful value.
 */
const intIn = (min: number, max: number) => {
  const what = `an integer from ${min} to ${max}`;
  return z
    .number({ error: (i) => expected(what, i.input) })
    .int({ error: (i) => expected(what, i.input) })
    .min(min, { error: (i) => expected(what, i.input) })
    .max(max, { error: (i) => expected(what, i.input) });
};
/**
 * A number in min..max (above: min itself excluded), with the same kind of message as intIn. zod refuses
 * Infinity and NaN; the upper bound keeps 1e308 (which YAML reads as a number) from overflowing to Infinity.
 */
const numIn = (min: number, max: number, o: { above?: boolean } = {}) => {
  const what = o.above ? `a number above ${min} and at most ${max}` : `a number from ${min} to ${max}`;
  const e = { error: (i: { input: unknown }) => expected(what, i.input) };
  const n = z.number(e);
  return (o.above ? n.gt(min, e) : n.min(min, e)).max(max, e);
};
/** A seed: any 32-bit unsigned integer (the generators use 32 bits; a larger one would be silently cut). */
const seedInt = () => intIn(0, 4_294_967_295);
const fraction = (what = 'a number between 0 and 1') =>
  num(what)
    .min(0, { error: (i) => expected(what, i.input) })
    .max(1, { error: (i) => expected(what, i.input) });

/** "expected X, got Y" with Y shown as the user wrote it. */
export function expected(what: string, input: unknown): string {
  if (input === undefined) return `required: expected ${what}`;
  return `expected ${what}, got ${JSON.stringify(input)}`;
}

export const DatasetFormat = z.enum(['flickr8k', 'flickr30k-csv', 'karpathy', 'coco', 'csv']);

export const DatasetSchema = z
  .object({
    format: DatasetFormat.default('flickr8k').describe(
      'Captions format: flickr8k (image.jpg#N<TAB>caption; also Flickr30k results_20130124.token), flickr30k-csv (image_name|comment_number|comment), karpathy (dataset_*.json with split field), coco (official captions JSON, one file per split), csv (image,caption with header).',
    ),
    captions: str()
      .optional()
      .describe(
        'Captions file. For coco: one official captions JSON to split by ratios (use cocoFiles for per-split files).',
      ),
    cocoFiles: z
      .object({
        train: str()
          .optional()
          .describe('Official COCO captions JSON of the training split (captions_train2014.json).'),
        val: str().optional().describe('Captions JSON of the validation split.'),
        test: str().optional().describe('Captions JSON of the test split.'),
      })
      .strict()
      .optional()
      .describe('coco format: one official captions JSON per split.'),
    images: str()
      .optional()
      .describe(
        'Folder holding the image files. When set, captions whose image is missing are reported and excluded (or fail with prep.strict). Splits are decided before this check, so they do not depend on which files are present.',
      ),
    split: z
      .object({
        method: z
          .enum(['auto', 'files', 'field', 'ratio'])
          .default('auto')
          .describe(
            "files: the split lists below (images in none are left out); field: Karpathy's split field (restval = train) or the coco file per split; ratio: seeded random split by image. auto: field for karpathy and coco with cocoFiles, files when a split file is given, else ratio.",
          ),
        trainFile: str()
          .optional()
          .describe('Text file listing training images, one name a line (Flickr_8k.trainImages.txt).'),
        valFile: str().optional().describe('Validation image list (Flickr_8k.devImages.txt).'),
        testFile: str().optional().describe('Test image list (Flickr_8k.testImages.txt).'),
        ratios: z
          .object({
            train: fraction().default(0.8).describe('Share of images for training.'),
            val: fraction().default(0.1).describe('Share of images for validation (early stopping, best checkpoint).'),
            test: fraction().default(0.1).describe('Share of images for the test split that eval scores.'),
          })
          .strict()
          .default({ train: 0.8, val: 0.1, test: 0.1 })
          .describe('Ratios for the seeded random split (normalised by their sum).'),
        seed: seedInt().default(42).describe('Seed for the ratio split: same seed, same split (0 to 2^32 - 1).'),
      })
      .strict()
      .default({ method: 'auto', ratios: { train: 0.8, val: 0.1, test: 0.1 }, seed: 42 })
      .describe('How images are divided into train, val and test.'),
  })
  .strict();

export const PrepSchema = z
  .object({
    out: str().optional().describe('Prepared dataset folder (default: <workdir>/prepared).'),
    lowercase: bool().default(true).describe('Lowercase captions.'),
    stripPunctuation: bool().default(true).describe('Remove punctuation characters.'),
    dropDigitTokens: bool().default(true).describe('Drop tokens that contain a digit.'),
    minWordLength: intIn(0, 100).default(1).describe('Drop tokens shorter than this (1 keeps "a"; at most 100).'),
    startToken: str().default('startseq').describe('Token put at the start of every caption.'),
    endToken: str().default('endseq').describe('Token put at the end of every caption.'),
    unkToken: str().default('<unk>').describe('Token that replaces words below minCount.'),
    minCount: intIn(1, 1_000_000)
      .default(5)
      .describe(
        'Minimum count (in training captions) for a word to enter the vocabulary (1 to 1000000; prep refuses a value that keeps no word).',
      ),
    maxLength: intIn(3, 200)
      .default(34)
      .describe(
        'Maximum caption length in tokens, start and end tokens included (3 to 200; real captions rarely pass 40).',
      ),
    overLength: z
      .enum(['truncate', 'drop'])
      .default('truncate')
      .describe(
        'What to do with captions longer than maxLength: truncate (keep the first words, then the end token) or drop.',
      ),
    strict: bool()
      .default(false)
      .describe(
        'Fail (instead of warn and go on) when captions name missing images, or the captions or split files hold inconsistent lines: a repeated caption number or COCO image id, a non-numeric #x, invalid UTF-8.',
      ),
  })
  .strict();

export const BackendName = z.enum(['auto', 'gpu', 'node', 'wasm', 'cpu']);

/** ImageNet per-channel mean and std of RGB values in 0..1 (torchvision's normalisation). */
export const IMAGENET_MEAN = [0.485, 0.456, 0.406];
export const IMAGENET_STD = [0.229, 0.224, 0.225];

export const Interpolation = z.enum(['nearest', 'bilinear', 'bicubic', 'lanczos3']);

export const OnnxEncoderSchema = z
  .object({
    path: str().describe(
      'The ONNX model file: any image model (a ResNet, a CLIP image tower, ...) with one float image input. Its content hash is part of the feature cache fingerprint, so replacing the file means features are computed again. `captioner encoder inspect FILE` lists its inputs and outputs and prints a config block to start from.',
    ),
    input: str()
      .optional()
      .describe("Name of the image input (default: the model's only input; a model with several must name one)."),
    output: str()
      .optional()
      .describe(
        "Name of the output whose values are cached (default: the model's only output; a model with several must name one). Its shape after the batch dimension says what it is: [D] a vector (for model.type merge), [T, D] tokens and [C, H, W] or [H, W, C] a grid (for attention; merge mean-pools them). A 1x1 grid is cached as a vector.",
      ),
    outputLayout: z
      .enum(['auto', 'chw', 'hwc'])
      .default('auto')
      .describe(
        'Layout of a grid output after the batch dimension: chw ([C, H, W], PyTorch) or hwc ([H, W, C], TensorFlow). auto: read from the shape (the two equal sides are H and W); when that is ambiguous (e.g. [4, 4, 4], or no two sides equal) it must be set. Grids are cached as [H, W, C].',
      ),
    size: intIn(1, 4096)
      .optional()
      .describe(
        "Side of the square image the model gets, in pixels (default: the model's, when its input has a fixed height and width; required when they are dynamic). At most 4096.",
      ),
    resize: z
      .enum(['shorter', 'stretch'])
      .default('shorter')
      .describe(
        "shorter: resize so the shorter side is resizeSize (aspect ratio kept), then cut out the centre size x size square (torchvision's Resize + CenterCrop; CLIP's preprocessing). stretch: resize the whole image to size x size, aspect ratio ignored (Keras load_img).",
      ),
    resizeSize: intIn(1, 8192)
      .optional()
      .describe(
        'resize shorter: the shorter side before the centre crop, at least size (default: size, so only the longer side is cropped). torchvision ImageNet models: 256 for size 224.',
      ),
    interpolation: Interpolation.default('bilinear').describe(
      "Resize kernel: bilinear (torchvision's default), bicubic (CLIP), nearest or lanczos3. Images are resized by sharp (libvips): values differ slightly from PIL's, and the features a little from a Python pipeline's.",
    ),
    range: z
      .enum(['0-1', '0-255'])
      .default('0-1')
      .describe(
        'Pixel values before mean and std are applied: 0-1 (divided by 255, as torchvision ToTensor) or 0-255 (Caffe-style models).',
      ),
    mean: z
      .array(numIn(-1e6, 1e6))
      .length(3)
      .default(IMAGENET_MEAN)
      .describe(
        "Per-channel mean subtracted, in the units of range and in the model's channel order (default: ImageNet's, for range 0-1; each from -1000000 to 1000000).",
      ),
    std: z
      .array(numIn(0, 1e6, { above: true }))
      .length(3)
      .default(IMAGENET_STD)
      .describe(
        "Per-channel divisor applied after the mean, in the units of range and in the model's channel order (default: ImageNet's; 1, 1, 1 for none; each above 0, at most 1000000).",
      ),
    channelOrder: z
      .enum(['rgb', 'bgr'])
      .default('rgb')
      .describe('Channel order the model expects (rgb for PyTorch models, bgr for Caffe-style ones).'),
    layout: z
      .enum(['auto', 'nchw', 'nhwc'])
      .default('auto')
      .describe(
        "Input tensor layout: nchw ([N, 3, H, W], PyTorch) or nhwc ([N, H, W, 3], TensorFlow). auto: the axis of the model's input that has 3 channels (a model whose input says neither must set it).",
      ),
  })
  .strict();

export const EncoderSchema = z
  .object({
    type: z
      .enum(['vgg16', 'onnx'])
      .default('vgg16')
      .describe(
        'vgg16 (built in: Keras VGG16, see weights and layer), or onnx (any ONNX image model: set encoder.onnx).',
      ),
    runtime: z
      .enum(['auto', 'tfjs', 'onnx'])
      .default('auto')
      .describe(
        'How VGG16 runs: auto (onnx when onnxruntime-node loads, else tfjs), tfjs, onnx. An ONNX encoder always runs on onnxruntime (tfjs is refused).',
      ),
    weights: str()
      .default('auto')
      .describe(
        'VGG16: auto (the cached Keras file, see `captioner weights vgg16`), random (untrained; demo only), or a path to a Keras .h5 file or a TF.js model.json.',
      ),
    layer: z
      .enum(['fc2', 'block5_conv3', 'block5_pool'])
      .default('fc2')
      .describe('VGG16: which activation to cache: fc2 (4096-d vector) or a 14x14 / 7x7 x 512 spatial grid.'),
    interpolation: Interpolation.default('nearest').describe(
      "VGG16: resize to 224x224 (aspect ratio ignored, like Keras load_img(target_size)) with this kernel. Keras load_img defaults to nearest; sharp's nearest picks slightly different pixels than PIL's. Alpha is flattened onto white. (An ONNX encoder has its own: encoder.onnx.interpolation.)",
    ),
    seed: seedInt().default(1234).describe('VGG16: seed for random weights (0 to 2^32 - 1).'),
    onnx: OnnxEncoderSchema.optional().describe(
      'encoder.type onnx: your own ONNX image model (a ResNet, a CLIP image tower...), which of its outputs to cache, and how to turn an image into its input.',
    ),
  })
  .strict();

/** Keys renamed since earlier versions: an old config gets "renamed to X" instead of "unknown key". */
export const RENAMED_KEYS: Record<string, string> = {
  'encoder.name': 'encoder.type',
  'encoder.onnx.inputSize': 'encoder.onnx.size',
  'encoder.onnx.inputName': 'encoder.onnx.input',
  'encoder.onnx.outputName': 'encoder.onnx.output',
  'encoder.onnx.scale': 'encoder.onnx.range',
};

/**
 * Keys renamed since earlier versions that are still accepted, with a warning (src/config/load.ts moves each
 * to its new name before validation; giving both is an error). Kept here, next to the schema, so the list
 * of what a config may say has one home.
 */
export const DEPRECATED_KEYS: Record<string, string> = {
  // the cache's data files are "chunks" since format version 3 ("shard" is the --shard work split)
  'features.shardBytes': 'features.chunkBytes',
  'features.shardSize': 'features.chunkSize',
};

export const FeaturesSchema = z
  .object({
    out: str()
      .optional()
      .describe(
        'Feature cache folder (default: <workdir>/features). A folder holding features of other settings is refused.',
      ),
    dtype: z
      .enum(['float32', 'float16'])
      .default('float32')
      .describe('Storage type of cached vectors (float16 halves the size; values are read back as float32).'),
    batchSize: intIn(1, 128)
      .default(8)
      .describe(
        'Images per encoder batch (at most 128: VGG16 needs about 60 MB of activations per image, and larger batches are no faster).',
      ),
    chunkBytes: intIn(1, 1024 ** 3)
      .default(64 * 1024 ** 2)
      .describe(
        'Bytes per cache chunk file (at most; a checkpoint may write a smaller one, and a vector larger than this gets a chunk of its own). The writer holds one chunk in memory. Default 64 MiB: 4096 fc2 vectors in float32, 327 14x14x512 grids in float16. At most 1 GiB. Formerly features.shardBytes (still accepted, with a warning).',
      ),
    chunkSize: intIn(1, 1_000_000)
      .optional()
      .describe(
        'Also cap a cache chunk file at this many vectors (absent: only chunkBytes counts). Caches written with any chunk size stay readable. Formerly features.shardSize (still accepted, with a warning).',
      ),
    readCacheBytes: intIn(0, 1024 ** 4)
      .default(1024 ** 3)
      .describe(
        'Memory for cached vectors while training (default 1 GiB, at most 1 TiB). When the vectors, as float32, fit, they are kept decoded; else they are kept as stored (float16 halves them) and the least recently used are dropped and read again from the chunk files when needed. Memory for features stays under this, whatever the dataset size.',
      ),
    checkpointSeconds: intIn(1, 86_400)
      .default(60)
      .describe(
        'Write what is computed at least this often, so an interrupted run loses at most this much work (at most a day).',
      ),
  })
  .strict();

/** What each decoder (model.type) reads: one vector per image, or a grid of positions. Kept here, with the
 *  type list, so early stages (features) can check a config without loading the decoders; a test keeps it
 *  equal to the registry's kinds (src/model/decoders/index.ts). */
export const DECODER_FEATURES = { merge: 'vector', attention: 'grid', transformer: 'grid' } as const satisfies Record<
  string,
  'vector' | 'grid'
>;

export const ModelSchema = z
  .object({
    type: z
      .enum(Object.keys(DECODER_FEATURES) as [keyof typeof DECODER_FEATURES])
      .default('merge')
      .describe(
        'The caption decoder: merge (image vector and caption LSTM merged; reads a vector layer such as fc2, or mean-pools a grid layer), attention (soft attention over the grid positions, "Show, Attend and Tell"; needs encoder.layer block5_conv3 or block5_pool) or transformer (a Transformer decoder with cross-attention over the grid positions or tokens; needs grid or token features, as attention; settings in model.transformer).',
      ),
    embedDim: intIn(1, 4096)
      .default(256)
      .describe('Word embedding size (at most 4096, as for every layer size: larger layers exhaust memory).'),
    units: intIn(1, 4096).default(256).describe('LSTM units (transformer: its default model size).'),
    imageUnits: intIn(1, 4096).default(256).describe('Dense units applied to the image vector.'),
    hiddenUnits: intIn(1, 4096).default(256).describe('Dense units after the merge.'),
    merge: z.enum(['add', 'concat']).default('add').describe('How image and caption branches are merged.'),
    init: z
      .enum(['auto', 'keras', 'torch'])
      .default('auto')
      .describe(
        "How a new model's weights are drawn. keras: the Keras defaults the original model used (glorot-uniform kernels, orthogonal recurrent kernels, zero biases, LSTM forget bias 1, embeddings uniform in +-0.05). torch: PyTorch's layer defaults (kernels and biases uniform in +-1/sqrt(fan-in), embeddings N(0, 1); the transformer keeps its N(0, 1/D) embedding). auto: the one that trained each decoder best when measured (merge: torch; attention and transformer: keras; see docs/models.md#the-training-recipe). The run's config.yaml records the scheme used, never auto. Only a new run reads it: --resume continues the run's own weights.",
      ),
    dropout: numIn(0, 0.9)
      .default(0.5)
      .describe(
        'Dropout rate: merge, on the image vector and the embeddings; attention, before the output layer (transformer: model.transformer.dropout instead). 0 to 0.9: at 1 nothing would get through.',
      ),
    attention: z
      .object({
        attentionDim: intIn(1, 4096)
          .optional()
          .describe('attention: size of the attention layer that scores each grid position (default: model.units).'),
        alphaReg: numIn(0, 1000)
          .default(1)
          .describe(
            "attention: weight of the doubly stochastic regulariser that pushes every position to be attended about once over a caption (the paper's lambda; 0 turns it off; at most 1000). Training minimises cross-entropy plus this term; validation loss and early stopping use the cross-entropy alone.",
          ),
      })
      .strict()
      .default({ alphaReg: 1 })
      .describe(
        'Settings of the attention decoder (model.type attention); embedDim, units and dropout above apply too, imageUnits, hiddenUnits and merge do not.',
      ),
    transformer: z
      .object({
        layers: intIn(1, 48)
          .default(3)
          .describe(
            'transformer: decoder blocks (masked self-attention, cross-attention over the image, feed-forward; pre-LayerNorm), at most 48.',
          ),
        heads: intIn(1, 64)
          .default(8)
          .describe('transformer: attention heads per block; the model size must be a multiple of it (at most 64).'),
        modelDim: intIn(1, 4096)
          .optional()
          .describe(
            'transformer: model size: word embedding, attention and residual width (default: model.units; a multiple of heads; model.embedDim is not used).',
          ),
        ffnDim: intIn(1, 16384)
          .optional()
          .describe(
            'transformer: hidden width of each feed-forward block (default: 4 x the model size; at most 16384).',
          ),
        dropout: numIn(0, 0.9)
          .default(0.1)
          .describe(
            "transformer: dropout rate on the embeddings, the image memory, every sublayer's output and the feed-forward hidden layer; replaces model.dropout, whose 0.5 suits the LSTM decoders.",
          ),
        positionEncoding: z
          .enum(['sinusoidal', 'learned'])
          .default('sinusoidal')
          .describe(
            'transformer: word positions as fixed sinusoids (Vaswani et al.) or as a learned table (200 positions, as many as decode.maxLength allows).',
          ),
        imagePositions: z
          .enum(['learned', 'none'])
          .default('learned')
          .describe(
            'transformer: add a learned embedding per image position (grid cell or token) to the projected features, so the decoder knows where each is; none for features that already carry their position (e.g. ViT tokens).',
          ),
        tieEmbeddings: bool()
          .default(true)
          .describe(
            'transformer: the output layer reuses the word embedding (transposed) instead of its own [model size, vocabulary] kernel.',
          ),
      })
      .strict()
      .default({
        layers: 3,
        heads: 8,
        dropout: 0.1,
        positionEncoding: 'sinusoidal',
        imagePositions: 'learned',
        tieEmbeddings: true,
      })
      .describe(
        'Settings of the Transformer decoder (model.type transformer); model.units is its default model size, and embedDim, imageUnits, hiddenUnits, merge and model.dropout do not apply.',
      ),
  })
  .strict()
  .superRefine((m, ctx) => {
    if (m.type !== 'transformer') return;
    const size = m.transformer.modelDim ?? m.units;
    if (size % m.transformer.heads !== 0) {
      const from = m.transformer.modelDim === undefined ? `model.units ${size}` : `${size}`;
      ctx.addIssue({
        code: 'custom',
        path: ['transformer', 'heads'],
        message: `the model size (${from}) must be a multiple of heads (${m.transformer.heads})`,
        input: m.transformer.heads,
      });
    }
  });

export const TrainSchema = z
  .object({
    out: str().optional().describe('Run folder (default: <workdir>/model).'),
    epochs: intIn(1, 10_000).default(20).describe('Passes over the training captions (at most 10000).'),
    batchSize: intIn(1, 4096).default(64).describe('Captions per step (at most 4096).'),
    learningRate: numIn(0, 1, { above: true })
      .default(0.001)
      .describe('Adam learning rate at the start (lrDecay lowers it on plateaus; above 0, at most 1).'),
    clipNorm: numIn(0, 1e6, { above: true })
      .default(5)
      .describe('Global gradient norm clip (above 0, at most 1000000).'),
    seed: seedInt().default(42).describe('Seed for initialisation and shuffling (0 to 2^32 - 1).'),
    labelSmoothing: z
      .union([z.literal('auto'), numIn(0, 0.5)], {
        error: (i) => expected('"auto" or a number from 0 to 0.5', i.input),
      })
      .default('auto')
      .describe(
        "Label smoothing of the cross-entropy training loss: the target is (1 - e) one-hot + e / vocabulary size, as PyTorch's CrossEntropyLoss(label_smoothing). 0: off; at most 0.5. auto: the decoder's measured value (attention 0.1; merge and transformer 0). The training loss shown includes it; the validation loss (early stopping, best/) never does. The run's config.yaml records the number; --resume keeps the run's unless a number is given. Self-critical training ignores it.",
      ),
    warmupSteps: z
      .union([z.literal('auto'), intIn(0, 1_000_000)], {
        error: (i) => expected('"auto" or an integer from 0 to 1000000', i.input),
      })
      .default('auto')
      .describe(
        "Linear learning-rate warm-up: step s (from 1) uses learningRate x min(1, s / warmupSteps). 0: off; at most 1000000. auto: the decoder's measured value (0 for every decoder today; see docs/models.md#the-training-recipe). Counted over the whole run, so --resume continues it; the run's config.yaml records the number, and --resume keeps the run's unless a number is given. Self-critical training ignores it.",
      ),
    patience: intIn(0, 10_000)
      .default(3)
      .describe('Early stopping: epochs without validation improvement (0 disables; at most 10000).'),
    lrDecay: z
      .object({
        factor: fraction()
          .default(0.5)
          .describe('Multiplier applied to the learning rate on a plateau (1: never decay).'),
        patience: intIn(0, 10_000)
          .default(1)
          .describe('Epochs without improvement before the learning rate is multiplied by factor (at most 10000).'),
        min: numIn(0, 1).default(1e-5).describe('The learning rate never goes below this (0 to 1).'),
      })
      .strict()
      .default({ factor: 0.5, patience: 1, min: 1e-5 })
      .describe('Learning-rate decay when the validation loss stops improving.'),
    limit: intIn(0, 1_000_000_000)
      .default(0)
      .describe('Use at most this many training captions (0: all; at most 10^9). For quick experiments.'),
    workers: z
      .union([z.literal('auto'), intIn(1, 256)], {
        error: (i) => expected('"auto" or an integer from 1 to 256', i.input),
      })
      .default(1)
      .describe(
        'Data-parallel training threads: each batch is split over this many worker threads (one wasm thread each) whose gradients are summed into one Adam update. auto: one per core of this machine; 1: train on the main thread with the configured backend, as before (the default; workers > 1 always compute on wasm, even when backend is gpu or node). Dropout masks differ per worker slice, so byte-identical results (and an exact --resume) need the same number of workers; it may change on --resume, which is logged.',
      ),
    scst: z
      .object({
        k: intIn(1, 64)
          .default(5)
          .describe(
            'Self-critical training (`train --scst`): captions sampled per training image each step (at least 2 with baseline mean; at most 64). Each step draws train.batchSize images x k captions.',
          ),
        baseline: z
          .enum(['mean', 'greedy'])
          .default('mean')
          .describe(
            "What each sampled caption's reward is compared with: mean (the mean reward of the image's other k-1 samples) or greedy (the reward of the image's greedy caption; one more decoding pass per step).",
          ),
        learningRate: numIn(0, 1, { above: true })
          .default(5e-5)
          .describe(
            'Adam learning rate of self-critical fine-tuning (much lower than cross-entropy training: the policy gradient is noisy; above 0, at most 1).',
          ),
        epochs: intIn(1, 10_000).default(10).describe('Self-critical passes over the training images (at most 10000).'),
        maxLength: intIn(1, 200)
          .default(16)
          .describe(
            'Most tokens drawn per sampled caption, the end token included; validation greedy decoding uses it too.',
          ),
        bleuWeight: numIn(0, 1000)
          .default(0)
          .describe(
            'Reward = CIDEr-D + bleuWeight x sentence BLEU-4 (0: CIDEr-D alone; at most 1000). CIDEr-D document frequencies come from the training references.',
          ),
        patience: intIn(0, 10_000)
          .default(3)
          .describe(
            'Early stopping of self-critical training: epochs without a higher validation CIDEr-D (0 disables; at most 10000).',
          ),
      })
      .strict()
      .default({ k: 5, baseline: 'mean', learningRate: 5e-5, epochs: 10, maxLength: 16, bleuWeight: 0, patience: 3 })
      .describe(
        'Self-critical sequence training (`captioner train --scst --init RUN`): REINFORCE fine-tuning of a cross-entropy run on the CIDEr-D reward; best/ keeps the highest validation CIDEr-D.',
      ),
  })
  .strict();

export const DecodeSchema = z
  .object({
    beam: intIn(1, 50)
      .default(3)
      .describe(
        'Beam width: hypotheses kept per image at each step (1 = greedy decoding). A search ends when this many hypotheses have ended. At most 50: captions stop improving past about 10 (serve caps requests at serve.maxBeam), and each image costs beam x batchSize model rows a step.',
      ),
    maxLength: intIn(1, 200)
      .default(34)
      .describe(
        'Maximum generated tokens per caption, the end token included (a finished caption has at most maxLength - 1 words); a caption still unfinished then is returned cut. At most 200: real captions rarely pass 40, and each step costs a model call.',
      ),
    lengthPenalty: z
      .enum(['none', 'average', 'wu'])
      .default('none')
      .describe(
        'How finished captions of different lengths are compared: none: sum of token log-probs (favours short captions); average: divided by the length; wu: divided by ((5 + length) / 6)^alpha (Wu et al. 2016). Length counts the end token.',
      ),
    alpha: numIn(0, 10)
      .default(0.7)
      .describe('Exponent of the wu length penalty (0: same as none; at most 10, past any useful value).'),
    batchSize: intIn(1, 256)
      .default(32)
      .describe(
        'Images decoded together (all their hypotheses go through the model in one batch per step; at most 256).',
      ),
    workers: z
      .union([z.literal('auto'), intIn(1, 256)], {
        error: (i) => expected('"auto" or an integer from 1 to 256', i.input),
      })
      .default('auto')
      .describe(
        'Decoding threads for eval and caption: whole batches (decode.batchSize images) are decoded in this many worker threads at once, results in input order and identical to decoding on the main thread. auto: one per core of this machine, but 1 when the backend is gpu or node (the native backend does the work there); 1: decode on the main thread with the configured backend. Workers > 1 compute on wasm (on cpu when backend is cpu), even when backend is gpu or node. In caption, the image encoder (onnxruntime, `threads`) and the decoding workers take turns instead of competing for the cores. serve decodes in its own model worker and ignores this.',
      ),
  })
  .strict();

export const EvalSchema = z
  .object({
    split: z.enum(['train', 'val', 'test']).default('test').describe('Which split to caption and score.'),
    limit: intIn(0, 1_000_000_000).default(0).describe('Evaluate at most this many images (0: all; at most 10^9).'),
    tokenize: z
      .enum(['basic', 'none'])
      .default('basic')
      .describe(
        'basic: lowercase and delete punctuation, as prep does ("t-shirt" -> "tshirt"); none: split on whitespace.',
      ),
    out: str().optional().describe('Report folder (default: <run>/eval-<split>).'),
  })
  .strict();

export const CaptionSchema = z
  .object({
    extensions: z
      .array(str())
      .default(['jpg', 'jpeg', 'png', 'webp', 'gif', 'tif', 'tiff', 'avif'])
      .describe('File extensions taken as images.'),
    recursive: bool()
      .default(true)
      .describe('Look into subfolders of the folders given (symlinks followed, loops skipped).'),
    batchSize: intIn(1, 128).default(8).describe('Images encoded together (at most 128, as features.batchSize).'),
    maxPixels: intIn(1, 268_402_689)
      .default(100_000_000)
      .describe("Images with more pixels are refused (decompression bombs). At most 16383 x 16383, sharp's own limit."),
  })
  .strict();

export const ServeSchema = z
  .object({
    host: str()
      .default('127.0.0.1')
      .describe('Listen address; loopback unless you mean it (0.0.0.0 exposes the server to the network).'),
    port: intIn(0, 65_535).default(8080).describe('Listen port (0: any free port; at most 65535).'),
    maxUploadBytes: intIn(1, 1024 ** 3)
      .default(10 * 1024 * 1024)
      .describe('Larger uploads get 413; the body is not read past this (at most 1 GiB).'),
    queueSize: intIn(1, 10_000)
      .default(64)
      .describe(
        'Images waiting for the model (fully received) beyond this get 503; when it is full, an image from a client with fewer waiting takes the place of the newest image of the client with the most (which gets 503). The model serves client addresses in turn. At most 10000.',
      ),
    maxBatch: intIn(1, 128).default(8).describe('Requests captioned together (at most 128, as caption.batchSize).'),
    batchWindowMs: intIn(0, 60_000)
      .default(5)
      .describe('How long an idle server waits for more requests to join a batch, in milliseconds (at most a minute).'),
    maxBeam: intIn(1, 50)
      .default(10)
      .describe('Largest beam size a request may ask for (?beam=K); larger gets 400. At most 50, as decode.beam.'),
    requestTimeoutMs: intIn(1, 3_600_000)
      .default(60_000)
      .describe(
        'A request that has not fully arrived (headers and upload) after this many milliseconds gets 408 and is cut off (at most an hour).',
      ),
    maxUploads: intIn(1, 10_000)
      .default(16)
      .describe(
        'Uploads being received at once, from all clients; more get 503 unless one of them is evictable (uploadStallMs, minUploadRate). Counted apart from queueSize, which holds only fully received images (at most 10000).',
      ),
    uploadStallMs: intIn(1, 3_600_000)
      .default(2_000)
      .describe(
        'An upload that has received nothing for this many milliseconds is evictable: when a new upload finds every slot taken (maxUploads, or maxUploadsPerClient for its address), an evictable one gives up its slot (its client gets 408). At most an hour.',
      ),
    maxUploadsPerClient: intIn(1, 10_000)
      .default(4)
      .describe(
        "Uploads one client address (an IPv6 client: its /64) may have arriving at once; more get 429, unless one of its own is evictable. Keeps one address from taking every maxUploads slot. Behind a reverse proxy every client has the proxy's address: raise it there. At most 10000.",
      ),
    minUploadRate: intIn(0, 1024 ** 3)
      .default(1024)
      .describe(
        "Bytes per second an upload (or a request's headers) must average once uploadGraceMs has passed; a slower one is evictable when another client needs its slot (its client gets 408). Also evictable after the grace: an upload whose remaining Content-Length cannot arrive before requestTimeoutMs at its rate so far. 0 turns both rules off. At most 1 GiB/s.",
      ),
    uploadGraceMs: intIn(0, 3_600_000)
      .default(5_000)
      .describe(
        "How long an upload or a request's headers may take before minUploadRate and the deadline rule apply, in milliseconds (at most an hour).",
      ),
    headersTimeoutMs: intIn(1, 3_600_000)
      .default(20_000)
      .describe(
        'A request whose headers have not all arrived after this many milliseconds gets 408 and its connection is closed (never later than requestTimeoutMs; at most an hour).',
      ),
    maxConnectionsPerClient: intIn(1, 100_000)
      .default(32)
      .describe(
        "Open connections one client address (an IPv6 client: its /64) may have; a new one beyond it closes that address's idle or slowest connection still sending headers (past uploadGraceMs, below minUploadRate), or gets 429. Browsers open up to 6 per server; behind a reverse proxy raise it. At most 100000.",
      ),
    maxPixels: intIn(1, 268_402_689)
      .default(50_000_000)
      .describe(
        "Images with more pixels get 413, read from the image header before anything is decoded (decompression bombs, and one client making the model decode huge images). The default takes a 50 MP phone photo (8160 x 6120). At most 16383 x 16383, sharp's own limit; caption.maxPixels still applies in the model worker.",
      ),
    drainTimeoutMs: intIn(1, 3_600_000)
      .default(8_000)
      .describe(
        'On SIGTERM/SIGINT, how long requests in flight may take to finish before their connections are cut (and the exit status is 1). Keep it under the container stop grace period.',
      ),
    allowedHosts: z
      .array(str())
      .default([])
      .describe(
        'Host header names accepted besides the listen address, localhost and loopback addresses (on 0.0.0.0 / ::, this machine\'s addresses and host name); other Host values get 403, which blocks DNS rebinding. "*" accepts any.',
      ),
  })
  .strict();

export const ConfigSchema = z
  .object({
    $schema: str().optional().describe('Path of the JSON Schema, for editors.'),
    name: str().default('captioner').describe('A name for this experiment (shown in manifests and the web page).'),
    workdir: str().default('work').describe('Folder under which stages write their outputs by default.'),
    backend: BackendName.default('auto').describe(
      'TensorFlow.js backend: auto tries gpu (tfjs-node-gpu), node (tfjs-node), wasm, cpu.',
    ),
    threads: intIn(0, 256)
      .default(0)
      .describe('Threads for the wasm backend and onnxruntime (0: all cores; at most 256).'),
    dataset: DatasetSchema.default(DatasetSchema.parse({})).describe(
      'Where the captions and images are, in which format, and how to split them (captioner prep).',
    ),
    prep: PrepSchema.default(PrepSchema.parse({})).describe(
      'Caption cleaning, vocabulary and lengths (captioner prep).',
    ),
    encoder: EncoderSchema.default(EncoderSchema.parse({})).describe(
      'The image encoder (VGG16 or your ONNX model), its weights, layer and preprocessing.',
    ),
    features: FeaturesSchema.default(FeaturesSchema.parse({})).describe('The feature cache (captioner features).'),
    model: ModelSchema.default(ModelSchema.parse({})).describe("The caption decoder's shape."),
    train: TrainSchema.default(TrainSchema.parse({})).describe(
      'Training: epochs, batch, optimiser, early stopping (captioner train).',
    ),
    decode: DecodeSchema.default(DecodeSchema.parse({})).describe('Beam search, used by eval, caption and serve.'),
    eval: EvalSchema.default(EvalSchema.parse({})).describe('Scoring a split (captioner eval).'),
    caption: CaptionSchema.default(CaptionSchema.parse({})).describe(
      'Captioning files and folders (captioner caption).',
    ),
    serve: ServeSchema.default(ServeSchema.parse({})).describe(
      'The web page and JSON API (captioner serve): address, limits and timeouts.',
    ),
  })
  .strict()
  .superRefine((c, ctx) => {
    for (const i of encoderIssues(c.encoder))
      ctx.addIssue({ code: 'custom', path: ['encoder', ...i.path], message: i.message });
  });

/** What the encoder settings get wrong together (each key alone is checked by the schema). */
export function encoderIssues(e: {
  type: string;
  onnx?: { resize: string; resizeSize?: number; size?: number };
}): { path: string[]; message: string }[] {
  const out: { path: string[]; message: string }[] = [];
  if (e.type === 'onnx' && !e.onnx)
    out.push({
      path: ['onnx'],
      message:
        'required when encoder.type is onnx: at least encoder.onnx.path (the model file); `captioner encoder inspect FILE` prints a block to start from',
    });
  const o = e.onnx;
  if (o?.resizeSize !== undefined) {
    if (o.resize !== 'shorter')
      out.push({
        path: ['onnx', 'resizeSize'],
        message: `applies to resize shorter only (resize is ${o.resize}); remove it`,
      });
    else if (o.size !== undefined && o.resizeSize < o.size)
      out.push({
        path: ['onnx', 'resizeSize'],
        message: `must be at least size (${o.size}): the centre crop is cut out of the resized image, got ${o.resizeSize}`,
      });
  }
  return out;
}

export type Config = z.infer<typeof ConfigSchema>;
export type DatasetConfig = Config['dataset'];
export type PrepConfig = Config['prep'];
export type EncoderConfig = Config['encoder'];
export type FeaturesConfig = Config['features'];
export type ModelConfig = Config['model'];
export type TrainConfig = Config['train'];
export type DecodeConfig = Config['decode'];
export type EvalConfig = Config['eval'];
export type CaptionConfig = Config['caption'];
export type ServeConfig = Config['serve'];
