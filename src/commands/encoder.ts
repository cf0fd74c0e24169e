// `captioner encoder inspect FILE.onnx`: list an ONNX model's inputs and outputs and print an encoder
// config block to paste (stdout; --json for the same as JSON). The work is in src/features/onnx/inspect.ts.
import { Option, type Command } from 'commander';
import { intArg } from './common.js';
import { writeOut } from '../util/stdout.js';

interface InspectFlags {
  size?: number;
  layout?: 'nchw' | 'nhwc';
  output?: string;
  json?: boolean;
}

export function register(program: Command): void {
  const encoder = program
    .command('encoder')
    .description(
      'look at an image encoder: `encoder inspect FILE.onnx` shows what an ONNX model gives and how to configure it',
    )
    .addHelpText(
      'after',
      `
Examples:
  captioner encoder inspect resnet101.onnx
  captioner encoder inspect clip-vit-b32.onnx --output tokens --json`,
    );
  encoder
    .command('inspect')
    .description(
      "print an ONNX model's inputs and outputs (names, types, shapes; what each output is as features) and an encoder config block to paste",
    )
    .argument('<file>', 'the .onnx model file')
    .option(
      '--size <px>',
      'image side, for a model whose input height and width are dynamic (encoder.onnx.size)',
      intArg('--size'),
    )
    .addOption(
      new Option(
        '--layout <layout>',
        "input layout, when the model's input shape does not tell (encoder.onnx.layout)",
      ).choices(['nchw', 'nhwc']),
    )
    .option(
      '--output <name>',
      'the output to put in the config block (default: the only one, else the first usable one)',
    )
    .option('--json', 'print the report as JSON')
    .addHelpText(
      'after',
      `
The model is run once on a blank image to learn each output's shape. Preprocessing (resize, mean/std,
range, channel order) cannot be read from an ONNX file: the block has torchvision's ImageNet settings.

Examples:
  captioner encoder inspect resnet101.onnx > encoder.yaml
  captioner encoder inspect vit.onnx --size 224 --output tokens --json`,
    )
    .action(async (file: string, flags: InspectFlags) => {
      const { inspectOnnx, formatInspect } = await import('../features/onnx/inspect.js'); // loaded on use: keeps --help fast
      const report = await inspectOnnx(file, { size: flags.size, layout: flags.layout, output: flags.output });
      await writeOut(flags.json ? JSON.stringify(report, null, 2) + '\n' : formatInspect(report));
    });
}
