// The built-in demo dataset's pure core (no I/O): seeded scenes, five different captions per scene that
// describe what is drawn, the SVG that draws it, the train/val/test split and the Flickr8k-format text
// files. Rendering lives in demo.ts. Two scene kinds:
//   single  one or two coloured shapes; captions name colour, shape, size and position (the default);
//   multi   two or three shapes on a 3x3 grid; captions name counts ("two green triangles") and spatial
//           relations ("a red circle to the left of a blue square"), computed from the drawn geometry.
import { pick, rng, shuffleInPlace, type Rng } from '../util/random.js';

/** demo-data's defaults (here, in the pure core, so `demo-data --help` loads no renderer). */
export const DEMO_DEFAULTS = { images: 1000, seed: 1, size: 224, scenes: 'single' } as const;

/** Bump when scenes, captions or drawing change, so cached datasets are re-rendered. */
export const DEMO_VERSION = 1;

export type Rgb = readonly [number, number, number];

/** Saturated, clearly distinct colours (random VGG16 features carry colour best). */
export const DEMO_COLOURS = {
  red: [215, 35, 35],
  green: [30, 150, 45],
  blue: [35, 70, 215],
  yellow: [240, 205, 25],
  purple: [135, 45, 185],
  orange: [245, 125, 20],
} as const satisfies Record<string, Rgb>;
export type ColourName = keyof typeof DEMO_COLOURS;
export const COLOUR_NAMES = Object.keys(DEMO_COLOURS) as ColourName[];

export const SHAPE_NAMES = ['circle', 'square', 'triangle', 'star', 'diamond'] as const;
export type ShapeName = (typeof SHAPE_NAMES)[number];

export type SizeName = 'small' | 'large';
export type Position = 'left' | 'right' | 'top' | 'bottom' | 'center';
export const POSITIONS: readonly Position[] = ['left', 'right', 'top', 'bottom', 'center'];

/** Light background colours: far from every shape colour. */
export const BACKGROUND_COLOURS: readonly Rgb[] = [
  [245, 245, 242],
  [236, 240, 246],
  [246, 239, 228],
  [233, 243, 233],
  [243, 236, 243],
  [226, 226, 226],
];

export interface DemoShape {
  shape: ShapeName;
  colour: ColourName;
  size: SizeName;
  /** Centre and radius (half extent) as fractions of the image side. */
  cx: number;
  cy: number;
  r: number;
  /** Degrees; small tilts only (a square never turns into a diamond). */
  rotation: number;
  /** The drawn colour: the named colour with a little jitter. */
  fill: Rgb;
}

export type Background =
  | { kind: 'plain'; colour: Rgb }
  | { kind: 'gradient'; from: Rgb; to: Rgb; angle: number }
  | { kind: 'noise'; colour: Rgb; frequency: number; seed: number; opacity: number };

/** What the pictures hold: see the header. */
export type SceneKind = 'single' | 'multi';
export const SCENE_KINDS: readonly SceneKind[] = ['single', 'multi'];

export type Layout =
  | { kind: 'single'; position: Position }
  | { kind: 'pair'; axis: 'horizontal' | 'vertical' }
  /** A multi scene: `groups[g]` shapes share colour g's colour and shape (distinct groups, distinct colours). */
  | { kind: 'multi'; groups: number[] };

export interface DemoScene {
  index: number;
  layout: Layout;
  /** single: one shape, or two (the first is the left (horizontal) or top (vertical) one). multi: 2-3, group by group. */
  shapes: DemoShape[];
  background: Background;
}

/** A 32-bit seed for image `index` of dataset `seed`: scene i does not depend on how many images are made. */
export function sceneSeed(seed: number, index: number): number {
  let h = Math.imul((seed >>> 0) ^ 0x9e3779b9, 0x85ebca6b) ^ Math.imul(index + 1, 0xc2b2ae35);
  h ^= h >>> 16;
  h = Math.imul(h, 0x7feb352d);
  h ^= h >>> 15;
  h = Math.imul(h, 0x846ca68b);
  h ^= h >>> 16;
  return h >>> 0;
}

