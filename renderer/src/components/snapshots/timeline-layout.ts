// Pure layout of the snapshot timeline (no DOM). Time is not a linear scale: snapshots sit in time order at even
// steps (sixteen taken in a minute are sixteen readable nodes), a long pause between two of them is a fixed,
// labelled gap ("3 days later"), and a new day gets a separator with its date. Branches get lanes (the path to
// the current state is always lane 0; other branches are packed into the fewest lanes whose spans do not
// overlap); automatic snapshots have a lane of their own at the bottom. Labels, axis times and thumbnails are
// placed per zoom level so that none overlaps another (what does not fit is shortened or left to the hover
// card). Units: x is in slots (one snapshot per slot); the view multiplies by its zoom (pixels per slot).
import { byTime, continuation, forest, type Snap } from './layout';
import { dateFormat } from './words';

/** A pause longer than this between two snapshots is drawn as a gap with its length in words. */
export const GAP_MS = 60 * 60_000;
/** Width of such a gap, in slots (added to the usual one). */
export const GAP_SLOTS = 1.2;

export interface TlNode {
  snap: Snap;
  /** Position in time order (0 = oldest shown). */
  index: number;
  x: number;
  lane: number;
  auto: boolean;
  /** On the path from the first snapshot to the current state. */
  onPath: boolean;
}

export interface TlEdge {
  from: TlNode;
  to: TlNode | null;
  /** 'lane': along a lane; 'branch': a new branch leaving its parent (drops at the parent); 'auto': to or from the automatic lane (turns near the child). */
  kind: 'lane' | 'branch' | 'auto';
}

export interface TlGap {
  /** From and to, in slots: the gap's span between two nodes. */
  x0: number;
  x1: number;
  label: string;
}

export interface TlDay {
  /** Where the separator stands (slots) and the day it opens. */
  x: number;
  label: string;
}

export interface TimelineLayout {
  nodes: TlNode[];
  byId: Map<string, TlNode>;
  edges: TlEdge[];
  gaps: TlGap[];
  days: TlDay[];
  /** Lanes in all, the automatic lane included. */
  lanes: number;
  /** The automatic snapshots' lane (the last one), or null when none is shown. */
  autoLane: number | null;
  /** The "you are here" marker: after the newest snapshot, in lane 0; `from` is the snapshot it continues. */
  now: { x: number; lane: number; from: TlNode | null };
  /** Right edge of everything, in slots. */
  width: number;
  /** For each lane: the spans (slots) its branches occupy (tests check they never overlap). */
  spans: { from: number; to: number; start: string }[][];
}

export interface TimelineOptions {
  hideAuto?: boolean;
  /** A key for a time's calendar day, and the words for it (local time by default). */
  dayKey?: (ms: number) => string;
  dayLabel?: (ms: number) => string;
}

const localDayKey = (ms: number) => {
  const d = new Date(ms);
  return `${d.getFullYear()}-${d.getMonth()}-${d.getDate()}`;
};
const localDayLabel = (ms: number) => dateFormat({ weekday: 'short', day: 'numeric', month: 'short', year: 'numeric' }).format(ms);

/** "3 days later", "5 hours later": a pause in words. */
export function pauseWords(ms: number): string {
  const h = ms / 3_600_000;
  const plural = (n: number, w: string) => `${n} ${w}${n === 1 ? '' : 's'} later`;
  if (h < 24) return plural(Math.max(1, Math.round(h)), 'hour');
  const d = h / 24;
  if (d < 14) return plural(Math.round(d), 'day');
  if (d < 60) return plural(Math.round(d / 7), 'week');
  if (d < 730) return plural(Math.round(d / 30.44), 'month');
  return plural(Math.round(d / 365.25), 'year');
}

