// Pure layout of the snapshot tree (no DOM): a compact tree in which a chain of snapshots stays in one column
// and only a branch indents (a thousand snapshots taken one after another are a list, not a staircase), with
// connector cells for every row, collapsible branches, automatic snapshots grouped ("4 snapshots before
// restores", "6 scheduled snapshots"), a text filter and "hide automatic".
import type { SnapshotViewWire } from '../../../../main/api/rpc';

export type Snap = SnapshotViewWire;
export type AutoKind = NonNullable<Snap['auto']>;

/** What draws in one indentation column to the left of a row's own column. */
export type Guide = 'pipe' | 'none' | 'tee' | 'elbow';

export interface TreeRow {
  /** Snapshot id, "current" for the "Current State" row, "group:<first member id>" for a group. */
  key: string;
  kind: 'snap' | 'current' | 'group';
  snap: Snap | null;
  /** A group's members (time order), its kind, and whether it is open. */
  group?: { members: Snap[]; auto: AutoKind | 'mixed'; open: boolean };
  /** Indentation: 0 for the first lane; a branch is one deeper than the lane it leaves. */
  level: number;
  /** One entry per column left of the row's own column (length === level). */
  guides: Guide[];
  /** The row's own column: a line up to the previous row of its lane, a line down to the next. */
  up: boolean;
  down: boolean;
  /** The row has branches (or is a group) that can be shown or hidden, and whether they are shown. */
  expandable: boolean;
  expanded: boolean;
  /** The row Left goes to: the snapshot the branch leaves from, or the group a member belongs to. */
  parentKey: string | null;
  /** A row shown only because a match lies below it (filtering). */
  context: boolean;
}

export interface TreeOptions {
  /** Snapshots whose branches are folded away (ids). */
  collapsed?: ReadonlySet<string>;
  /** Groups that are open (keys "group:<id>"); groups are closed by default. */
  openGroups?: ReadonlySet<string>;
  /** Leave out snapshots VMDesk took on its own (their children hang from the nearest one shown). */
  hideAuto?: boolean;
  /** Only snapshots whose name or description contains this (case-insensitive), with their ancestors. */
  filter?: string;
  /** Group automatic snapshots (default true; off while filtering). */
  group?: boolean;
}

export function byTime(a: Pick<Snap, 'time' | 'id'>, b: Pick<Snap, 'time' | 'id'>): number {
  return a.time < b.time ? -1 : a.time > b.time ? 1 : a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
}

export function matches(s: Snap, q: string): boolean {
  const needle = q.trim().toLocaleLowerCase();
  return !needle || s.name.toLocaleLowerCase().includes(needle) || s.description.toLocaleLowerCase().includes(needle);
}

/** The forest as shown: which snapshots, and each one's shown parent (the nearest shown ancestor). */
export interface Forest {
  shown: Snap[];
  byId: Map<string, Snap>;
  parentOf: Map<string, string | null>;
  /** Children in time order; key null for the roots. */
  children: Map<string | null, Snap[]>;
  /** The snapshot "Current State" hangs from: the current one, or its nearest shown ancestor. */
  current: string | null;
  /** Shown only as an ancestor of a match. */
  context: Set<string>;
  /** Shown snapshots on the path from a root to the current state. */
  onPath: Set<string>;
}