const between = (r: Rng, lo: number, hi: number) => lo + (hi - lo) * r();
const clamp255 = (v: number) => Math.max(0, Math.min(255, Math.round(v)));
const jitter = (r: Rng, c: Rgb, amount: number): Rgb => [
  clamp255(c[0] + between(r, -amount, amount)),
  clamp255(c[1] + between(r, -amount, amount)),
  clamp255(c[2] + between(r, -amount, amount)),
];

function makeShape(
  r: Rng,
  colour: ColourName,
  cx: number,
  cy: number,
  big: { small: [number, number]; large: [number, number] },
): DemoShape {
  const shape = pick(r, SHAPE_NAMES);
  const size: SizeName = r() < 0.5 ? 'small' : 'large';
  const radius = between(r, ...big[size]);
  const rotation = shape === 'circle' || shape === 'diamond' ? 0 : Math.round(between(r, -12, 12));
  return { shape, colour, size, cx, cy, r: radius, rotation, fill: jitter(r, DEMO_COLOURS[colour], 12) };
}

function makeBackground(r: Rng): Background {
  const u = r();
  const base = jitter(r, pick(r, BACKGROUND_COLOURS), 5);
  if (u < 0.4) return { kind: 'plain', colour: base };
  if (u < 0.7)
    return {
      kind: 'gradient',
      from: base,
      to: jitter(r, pick(r, BACKGROUND_COLOURS), 5),
      angle: Math.round(between(r, 0, 360)),
    };
  return {
    kind: 'noise',
    colour: base,
    frequency: Number(between(r, 0.04, 0.12).toFixed(3)),
    seed: Math.floor(r() * 1000),
    opacity: Number(between(r, 0.15, 0.3).toFixed(2)),
  };
}

/** The scene for image `index` of the dataset made with `seed`. */
export function makeScene(seed: number, index: number, kind: SceneKind = 'single'): DemoScene {
  if (kind === 'multi') return makeMultiScene(seed, index);
  const r = rng(sceneSeed(seed, index));
  const background = makeBackground(r);
  if (r() < 0.5) {
    // one shape, placed in one of five regions (centre jittered a little)
    const position = pick(r, POSITIONS);
    const off = 0.28;
    const [bx, by] = {
      left: [off, 0.5],
      right: [1 - off, 0.5],
      top: [0.5, off],
      bottom: [0.5, 1 - off],
      center: [0.5, 0.5],
    }[position];
    const cx = bx + between(r, -0.03, 0.03);
    const cy = by + between(r, -0.03, 0.03);
    const shape = makeShape(r, pick(r, COLOUR_NAMES), cx, cy, { small: [0.12, 0.14], large: [0.2, 0.23] });
    return { index, layout: { kind: 'single', position }, shapes: [shape], background };
  }
  // two shapes of different colours, side by side or one above the other; they never overlap
  const axis = r() < 0.5 ? 'horizontal' : 'vertical';
  const c1 = pick(r, COLOUR_NAMES);
  const c2 = pick(
    r,
    COLOUR_NAMES.filter((c) => c !== c1),
  );
  const along = [0.27 + between(r, -0.02, 0.02), 0.73 + between(r, -0.02, 0.02)];
  const across = [0.5 + between(r, -0.12, 0.12), 0.5 + between(r, -0.12, 0.12)];
  const sizes = { small: [0.11, 0.13] as [number, number], large: [0.17, 0.19] as [number, number] };
  const shapes = [c1, c2].map((c, i) =>
    axis === 'horizontal' ? makeShape(r, c, along[i], across[i], sizes) : makeShape(r, c, across[i], along[i], sizes),
  );
  return { index, layout: { kind: 'pair', axis }, shapes, background };
}

// ---------------------------------------------------------------- multi scenes

