// Escaping text for HTML and SVG (XML): the one escaper of the serve page, the eval report, the attention
// views and the loss chart.

const ENTITIES: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };

/** Escape text for HTML (or XML) element content and quoted attribute values: the five special characters. */
export function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => ENTITIES[c]!);
}

/** Escape text for SVG: as escapeHtml, and characters XML 1.0 cannot hold (controls, lone surrogates) become U+FFFD. */
export function escapeXml(s: string): string {
  return escapeHtml(
    s.replace(
      /[\u0000-\u0008\u000B\u000C\u000E-\u001F\uFFFE\uFFFF]|[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g,
      '\uFFFD',
    ),
  );
}
