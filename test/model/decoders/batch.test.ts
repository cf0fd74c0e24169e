// The one batch check every decoder runs before a teacher-forced pass (src/model/decoders/batch.ts).
import { describe, expect, it } from 'vitest';
import { ModelError } from '../../../src/errors.js';
import { checkBatch, makeBatch } from '../../../src/model/decoders/batch.js';

const good = () =>
  makeBatch(
    [
      { features: new Float32Array([1, 2, 3, 4, 5, 6]), tokens: [2, 5, 6, 3] },
      { features: new Float32Array([6, 5, 4, 3, 2, 1]), tokens: [2, 7, 3] },
    ],
    6,
  );

describe('checkBatch', () => {
  it('accepts what makeBatch builds', () => {
    expect(() => checkBatch(good(), 6, '2 x 3')).not.toThrow();
  });

  it('names what is wrong, as a ModelError', () => {
    const cases: [string, (b: ReturnType<typeof good>) => void, RegExp][] = [
      ['features', (b) => (b.images = new Float32Array(10)), /10 feature values for 2 images of 2 x 3/],
      ['inputs', (b) => (b.inputs = new Int32Array(1)), /1 input tokens, expected 2 x 3/],
      ['lengths', (b) => (b.targets = b.targets.slice(1)), /positions and targets differ/],
      ['empty', (b) => ((b.targets = new Int32Array(0)), (b.positions = new Int32Array(0))), /no target tokens/],
      ['outside', (b) => (b.positions[0] = 6), /target position 6 outside 0\.\.5/],
      ['negative', (b) => (b.positions[0] = -1), /target position -1 outside/],
    ];
    for (const [name, spoil, message] of cases) {
      const b = good();
      spoil(b);
      expect(() => checkBatch(b, 6, '2 x 3'), name).toThrow(ModelError);
      expect(() => checkBatch(b, 6, '2 x 3'), name).toThrow(message);
    }
  });
});