/** Group sizes of a multi scene, and how often each is drawn. */
const MULTI_PATTERNS: readonly { groups: number[]; weight: number }[] = [
  { groups: [1, 1], weight: 0.25 },
  { groups: [2], weight: 0.15 },
  { groups: [1, 1, 1], weight: 0.2 },
  { groups: [2, 1], weight: 0.25 },
  { groups: [3], weight: 0.15 },
];
/** Radii of multi-scene shapes: every shape (jitter included) stays inside its third of the image. */
export const MULTI_SIZES: Record<SizeName, [number, number]> = { small: [0.075, 0.085], large: [0.115, 0.125] };
const MULTI_JITTER = 0.02;

/** How far a shape reaches from its centre, rotation and star points included (fraction of the side). */
export const extent = (s: Pick<DemoShape, 'r'>) => s.r * 1.05;

/** A caption says "left of" / "above" only when this much empty space separates the two shapes' extents. */
export const RELATION_MARGIN = 0.02;

export type Relation = 'left' | 'right' | 'above' | 'below';

/** Every relation `a` has to `b`, read off the drawn positions: "a is left of b" means a gap of at least
 *  RELATION_MARGIN between a's rightmost and b's leftmost reach (so they never share a column). */
export function relationsOf(a: DemoShape, b: DemoShape): Relation[] {
  const gap = extent(a) + extent(b) + RELATION_MARGIN;
  const out: Relation[] = [];
  if (b.cx - a.cx >= gap) out.push('left');
  if (a.cx - b.cx >= gap) out.push('right');
  if (b.cy - a.cy >= gap) out.push('above');
  if (a.cy - b.cy >= gap) out.push('below');
  return out;
}

/** The scene for image `index` of a multi dataset: 2-3 shapes in distinct cells of a 3x3 grid (so they never overlap). */
function makeMultiScene(seed: number, index: number): DemoScene {
  const r = rng(sceneSeed(seed ^ 0x3c6ef372, index));
  const background = makeBackground(r);
  let u = r();
  const pattern = MULTI_PATTERNS.find((p) => (u -= p.weight) < 0) ?? MULTI_PATTERNS[MULTI_PATTERNS.length - 1];
  const n = pattern.groups.reduce((a, b) => a + b, 0);
  const cells = shuffleInPlace([0, 1, 2, 3, 4, 5, 6, 7, 8], r).slice(0, n);
  const colours = shuffleInPlace([...COLOUR_NAMES], r);
  const shapes: DemoShape[] = [];
  pattern.groups.forEach((count, g) => {
    const shape = pick(r, SHAPE_NAMES);
    for (let k = 0; k < count; k++) {
      const cell = cells[shapes.length];
      const cx = ((cell % 3) + 0.5) / 3 + between(r, -MULTI_JITTER, MULTI_JITTER);
      const cy = (Math.floor(cell / 3) + 0.5) / 3 + between(r, -MULTI_JITTER, MULTI_JITTER);
      const size: SizeName = r() < 0.5 ? 'small' : 'large';
      const radius = between(r, ...MULTI_SIZES[size]);
      const rotation = shape === 'circle' || shape === 'diamond' ? 0 : Math.round(between(r, -12, 12));
      shapes.push({
        shape,
        colour: colours[g],
        size,
        cx,
        cy,
        r: radius,
        rotation,
        fill: jitter(r, DEMO_COLOURS[colours[g]], 12),
      });
    }
  });
  return { index, layout: { kind: 'multi', groups: [...pattern.groups] }, shapes, background };
}

// ---------------------------------------------------------------- captions

const article = (word: string) => (/^[aeiou]/.test(word) ? 'an' : 'a');

/** "a red circle" / "a large red circle" / "an orange star". */
export function nounPhrase(
  s: Pick<DemoShape, 'shape' | 'colour' | 'size'>,
  withSize: boolean,
  sizeWord: string = s.size,
): string {
  const words = withSize ? [sizeWord, s.colour, s.shape] : [s.colour, s.shape];
  return `${article(words[0])} ${words.join(' ')}`;
}