export function timelineLayout(snaps: readonly Snap[], current: string | null, nowMs: number, opts: TimelineOptions = {}): TimelineLayout {
  const dayKey = opts.dayKey ?? localDayKey;
  const dayLabel = opts.dayLabel ?? localDayLabel;
  const f = forest(snaps, current, { hideAuto: opts.hideAuto });
  const shown = f.shown; // time order

  // ---- x: even steps in time order, fixed gaps for long pauses, a separator per new day ----
  const nodes: TlNode[] = [];
  const byId = new Map<string, TlNode>();
  const gaps: TlGap[] = [];
  const days: TlDay[] = [];
  let x = 0;
  let prevT = NaN;
  let prevDay = '';
  shown.forEach((s, index) => {
    const t = Date.parse(s.time);
    if (index > 0) {
      const x0 = x;
      x += 1;
      if (t - prevT > GAP_MS) {
        x += GAP_SLOTS;
        gaps.push({ x0, x1: x, label: pauseWords(t - prevT) });
      }
    }
    const day = dayKey(t);
    if (day !== prevDay) days.push({ x: index === 0 ? x - 0.5 : x - 0.5, label: dayLabel(t) });
    prevDay = day;
    prevT = t;
    const n: TlNode = { snap: s, index, x, lane: 0, auto: !!s.auto, onPath: f.onPath.has(s.id) };
    nodes.push(n);
    byId.set(s.id, n);
  });
  let nowX = nodes.length ? x + 1 : 0;
  if (nodes.length && nowMs - prevT > GAP_MS) {
    gaps.push({ x0: x, x1: x + 1 + GAP_SLOTS, label: pauseWords(nowMs - prevT) });
    nowX += GAP_SLOTS;
  }
  if (nodes.length && dayKey(nowMs) !== prevDay) days.push({ x: nowX - 0.5, label: dayLabel(nowMs) });

  // ---- lanes: the people's snapshots as a forest (automatic ones skipped), chains packed into lanes ----
  const manualParent = (id: string): string | null => {
    let p = f.parentOf.get(id) ?? null;
    for (let guard = 0; p && byId.get(p)!.auto && guard < 100_000; guard++) p = f.parentOf.get(p) ?? null;
    return p;
  };
  const mKids = new Map<string | null, Snap[]>();
  for (const n of nodes) {
    if (n.auto) continue;
    const p = manualParent(n.snap.id);
    const list = mKids.get(p);
    if (list) list.push(n.snap);
    else mKids.set(p, [n.snap]);
  }
  let pathEnd: string | null = f.current;
  while (pathEnd && byId.get(pathEnd)!.auto) pathEnd = f.parentOf.get(pathEnd) ?? null;
  const mPath = new Set<string>();
  for (let p = pathEnd; p; p = manualParent(p)) mPath.add(p);
  // The same rule as the tree: the child on the path to the current state continues the lane, else the oldest.
  const mForest = { ...f, children: mKids, onPath: mPath, current: pathEnd };
  const cont = (id: string) => continuation(mForest, id);

  interface Segment {
    chain: TlNode[];
    parent: TlNode | null;
    from: number;
    to: number;
  }
  const segments: Segment[] = [];
  const walk = (start: Snap, parent: TlNode | null) => {
    const chain: TlNode[] = [];
    const starts: [Snap, TlNode][] = [];
    for (let n: Snap | null = start; n; ) {
      const node = byId.get(n.id)!;
      chain.push(node);
      const c = cont(n.id);
      for (const k of mKids.get(n.id) ?? []) if (k !== c) starts.push([k, node]);
      n = c;
    }
    const last = chain[chain.length - 1]!;
    const onPath = mPath.has(chain[0]!.snap.id) || (pathEnd === null && parent === null && start === mainRoot);
    segments.push({ chain, parent, from: parent ? parent.x : chain[0]!.x, to: onPath ? Math.max(last.x, nowX) : last.x });
    for (const [k, p] of starts) walk(k, p);
  };
  const roots = mKids.get(null) ?? [];
  const mainRoot = (pathEnd ? roots.find((r) => mPath.has(r.id)) : roots.at(-1)) ?? null;
  if (mainRoot) walk(mainRoot, null);
  for (const r of roots) if (r !== mainRoot) walk(r, null);

  const spans: TimelineLayout['spans'] = [];
  const MARGIN = 0.35;
  // Lane 0 is the current path's; then the shortest branches first, so they sit next to it and the long ones
  // (which would block many) go further out.
  const [main, ...rest] = segments;
  const ordered = main ? [main, ...rest.sort((p, q) => p.to - p.from - (q.to - q.from) || p.from - q.from)] : [];
  ordered.forEach((seg, i) => {
    let lane = 0;
    if (i > 0) {
      lane = 1;
      while (spans[lane]?.some((o) => seg.from - MARGIN < o.to && o.from < seg.to + MARGIN)) lane++;
    }
    (spans[lane] ??= []).push({ from: seg.from, to: seg.to, start: seg.chain[0]!.snap.id });
    for (const n of seg.chain) n.lane = lane;
  });
  const manualLanes = Math.max(1, spans.length);
  const hasAuto = nodes.some((n) => n.auto);
  const autoLane = hasAuto ? manualLanes : null;
  for (const n of nodes) if (n.auto) n.lane = autoLane!;

  // ---- edges: every shown snapshot to its shown parent, and the current state to "now" ----
  const firstOfSegment = new Set(segments.filter((s) => s.parent).map((s) => s.chain[0]!.snap.id));
  const edges: TlEdge[] = [];
  for (const n of nodes) {
    const p = f.parentOf.get(n.snap.id);
    const from = p ? byId.get(p) : undefined;
    if (!from) continue;
    const kind: TlEdge['kind'] = from.auto || n.auto ? 'auto' : from.lane === n.lane ? 'lane' : firstOfSegment.has(n.snap.id) ? 'branch' : 'auto';
    edges.push({ from, to: n, kind });
  }
  const curNode = f.current ? byId.get(f.current) ?? null : null;
  if (curNode) edges.push({ from: curNode, to: null, kind: curNode.lane === 0 ? 'lane' : 'auto' });

  return {
    nodes,
    byId,
    edges,
    gaps,
    days,
    lanes: manualLanes + (hasAuto ? 1 : 0),
    autoLane,
    now: { x: nowX, lane: 0, from: curNode },
    width: nowX + 1,
    spans,
  };
}

