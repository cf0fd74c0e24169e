// A small, bounded multipart/form-data parser (RFC 7578) over a body already held in memory.
// The server caps the body at serve.maxUploadBytes before it gets here, so buffering is bounded;
// this file bounds the rest (number of parts, header sizes) and never converts file data to text,
// so binary uploads come out byte for byte. Pure: no I/O.

export interface Part {
  /** The form field name (Content-Disposition name=...). */
  name: string;
  /** The client's file name, when the part is a file. */
  filename?: string;
  /** The part's Content-Type, lowercased, when given. */
  contentType?: string;
  /** The part's bytes: a view into the request body, not a copy. */
  data: Buffer;
}

export class MultipartError extends Error {}

export interface MultipartLimits {
  /** Most parts accepted in one body. */
  maxParts: number;
  /** Most bytes in one part's header block. */
  maxHeaderBytes: number;
}

export const DEFAULT_LIMITS: MultipartLimits = { maxParts: 16, maxHeaderBytes: 8 * 1024 };

/**
 * The boundary of a `multipart/form-data; boundary=...` Content-Type header, or null when the header
 * is not multipart/form-data. Throws MultipartError when it is multipart but the boundary is unusable.
 */
export function multipartBoundary(contentType: string | undefined): string | null {
  if (!contentType) return null;
  const [type, ...params] = splitParams(contentType);
  if (type.toLowerCase() !== 'multipart/form-data') return null;
  const boundary = params.find(([k]) => k === 'boundary')?.[1];
  if (!boundary) throw new MultipartError('multipart/form-data without a boundary');
  // RFC 2046: 1..70 characters, and it may not end with a space
  if (boundary.length > 70 || boundary.endsWith(' ')) throw new MultipartError('multipart boundary is not valid');
  return boundary;
}

const CRLF = Buffer.from('\r\n');
const HEADER_END = Buffer.from('\r\n\r\n');

/** Split a body into its parts. Throws MultipartError on anything malformed. */
export function parseMultipart(body: Buffer, boundary: string, limits: MultipartLimits = DEFAULT_LIMITS): Part[] {
  const dash = Buffer.from(`--${boundary}`, 'latin1');
  const delimiter = Buffer.from(`\r\n--${boundary}`, 'latin1');
  // The first boundary is at the very start or after a preamble that ends with CRLF.
  let pos: number;
  if (body.subarray(0, dash.length).equals(dash)) pos = dash.length;
  else {
    const at = body.indexOf(delimiter);
    if (at < 0) throw new MultipartError('multipart body has no boundary');
    pos = at + delimiter.length;
  }
  const parts: Part[] = [];
  for (;;) {
    // After a boundary: "--" closes the body; otherwise optional transport padding, then CRLF.
    if (body[pos] === 0x2d && body[pos + 1] === 0x2d) return parts;
    while (body[pos] === 0x20 || body[pos] === 0x09) pos++;
    if (body[pos] !== 0x0d || body[pos + 1] !== 0x0a)
      throw new MultipartError('multipart boundary is not followed by a line break');
    pos += 2;
    if (parts.length >= limits.maxParts)
      throw new MultipartError(`multipart body has more than ${limits.maxParts} parts`);

    // Header block (may be empty: then the CRLF CRLF starts right at pos - 2).
    let headerEnd: number;
    let headerText: string;
    if (body[pos] === 0x0d && body[pos + 1] === 0x0a) {
      headerText = '';
      headerEnd = pos + 2;
    } else {
      const searchEnd = Math.min(body.length, pos + limits.maxHeaderBytes + HEADER_END.length);
      const at = body.subarray(0, searchEnd).indexOf(HEADER_END, pos);
      if (at < 0) {
        throw new MultipartError(
          searchEnd < body.length
            ? `multipart part headers are longer than ${limits.maxHeaderBytes} bytes`
            : 'multipart part headers are not terminated',
        );
      }
      headerText = body.toString('utf8', pos, at);
      headerEnd = at + HEADER_END.length;
    }
    const headers = parseHeaders(headerText);

    const next = body.indexOf(delimiter, headerEnd);
    if (next < 0) throw new MultipartError('multipart body ends before its closing boundary');
    const disposition = headers.get('content-disposition');
    if (!disposition) throw new MultipartError('multipart part has no Content-Disposition header');
    const [dispType, ...params] = splitParams(disposition);
    if (dispType.toLowerCase() !== 'form-data')
      throw new MultipartError(`multipart part has Content-Disposition "${dispType}", expected form-data`);
    const name = params.find(([k]) => k === 'name')?.[1];
    if (name === undefined) throw new MultipartError('multipart part has no field name');
    const filename = params.find(([k]) => k === 'filename')?.[1];
    const ct = headers.get('content-type');
    parts.push({
      name,
      ...(filename !== undefined ? { filename } : {}),
      ...(ct ? { contentType: ct.toLowerCase() } : {}),
      data: body.subarray(headerEnd, next),
    });
    pos = next + delimiter.length;
  }
}

/** "Name: value" lines into a map with lowercased names. */
function parseHeaders(text: string): Map<string, string> {
  const out = new Map<string, string>();
  if (!text) return out;
  for (const line of text.split(CRLF.toString())) {
    const colon = line.indexOf(':');
    if (colon <= 0)
      throw new MultipartError(`multipart part header is malformed: ${JSON.stringify(line.slice(0, 60))}`);
    out.set(line.slice(0, colon).trim().toLowerCase(), line.slice(colon + 1).trim());
  }
  return out;
}

/**
 * `type; a=1; b="x;y"` into ['type', ['a','1'], ['b','x;y']]. Parameter names are lowercased; quoted
 * values may contain ; and backslash escapes.
 */
export function splitParams(header: string): [string, ...[string, string][]] {
  const semi = header.indexOf(';');
  const type = (semi < 0 ? header : header.slice(0, semi)).trim();
  const params: [string, string][] = [];
  let i = semi < 0 ? header.length : semi + 1;
  while (i < header.length) {
    while (i < header.length && (header[i] === ' ' || header[i] === '\t' || header[i] === ';')) i++;
    if (i >= header.length) break;
    const eq = header.indexOf('=', i);
    if (eq < 0) break;
    const key = header.slice(i, eq).trim().toLowerCase();
    i = eq + 1;
    let value = '';
    if (header[i] === '"') {
      i++;
      while (i < header.length && header[i] !== '"') {
        if (header[i] === '\\' && i + 1 < header.length) i++;
        value += header[i++];
      }
      i++; // closing quote
      while (i < header.length && header[i] !== ';') i++;
    } else {
      const end = header.indexOf(';', i);
      value = header.slice(i, end < 0 ? header.length : end).trim();
      i = end < 0 ? header.length : end;
    }
    params.push([key, value]);
  }
  return [type, ...params];
}
