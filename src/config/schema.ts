// The config schema: the single source of truth for every setting, its type, its default and its
// documentation. Types are inferred from it; the JSON Schema in configs/captioner.schema.json is
// generated from it (`npm run schema`). Every object is strict: unknown keys are errors.
import { z } from 'zod';

const posInt = (what = 'a positive integer') => z.number({ error: (i) => expected(what, i.input) }).int({ error: (i) => expected(what, i.input) }).positive({ error: (i) => expected(what, i.input) });
const nonNegInt = (what = 'a non-negative integer') => z.number({ error: (i) => expected(what, i.input) }).int({ error: (i) => expected(what, i.input) }).min(0, { error: (i) => expected(what, i.input) });
const num = (what = 'a number') => z.number({ error: (i) => expected(what, i.input) });
const str = (what = 'a string') => z.string({ error: (i) => expected(what, i.input) });
const bool = () => z.boolean({ error: (i) => expected('true or false', i.input) });
const fraction = (what = 'a number between 0 and 1') => num(what).min(0, { error: (i) => expected(what, i.input) }).max(1, { error: (i) => expected(what, i.input) });

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
    captions: str().optional().describe('Captions file. For coco: one official captions JSON to split by ratios (use cocoFiles for per-split files).'),
    cocoFiles: z
      .object({ train: str().optional(), val: str().optional(), test: str().optional() })
      .strict()
      .optional()
      .describe('coco format: one official captions JSON per split.'),
    images: str().optional().describe('Folder holding the image files. When set, captions whose image is missing are reported and excluded (or fail with prep.strict). Splits are decided before this check, so they do not depend on which files are present.'),
    split: z
      .object({
        method: z.enum(['auto', 'files', 'field', 'ratio']).default('auto').describe('files: the split lists below (images in none are left out); field: Karpathy\'s split field (restval = train) or the coco file per split; ratio: seeded random split by image. auto: field for karpathy and coco with cocoFiles, files when a split file is given, else ratio.'),
        trainFile: str().optional().describe('Text file listing training images, one name a line (Flickr_8k.trainImages.txt).'),
        valFile: str().optional().describe('Validation image list (Flickr_8k.devImages.txt).'),
        testFile: str().optional().describe('Test image list (Flickr_8k.testImages.txt).'),
        ratios: z
          .object({ train: fraction().default(0.8), val: fraction().default(0.1), test: fraction().default(0.1) })
          .strict()
          .default({ train: 0.8, val: 0.1, test: 0.1 })
          .describe('Ratios for the seeded random split (normalised by their sum).'),
        seed: nonNegInt().default(42).describe('Seed for the ratio split: same seed, same split.'),
      })
      .strict()
      .default({ method: 'auto', ratios: { train: 0.8, val: 0.1, test: 0.1 }, seed: 42 }),
  })
  .strict();

export const PrepSchema = z
  .object({
    out: str().optional().describe('Prepared dataset folder (default: <workdir>/prepared).'),
    lowercase: bool().default(true).describe('Lowercase captions.'),
    stripPunctuation: bool().default(true).describe('Remove punctuation characters.'),
    dropDigitTokens: bool().default(true).describe('Drop tokens that contain a digit.'),
    minWordLength: nonNegInt().default(1).describe('Drop tokens shorter than this (1 keeps "a").'),
    startToken: str().default('startseq').describe('Token put at the start of every caption.'),
    endToken: str().default('endseq').describe('Token put at the end of every caption.'),
    unkToken: str().default('<unk>').describe('Token that replaces words below minCount.'),
    minCount: posInt().default(5).describe('Minimum count (in training captions) for a word to enter the vocabulary.'),
    maxLength: posInt('an integer of at least 3').min(3, { error: (i) => expected('an integer of at least 3', i.input) }).default(34).describe('Maximum caption length in tokens, start and end tokens included (at least 3).'),
    overLength: z.enum(['truncate', 'drop']).default('truncate').describe('What to do with captions longer than maxLength: truncate (keep the first words, then the end token) or drop.'),
    strict: bool().default(false).describe('Fail (instead of warn and exclude) when captions name missing images.'),
  })
  .strict();

export const BackendName = z.enum(['auto', 'gpu', 'node', 'wasm', 'cpu']);

