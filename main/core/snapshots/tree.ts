// The snapshot tree model: schema of snapshots/tree.json and the pure operations on it (no I/O here).
import { z } from 'zod';
import { VmConfig } from '../../api/schema.js';
import { VmdeskError, ErrorCode } from '../../api/errors.js';

export const SNAPSHOT_TREE_VERSION = 1;
export const SNAPSHOT_NAME_MAX = 64;
export const SNAPSHOT_DESCRIPTION_MAX = 4096;

export const SnapshotKind = z.enum(['live', 'disk-only']);
export type SnapshotKind = z.infer<typeof SnapshotKind>;

/**
 * Snapshots VMDesk took on its own: 'safety' ("Before restoring X", taken by a restore) and 'scheduled' (a VM's
 * snapshot schedule). Retention prunes these, never a snapshot a person took.
 */
export const AutoKind = z.enum(['safety', 'scheduled']);
export type AutoKind = z.infer<typeof AutoKind>;

export const SnapshotNode = z.object({
  id: z.string().regex(/^[a-z0-9]{4,32}$/),
  /** The tag QEMU knows it by inside every qcow2 disk; names are ours alone, so renames never touch disks. */
  tag: z.string().min(1).max(128),
  name: z.string().min(1).max(SNAPSHOT_NAME_MAX),
  description: z.string().max(SNAPSHOT_DESCRIPTION_MAX).default(''),
  time: z.string().datetime(),
  parent: z.string().nullable(),
  kind: SnapshotKind,
  /** The VM's settings when the snapshot was taken; restore brings them back. */
  config: VmConfig.nullable(),
  /** snapshots/<id>.png exists (live snapshots of a VM with a display). */
  thumbnail: z.boolean().default(false),
  /** Bytes of saved RAM/device state (qemu-img's vm-state-size) summed over the disks. */
  vmStateBytes: z.number().int().nonnegative().default(0),
  /** Ids of disks that hold this snapshot (set when taken; refreshed by reconciliation). */
  disks: z.array(z.string()).default([]),
  /** True when it was found on the disks rather than taken by VMDesk (made by qemu-img by hand, or a crash). */
  adopted: z.boolean().default(false),
  /** VM ids of linked clones whose base disks were made from this snapshot: it cannot be deleted while any exists. */
  linkedClones: z.array(z.string()).default([]),
  /**
   * Micro-VM snapshots only: the state file (memory, vCPU and device state) under snapshots/, e.g.
   * "<id>.vmstate". Such snapshots live in that file, not in any disk, and do not capture disk contents.
   */
  stateFile: z.string().regex(/^[a-z0-9]{4,32}\.vmstate$/).optional(),
  /** Taken automatically (see AutoKind); absent for snapshots a person took or kept ("Keep" clears it). */
  auto: AutoKind.optional(),
  /** A person kept this automatic snapshot ("Keep"): retention leaves it alone, whatever its description says. */
  kept: z.boolean().optional(),
});
export type SnapshotNode = z.infer<typeof SnapshotNode>;

export const SnapshotTree = z.object({
  version: z.literal(SNAPSHOT_TREE_VERSION),
  /** The snapshot the current state descends from ("you are here"), null before the first one. */
  current: z.string().nullable(),
  nodes: z.array(SnapshotNode),
  /** Snapshots whose QEMU job was started but not yet recorded: reconciliation finishes or drops them. */
  pending: z.array(SnapshotNode).default([]),
});
export type SnapshotTree = z.infer<typeof SnapshotTree>;

/** The description every safety snapshot gets; trees written before `auto` existed are recognised by it. */
export const SAFETY_DESCRIPTION_PREFIX = 'Taken automatically before restoring';

/** Whether VMDesk took this snapshot on its own, and why (older safety snapshots by their description). */
export function autoKindOf(n: Pick<SnapshotNode, 'auto' | 'description' | 'adopted' | 'kept'>): AutoKind | undefined {
  if (n.kept) return undefined;
  if (n.auto) return n.auto;
  return !n.adopted && n.description.startsWith(SAFETY_DESCRIPTION_PREFIX) ? 'safety' : undefined;
}

/** A micro-VM snapshot: held in a state file of its own, never in the VM's disks. */
export function isStateFileNode(n: Pick<SnapshotNode, 'stateFile'>): boolean {
  return typeof n.stateFile === 'string';
}

