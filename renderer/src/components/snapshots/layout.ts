// Pure layout for the snapshot view: tree rows (VirtualBox-like, with a "Current State" row) and timeline lanes.
import type { SnapshotViewWire } from '../../../../main/api/rpc';

export type Snap = SnapshotViewWire;

export interface TreeRow {
  /** Snapshot id, or "current" for the "Current State" pseudo-row. */
  key: string;
  snap: Snap | null;
  depth: number;
}

function byTime(a: Snap, b: Snap): number {
  return a.time < b.time ? -1 : a.time > b.time ? 1 : a.id.localeCompare(b.id);
}

export function childrenOf(snaps: Snap[], parent: string | null): Snap[] {
  return snaps.filter((s) => s.parent === parent).sort(byTime);
}

/** Rows in depth-first order; "Current State" hangs under the current snapshot (or at the root when none). */
export function treeRows(snaps: Snap[], current: string | null): TreeRow[] {
  const rows: TreeRow[] = [];
  const ids = new Set(snaps.map((s) => s.id));
  const walk = (parent: string | null, depth: number) => {
    for (const s of childrenOf(snaps, parent)) {
      rows.push({ key: s.id, snap: s, depth });
      walk(s.id, depth + 1);
    }
    if (parent === current || (parent === null && current !== null && !ids.has(current))) rows.push({ key: 'current', snap: null, depth });
  };
  walk(null, 0);
  return rows;
}

export interface TimelineNode {
  snap: Snap;
  lane: number;
  /** 0..1 along the time axis. */
  x: number;
}

export interface TimelineEdge {
  from: TimelineNode;
  to: TimelineNode;
}

export interface Timeline {
  nodes: TimelineNode[];
  edges: TimelineEdge[];
  lanes: number;
  start: number;
  end: number;
  /** Where "now" (the current state) sits: lane of the current snapshot, x = 1. */
  now: { lane: number; from: TimelineNode | null };
}

/**
 * Branches as lanes: the first child (oldest) continues its parent's lane, later children open new lanes
 * below. x is the snapshot's time scaled between the oldest snapshot and now, with a minimum gap so nodes
 * taken seconds apart do not overlap.
 */
export function timeline(snaps: Snap[], current: string | null, nowMs = Date.now(), minGap = 0.04): Timeline {
  const nodes: TimelineNode[] = [];
  const byId = new Map<string, TimelineNode>();
  let lanes = 0;
  const place = (s: Snap, lane: number) => {
    const n: TimelineNode = { snap: s, lane, x: 0 };
    nodes.push(n);
    byId.set(s.id, n);
    childrenOf(snaps, s.id).forEach((c, i) => place(c, i === 0 ? lane : lanes++));
  };
  for (const root of childrenOf(snaps, null)) place(root, lanes++);
  const times = snaps.map((s) => Date.parse(s.time));
  const start = times.length ? Math.min(...times) : nowMs;
  const end = Math.max(nowMs, ...times, start + 1);
  // Scale by time, then push apart in time order so every node is at least minGap right of the one before.
  const ordered = [...nodes].sort((a, b) => byTime(a.snap, b.snap));
  let last = -Infinity;
  for (const n of ordered) {
    const raw = (Date.parse(n.snap.time) - start) / (end - start);
    n.x = Math.max(raw * 0.92, last + minGap);
    last = n.x;
  }
  const maxX = Math.max(0.92, last);
  for (const n of nodes) n.x = n.x / maxX * 0.92;
  const edges: TimelineEdge[] = [];
  for (const n of nodes) {
    const p = n.snap.parent ? byId.get(n.snap.parent) : undefined;
    if (p) edges.push({ from: p, to: n });
  }
  const cur = current ? byId.get(current) ?? null : null;
  return { nodes, edges, lanes: Math.max(lanes, 1), start, end, now: { lane: cur?.lane ?? 0, from: cur } };
}

export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(v < 10 ? 1 : 0)} ${units[i]}`;
}

/** Renders a config value for the diff table in a line. */
export function showValue(v: unknown): string {
  if (v === undefined || v === null) return '—';
  if (typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean') return String(v);
  return JSON.stringify(v);
}