export const EncoderSchema = z
  .object({
    name: z.enum(['vgg16', 'onnx']).default('vgg16').describe('vgg16 (built in), or onnx (any ONNX image encoder: set onnx.*).'),
    runtime: z.enum(['auto', 'tfjs', 'onnx']).default('auto').describe('How VGG16 runs: auto (onnx when onnxruntime-node loads, else tfjs), tfjs, onnx.'),
    weights: str().default('auto').describe('auto (the cached Keras file, see `captioner weights vgg16`), random (untrained; demo only), or a path to a Keras .h5 file or a TF.js model.json.'),
    layer: z.enum(['fc2', 'block5_conv3', 'block5_pool']).default('fc2').describe('Which activation to cache: fc2 (4096-d vector) or a 14x14 / 7x7 x 512 spatial grid.'),
    interpolation: z.enum(['nearest', 'bilinear', 'bicubic', 'lanczos3']).default('nearest').describe('Resize to 224x224 (aspect ratio ignored, like Keras load_img(target_size)) with this kernel. Keras load_img defaults to nearest; sharp\'s nearest picks slightly different pixels than PIL\'s. Alpha is flattened onto white.'),
    seed: nonNegInt().default(1234).describe('Seed for random weights.'),
    onnx: z
      .object({
        path: str().describe('ONNX model file.'),
        inputSize: posInt().default(224).describe('Square input side in pixels.'),
        layout: z.enum(['nchw', 'nhwc']).default('nchw').describe('Input tensor layout.'),
        channelOrder: z.enum(['rgb', 'bgr']).default('rgb').describe('Channel order the model expects.'),
        scale: num().default(1 / 255).describe('Pixels (0..255) are multiplied by this, then normalised with mean/std.'),
        mean: z.array(num()).length(3).default([0.485, 0.456, 0.406]).describe('Per-channel mean subtracted after scaling, in the model\'s channel order.'),
        std: z.array(num()).length(3).default([0.229, 0.224, 0.225]).describe('Per-channel divisor applied after the mean, in the model\'s channel order.'),
        inputName: str().optional().describe('Input name (default: the model\'s first input).'),
        outputName: str().optional().describe('Output name (default: the model\'s first output).'),
      })
      .strict()
      .optional(),
  })
  .strict();

export const FeaturesSchema = z
  .object({
    out: str().optional().describe('Feature cache folder (default: <workdir>/features). A folder holding features of other settings is refused.'),
    dtype: z.enum(['float32', 'float16']).default('float32').describe('Storage type of cached vectors (float16 halves the size; values are read back as float32).'),
    batchSize: posInt().default(8).describe('Images per encoder batch.'),
    shardSize: posInt().default(1024).describe('Vectors per shard file (at most; a checkpoint may write a smaller one).'),
    checkpointSeconds: posInt().default(60).describe('Write what is computed at least this often, so an interrupted run loses at most this much work.'),
  })
  .strict();

export const ModelSchema = z
  .object({
    embedDim: posInt().default(256).describe('Word embedding size.'),
    units: posInt().default(256).describe('LSTM units.'),
    imageUnits: posInt().default(256).describe('Dense units applied to the image vector.'),
    hiddenUnits: posInt().default(256).describe('Dense units after the merge.'),
    merge: z.enum(['add', 'concat']).default('add').describe('How image and caption branches are merged.'),
    dropout: fraction().default(0.5).describe('Dropout rate on the image vector and the embeddings.'),
  })
  .strict();

export const TrainSchema = z
  .object({
    out: str().optional().describe('Run folder (default: <workdir>/model).'),
    epochs: posInt().default(20),
    batchSize: posInt().default(64).describe('Captions per step.'),
    learningRate: num().positive().default(0.001),
    clipNorm: num().positive().default(5).describe('Global gradient norm clip.'),
    seed: nonNegInt().default(42).describe('Seed for initialisation and shuffling.'),
    patience: nonNegInt().default(3).describe('Early stopping: epochs without validation improvement (0 disables).'),
    lrDecay: z
      .object({
        factor: fraction().default(0.5),
        patience: nonNegInt().default(1).describe('Epochs without improvement before the learning rate is multiplied by factor.'),
        min: num().nonnegative().default(1e-5),
      })
      .strict()
      .default({ factor: 0.5, patience: 1, min: 1e-5 }),
    limit: nonNegInt().default(0).describe('Use at most this many training captions (0: all). For quick experiments.'),
  })
  .strict();

