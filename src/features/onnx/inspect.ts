// `captioner encoder inspect FILE.onnx`: what an ONNX model offers as an image encoder. Lists its inputs
// and outputs (names, element types, shapes with symbolic dims), works out the image input (layout,
// size) and, by running the model once on a blank image, what each float output would be in the feature
// cache (vector, tokens or grid, with its cached shape and the decoders that read it), then writes an
// encoder config block to paste. Uses the same session wrapper (runtime.ts) and the same reading of
// shapes (model.ts) as the encoder itself, so what it prints is what `features` will do.
import { DECODER_FEATURES, IMAGENET_MEAN, IMAGENET_STD } from '../../config/schema.js';
import { CaptionerError, ConfigError, UsageError } from '../../errors.js';
import { openModel } from './encoder.js';
import { planOutput, resolveInput, shapeText, type OutputPlan, type ResolvedInput } from './model.js';
import { floatTensor, sessionMeta, type TensorMeta } from './runtime.js';

export interface InspectOptions {
  /** Image side for a model whose input height and width are dynamic (encoder.onnx.size). */
  size?: number;
  /** Input layout when the model's input shape does not tell (encoder.onnx.layout). */
  layout?: 'nchw' | 'nhwc';
  /** The output the config block names (default: the only output, else the first usable one). */
  output?: string;
  threads?: number;
}

export interface InspectedOutput extends TensorMeta {
  /** What it is for captioner (absent when it cannot be used, see note). */
  kind?: OutputPlan['kind'];
  /** Per-image shape as the model gives it (after the batch), from one run. */
  modelShape?: number[];
  /** Per-image shape in the feature cache. */
  cached?: number[];
  /** Grid layout of the model's output. */
  layout?: 'chw' | 'hwc';
  /** model.type values that read it. */
  decoders?: string[];
  /** Why it cannot be used as it is, or what to set. */
  note?: string;
}

export interface InspectReport {
  file: string;
  bytes: number;
  /** SHA-256 of the file (and of its external data files, when it has some): what the feature cache records. */
  sha256: string;
  /** External data files holding weights, next to the model file. */
  external: string[];
  inputs: TensorMeta[];
  outputs: InspectedOutput[];
  /** The image input as the encoder would feed it, or null (then inputProblem says why). */
  input: ResolvedInput | null;
  inputProblem?: string;
  /** The output the config block uses (null when none can be used). */
  chosen: string | null;
  /** `encoder:` settings to paste (preprocessing at ImageNet / torchvision defaults: check them); null when
   *  the model cannot be used as an image encoder whatever the config says (inputProblem says why). */
  config: { encoder: { type: 'onnx'; onnx: Record<string, unknown> } } | null;
}

/** An error's message without the leading "<file>: " (the report names the file once). */
const message = (e: unknown, file: string) => {
  const m = (e as Error).message.split('\n')[0];
  return m.startsWith(`${file}: `) ? m.slice(file.length + 2) : m;
};

