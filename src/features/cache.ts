// The feature cache (entry). The folder src/features/cache/ is the one module that writes, reads and
// versions the feature cache artifact; this file is its public surface, so importers name one path:
//   cache/format.ts    on-disk layout, kinds and versions, manifest and fragment types, fingerprint
//   cache/codec.ts     rows <-> little-endian float32 / float16 bytes
//   cache/manifest.ts  reading manifest.json and the writers' fragments, merging them into one view
//   cache/reader.ts    openFeatureCache: checked opening, reads by key
//   cache/bounded.ts   boundedFeatureSource (memory-bounded reads for training), channelStats
//   cache/writer.ts    openCacheWriter: the lock-free multi-writer appender
//   cache/cleanup.ts   garbage of finished writers, upgrade of older base manifests
export {
  cacheFingerprint,
  FEATURES_KIND,
  FEATURES_VERSION,
  HEARTBEAT_MS,
  MANIFEST,
  STALE_MS,
} from './cache/format.js';
export type {
  CacheSpec,
  ChunkEntry,
  FailedImage,
  FeatureDtype,
  FeaturesManifest,
  ManifestPart,
  WriterIdentity,
} from './cache/format.js';
export { decodeRow, encodeRows, fromHalf, toHalf } from './cache/codec.js';
export { openFeatureCache, type ExpectCache, type FeatureCache } from './cache/reader.js';
export {
  boundedFeatureSource,
  channelStats,
  type BoundedFeatureSource,
  type BoundedReaderOptions,
  type ChannelStats,
  type ReaderStats,
} from './cache/bounded.js';
export {
  DEFAULT_CHUNK_BYTES,
  openCacheWriter,
  prepareCacheFolder,
  type CacheWriter,
  type WriterOptions,
} from './cache/writer.js';
