// Every link in README.md and docs/ must work, on GitHub and in the npm package read offline: relative links
// name files that exist and that the package ships, #anchors name a heading of the target page (by
// GitHub's slug rule), and external links are well-formed URLs (they are not fetched: tests stay offline).
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { repoRoot } from '../helpers/cli.js';
import { anchors, links, slug } from './markdown.js';

/** README.md and every markdown page under docs/, relative to the repository root. */
function pages(): string[] {
  const docs = readdirSync(path.join(repoRoot, 'docs'), { recursive: true, encoding: 'utf8' })
    .filter((f) => f.endsWith('.md'))
    .map((f) => path.posix.join('docs', f.split(path.sep).join('/')))
    .sort();
  return ['README.md', ...docs];
}

const read = (rel: string) => readFileSync(path.join(repoRoot, rel), 'utf8');

/** The plain entries of package.json `files` ("docs/", "README.md"): what a link may point into. */
function shipped(): string[] {
  const files: string[] = JSON.parse(read('package.json')).files;
  return files.filter((f) => !f.startsWith('!') && !/[*?]/.test(f));
}

/** Why an external link is malformed, or null. */
function badUrl(target: string): string | null {
  let url: URL;
  try {
    url = new URL(target);
  } catch {
    return 'not a valid URL';
  }
  if (url.protocol === 'mailto:')
    return /^[^@\s]+@[^@\s]+\.[^@\s]+$/.test(url.pathname) ? null : 'not an e-mail address';
  if (url.protocol !== 'https:' && url.protocol !== 'http:') return `scheme ${url.protocol} is not http(s) or mailto`;
  if (!url.hostname.includes('.')) return `host "${url.hostname}" has no domain`;
  return null;
}

/** Every broken link of one page, as `page:line: target: why`. */
function problems(page: string, anchorsOf: (rel: string) => Set<string>, ship: string[]): string[] {
  const out: string[] = [];
  for (const { target, line } of links(read(page))) {
    const fail = (why: string) => out.push(`${page}:${line}: ${target}: ${why}`);
    if (target === '') {
      fail('empty link');
      continue;
    }
    if (/^[a-z][a-z0-9+.-]*:/i.test(target)) {
      const why = badUrl(target);
      if (why) fail(why);
      continue;
    }
    const hash = target.indexOf('#');
    const file = hash < 0 ? target : target.slice(0, hash);
    const anchor = hash < 0 ? null : decodeURIComponent(target.slice(hash + 1));
    if (file.startsWith('/')) {
      fail('absolute path: use a path relative to the page');
      continue;
    }
    const rel =
      file === '' ? page : path.posix.normalize(path.posix.join(path.posix.dirname(page), decodeURIComponent(file)));
    if (rel.startsWith('../')) {
      fail('points outside the repository');
      continue;
    }
    if (!existsSync(path.join(repoRoot, rel))) {
      fail(`${rel} does not exist`);
      continue;
    }
    const relDir = statSync(path.join(repoRoot, rel)).isDirectory() ? rel.replace(/\/?$/, '/') : rel;
    if (!ship.some((s) => (s.endsWith('/') ? relDir.startsWith(s) : relDir === s))) {
      fail(`${rel} is not in the npm package (package.json "files"), so the link breaks for its readers`);
      continue;
    }
    if (anchor !== null) {
      if (!rel.endsWith('.md')) fail(`an #anchor into ${rel}, which is not a markdown page`);
      else if (!anchorsOf(rel).has(anchor)) fail(`${rel} has no heading with the anchor #${anchor}`);
    }
  }
  return out;
}

describe('links in README.md and docs/', () => {
  const cache = new Map<string, Set<string>>();
  const anchorsOf = (rel: string) => {
    if (!cache.has(rel)) cache.set(rel, anchors(read(rel)));
    return cache.get(rel)!;
  };

  it('all resolve: files exist and ship, anchors match a heading, external links are well-formed', () => {
    const ship = shipped();
    const all = pages().flatMap((p) => problems(p, anchorsOf, ship));
    expect(all).toEqual([]);
  });

  it('finds the links there are (a parser that sees none would pass anything)', () => {
    const found = pages().map((p) => [p, links(read(p)).length] as const);
    expect(found.length).toBeGreaterThan(10);
    expect(Object.fromEntries(found)['README.md']).toBeGreaterThan(20);
    expect(found.reduce((n, [, k]) => n + k, 0)).toBeGreaterThan(80);
  });

  it('README.md is a front door: under 300 lines, linking every page of docs/', () => {
    const readme = read('README.md');
    expect(readme.split('\n').length).toBeLessThan(300);
    const targets = new Set(links(readme).map((l) => l.target.split('#')[0]));
    for (const page of pages().filter((p) => p !== 'README.md')) expect(targets, page).toContain(page);
  });

  it('the npm package ships README.md and docs/', () => {
    expect(shipped()).toEqual(expect.arrayContaining(['README.md', 'docs/']));
  });
});

describe('GitHub heading anchors', () => {
  it('follow github-slugger: lowercase, punctuation dropped, spaces to hyphens', () => {
    expect(slug('Self-critical fine-tuning (SCST)')).toBe('self-critical-fine-tuning-scst');
    expect(slug('Backends: GPU and CPU')).toBe('backends-gpu-and-cpu');
    expect(slug('Real datasets: Flickr8k, Flickr30k, COCO')).toBe('real-datasets-flickr8k-flickr30k-coco');
    expect(slug('Why plain node:http')).toBe('why-plain-nodehttp');
    expect(slug('A -- B')).toBe('a----b');
    expect(slug('Über café 2')).toBe('über-café-2');
    expect(slug('top level')).toBe('top-level');
  });

  it('render inline markdown first: code keeps its text, links their text, emphasis goes', () => {
    expect(slug('`train.workers` and `block5_conv3`')).toBe('trainworkers-and-block5_conv3');
    expect(slug('The *Show, Attend and Tell* decoder')).toBe('the-show-attend-and-tell-decoder');
    expect(slug('_emphasis_ and snake_case')).toBe('emphasis-and-snake_case');
    expect(slug('See [the docs](docs/x.md)')).toBe('see-the-docs');
    expect(slug('Fish &amp; chips')).toBe('fish--chips');
  });

  it('number repeated headings, skip code blocks and take explicit anchors', () => {
    const page = [
      '# Title',
      '## Notes',
      '```sh',
      '# a comment, not a heading',
      '```',
      '## Notes',
      '<a id="custom"></a>',
      '##   Spaced out  ##',
    ].join('\n');
    expect([...anchors(page)].sort()).toEqual(['custom', 'notes', 'notes-1', 'spaced-out', 'title']);
  });
});

describe('the link finder', () => {
  it('finds inline links, images, reference definitions and autolinks, not code', () => {
    const page = [
      'See [a](docs/a.md#x) and ![img](pic.png "title") and [`code` text](b.md).',
      '[![badge](badge.svg)](https://example.com/ci)',
      '[ref]: https://example.com/ref',
      'Mail <mailto:someone@example.com>, `[not](a-link.md)`.',
      '~~~',
      '[not](in-a-fence.md)',
      '~~~',
    ].join('\n');
    expect(links(page)).toEqual([
      { target: 'docs/a.md#x', line: 1 },
      { target: 'pic.png', line: 1 },
      { target: 'b.md', line: 1 },
      { target: 'badge.svg', line: 2 },
      { target: 'https://example.com/ci', line: 2 },
      { target: 'https://example.com/ref', line: 3 },
      { target: 'mailto:someone@example.com', line: 4 },
    ]);
  });
});