export function emptyTree(): SnapshotTree {
  return { version: SNAPSHOT_TREE_VERSION, current: null, nodes: [], pending: [] };
}

/** Checks a user-supplied snapshot name; `except` is the id being renamed, whose own name may be kept. */
export function checkSnapshotName(tree: SnapshotTree, raw: unknown, except?: string): string {
  if (typeof raw !== 'string') throw new VmdeskError(ErrorCode.invalid, 'snapshot name must be text');
  const name = raw.trim();
  if (!name) throw new VmdeskError(ErrorCode.invalid, 'snapshot name must not be empty');
  if (name.length > SNAPSHOT_NAME_MAX) throw new VmdeskError(ErrorCode.invalid, `snapshot name must be at most ${SNAPSHOT_NAME_MAX} characters (got ${name.length})`);
  // Names are shown in tables, trees and the CLI: control characters would break all three.
  if (/[\u0000-\u001f\u007f]/.test(name)) throw new VmdeskError(ErrorCode.invalid, 'snapshot name must not contain control characters');
  const clash = tree.nodes.find((n) => n.id !== except && n.name.toLowerCase() === name.toLowerCase());
  if (clash) throw new VmdeskError(ErrorCode.exists, `a snapshot named "${clash.name}" already exists`);
  return name;
}

export function checkDescription(raw: unknown): string {
  if (raw === undefined || raw === null) return '';
  if (typeof raw !== 'string') throw new VmdeskError(ErrorCode.invalid, 'description must be text');
  if (raw.length > SNAPSHOT_DESCRIPTION_MAX) throw new VmdeskError(ErrorCode.invalid, `description must be at most ${SNAPSHOT_DESCRIPTION_MAX} characters`);
  return raw;
}

/** Finds a snapshot by id, exact name, or unique id prefix; "current" is never special here. */
export function findNode(tree: SnapshotTree, ref: string): SnapshotNode {
  if (!ref) throw new VmdeskError(ErrorCode.invalid, 'a snapshot name or id is required');
  const exact = tree.nodes.find((n) => n.id === ref) ?? tree.nodes.find((n) => n.name === ref) ?? tree.nodes.find((n) => n.name.toLowerCase() === ref.toLowerCase());
  if (exact) return exact;
  const byPrefix = ref.length >= 4 ? tree.nodes.filter((n) => n.id.startsWith(ref)) : [];
  if (byPrefix.length === 1) return byPrefix[0]!;
  const known = tree.nodes.map((n) => n.name);
  throw new VmdeskError(ErrorCode.notFound, `no snapshot "${ref}"${known.length ? ` (snapshots: ${known.slice(0, 10).join(', ')}${known.length > 10 ? ', …' : ''})` : ' (the VM has no snapshots)'}`);
}

export function childrenOf(tree: SnapshotTree, id: string | null): SnapshotNode[] {
  return tree.nodes.filter((n) => n.parent === id).sort(byTime);
}

export function byTime(a: SnapshotNode, b: SnapshotNode): number {
  return a.time < b.time ? -1 : a.time > b.time ? 1 : a.id.localeCompare(b.id);
}

/** The node and every node below it, parents before children. */
export function subtree(tree: SnapshotTree, id: string): SnapshotNode[] {
  const out: SnapshotNode[] = [];
  const walk = (nid: string) => {
    const n = tree.nodes.find((x) => x.id === nid);
    if (!n) return;
    out.push(n);
    for (const c of childrenOf(tree, nid)) walk(c.id);
  };
  walk(id);
  return out;
}

/** Ids from the root down to `id` (inclusive). */
export function ancestry(tree: SnapshotTree, id: string | null): string[] {
  const path: string[] = [];
  const seen = new Set<string>();
  let cur = id;
  while (cur && !seen.has(cur)) {
    seen.add(cur);
    path.unshift(cur);
    cur = tree.nodes.find((n) => n.id === cur)?.parent ?? null;
  }
  return path;
}

export function addNode(tree: SnapshotTree, node: SnapshotNode, makeCurrent = true): SnapshotTree {
  if (tree.nodes.some((n) => n.id === node.id)) throw new VmdeskError(ErrorCode.internal, `snapshot id ${node.id} already used`);
  return { ...tree, nodes: [...tree.nodes, node], current: makeCurrent ? node.id : tree.current };
}