export const DecodeSchema = z
  .object({
    beam: posInt().default(3).describe('Beam width: hypotheses kept per image at each step (1 = greedy decoding). A search ends when this many hypotheses have ended.'),
    maxLength: posInt().default(34).describe('Maximum generated tokens per caption, the end token included (a finished caption has at most maxLength - 1 words); a caption still unfinished then is returned cut.'),
    lengthPenalty: z
      .enum(['none', 'average', 'wu'])
      .default('none')
      .describe('How finished captions of different lengths are compared: none: sum of token log-probs (favours short captions); average: divided by the length; wu: divided by ((5 + length) / 6)^alpha (Wu et al. 2016). Length counts the end token.'),
    alpha: num().nonnegative().default(0.7).describe('Exponent of the wu length penalty (0: same as none).'),
    batchSize: posInt().default(32).describe('Images decoded together (all their hypotheses go through the model in one batch per step).'),
  })
  .strict();

export const EvalSchema = z
  .object({
    split: z.enum(['train', 'val', 'test']).default('test'),
    limit: nonNegInt().default(0).describe('Evaluate at most this many images (0: all).'),
    tokenize: z.enum(['basic', 'none']).default('basic').describe('basic: lowercase and strip punctuation; none: split on whitespace.'),
    out: str().optional().describe('Report folder (default: <run>/eval-<split>).'),
  })
  .strict();

export const CaptionSchema = z
  .object({
    extensions: z.array(str()).default(['jpg', 'jpeg', 'png', 'webp', 'gif', 'tif', 'tiff', 'avif']).describe('File extensions taken as images.'),
    recursive: bool().default(true),
    batchSize: posInt().default(8),
    maxPixels: posInt().default(100_000_000).describe('Images with more pixels are refused (decompression bombs).'),
  })
  .strict();

export const ServeSchema = z
  .object({
    host: str().default('127.0.0.1').describe('Listen address; loopback unless you mean it (0.0.0.0 exposes the server to the network).'),
    port: nonNegInt().max(65535).default(8080).describe('Listen port (0: any free port).'),
    maxUploadBytes: posInt().default(10 * 1024 * 1024).describe('Larger uploads get 413; the body is not read past this.'),
    queueSize: posInt().default(64).describe('Requests waiting beyond this get 503.'),
    maxBatch: posInt().default(8).describe('Requests captioned together.'),
    batchWindowMs: nonNegInt().default(5).describe('How long an idle server waits for more requests to join a batch, in milliseconds.'),
    maxBeam: posInt().default(10).describe('Largest beam size a request may ask for (?beam=K); larger gets 400.'),
    requestTimeoutMs: posInt().default(60_000).describe('A request (upload included) that takes longer is cut off.'),
  })
  .strict();

export const ConfigSchema = z
  .object({
    $schema: str().optional().describe('Path of the JSON Schema, for editors.'),
    name: str().default('captioner').describe('A name for this experiment (shown in manifests and the web page).'),
    workdir: str().default('work').describe('Folder under which stages write their outputs by default.'),
    backend: BackendName.default('auto').describe('TensorFlow.js backend: auto tries gpu (tfjs-node-gpu), node (tfjs-node), wasm, cpu.'),
    threads: nonNegInt().default(0).describe('Threads for the wasm backend and onnxruntime (0: all cores).'),
    dataset: DatasetSchema.default(DatasetSchema.parse({})),
    prep: PrepSchema.default(PrepSchema.parse({})),
    encoder: EncoderSchema.default(EncoderSchema.parse({})),
    features: FeaturesSchema.default(FeaturesSchema.parse({})),
    model: ModelSchema.default(ModelSchema.parse({})),
    train: TrainSchema.default(TrainSchema.parse({})),
    decode: DecodeSchema.default(DecodeSchema.parse({})),
    eval: EvalSchema.default(EvalSchema.parse({})),
    caption: CaptionSchema.default(CaptionSchema.parse({})),
    serve: ServeSchema.default(ServeSchema.parse({})),
  })
  .strict();

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