// ---- what fits at a zoom level -----------------------------------------------------------------------------

export type Measure = (text: string) => number;

/** A rough text width for 12 px system fonts (tests; the view measures with a canvas). */
export const estimateWidth: Measure = (t) => t.length * 6.6;

/** `text`, shortened with "…" to fit `width` pixels ('' when not even one character does). */
export function fitText(text: string, width: number, measure: Measure): string {
  if (measure(text) <= width) return text;
  let lo = 0;
  let hi = text.length;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (measure(text.slice(0, mid) + '…') <= width) lo = mid;
    else hi = mid - 1;
  }
  return lo > 0 ? text.slice(0, lo).trimEnd() + '…' : '';
}

export interface PlacedLabel {
  text: string;
  /** Label row under the node (0 or 1). */
  row: number;
  /** Pixel extent (centred on the node). */
  left: number;
  right: number;
}

export interface LabelOptions {
  rows?: number;
  margin?: number;
  minWidth?: number;
  maxWidth?: number;
}

/**
 * Names under the nodes at `scale` pixels per slot: per lane, left to right, each name goes in the first of
 * `rows` label rows where it does not touch the previous one; when none has room for the whole name, it is
 * shortened to the room there is, or left out (the hover card and the accessible name still say it).
 */
export function placeLabels(nodes: readonly TlNode[], scale: number, measure: Measure, o: LabelOptions = {}): Map<string, PlacedLabel> {
  const rows = o.rows ?? 2;
  const margin = o.margin ?? 8;
  const minWidth = o.minWidth ?? 30;
  const maxWidth = o.maxWidth ?? 180;
  const out = new Map<string, PlacedLabel>();
  const lanes = new Map<number, TlNode[]>();
  for (const n of nodes) {
    const l = lanes.get(n.lane);
    if (l) l.push(n);
    else lanes.set(n.lane, [n]);
  }
  for (const list of lanes.values()) {
    list.sort((a, b) => a.x - b.x);
    const right = new Array<number>(rows).fill(-Infinity);
    for (const n of list) {
      const cx = n.x * scale;
      const full = fitText(n.snap.name, maxWidth, measure);
      const w = measure(full);
      let placed = false;
      for (let r = 0; r < rows && !placed; r++) {
        if (cx - w / 2 >= right[r]! + margin) {
          out.set(n.snap.id, { text: full, row: r, left: cx - w / 2, right: cx + w / 2 });
          right[r] = cx + w / 2;
          placed = true;
        }
      }
      if (placed) continue;
      // No row has room for all of it: the row with the most room, if that is worth a shortened name.
      let best = 0;
      for (let r = 1; r < rows; r++) if (right[r]! < right[best]!) best = r;
      const room = 2 * (cx - right[best]! - margin);
      if (room < minWidth) continue;
      const text = fitText(full, room, measure);
      if (!text) continue;
      const tw = measure(text);
      out.set(n.snap.id, { text, row: best, left: cx - tw / 2, right: cx + tw / 2 });
      right[best] = cx + tw / 2;
    }
  }
  return out;
}