const POSITION_PHRASES: Record<Position, string[]> = {
  left: ['on the left'],
  right: ['on the right'],
  top: ['at the top'],
  bottom: ['at the bottom'],
  center: ['in the center', 'in the middle'],
};

const SIZE_SYNONYMS: Record<SizeName, string[]> = {
  small: ['small', 'small', 'little'],
  large: ['large', 'large', 'big'],
};

/** Every caption template for a scene (one wording each, synonyms drawn from `r`). */
export function captionCandidates(scene: DemoScene, r: Rng): string[] {
  const sz = (s: DemoShape) => pick(r, SIZE_SYNONYMS[s.size]);
  const np = (s: DemoShape, withSize: boolean) => nounPhrase(s, withSize, sz(s));
  if (scene.layout.kind === 'multi') return multiCaptionFamilies(scene, r).flat();
  if (scene.layout.kind === 'single') {
    const s = scene.shapes[0];
    const pos = () => pick(r, POSITION_PHRASES[(scene.layout as { position: Position }).position]);
    return [
      `${np(s, true)} ${pos()}`,
      `${np(s, false)}`,
      `there is ${np(s, true)} ${pos()}`,
      `a picture of ${np(s, false)} ${pos()}`,
      `${article(s.size)} ${s.size} ${s.shape} that is ${s.colour}`,
      `${pos()} there is ${np(s, false)}`,
      `an image with one ${sz(s)} ${s.colour} ${s.shape}`,
      `${np(s, false)} ${pos()} of the picture`,
    ];
  }
  const [a, b] = scene.shapes; // a is left of / above b
  const horizontal = scene.layout.axis === 'horizontal';
  const ab = () => (horizontal ? pick(r, ['to the left of', 'on the left of']) : 'above');
  const ba = () => (horizontal ? pick(r, ['to the right of', 'on the right of']) : 'below');
  return [
    `${np(a, false)} and ${np(b, false)}`,
    `${np(a, true)} ${ab()} ${np(b, true)}`,
    `${np(b, false)} ${ba()} ${np(a, false)}`,
    `two shapes ${np(a, false)} and ${np(b, false)}`,
    `a picture of ${np(a, false)} ${ab()} ${np(b, false)}`,
    horizontal ? `${np(a, true)} next to ${np(b, true)}` : `${np(b, true)} under ${np(a, true)}`,
    horizontal
      ? `${np(a, false)} on the left and ${np(b, false)} on the right`
      : `${np(a, false)} at the top and ${np(b, false)} at the bottom`,
    `there is ${np(a, true)} and ${np(b, true)}`,
  ];
}

const COUNT_WORDS = ['', 'one', 'two', 'three'] as const;
export const RELATION_PHRASES: Record<Relation, string> = {
  left: 'to the left of',
  right: 'to the right of',
  above: 'above',
  below: 'below',
};

/** What a multi-scene caption can name: a whole group ("two green triangles"), or the members of a group
 *  told apart by their size ("a small green triangle", "two large green triangles" of three). */
interface Entity {
  members: DemoShape[];
  /** The size word is what identifies a member, so it is never left out. */
  needsSize: boolean;
}

/** The groups of a multi scene, in reading order (leftmost reach first). */
export function sceneGroups(scene: DemoScene): DemoShape[][] {
  if (scene.layout.kind !== 'multi') return scene.shapes.map((s) => [s]);
  const groups: DemoShape[][] = [];
  let k = 0;
  for (const n of scene.layout.groups) groups.push(scene.shapes.slice((k += n) - n, k));
  const left = (g: DemoShape[]) => Math.min(...g.map((s) => s.cx));
  return groups.sort((a, b) => left(a) - left(b));
}

/** Relations that hold between every member of `a` and every member of `b`. */
function groupRelations(a: DemoShape[], b: DemoShape[]): Relation[] {
  let common: Relation[] = ['left', 'right', 'above', 'below'];
  for (const x of a) for (const y of b) common = common.filter((rel) => relationsOf(x, y).includes(rel));
  return common;
}

