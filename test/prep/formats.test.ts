import { describe, expect, it } from 'vitest';
import { DataError } from '../../src/errors.js';
import { parseCsv } from '../../src/prep/csv.js';
import { parseCaptionCsv, parseCoco, parseFlickr30kCsv, parseFlickr8k, parseKarpathy } from '../../src/prep/formats.js';

const captionsOf = (p: { images: { image: string; captions: string[] }[] }) =>
  Object.fromEntries(p.images.map((i) => [i.image, i.captions]));

describe('parseCsv', () => {
  it('handles quotes, doubled quotes, commas and line breaks in quotes, CRLF, blank lines', () => {
    const text = 'a,b\r\n1,"x, y"\r\n\r\n2,"say ""hi"""\n3,"two\nlines"\n4,plain "quote" inside\n';
    const r = parseCsv(text, 'f.csv');
    expect(r).toEqual([
      { fields: ['a', 'b'], line: 1 },
      { fields: ['1', 'x, y'], line: 2 },
      { fields: ['2', 'say "hi"'], line: 4 },
      { fields: ['3', 'two\nlines'], line: 5 },
      { fields: ['4', 'plain "quote" inside'], line: 7 },
    ]);
  });
  it('keeps empty fields and handles a last line without newline', () => {
    expect(parseCsv('a,,c', 'f')).toEqual([{ fields: ['a', '', 'c'], line: 1 }]);
  });
  it('reports an unterminated quote and junk after a closing quote with file:line', () => {
    expect(() => parseCsv('a,b\n1,"open\n', 'f.csv')).toThrow('f.csv:2: unterminated quoted field');
    expect(() => parseCsv('a,b\n1,"x"y\n', 'f.csv')).toThrow(/^f\.csv:2: unexpected "y" after a closing quote/);
  });
});

describe('flickr8k', () => {
  it('parses image#N<TAB>caption, groups by image, tolerates CRLF and blank lines', () => {
    const text = 'a.jpg#0\tA dog runs .\r\na.jpg#1\tA dog .\r\n\r\nb.jpg#0\tA cat\r\nc.jpg.1#0\tquirk key\n';
    const p = parseFlickr8k(text, 'tok.txt');
    expect(p.captions).toBe(4);
    expect(captionsOf(p)).toEqual({
      'a.jpg': ['A dog runs .', 'A dog .'],
      'b.jpg': ['A cat'],
      'c.jpg.1': ['quirk key'],
    });
    expect(p.images[0].file).toBe('a.jpg');
  });
  it('keeps # inside names that are not followed by a number, and accepts lines without #N', () => {
    const p = parseFlickr8k('x#y.jpg\tcap\nz.jpg#2\tcap2\n', 't');
    expect(p.images.map((i) => i.image)).toEqual(['x#y.jpg', 'z.jpg']);
  });
  it('a line without a tab is a DataError naming file:line', () => {
    const text = 'a.jpg#0\tok\na.jpg#1 no tab here\n';
    expect(() => parseFlickr8k(text, 'tok.txt')).toThrow(DataError);
    expect(() => parseFlickr8k(text, 'tok.txt')).toThrow(/^tok\.txt:2: expected "image\.jpg#N<TAB>caption"/);
  });
});