export function forest(snaps: readonly Snap[], current: string | null, opts: { hideAuto?: boolean; filter?: string } = {}): Forest {
  const all = new Map(snaps.map((s) => [s.id, s]));
  const parentRaw = (s: Snap) => (s.parent && all.has(s.parent) ? s.parent : null);
  const q = opts.filter?.trim() ?? '';
  let visible = new Set<string>();
  const context = new Set<string>();
  for (const s of snaps) if (!(opts.hideAuto && s.auto)) visible.add(s.id);
  if (q) {
    const hits = new Set([...visible].filter((id) => matches(all.get(id)!, q)));
    const keep = new Set(hits);
    for (const id of hits) {
      for (let p = parentRaw(all.get(id)!), guard = 0; p && guard < 100_000; p = parentRaw(all.get(p)!), guard++) {
        if (!visible.has(p) || keep.has(p)) {
          if (keep.has(p)) break;
          continue;
        }
        keep.add(p);
        context.add(p);
      }
    }
    visible = keep;
  }
  const nearestShown = (id: string | null): string | null => {
    let p = id;
    for (let guard = 0; p && !visible.has(p) && guard < 100_000; guard++) p = parentRaw(all.get(p)!);
    return p && visible.has(p) ? p : null;
  };
  const shown = snaps.filter((s) => visible.has(s.id)).sort(byTime);
  const parentOf = new Map<string, string | null>();
  const children = new Map<string | null, Snap[]>();
  for (const s of shown) {
    const p = nearestShown(parentRaw(s));
    parentOf.set(s.id, p);
    const list = children.get(p);
    if (list) list.push(s);
    else children.set(p, [s]);
  }
  const cur = current && all.has(current) ? nearestShown(current) : null;
  const onPath = new Set<string>();
  for (let p = cur, guard = 0; p && guard < 100_000; p = parentOf.get(p) ?? null, guard++) onPath.add(p);
  return { shown, byId: new Map(shown.map((s) => [s.id, s])), parentOf, children, current: cur, context, onPath };
}

/**
 * The child that continues its parent's lane: the one on the path to the current state, else the oldest. The
 * current snapshot's lane continues with "Current State" itself, so all its children are branches.
 */
export function continuation(f: Forest, parent: string | null): Snap | null {
  if (parent !== null && parent === f.current) return null;
  const kids = f.children.get(parent) ?? [];
  return kids.find((k) => f.onPath.has(k.id)) ?? (parent === null ? kids.at(-1) ?? null : kids[0] ?? null);
}