export async function inspectOnnx(file: string, opts: InspectOptions = {}): Promise<InspectReport> {
  const { session, bytes, sha256, external } = await openModel(file, opts.threads ?? 1);
  try {
    const meta = sessionMeta(session);
    let input: ResolvedInput | null = null;
    let inputProblem: string | undefined;
    let configurable = true;
    try {
      input = resolveInput(file, meta.inputs, { layout: opts.layout ?? 'auto', size: opts.size });
    } catch (e) {
      if (!(e instanceof CaptionerError)) throw e;
      inputProblem = message(e, file);
      configurable = e instanceof ConfigError; // a setting fixes it (size, layout); else the model must change
    }
    const outputs: InspectedOutput[] = meta.outputs.map((t) => ({ ...t }));
    const usable = outputs.filter((o) => o.type === 'float32');
    for (const o of outputs) if (o.type !== 'float32') o.note = `${o.type}, not float32: cannot be cached as features`;
    if (input && usable.length) {
      // one run on a blank image gives every output's real shape
      const { size, layout } = input;
      const x = await floatTensor(
        new Float32Array(size * size * 3),
        layout === 'nchw' ? [1, 3, size, size] : [1, size, size, 3],
      );
      let got: Record<string, { dims: readonly number[]; dispose?: () => void }> | null = null;
      try {
        got = await session.run(
          { [input.name]: x },
          usable.map((o) => o.name),
        );
      } catch (e) {
        for (const o of usable)
          o.note = `the model failed on a blank ${size}x${size} image: ${(e as Error).message.split('\n')[0]}`;
      }
      for (const o of usable) {
        const y = got?.[o.name];
        if (!y) continue;
        const dims = y.dims.map(Number);
        y.dispose?.();
        try {
          if (dims[0] !== 1) throw new Error(`its first dimension is ${dims[0]} for one image, not the batch`);
          const plan = planOutput(file, o.name, dims.slice(1), 'auto');
          Object.assign(o, {
            kind: plan.kind,
            modelShape: plan.modelShape,
            cached: plan.shape,
            ...(plan.layout ? { layout: plan.layout } : {}),
            decoders: decodersFor(plan.kind),
          });
        } catch (e) {
          o.modelShape = dims.slice(1);
          o.note = message(e, file);
          // an ambiguous grid is still usable once its layout is set
          if (dims.length === 4) Object.assign(o, { kind: 'grid', decoders: decodersFor('grid') });
        }
      }
    }
    const pick =
      opts.output !== undefined
        ? outputs.find((o) => o.name === opts.output)
        : outputs.length === 1
          ? outputs[0]
          : (outputs.find((o) => o.kind && !o.note) ?? outputs.find((o) => o.type === 'float32'));
    if (opts.output !== undefined && !pick)
      throw new UsageError(
        `--output ${opts.output}: ${file} has no such output; its outputs: ${outputs.map((o) => o.name).join(', ')}`,
      );
    const onnx: Record<string, unknown> = { path: file };
    if (meta.inputs.length === 1) onnx.input = meta.inputs[0].name;
    if (pick) onnx.output = pick.name;
    if (pick?.kind === 'grid' && (pick.note || pick.layout === undefined)) onnx.outputLayout = 'chw';
    onnx.size = input?.size ?? opts.size ?? 224;
    onnx.layout = input?.layout ?? opts.layout ?? 'nchw';
    Object.assign(onnx, {
      resize: 'shorter',
      interpolation: 'bilinear',
      range: '0-1',
      mean: IMAGENET_MEAN,
      std: IMAGENET_STD,
      channelOrder: 'rgb',
    });
    return {
      file,
      bytes,
      sha256,
      external,
      inputs: meta.inputs,
      outputs,
      input,
      ...(inputProblem ? { inputProblem } : {}),
      chosen: pick?.name ?? null,
      config: configurable ? { encoder: { type: 'onnx', onnx } } : null,
    };
  } finally {
    await session.release();
  }
}

function decodersFor(kind: OutputPlan['kind']): string[] {
  const want = kind === 'vector' ? 'vector' : 'grid';
  const types = Object.entries(DECODER_FEATURES as Record<string, string>)
    .filter(([, k]) => k === want)
    .map(([t]) => t);
  return kind === 'vector' ? types : [...types, 'merge (mean-pooled)'];
}

