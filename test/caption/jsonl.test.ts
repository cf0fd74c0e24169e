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

describe('parseResume on raw bytes', () => {
  it('counts bytes, not characters, and ignores a last line cut inside a multi-byte character', () => {
    const good = Buffer.from('{"image":"日本.jpg","caption":"x"}\n{"image":"b c.png","error":"empty file (0 bytes)"}\n');
    const partial = Buffer.from('{"image":"日本2.jpg"').subarray(0, 12); // ends mid-character
    const r = parseResume(Buffer.concat([good, partial]));
    expect([...r.done]).toEqual(['日本.jpg', 'b c.png']);
    expect(r.validBytes).toBe(good.length);
  });

  it('skips blank lines', () => {
    const text = '{"image":"a.jpg","caption":"x"}\n\n{"image":"b.jpg","caption":"y"}\n';
    expect(parseResume(Buffer.from(text))).toEqual({ done: new Set(['a.jpg', 'b.jpg']), validBytes: Buffer.byteLength(text) });
  });
});