/**
 * Removes one node; its children move up to its parent (the disks keep every other snapshot complete, so
 * nothing else changes). When it was "current", its parent becomes current.
 */
export function removeNode(tree: SnapshotTree, id: string): SnapshotTree {
  const node = tree.nodes.find((n) => n.id === id);
  if (!node) return tree;
  const nodes = tree.nodes.filter((n) => n.id !== id).map((n) => (n.parent === id ? { ...n, parent: node.parent } : n));
  return { ...tree, nodes, current: tree.current === id ? node.parent : tree.current };
}

/** Removes a node with everything below it; "current" moves to the branch's parent if it was inside. */
export function removeBranch(tree: SnapshotTree, id: string): SnapshotTree {
  const node = tree.nodes.find((n) => n.id === id);
  if (!node) return tree;
  const gone = new Set(subtree(tree, id).map((n) => n.id));
  return {
    ...tree,
    nodes: tree.nodes.filter((n) => !gone.has(n.id)),
    current: tree.current && gone.has(tree.current) ? node.parent : tree.current,
  };
}

export function updateNode(tree: SnapshotTree, id: string, patch: Partial<SnapshotNode>): SnapshotTree {
  return { ...tree, nodes: tree.nodes.map((n) => (n.id === id ? { ...n, ...patch, id: n.id } : n)) };
}

/** Repairs parent links that point nowhere (hand-edited or half-written files) and a dangling current. */
export function normalizeTree(tree: SnapshotTree): SnapshotTree {
  const ids = new Set(tree.nodes.map((n) => n.id));
  const nodes = tree.nodes.map((n) => (n.parent && (!ids.has(n.parent) || n.parent === n.id) ? { ...n, parent: null } : n));
  // Break cycles: a node whose ancestry loops back is made a root.
  const fixed = nodes.map((n) => {
    const seen = new Set<string>([n.id]);
    let p = n.parent;
    while (p) {
      if (seen.has(p)) return { ...n, parent: null };
      seen.add(p);
      p = nodes.find((x) => x.id === p)?.parent ?? null;
    }
    return n;
  });
  return { ...tree, nodes: fixed, current: tree.current && ids.has(tree.current) ? tree.current : null };
}

/** Plain-text tree for the CLI: one line per snapshot, "*" after the one the current state descends from. */
export function renderTreeText(tree: SnapshotTree, label: (n: SnapshotNode) => string = (n) => n.name): string[] {
  const lines: string[] = [];
  const walk = (n: SnapshotNode, prefix: string, last: boolean, root: boolean) => {
    const here = tree.current === n.id ? '  <- current state' : '';
    lines.push(`${root ? '' : prefix + (last ? '└─ ' : '├─ ')}${label(n)}${here}`);
    const kids = childrenOf(tree, n.id);
    kids.forEach((c, i) => walk(c, root ? '' : prefix + (last ? '   ' : '│  '), i === kids.length - 1, false));
  };
  for (const r of childrenOf(tree, null)) walk(r, '', true, true);
  return lines;
}

/** A top-level difference between two configs, for "what would restore change". */
export interface ConfigChange {
  field: string;
  from: unknown;
  to: unknown;
}

// A restore keeps the VM's identity (id, name) and its current schedule, so none of these is a difference.
const DIFF_IGNORED = new Set(['modifiedAt', 'createdAt', 'schemaVersion', 'id', 'name', 'snapshotSchedule']);

/** Fields whose values differ between `a` (e.g. the snapshot's) and `b` (e.g. the current config). */
export function diffConfigs(a: VmConfig | null, b: VmConfig | null): ConfigChange[] {
  if (!a || !b) return [];
  const keys = new Set([...Object.keys(a), ...Object.keys(b)]);
  const out: ConfigChange[] = [];
  for (const k of [...keys].sort()) {
    if (DIFF_IGNORED.has(k)) continue;
    const va = (a as Record<string, unknown>)[k];
    const vb = (b as Record<string, unknown>)[k];
    if (JSON.stringify(va) !== JSON.stringify(vb)) out.push({ field: k, from: va, to: vb });
  }
  return out;
}