describe('flickr8k: inconsistent lines are warnings with file:line', () => {
  it('a repeated line is left out; a repeated #N with another caption is kept; both warn', () => {
    const p = parseFlickr8k('a.jpg#0\tA dog .\na.jpg#1\tA cat .\na.jpg#0\tA dog .\na.jpg#1\tA bird .\n', 'tok.txt');
    expect(captionsOf(p)).toEqual({ 'a.jpg': ['A dog .', 'A cat .', 'A bird .'] });
    expect(p.captions).toBe(3);
    expect(p.warnings).toEqual([
      'tok.txt:3: "a.jpg#0" repeats tok.txt:1 with the same caption; the repeat is left out',
      'tok.txt:4: caption number "a.jpg#1" is used again (first at tok.txt:2); both captions are kept',
    ]);
  });
  it('a non-numeric #x after the file extension is dropped from the name, with a warning', () => {
    const p = parseFlickr8k('a.jpg#x\tA dog .\na.jpg#1\tA cat .\nb.jpg#\tA bird .\nx#y.jpg\tkept\n', 'tok.txt');
    expect(captionsOf(p)).toEqual({ 'a.jpg': ['A dog .', 'A cat .'], 'b.jpg': ['A bird .'], 'x#y.jpg': ['kept'] });
    expect(p.warnings).toEqual([
      'tok.txt:1: "#x" after the image name is not a caption number; read as image "a.jpg"',
      'tok.txt:3: "#" after the image name is not a caption number; read as image "b.jpg"',
    ]);
  });
  it('clean files give no warnings', () => {
    expect(parseFlickr8k('a.jpg#0\tA\na.jpg#1\tB\n', 't').warnings).toEqual([]);
  });
});

describe('flickr30k-csv', () => {
  it('parses with a header, spaces after |, CRLF and a | inside the comment', () => {
    const text = 'image_name| comment_number| comment\r\n1.jpg| 0| A man .\r\n1.jpg| 1| A b|c\r\n2.jpg|0|No spaces\r\n';
    const p = parseFlickr30kCsv(text, 'r.csv');
    expect(captionsOf(p)).toEqual({ '1.jpg': ['A man .', 'A b|c'], '2.jpg': ['No spaces'] });
  });
  it('parses without a header', () => {
    expect(parseFlickr30kCsv('1.jpg|0|x\n', 'r').captions).toBe(1);
  });
  it('recovers the known Kaggle slip "name| 4   comment"', () => {
    const p = parseFlickr30kCsv(
      'image_name| comment_number| comment\n2199200615.jpg| 4   A dog runs across the grass .\n',
      'r.csv',
    );
    expect(captionsOf(p)).toEqual({ '2199200615.jpg': ['A dog runs across the grass .'] });
  });
  it('reports malformed lines with file:line', () => {
    expect(() => parseFlickr30kCsv('image_name|comment_number|comment\n1.jpg|0|ok\njunk\n', 'r.csv')).toThrow(
      /^r\.csv:3: expected "image_name\|comment_number\|comment"/,
    );
    expect(() => parseFlickr30kCsv('1.jpg|x|cap\n', 'r.csv')).toThrow(/^r\.csv:1: comment_number must be a number/);
  });
});

describe('csv', () => {
  it('parses image,caption with quoted commas and a BOM', () => {
    const text = '\ufeffimage,caption\n1.jpg,A dog .\n1.jpg,"A dog, a cat ."\n2.jpg,"He said ""hi"""\n';
    const p = parseCaptionCsv(text, 'c.txt');
    expect(captionsOf(p)).toEqual({ '1.jpg': ['A dog .', 'A dog, a cat .'], '2.jpg': ['He said "hi"'] });
  });
  it('takes surplus unquoted commas as part of a last caption column', () => {
    expect(captionsOf(parseCaptionCsv('image,caption\n1.jpg,a, b, c\n', 'c'))).toEqual({ '1.jpg': ['a, b, c'] });
  });
  it('finds the columns by header name', () => {
    expect(captionsOf(parseCaptionCsv('caption,id,image\n"x, y",7,1.jpg\n', 'c'))).toEqual({ '1.jpg': ['x, y'] });
  });
  it('reports a bad header and short rows with file:line', () => {
    expect(() => parseCaptionCsv('file,text\n1.jpg,x\n', 'c.txt')).toThrow(
      /^c\.txt:1: expected a header with "image" and "caption"/,
    );
    expect(() => parseCaptionCsv('image,caption\n1.jpg,x\n2.jpg\n', 'c.txt')).toThrow(/^c\.txt:3: expected 2 fields/);
  });
});

