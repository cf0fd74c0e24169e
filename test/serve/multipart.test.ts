import { describe, expect, it } from 'vitest';
import { MultipartError, multipartBoundary, parseMultipart, splitParams } from '../../src/serve/multipart.js';

/** Encode a FormData the way a browser/undici would, returning the body and its boundary. */
async function encode(form: FormData): Promise<{ body: Buffer; boundary: string }> {
  const res = new Response(form);
  const boundary = multipartBoundary(res.headers.get('content-type') ?? '');
  if (!boundary) throw new Error('no boundary');
  return { body: Buffer.from(await res.arrayBuffer()), boundary };
}

const crlf = (s: string) => Buffer.from(s.replace(/\n/g, '\r\n'), 'latin1');

describe('multipartBoundary', () => {
  it('reads plain and quoted boundaries, ignores other types', () => {
    expect(multipartBoundary('multipart/form-data; boundary=abc')).toBe('abc');
    expect(multipartBoundary('Multipart/Form-Data; charset=utf-8; BOUNDARY="a;b c"')).toBe('a;b c');
    expect(multipartBoundary('image/png')).toBeNull();
    expect(multipartBoundary(undefined)).toBeNull();
    expect(() => multipartBoundary('multipart/form-data')).toThrow(MultipartError);
    expect(() => multipartBoundary(`multipart/form-data; boundary=${'x'.repeat(71)}`)).toThrow(MultipartError);
  });

  it('splitParams handles escapes and semicolons inside quotes', () => {
    expect(splitParams('form-data; name="image"; filename="a \\"b\\";c.png"')).toEqual([
      'form-data',
      ['name', 'image'],
      ['filename', 'a "b";c.png'],
    ]);
  });
});

describe('parseMultipart', () => {
  it('returns binary file data byte for byte, even when it looks like a boundary', async () => {
    // every byte value, CRLFs and dashes: things a sloppy parser would mangle
    const bin = Buffer.concat([
      Buffer.from(Array.from({ length: 256 }, (_, i) => i)),
      Buffer.from('\r\n--\r\n\r\n--x'),
      Buffer.from([0xff, 0xfe, 0x00]),
    ]);
    const form = new FormData();
    form.append('beam', '4');
    form.append('image', new Blob([bin], { type: 'image/png' }), 'pic "1".png');
    const { body, boundary } = await encode(form);
    const parts = parseMultipart(body, boundary);
    expect(parts.map((p) => p.name)).toEqual(['beam', 'image']);
    expect(parts[0].data.toString()).toBe('4');
    expect(parts[0].filename).toBeUndefined();
    expect(parts[1].contentType).toBe('image/png');
    expect(parts[1].filename).toBe('pic "1".png'.replace(/"/g, '%22')); // undici percent-encodes quotes
    expect(Buffer.compare(parts[1].data, bin)).toBe(0);
  });

  it('accepts a preamble, an empty part body, padding after the boundary and an epilogue', () => {
    const body = crlf(
      'preamble text\n--XX  \nContent-Disposition: form-data; name="a"\n\n\n--XX\nContent-Disposition: form-data; name="b"\nContent-Type: Text/Plain\n\nhello\n--XX--\nepilogue',
    );
    const parts = parseMultipart(body, 'XX');
    expect(parts.map((p) => [p.name, p.data.toString(), p.contentType])).toEqual([
      ['a', '', undefined],
      ['b', 'hello', 'text/plain'],
    ]);
  });

  it('throws MultipartError on malformed bodies', () => {
    const bad: [string, Buffer][] = [
      ['no boundary at all', crlf('just some bytes')],
      ['missing closing boundary', crlf('--XX\nContent-Disposition: form-data; name="a"\n\nhello')],
      ['unterminated headers', crlf('--XX\nContent-Disposition: form-data; name="a"')],
      ['no content-disposition', crlf('--XX\nContent-Type: image/png\n\nhello\n--XX--')],
      ['no field name', crlf('--XX\nContent-Disposition: form-data; filename="x"\n\nhello\n--XX--')],
      ['not form-data', crlf('--XX\nContent-Disposition: attachment; name="a"\n\nhello\n--XX--')],
      ['garbage after boundary', crlf('--XXjunk\nContent-Disposition: form-data; name="a"\n\nhello\n--XX--')],
      ['header line without colon', crlf('--XX\nContent-Disposition: form-data; name="a"\nbogus\n\nhello\n--XX--')],
      ['empty body', Buffer.alloc(0)],
    ];
    for (const [what, body] of bad) expect(() => parseMultipart(body, 'XX'), what).toThrow(MultipartError);
  });

  it('bounds the number of parts and the header size', () => {
    const many = crlf(
      Array.from({ length: 5 }, (_, i) => `--XX\nContent-Disposition: form-data; name="f${i}"\n\nv\n`).join('') +
        '--XX--',
    );
    expect(parseMultipart(many, 'XX', { maxParts: 5, maxHeaderBytes: 1024 })).toHaveLength(5);
    expect(() => parseMultipart(many, 'XX', { maxParts: 4, maxHeaderBytes: 1024 })).toThrow(/more than 4 parts/);
    const longHeader = crlf(`--XX\nContent-Disposition: form-data; name="a"; x="${'y'.repeat(2000)}"\n\nv\n--XX--`);
    expect(() => parseMultipart(longHeader, 'XX', { maxParts: 4, maxHeaderBytes: 1024 })).toThrow(/longer than 1024/);
  });
});