/** Times on the axis: "14:05" where the minute changes, ":17" for a later second of the same minute; none overlapping. */
export function placeTicks(nodes: readonly TlNode[], scale: number, measure: Measure, margin = 10): { id: string; x: number; text: string }[] {
  const out: { id: string; x: number; text: string }[] = [];
  let right = -Infinity;
  let lastMinute = '';
  const hhmmFormat = dateFormat({ hour: '2-digit', minute: '2-digit' });
  for (const n of nodes) {
    const d = new Date(Date.parse(n.snap.time));
    const minute = `${d.getFullYear()}-${d.getMonth()}-${d.getDate()} ${d.getHours()}:${d.getMinutes()}`;
    const hhmm = hhmmFormat.format(d);
    const text = minute !== lastMinute ? hhmm : `:${String(d.getSeconds()).padStart(2, '0')}`;
    // The same second again says nothing new.
    if (text === out[out.length - 1]?.text) continue;
    const cx = n.x * scale;
    const w = measure(text);
    if (cx - w / 2 >= right + margin) {
      out.push({ id: n.snap.id, x: cx, text });
      right = cx + w / 2;
      lastMinute = minute;
    }
  }
  return out;
}

/** Which nodes get a thumbnail above them at this zoom (per lane, none overlapping). */
export function placeThumbs(nodes: readonly TlNode[], scale: number, width: number, margin = 6): Set<string> {
  const out = new Set<string>();
  const right = new Map<number, number>();
  for (const n of [...nodes].sort((a, b) => a.x - b.x)) {
    if (!n.snap.thumbnail) continue;
    const cx = n.x * scale;
    if (cx - width / 2 >= (right.get(n.lane) ?? -Infinity) + margin) {
      out.add(n.snap.id);
      right.set(n.lane, cx + width / 2);
    }
  }
  return out;
}

/** Index range of `sorted` (by x) whose x*scale lies in [from, to] pixels. */
export function visibleRange(sorted: readonly TlNode[], scale: number, from: number, to: number): [number, number] {
  const lower = (px: number) => {
    let lo = 0;
    let hi = sorted.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (sorted[mid]!.x * scale < px) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  };
  return [lower(from), lower(to)];
}

// ---- level of detail and culling: what a frame draws ---------------------------------------------------------

/** Below this many pixels per slot nodes are dots on a few shared paths: no elements of their own, no thumbnails. */
export const DOTS_BELOW = 16;

export type Detail = 'full' | 'dots';

export function detailAt(scale: number): Detail {
  return scale < DOTS_BELOW ? 'dots' : 'full';
}

/** What touches the pixel window [from, to] (slots times `scale`; a viewport plus a margin each side). */
export interface TlWindow {
  nodes: TlNode[];
  edges: TlEdge[];
  gaps: TlGap[];
  days: TlDay[];
}