describe('karpathy', () => {
  const doc = {
    images: [
      {
        filename: 'b.jpg',
        split: 'train',
        sentences: [{ raw: 'B one .', tokens: ['b', 'one'] }, { tokens: ['b', 'two'] }],
      },
      { filename: 'a.jpg', split: 'restval', sentences: [{ raw: 'A .' }] },
      { filename: 'COCO_val2014_1.jpg', filepath: 'val2014', split: 'val', sentences: [{ raw: 'C .' }] },
      { filename: 't.jpg', split: 'test', sentences: [{ raw: 'T .' }] },
    ],
  };
  it('reads filename, split (restval = train), raw (or tokens), and filepath/filename', () => {
    const p = parseKarpathy(JSON.stringify(doc), 'k.json');
    expect(p.images.map((i) => [i.image, i.file, i.split, i.captions])).toEqual([
      ['b.jpg', 'b.jpg', 'train', ['B one .', 'b two']],
      ['a.jpg', 'a.jpg', 'train', ['A .']],
      ['COCO_val2014_1.jpg', 'val2014/COCO_val2014_1.jpg', 'val', ['C .']],
      ['t.jpg', 't.jpg', 'test', ['T .']],
    ]);
  });
  it('reports bad documents with the JSON path', () => {
    expect(() => parseKarpathy('{', 'k.json')).toThrow(/^k\.json: not valid JSON/);
    expect(() => parseKarpathy('{"images": [{"filename": "a", "split": "dev", "sentences": []}]}', 'k.json')).toThrow(
      /^k\.json: images\[0\]: "split" must be one of/,
    );
    expect(() => parseKarpathy('[]', 'k.json')).toThrow(/not a Karpathy split file/);
  });
});

describe('coco: a repeated image id', () => {
  it('keeps the first image entry and warns, instead of moving its captions to the other file', () => {
    const doc = {
      images: [
        { id: 1, file_name: 'one.jpg' },
        { id: 2, file_name: 'two.jpg' },
        { id: 1, file_name: 'other.jpg' },
        { id: 2, file_name: 'two.jpg' },
      ],
      annotations: [
        { image_id: 1, caption: 'A dog .' },
        { image_id: 2, caption: 'A cat .' },
      ],
    };
    const p = parseCoco(JSON.stringify(doc), 'c.json');
    expect(captionsOf(p)).toEqual({ 'one.jpg': ['A dog .'], 'two.jpg': ['A cat .'] });
    // an exact repeat of an entry is harmless and not reported
    expect(p.warnings).toEqual([
      'c.json: images[2]: image id 1 is used again (first at c.json: images[0], "one.jpg"); this entry, "other.jpg", is ignored and gets no captions',
    ]);
  });
});

describe('coco', () => {
  const doc = {
    images: [
      { id: 1, file_name: '000001.jpg', coco_url: 'http://images.cocodataset.org/val2017/000001.jpg' },
      { id: 2, file_name: '000002.jpg' },
      { id: 3, file_name: '000003.jpg' },
    ],
    annotations: [
      { image_id: 2, id: 10, caption: 'Two .\n' },
      { image_id: 1, id: 11, caption: 'One .' },
      { image_id: 2, id: 12, caption: ' Two again .' },
    ],
  };
  it('groups annotations by image file name, trims captions, remembers the split and the url folder', () => {
    const p = parseCoco(JSON.stringify(doc), 'c.json', 'val');
    expect(p.captions).toBe(3);
    expect(p.images.map((i) => [i.image, i.captions, i.split, i.alt])).toEqual([
      ['000002.jpg', ['Two .', 'Two again .'], 'val', undefined],
      ['000001.jpg', ['One .'], 'val', ['val2017/000001.jpg']],
    ]);
  });
  it('reports an annotation for an unknown image', () => {
    const bad = { images: [], annotations: [{ image_id: 9, caption: 'x' }] };
    expect(() => parseCoco(JSON.stringify(bad), 'c.json')).toThrow(
      'c.json: annotations[0]: image_id 9 is not in "images"',
    );
  });
});
