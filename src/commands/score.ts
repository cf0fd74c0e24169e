// `captioner score`: BLEU-1..4, CIDEr-D and ROUGE-L of candidate captions against reference captions.
import { Option, type Command } from 'commander';
import { metricKeys, type CorpusScores } from '../eval/score.js';
import { log } from '../log.js';
import { resolveConfig, withConfig, type ConfigFlags } from './common.js';
import { writeOut } from '../util/stdout.js';

interface ScoreFlags extends ConfigFlags {
  candidates: string;
  references: string;
  tokenize?: 'basic' | 'none';
  json?: boolean;
}

export function register(program: Command): void {
  withConfig(
    program
      .command('score')
      .description(
        'score candidate captions against references: BLEU-1..4 (NLTK corpus_bleu), CIDEr-D and ROUGE-L (coco-caption)',
      ),
  )
    .requiredOption(
      '--candidates <file>',
      'candidate captions: COCO results JSON [{"image_id", "caption"}] or JSONL from caption/eval',
    )
    .requiredOption(
      '--references <path>',
      'reference captions: COCO captions JSON, Flickr8k token file, Karpathy JSON, or a prepared dataset folder',
    )
    .addOption(
      new Option(
        '--tokenize <mode>',
        'basic (lowercase, delete punctuation, as prep does) or none (split on whitespace); default eval.tokenize',
      ).choices(['basic', 'none']),
    )
    .option('--json', 'print one JSON object instead of a table')
    .addHelpText(
      'after',
      `
Examples:
  captioner score --candidates work/demo/model/eval-test/results.json --references work/demo/prepared
  captioner score --candidates results.json --references data/coco/captions_val2017.json --json`,
    )
    .action(async (opts: ScoreFlags) => {
      const { config } = await resolveConfig(opts, { eval: { tokenize: opts.tokenize } });
      const { loadScorePairs } = await import('../eval/io.js'); // loaded on use: keeps --help fast
      const { corpusOnly, scoreCaptions } = await import('../eval/score.js');
      const { pairs, skippedErrors } = await loadScorePairs(opts.candidates, opts.references);
      if (skippedErrors > 0)
        log.warn(
          `${opts.candidates}: skipped ${skippedErrors} entr${skippedErrors === 1 ? 'y' : 'ies'} with an "error" (not scored)`,
        );
      const scores = corpusOnly(scoreCaptions(pairs, config.eval.tokenize));
      await writeOut(opts.json ? JSON.stringify(scores) + '\n' : formatTable(scores, config.eval.tokenize));
    });
}

/** A small aligned table: one metric a line. */
export function formatTable(s: CorpusScores, tokenize: string): string {
  const rows: [string, string][] = [
    ['images', String(s.images)],
    ...metricKeys.map((k): [string, string] => [k === 'CIDEr' ? 'CIDEr-D' : k, s[k].toFixed(4)]),
  ];
  const w = Math.max(...rows.map(([k]) => k.length));
  return (
    `metric${' '.repeat(w - 6 + 2)}score   (tokenize: ${tokenize})\n` +
    rows.map(([k, v]) => `${k.padEnd(w)}  ${v}`).join('\n') +
    '\n'
  );
}
