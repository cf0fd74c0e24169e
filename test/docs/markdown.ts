// Just enough markdown for the link test: the anchors a page's headings get on GitHub, and the links and
// images a page holds, with their line numbers. Code (fenced blocks, inline spans) is skipped, as GitHub
// renders it as text. Headings are ATX only (`## Title`); the docs use no setext (underlined) headings.

export interface Link {
  /** The target as written: `docs/x.md#anchor`, `#anchor`, `https://...`. */
  target: string;
  /** 1-based line of the page. */
  line: number;
}

const FENCE = /^ {0,3}(`{3,}|~{3,})/;
const HEADING = /^ {0,3}(#{1,6})[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$/;

/** The page's lines with fenced code blocks blanked out (line numbers stay), and inline code spans too. */
function prose(markdown: string): string[] {
  let fence: string | null = null;
  return markdown.split('\n').map((line) => {
    const open = FENCE.exec(line);
    if (fence !== null) {
      if (open && open[1][0] === fence[0] && open[1].length >= fence.length && line.trim() === open[1]) fence = null;
      return '';
    }
    if (open) {
      fence = open[1];
      return '';
    }
    return line;
  });
}

/** `text` with each inline code span replaced by its content kind: `keep` keeps the content, else blanks it. */
function codeSpans(text: string, keep: boolean): string {
  return text.replace(/(`+)([\s\S]*?[^`])\1(?!`)/g, (_m, _ticks, body: string) =>
    keep ? body.trim() : ' '.repeat(body.length),
  );
}

const ENTITIES: Record<string, string> = { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'", nbsp: ' ' };

/**
 * The anchor GitHub gives a heading (github-slugger's rule): the rendered text, lowercased, with every
 * character that is not a letter, mark, digit, connector (`_`), space or hyphen removed, and each space
 * turned into a hyphen.
 */
export function slug(heading: string): string {
  // render the inline markdown to its text: code spans keep their content, links and images their text
  let text = '';
  for (const part of heading.split(/(`+[^`]*`+)/)) {
    if (part.startsWith('`')) {
      text += codeSpans(part, true);
      continue;
    }
    text += part
      .replace(/!?\[([^\]]*)\]\([^)]*\)/g, '$1')
      .replace(/<[^>]+>/g, '')
      .replace(/&(\w+);/g, (m, name: string) => ENTITIES[name] ?? m)
      .replace(/(^|[^\p{L}\p{N}])_+([^_]+?)_+(?=[^\p{L}\p{N}]|$)/gu, '$1$2')
      .replace(/\\(.)/g, '$1');
  }
  return text
    .toLowerCase()
    .replace(/[^\p{L}\p{M}\p{N}\p{Pc} -]/gu, '')
    .replace(/ /g, '-');
}

/** Every anchor of the page: heading slugs (repeats get -1, -2, ... as on GitHub) and explicit `<a id|name>`. */
export function anchors(markdown: string): Set<string> {
  const out = new Set<string>();
  const seen = new Map<string, number>();
  for (const line of prose(markdown)) {
    const h = HEADING.exec(line);
    if (h) {
      const base = slug(h[2]);
      const n = seen.get(base) ?? 0;
      seen.set(base, n + 1);
      out.add(n === 0 ? base : `${base}-${n}`);
    }
    for (const m of codeSpans(line, false).matchAll(/<a\s[^>]*\b(?:id|name)\s*=\s*"([^"]+)"/gi)) out.add(m[1]);
  }
  return out;
}

/** Every link and image target of the page: inline `[t](x)`, `![a](x)`, reference definitions, autolinks, HTML. */
export function links(markdown: string): Link[] {
  const out: Link[] = [];
  prose(markdown).forEach((raw, i) => {
    const line = codeSpans(raw, false);
    const add = (target: string) => out.push({ target, line: i + 1 });
    // [text](target "title"), and an image inside the text (a badge that links somewhere)
    const inline = (text: string) => {
      for (const m of text.matchAll(
        /\[((?:[^[\]]|\[[^\]]*\])*)\]\(\s*<?([^)\s>]*)>?(?:\s+(?:"[^"]*"|'[^']*'))?\s*\)/g,
      )) {
        inline(m[1]);
        add(m[2]);
      }
    };
    inline(line);
    const def = /^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$/.exec(line);
    if (def) add(def[1]);
    for (const m of line.matchAll(/<((?:https?|mailto):[^>\s]+)>/g)) add(m[1]);
    for (const m of line.matchAll(/<(?:a|img)\s[^>]*\b(?:href|src)\s*=\s*"([^"]*)"/gi)) add(m[1]);
  });
  return out;
}
