// `captioner weights vgg16`: download (or import) Keras's VGG16 ImageNet weights into the cache that
// encoder.weights=auto reads. Prints the cached file's path on stdout; progress and notes on stderr.
import type { Command } from 'commander';
import { weightsCacheDir } from '../features/weights/cache.js';
import { writeOut } from '../util/stdout.js';

interface Flags {
  from?: string;
  top: boolean;
  cacheDir?: string;
  url?: string;
  force?: boolean;
  json?: boolean;
}

export function register(program: Command): void {
  const weights = program
    .command('weights')
    .description('download or import pretrained weights into the cache')
    .addHelpText(
      'after',
      `\nExamples:\n  captioner weights vgg16                      # Keras's ImageNet VGG16 (528 MB)\n  captioner weights vgg16 --no-top             # conv layers only (56 MB)`,
    );
  weights
    .command('vgg16')
    .description(`fetch Keras's VGG16 ImageNet weights (528 MB; 56 MB with --no-top), md5 checked, resumable`)
    .option(
      '--from <file>',
      'import a local copy (e.g. ~/.keras/models/vgg16_weights_tf_dim_ordering_tf_kernels.h5) instead of downloading',
    )
    .option('--no-top', 'the _notop file (no fc1/fc2/predictions: enough for block5_conv3 / block5_pool features)')
    .option('--cache-dir <dir>', `cache folder (default ${weightsCacheDir()}; $CAPTIONER_CACHE/weights when set)`)
    .option(
      '--url <base>',
      "download base URL (default: $CAPTIONER_WEIGHTS_URL, else Keras's storage.googleapis.com location)",
    )
    .option('--force', 'download again even when a verified copy is cached')
    .option('--json', 'print a JSON summary instead of the path')
    .addHelpText(
      'after',
      `
Examples:
  captioner weights vgg16                      # download (resumable, md5 checked)
  captioner weights vgg16 --from ~/Downloads/vgg16_weights_tf_dim_ordering_tf_kernels.h5
  captioner weights vgg16 --no-top             # conv layers only, for block5 grid features`,
    )
    .action(async (flags: Flags) => {
      const { fetchVgg16Weights } = await import('../features/weights/vgg16.js'); // loaded on use: keeps --help fast
      const r = await fetchVgg16Weights({
        includeTop: flags.top,
        cacheDir: flags.cacheDir,
        from: flags.from,
        urlBase: flags.url,
        force: flags.force,
      });
      await writeOut(flags.json ? JSON.stringify(r) + '\n' : r.file + '\n');
    });
}