/** Caption families of a multi scene (lists, counts, relations); captionsFor mixes them. */
export function multiCaptionFamilies(scene: DemoScene, r: Rng): string[][] {
  const groups = sceneGroups(scene);
  const sz = (s: DemoShape) => pick(r, SIZE_SYNONYMS[s.size]);
  const phrase = (e: Entity, withSize: boolean): string => {
    const s0 = e.members[0];
    const n = e.members.length;
    const uniform = e.members.every((m) => m.size === s0.size);
    const size = e.needsSize || (withSize && uniform) ? [sz(s0)] : [];
    const words = [...size, s0.colour, n === 1 ? s0.shape : `${s0.shape}s`];
    return `${n === 1 ? article(words[0]) : COUNT_WORDS[n]} ${words.join(' ')}`;
  };
  const thereIs = (e: Entity) => (e.members.length === 1 ? 'there is' : 'there are');
  const coin = () => r() < 0.5;
  const groupEntities: Entity[] = groups.map((members) => ({ members, needsSize: false }));
  const entities: Entity[] = [...groupEntities];
  for (const g of groups) {
    if (g.length < 2) continue;
    for (const m of g) {
      if (g.filter((x) => x.size === m.size).length !== 1) continue;
      entities.push({ members: [m], needsSize: true });
      // and the rest of a group of three, when they share a size: "two large orange stars"
      const rest = g.filter((x) => x !== m);
      if (rest.length === 2 && rest[0].size === rest[1].size) entities.push({ members: rest, needsSize: true });
    }
  }

  const listOf = (withSize: boolean) => {
    const p = groupEntities.map((e) => phrase(e, withSize));
    return p.length === 1 ? p[0] : `${p.slice(0, -1).join(' and ')} and ${p[p.length - 1]}`;
  };
  const lists: string[] = [
    listOf(false),
    `a picture of ${listOf(false)}`,
    `${thereIs(groupEntities[0])} ${listOf(false)}`,
    `an image with ${listOf(false)}`,
  ];
  const sized = listOf(true);
  if (sized.split(' ').length <= 14) lists.push(sized);

  // no "an image with two shapes": a caption that fits half of all pictures would be the image-blind
  // baseline's pick, and scoring well without looking is what the demo's comparison must not reward
  const counts: string[] = [];
  // "three shapes: a red circle, a blue square and a green star" (prep drops punctuation, so we never write it)
  if (groups.every((g) => g.length === 1)) counts.push(`${COUNT_WORDS[scene.shapes.length]} shapes ${listOf(false)}`);
  for (const e of groupEntities) {
    const g = e.members;
    if (g.length < 2) continue;
    counts.push(phrase(e, coin()), `${COUNT_WORDS[g.length]} ${g[0].colour} shapes`);
    const pairs = g.flatMap((x, i) => g.slice(i + 1).map((y) => relationsOf(x, y)));
    const horizontal = pairs.every((p) => p.some((q) => q === 'left' || q === 'right'));
    const vertical = pairs.every((p) => p.some((q) => q === 'above' || q === 'below'));
    if (horizontal && !pairs.some((p) => p.includes('above') || p.includes('below')))
      counts.push(`${phrase(e, coin())} side by side`);
    if (g.length === 2 && vertical && !horizontal) counts.push(`${phrase(e, coin())} one above the other`);
  }

  const relations: string[] = [];
  for (const a of entities) {
    for (const b of entities) {
      if (a.members.some((m) => b.members.includes(m))) continue;
      for (const rel of groupRelations(a.members, b.members)) {
        const text = `${phrase(a, coin())} ${RELATION_PHRASES[rel]} ${phrase(b, coin())}`;
        relations.push(r() < 0.25 ? `${thereIs(a)} ${text}` : text);
      }
    }
  }
  return [lists, counts, relations].filter((f) => f.length > 0);
}

export const CAPTIONS_PER_IMAGE = 5;