/** The report as text: the model's tensors, then the config block (YAML with comments). */
export function formatInspect(r: InspectReport): string {
  const lines: string[] = [];
  lines.push(
    `${r.file}: ONNX model, ${mb(r.bytes)}${r.external.length ? ` + external data (${r.external.join(', ')})` : ''}, sha256:${r.sha256}`,
  );
  const rows = (list: { name: string; type: string; shape: (number | string)[]; what: string }[]) => {
    const w1 = Math.max(...list.map((t) => t.name.length));
    const w2 = Math.max(...list.map((t) => t.type.length));
    const w3 = Math.max(...list.map((t) => shapeText(t.shape).length));
    for (const t of list)
      lines.push(
        `  ${t.name.padEnd(w1)}  ${t.type.padEnd(w2)}  ${(t.shape.length ? shapeText(t.shape) : '?').padEnd(w3)}  ${t.what}`.trimEnd(),
      );
  };
  lines.push('inputs:');
  rows(
    r.inputs.map((t) => ({
      ...t,
      what:
        r.input?.name === t.name
          ? `image input: ${r.input.layout}, ${r.input.size}x${r.input.size}${r.input.fixedBatch ? ', batch of 1' : ''}`
          : '',
    })),
  );
  if (r.inputProblem) lines.push(`  ! ${r.inputProblem}`);
  lines.push('outputs:');
  rows(r.outputs.map((o) => ({ ...o, what: describeOutput(o) })));
  if (!r.input)
    lines.push(
      `  (not run, so what each output is stays unknown${r.config ? ': fix the input first, e.g. with --size or --layout' : ''})`,
    );
  if (!r.config) {
    lines.push('', '# No config block: this model cannot be used as an image encoder as it is (see above).');
    return lines.join('\n') + '\n';
  }
  lines.push(
    '',
    '# Paste into your config. Preprocessing cannot be read from an ONNX file: these are torchvision ImageNet',
  );
  lines.push("# settings; set the model's own (CLIP: bicubic, its mean/std; see the docs).");
  lines.push(...configYaml(r));
  return lines.join('\n') + '\n';
}

function describeOutput(o: InspectedOutput): string {
  const parts: string[] = [];
  if (o.kind && o.cached) {
    const what =
      o.kind === 'vector'
        ? `vector [${o.cached[0]}]`
        : o.kind === 'tokens'
          ? `tokens: ${o.cached[0]} x ${o.cached[1]}`
          : `grid ${o.cached[0]}x${o.cached[1]} of ${o.cached[2]} channels (${o.layout})`;
    parts.push(`${what} -> ${o.decoders!.join(', ')}`);
  } else if (o.kind === 'grid') parts.push(`grid -> ${o.decoders!.join(', ')}`);
  if (o.note) parts.push(`(${o.note})`);
  return parts.join(' ');
}

function configYaml(r: InspectReport): string[] {
  const o = r.config!.encoder.onnx;
  const out = r.outputs.find((x) => x.name === r.chosen);
  const others = r.outputs.filter((x) => x !== out && x.kind).map((x) => `${x.name} (${x.kind})`);
  const v = (x: unknown) =>
    Array.isArray(x)
      ? `[${x.join(', ')}]`
      : typeof x === 'string' && /^[\w./-]+$/.test(x) && !/^\d/.test(x)
        ? x
        : JSON.stringify(x);
  const lines = ['encoder:', '  type: onnx', '  onnx:', `    path: ${v(o.path)}`];
  if (o.input !== undefined) lines.push(`    input: ${v(o.input)}`);
  if (o.output !== undefined)
    lines.push(`    output: ${v(o.output)}${others.length ? `  # or ${others.join(', ')}` : ''}`);
  if (o.outputLayout !== undefined)
    lines.push(`    outputLayout: ${o.outputLayout}  # or hwc: the shape does not tell which side holds the channels`);
  lines.push(`    size: ${o.size}${r.input ? '' : '  # the side the model was trained at'}`);
  lines.push(`    layout: ${o.layout}`);
  lines.push(
    `    resize: ${o.resize}  # shorter side, then centre crop (torchvision; set resizeSize: 256 for its ImageNet models)`,
  );
  lines.push(`    interpolation: ${o.interpolation}`);
  lines.push(`    range: ${JSON.stringify(o.range)}`);
  lines.push(`    mean: ${v(o.mean)}`, `    std: ${v(o.std)}`, `    channelOrder: ${o.channelOrder}`);
  if (out?.decoders) lines.push(`# model.type to train on it: ${out.decoders.join(', ')}`);
  return lines;
}

function mb(n: number): string {
  return n >= 1024 * 1024
    ? `${(n / 1024 / 1024).toFixed(1)} MiB`
    : n >= 1024
      ? `${(n / 1024).toFixed(1)} KiB`
      : `${n} bytes`;
}