/**
 * The part of the layout that touches [from, to] pixels at `scale`: nodes by binary search (they are in x order),
 * edges whose span crosses the window (a long branch line passes through it with both ends outside), gaps and day
 * separators. The node `keep` (the active one) is always included, so the keyboard's target has its element.
 */
export function cull(l: TimelineLayout, scale: number, from: number, to: number, keep?: string): TlWindow {
  const [a, b] = visibleRange(l.nodes, scale, from, to);
  const nodes = l.nodes.slice(a, b);
  const k = keep ? l.byId.get(keep) : undefined;
  if (k && (k.index < a || k.index >= b)) nodes.push(k);
  const touches = (x0: number, x1: number) => Math.max(x0, x1) * scale >= from && Math.min(x0, x1) * scale <= to;
  return {
    nodes,
    edges: l.edges.filter((e) => touches(e.from.x, e.to ? e.to.x : l.now.x)),
    gaps: l.gaps.filter((g) => touches(g.x0, g.x1)),
    days: l.days.filter((d) => touches(d.x, d.x)),
  };
}

/** One SVG path of circles of radius `r` at the given centres: a thousand dots, one element to paint. */
export function dotsPath(points: Iterable<readonly [number, number]>, r: number): string {
  const out: string[] = [];
  const d = 2 * r;
  for (const [x, y] of points) out.push(`M${(x - r).toFixed(1)} ${y.toFixed(1)}a${r} ${r} 0 1 0 ${d} 0a${r} ${r} 0 1 0 ${-d} 0`);
  return out.join('');
}

/**
 * The node under a point where nodes have no element of their own (dots): `x` in content pixels (slots times
 * `scale`), `y` in the SVG's pixels, `yOf` a lane's node centre; the nearest within `radius`, else null.
 */
export function nodeAt(sorted: readonly TlNode[], scale: number, x: number, y: number, yOf: (lane: number) => number, radius: number): TlNode | null {
  const [a, b] = visibleRange(sorted, scale, x - radius, x + radius + 1e-9);
  let best: TlNode | null = null;
  let bestD = radius * radius;
  for (let i = a; i < b; i++) {
    const n = sorted[i]!;
    const dx = n.x * scale - x;
    const dy = yOf(n.lane) - y;
    const dd = dx * dx + dy * dy;
    if (dd <= bestD) {
      best = n;
      bestD = dd;
    }
  }
  return best;
}

/** Neighbours for keyboard walking: the previous/next in time, and the nearest node in the lane above/below. */
export function neighbour(l: TimelineLayout, id: string | 'now', dir: 'left' | 'right' | 'up' | 'down'): string | 'now' | null {
  const order = l.nodes;
  if (id === 'now') {
    if (dir === 'left') return order.at(-1)?.snap.id ?? null;
    if (dir === 'up' || dir === 'down') return nearestInLane(l, l.now.x, l.now.lane + (dir === 'up' ? -1 : 1), dir);
    return null;
  }
  const n = l.byId.get(id);
  if (!n) return null;
  if (dir === 'left') return order[n.index - 1]?.snap.id ?? null;
  if (dir === 'right') return order[n.index + 1]?.snap.id ?? 'now';
  return nearestInLane(l, n.x, n.lane + (dir === 'up' ? -1 : 1), dir);
}

function nearestInLane(l: TimelineLayout, x: number, lane: number, dir: 'up' | 'down'): string | 'now' | null {
  // Skip empty lanes in the direction of travel.
  for (let ln = lane; ln >= 0 && ln < l.lanes; ln += dir === 'up' ? -1 : 1) {
    let best: TlNode | null = null;
    for (const n of l.nodes) if (n.lane === ln && (!best || Math.abs(n.x - x) < Math.abs(best.x - x))) best = n;
    const nowHere = ln === l.now.lane && (!best || Math.abs(l.now.x - x) < Math.abs(best.x - x));
    if (nowHere) return 'now';
    if (best) return best.snap.id;
  }
  return null;
}

export { byTime };
