// A small RFC 4180 CSV reader (pure): quoted fields with "" escapes, commas and line breaks inside
// quotes, CRLF or LF. Lenient where real caption files are sloppy: a quote inside an unquoted field
// is a literal character. Records carry the 1-based line they start on, for `file:line:` messages.
import { DataError } from '../errors.js';

export interface CsvRecord {
  fields: string[];
  line: number;
}

/** Split `text` into records. Blank lines are skipped. Throws DataError on an unterminated quote. */
export function parseCsv(text: string, file: string, delimiter = ','): CsvRecord[] {
  const records: CsvRecord[] = [];
  const n = text.length;
  let i = 0;
  let line = 1;
  while (i < n) {
    const startLine = line;
    const fields: string[] = [];
    let field = '';
    let blank = true;
    // one record
    for (;;) {
      if (i < n && text[i] === '"' && field === '') {
        // quoted field
        blank = false;
        i++;
        for (;;) {
          if (i >= n) throw new DataError(`${file}:${startLine}: unterminated quoted field`);
          const c = text[i];
          if (c === '"') {
            if (text[i + 1] === '"') {
              field += '"';
              i += 2;
              continue;
            }
            i++;
            break;
          }
          if (c === '\n') line++;
          field += c;
          i++;
        }
        // after the closing quote: spaces are tolerated before a delimiter or the end of the line
        while (i < n && (text[i] === ' ' || text[i] === '\t') && text[i] !== delimiter) i++;
        if (i < n && text[i] !== delimiter && text[i] !== '\n' && text[i] !== '\r') {
          throw new DataError(
            `${file}:${line}: unexpected ${JSON.stringify(text[i])} after a closing quote (a quote inside a quoted field must be doubled: "")`,
          );
        }
      }
      // unquoted run up to a delimiter or the end of the line
      while (i < n) {
        const c = text[i];
        if (c === delimiter || c === '\n' || c === '\r') break;
        field += c;
        i++;
      }
      if (field !== '') blank = false;
      fields.push(field);
      field = '';
      if (i < n && text[i] === delimiter) {
        blank = false;
        i++;
        continue;
      }
      // end of line (CRLF, LF or a lone CR) or of text
      if (i < n && text[i] === '\r') i++;
      if (i < n && text[i] === '\n') i++;
      line++;
      break;
    }
    if (!blank) records.push({ fields, line: startLine });
  }
  return records;
}