/** Five different captions for a scene, in a seeded order. */
export function captionsFor(scene: DemoScene, seed: number): string[] {
  const r = rng(sceneSeed(seed ^ 0x5bd1e995, scene.index));
  if (scene.layout.kind === 'multi') {
    // take from each family in turn (in a seeded order), so that an image gets lists, counts and relations
    const families = shuffleInPlace(
      multiCaptionFamilies(scene, r).map((f) => shuffleInPlace([...new Set(f)], r)),
      r,
    );
    const picked = new Set<string>();
    const longest = Math.max(...families.map((f) => f.length));
    for (let i = 0; i < longest && picked.size < CAPTIONS_PER_IMAGE; i++) {
      for (const f of families) if (i < f.length && picked.size < CAPTIONS_PER_IMAGE) picked.add(f[i]);
    }
    return shuffleInPlace([...picked], r);
  }
  const unique = [...new Set(captionCandidates(scene, r))];
  return shuffleInPlace(unique, r).slice(0, CAPTIONS_PER_IMAGE);
}

/** Every word a demo caption of this kind can use. */
export function demoVocabulary(kind: SceneKind = 'single'): string[] {
  const words = new Set<string>();
  const add = (s: string) => s.split(' ').forEach((w) => words.add(w));
  for (const p of Object.values(SIZE_SYNONYMS).flat()) add(p);
  COLOUR_NAMES.forEach(add);
  SHAPE_NAMES.forEach(add);
  if (kind === 'multi') {
    add('a an two three shapes there is are of picture image with and side by one the other');
    Object.values(RELATION_PHRASES).forEach(add);
    SHAPE_NAMES.forEach((s) => add(`${s}s`));
    return [...words].sort();
  }
  for (const t of [
    'a an one two shapes there is that of the picture image with and next to under above below on in at',
  ])
    add(t);
  for (const p of Object.values(POSITION_PHRASES).flat()) add(p);
  for (const p of ['to the left of', 'on the left of', 'to the right of', 'on the right of']) add(p);
  return [...words].sort();
}

// ---------------------------------------------------------------- drawing

const hex = (c: Rgb) => '#' + c.map((v) => v.toString(16).padStart(2, '0')).join('');
const f = (v: number) => Number(v.toFixed(2));

function polygon(cx: number, cy: number, points: [number, number][]): string {
  return points.map(([x, y]) => `${f(cx + x)},${f(cy + y)}`).join(' ');
}

function shapeSvg(s: DemoShape, side: number): string {
  const cx = s.cx * side;
  const cy = s.cy * side;
  const r = s.r * side;
  const fill = hex(s.fill);
  const rot = s.rotation ? ` transform="rotate(${s.rotation} ${f(cx)} ${f(cy)})"` : '';
  switch (s.shape) {
    case 'circle':
      return `<circle cx="${f(cx)}" cy="${f(cy)}" r="${f(r)}" fill="${fill}"/>`;
    case 'square': {
      const h = r * 0.85;
      return `<rect x="${f(cx - h)}" y="${f(cy - h)}" width="${f(2 * h)}" height="${f(2 * h)}" fill="${fill}"${rot}/>`;
    }
    case 'triangle': {
      // equilateral, pointing up, centroid at the centre
      const pts: [number, number][] = [0, 1, 2].map((k) => {
        const a = -Math.PI / 2 + (k * 2 * Math.PI) / 3;
        return [r * Math.cos(a), r * Math.sin(a)];
      });
      return `<polygon points="${polygon(cx, cy, pts)}" fill="${fill}"${rot}/>`;
    }
    case 'star': {
      const pts: [number, number][] = [];
      for (let k = 0; k < 10; k++) {
        const a = -Math.PI / 2 + (k * Math.PI) / 5;
        const rr = k % 2 === 0 ? r * 1.05 : r * 0.45;
        pts.push([rr * Math.cos(a), rr * Math.sin(a)]);
      }
      return `<polygon points="${polygon(cx, cy, pts)}" fill="${fill}"${rot}/>`;
    }
    case 'diamond':
      return `<polygon points="${polygon(cx, cy, [
        [0, -r],
        [r * 0.72, 0],
        [0, r],
        [-r * 0.72, 0],
      ])}" fill="${fill}"/>`;
  }
}