/** Rows of the compact tree, in order. */
export function treeRows(snaps: readonly Snap[], current: string | null, opts: TreeOptions = {}): TreeRow[] {
  const f = forest(snaps, current, opts);
  const grouping = (opts.group ?? true) && !opts.filter?.trim();
  const collapsed = opts.collapsed ?? new Set<string>();
  const openGroups = opts.openGroups ?? new Set<string>();
  const rows: TreeRow[] = [];
  const kids = (id: string | null) => f.children.get(id) ?? [];
  const isLeaf = (s: Snap) => kids(s.id).length === 0 && s.id !== f.current;

  /** Pushes the members of an open group as one-row branches below it. */
  const members = (g: TreeRow, list: Snap[], prefix: Guide[], laneGoesOn: boolean) => {
    list.forEach((m, i) => {
      const last = i === list.length - 1;
      rows.push({
        key: m.id,
        kind: 'snap',
        snap: m,
        level: g.level + 1,
        guides: [...prefix.slice(0, g.level), last && !laneGoesOn ? 'elbow' : 'tee'],
        up: false,
        down: false,
        expandable: false,
        expanded: false,
        parentKey: g.key,
        context: f.context.has(m.id),
      });
    });
  };

  const groupRow = (list: Snap[], level: number, guides: Guide[], up: boolean, down: boolean, parentKey: string | null): TreeRow => {
    const key = `group:${list[0]!.id}`;
    const kinds = new Set(list.map((m) => m.auto));
    return {
      key,
      kind: 'group',
      snap: null,
      group: { members: list, auto: kinds.size === 1 && list[0]!.auto ? list[0]!.auto : 'mixed', open: openGroups.has(key) },
      level,
      guides,
      up,
      down,
      expandable: true,
      expanded: openGroups.has(key),
      parentKey,
      context: false,
    };
  };

  /**
   * One lane from `start` on: each snapshot, its branches (one column deeper, each a lane of its own), then
   * the snapshot that continues the lane. `prefix` are the guides of the columns to the left; `entry` is the
   * guide the first row puts in the column just left of its own ('tee'/'elbow' for a branch).
   */
  const lane = (start: Snap, level: number, prefix: Guide[], entry: Guide | null, parentKey: string | null) => {
    let node: Snap | null = start;
    let first = true;
    const rowGuides = (): Guide[] => (first && entry ? [...prefix.slice(0, level - 1), entry] : prefix.slice(0, level));
    let laneParent = parentKey;
    while (node) {
      // A run of automatic snapshots along the lane, none with branches: one group row.
      if (grouping && node.auto) {
        const run: Snap[] = [];
        let n: Snap | null = node;
        while (n && n.auto && kids(n.id).length <= 1 && n.id !== f.current) {
          run.push(n);
          n = continuation(f, n.id);
        }
        if (run.length >= 2) {
          const g = groupRow(run, level, rowGuides(), !first, n !== null, laneParent);
          rows.push(g);
          if (g.expanded) members(g, run, prefix, n !== null);
          first = false;
          laneParent = g.key;
          node = n;
          continue;
        }
      }
      const cont = continuation(f, node.id);
      const goesOn = cont !== null || node.id === f.current;
      let branches = kids(node.id).filter((k) => k !== cont);
      // Automatic leaves among the branches (safety snapshots of restores from here): one group.
      let autoLeaves: Snap[] = [];
      if (grouping) {
        const leaves = branches.filter((b) => b.auto && isLeaf(b));
        if (leaves.length >= 2) {
          autoLeaves = leaves;
          branches = branches.filter((b) => !leaves.includes(b));
        }
      }
      const expandable = branches.length + (autoLeaves.length ? 1 : 0) > 0;
      const expanded = expandable && !collapsed.has(node.id);
      rows.push({
        key: node.id,
        kind: 'snap',
        snap: node,
        level,
        guides: rowGuides(),
        up: !first,
        down: goesOn,
        expandable,
        expanded,
        parentKey: laneParent,
        context: f.context.has(node.id),
      });
      if (expanded) {
        const items: (Snap | Snap[])[] = [...branches];
        if (autoLeaves.length) items.push(autoLeaves);
        items.sort((a, b) => byTime(Array.isArray(a) ? a[0]! : a, Array.isArray(b) ? b[0]! : b));
        items.forEach((it, i) => {
          const more = i < items.length - 1 || goesOn;
          const branchPrefix: Guide[] = [...prefix.slice(0, level), more ? 'pipe' : 'none'];
          if (Array.isArray(it)) {
            const g = groupRow(it, level + 1, [...prefix.slice(0, level), more ? 'tee' : 'elbow'], false, false, node!.id);
            rows.push(g);
            if (g.expanded) members(g, it, branchPrefix, false);
          } else lane(it, level + 1, branchPrefix, more ? 'tee' : 'elbow', node!.id);
        });
      }
      if (node.id === f.current) {
        rows.push({ key: 'current', kind: 'current', snap: null, level, guides: prefix.slice(0, level), up: true, down: false, expandable: false, expanded: false, parentKey: node.id, context: false });
      }
      first = false;
      laneParent = node.id;
      node = cont;
    }
  };

  const roots = kids(null);
  const main = continuation(f, null);
  // Roots off the current path first (each its own lane at the left), the current path's root last.
  const ordered = [...roots.filter((r) => r !== main), ...(main ? [main] : [])];
  for (const r of ordered) lane(r, 0, [], null, null);
  if (f.current === null) rows.push({ key: 'current', kind: 'current', snap: null, level: 0, guides: [], up: rows.length > 0 && !opts.filter, down: false, expandable: false, expanded: false, parentKey: null, context: false });
  return rows;
}

/** The group key that holds snapshot `id` in these rows' tree, for revealing it (opening the group). */
export function groupOf(rows: readonly TreeRow[], id: string): string | null {
  for (const r of rows) if (r.kind === 'group' && r.group!.members.some((m) => m.id === id)) return r.key;
  return null;
}

/** Snapshot ids whose branches must be unfolded for `id` to be in the rows (its ancestors). */
export function ancestorsOf(snaps: readonly Snap[], id: string): string[] {
  const byId = new Map(snaps.map((s) => [s.id, s]));
  const out: string[] = [];
  for (let p = byId.get(id)?.parent ?? null, guard = 0; p && guard < 100_000; p = byId.get(p)?.parent ?? null, guard++) out.push(p);
  return out;
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

export function autoLabel(a: AutoKind | 'mixed', n: number): string {
  if (a === 'safety') return `${n} automatic snapshots before restores`;
  if (a === 'scheduled') return `${n} scheduled snapshots`;
  return `${n} automatic snapshots`;
}
