import { describe, expect, it } from 'vitest';
import { parseResume } from '../../src/caption/jsonl.js';

describe('parseResume', () => {
  it('collects finished images, errors included', () => {
    const text = '{"image":"a.jpg","caption":"x","logprob":-1}\n{"image":"b.jpg","error":"corrupt"}\n';
    const r = parseResume(text);
    expect([...r.done]).toEqual(['a.jpg', 'b.jpg']);
    expect(r.validBytes).toBe(Buffer.byteLength(text));
  });

  it('tolerates a half-written last line and reports where complete lines end', () => {
    const good = '{"image":"é.jpg","caption":"x"}\n';
    const r = parseResume(good + '{"image":"c.jp');
    expect([...r.done]).toEqual(['é.jpg']);
    expect(r.validBytes).toBe(Buffer.byteLength(good));
  });

  it('stops at a corrupt line', () => {
    const good = '{"image":"a.jpg","caption":"x"}\n';
    const r = parseResume(good + 'garbage\n{"image":"b.jpg","caption":"y"}\n');
    expect([...r.done]).toEqual(['a.jpg']);
    expect(r.validBytes).toBe(Buffer.byteLength(good));
  });

  it('handles empty input', () => {
    expect(parseResume('')).toEqual({ done: new Set(), validBytes: 0 });
  });
});