function backgroundSvg(b: Background, side: number): string {
  switch (b.kind) {
    case 'plain':
      return `<rect width="${side}" height="${side}" fill="${hex(b.colour)}"/>`;
    case 'gradient': {
      const a = (b.angle * Math.PI) / 180;
      const [x1, y1, x2, y2] = [
        0.5 - Math.cos(a) / 2,
        0.5 - Math.sin(a) / 2,
        0.5 + Math.cos(a) / 2,
        0.5 + Math.sin(a) / 2,
      ].map(f);
      return (
        `<defs><linearGradient id="g" x1="${x1}" y1="${y1}" x2="${x2}" y2="${y2}">` +
        `<stop offset="0" stop-color="${hex(b.from)}"/><stop offset="1" stop-color="${hex(b.to)}"/></linearGradient></defs>` +
        `<rect width="${side}" height="${side}" fill="url(#g)"/>`
      );
    }
    case 'noise':
      return (
        `<rect width="${side}" height="${side}" fill="${hex(b.colour)}"/>` +
        `<filter id="n" x="0" y="0" width="100%" height="100%"><feTurbulence type="fractalNoise" baseFrequency="${Number(((b.frequency * 224) / side).toFixed(4))}" numOctaves="2" seed="${b.seed}"/>` +
        `<feColorMatrix type="saturate" values="0"/></filter>` +
        `<rect width="${side}" height="${side}" filter="url(#n)" opacity="${b.opacity}"/>`
      );
  }
}

/** The SVG document for a scene, `side` pixels square. */
export function sceneSvg(scene: DemoScene, side: number): string {
  return (
    `<svg xmlns="http://www.w3.org/2000/svg" width="${side}" height="${side}" viewBox="0 0 ${side} ${side}">` +
    backgroundSvg(scene.background, side) +
    scene.shapes.map((s) => shapeSvg(s, side)).join('') +
    `</svg>`
  );
}

// ---------------------------------------------------------------- dataset files

export const imageName = (index: number) => `demo_${String(index).padStart(5, '0')}.jpg`;

export interface DemoSplit {
  train: string[];
  val: string[];
  test: string[];
}

/** Seeded 80/10/10 split of the image names (each list sorted; val and test never empty from 3 images on). */
export function splitNames(names: readonly string[], seed: number): DemoSplit {
  const shuffled = shuffleInPlace([...names], rng(sceneSeed(seed ^ 0x27d4eb2f, 0)));
  // at least one validation and one test image once there are three images
  const nHeld = names.length >= 3 ? Math.max(1, Math.round(names.length * 0.1)) : 0;
  const [nVal, nTest] = [nHeld, nHeld];
  const sort = (a: string[]) => a.sort();
  return {
    val: sort(shuffled.slice(0, nVal)),
    test: sort(shuffled.slice(nVal, nVal + nTest)),
    train: sort(shuffled.slice(nVal + nTest)),
  };
}

export interface DemoTexts {
  /** captions.txt: `name.jpg#N<TAB>caption`, N = 0..4. */
  captions: string;
  trainImages: string;
  valImages: string;
  testImages: string;
  split: DemoSplit;
}

/** Everything but the pixels, for images 0..count-1. */
export function demoTexts(seed: number, count: number, kind: SceneKind = 'single'): DemoTexts {
  const lines: string[] = [];
  const names: string[] = [];
  for (let i = 0; i < count; i++) {
    const name = imageName(i);
    names.push(name);
    captionsFor(makeScene(seed, i, kind), seed).forEach((c, n) => lines.push(`${name}#${n}\t${c}`));
  }
  const split = splitNames(names, seed);
  const list = (a: string[]) => (a.length ? a.join('\n') + '\n' : '');
  return {
    captions: lines.join('\n') + '\n',
    trainImages: list(split.train),
    valImages: list(split.val),
    testImages: list(split.test),
    split,
  };
}
