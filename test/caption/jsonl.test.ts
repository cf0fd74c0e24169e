import { describe, expect, it } from 'vitest';
import { parseResume } from '../../src/caption/jsonl.js';
import { DataError } from '../../src/errors.js';

const images = (r: ReturnType<typeof parseResume>) => ({ done: [...r.done], failed: [...r.failed] });

describe('parseResume', () => {
  it('tells captioned images (skipped) from failed ones (retried)', () => {
    const text = '{"image":"a.jpg","caption":"x","logprob":-1}\n{"image":"b.jpg","error":"corrupt"}\n';
    const r = parseResume(text);
    expect(images(r)).toEqual({ done: ['a.jpg'], failed: ['b.jpg'] });
    expect(r.validBytes).toBe(Buffer.byteLength(text));
    expect(r.lines.map((l) => [l.image, l.error])).toEqual([
      ['a.jpg', false],
      ['b.jpg', true],
    ]);
  });

  it('counts an image with a caption line as done, whatever error lines it also has', () => {
    const text = '{"image":"a.jpg","error":"corrupt"}\n{"image":"a.jpg","caption":"x","logprob":-1}\n';
    expect(images(parseResume(text))).toEqual({ done: ['a.jpg'], failed: [] });
  });

  it('tolerates a half-written last line and reports where complete lines end', () => {
    const good = '{"image":"é.jpg","caption":"x"}\n';
    const r = parseResume(good + '{"image":"c.jp');
    expect([...r.done]).toEqual(['é.jpg']);
    expect(r.validBytes).toBe(Buffer.byteLength(good));
    expect(parseResume(good + '{"im').validBytes).toBe(Buffer.byteLength(good));
  });

  it('refuses a corrupt line anywhere, naming the file and the line', () => {
    const good = '{"image":"a.jpg","caption":"x"}\n';
    expect(() => parseResume(good + 'garbage\n{"image":"b.jpg","caption":"y"}\n', 'out.jsonl')).toThrow(
      /^out\.jsonl: line 2: not a JSON line/,
    );
    expect(() => parseResume(good + 'garbage\n', 'out.jsonl')).toThrow(DataError);
    expect(() => parseResume(good + '{"a":1}\n', 'out.jsonl')).toThrow(/line 2: not a caption line/);
  });

  it('refuses a file that is not JSONL at all, even without any newline (an image given as --output)', () => {
    const jpeg = Buffer.from([0xff, 0xd8, 0xff, 0xe0, 0x00, 0x10, 0x4a, 0x46, 0x49, 0x46]);
    expect(() => parseResume(jpeg, 'x.jpg')).toThrow(/x\.jpg: line 1: the last line is neither/);
    expect(() => parseResume('image,caption', 'x.csv')).toThrow(/x\.csv: line 1/);
    expect(() => parseResume('{"image":"a\u0000', 'x')).toThrow(DataError);
  });

  it('handles empty input', () => {
    expect(parseResume('')).toEqual({ done: new Set(), failed: new Set(), validBytes: 0, lines: [] });
  });
});

describe('parseResume on raw bytes', () => {
  it('counts bytes, not characters, and ignores a last line cut inside a multi-byte character', () => {
    const good = Buffer.from(
      '{"image":"日本.jpg","caption":"x"}\n{"image":"b c.png","error":"empty file (0 bytes)"}\n',
    );
    const partial = Buffer.from('{"image":"日本2.jpg"').subarray(0, 12); // ends mid-character
    const r = parseResume(Buffer.concat([good, partial]));
    expect(images(r)).toEqual({ done: ['日本.jpg'], failed: ['b c.png'] });
    expect(r.validBytes).toBe(good.length);
  });

  it('skips blank lines', () => {
    const text = '{"image":"a.jpg","caption":"x"}\n\n{"image":"b.jpg","caption":"y"}\n';
    const r = parseResume(Buffer.from(text));
    expect(r.done).toEqual(new Set(['a.jpg', 'b.jpg']));
    expect(r.validBytes).toBe(Buffer.byteLength(text));
    expect(r.lines).toHaveLength(2);
  });
});
