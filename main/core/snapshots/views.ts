// What list, info and thumbnail report: the stored tree after reconciliation, with what it found, and the
// disks that snapshots of this engine do not cover.
import { existsSync } from 'node:fs';
import type { VmState } from '../../api/schema.js';
import { gateOf } from './gate.js';
import { reconcile, type Reconciled } from './reconcile.js';
import { cachedListing } from './listing-cache.js';
import { readThumbnail, readTree, thumbnailPath } from './store.js';
import { readSnapshotPrefs } from './prefs.js';
import { schedulerOf, type ScheduleStatus } from './scheduler.js';
import { autoKindOf, diffConfigs, findNode, type ConfigChange, type SnapshotNode, type SnapshotTree } from './tree.js';
import { loadVm, type SnapVm, type SnapshotCore } from './vm.js';
import { configChanges, type WordChange } from './words.js';

/** A snapshot as list/info report it: the stored node plus what reconciliation found. */
export interface SnapshotView extends SnapshotNode {
  isCurrent: boolean;
  /** Disks (ids) that should hold it but do not ("vmstate" for a lost state file): restoring would be incomplete. */
  missingOn: string[];
  children: string[];
}

export interface SnapshotListing {
  vmId: string;
  vmName: string;
  state: VmState;
  current: string | null;
  snapshots: SnapshotView[];
  /** Reconciliation findings in words: adopted, missing, interrupted. */
  notes: string[];
  /** Writable disks that snapshots do not cover (a format that cannot hold them, or an engine that does not capture disks), with the fix. */
  unsupported: { diskId: string; format: string; hint: string }[];
  /** The VM's snapshot schedule and when the daemon's scheduler takes the next one (null: no schedule). */
  schedule: ({ everyMinutes: number; keep: number } & ScheduleStatus) | null;
  /** How many safety snapshots retention keeps (the library's preference; null keeps all). */
  safetyKeep: number | null;
}

export interface SnapshotDetails extends SnapshotView {
  /** How the snapshot's settings differ from the VM's current ones (from = snapshot, to = now). */
  configDiff: ConfigChange[];
  /** The same in words, one line per setting (snapshot → now). */
  changes: WordChange[];
  thumbnailPath: string | null;
}

/**
 * The disks snapshots leave out: what the provider cannot snapshot, and, for an engine whose snapshots
 * keep no disk contents at all, every other writable disk too.
 */
export function unsupportedDisks(vm: SnapVm): SnapshotListing['unsupported'] {
  const { eng, ctx } = vm;
  const out = [...eng.snapshots.targets(ctx).unsupported];
  const caps = eng.capabilities;
  if (caps.liveSnapshots !== 'full' && !caps.offlineSnapshots) {
    const hint =
      caps.liveSnapshots === 'memory'
        ? `disk contents are not captured by snapshots on the ${vm.entry.config.engine} engine: live snapshots of the running VM save memory and CPU state only; disk snapshots need an engine that offers them`
        : `the ${vm.entry.config.engine} engine has no snapshots`;
    for (const d of ctx.config.disks) if (!d.readOnly && !out.some((u) => u.diskId === d.id)) out.push({ diskId: d.id, format: d.format, hint });
  }
  return out;
}

function views(tree: SnapshotTree, missing: Map<string, string[]>): SnapshotView[] {
  // Children in time order, found in one pass (a thousand snapshots must not cost a million comparisons).
  const kids = new Map<string, string[]>();
  for (const n of [...tree.nodes].sort((a, b) => (a.time < b.time ? -1 : a.time > b.time ? 1 : a.id.localeCompare(b.id)))) {
    if (!n.parent) continue;
    const list = kids.get(n.parent);
    if (list) list.push(n.id);
    else kids.set(n.parent, [n.id]);
  }
  return [...tree.nodes]
    .sort((a, b) => (a.time < b.time ? -1 : a.time > b.time ? 1 : 0))
    .map((n) => {
      const auto = autoKindOf(n);
      return { ...n, ...(auto ? { auto } : {}), isCurrent: tree.current === n.id, missingOn: missing.get(n.id) ?? [], children: kids.get(n.id) ?? [] };
    });
}

/**
 * The tree with reconciliation. While another snapshot operation runs on the VM it only reports (never
 * adopting that operation's half-made snapshot) and says so.
 */
export async function listSnapshots(core: SnapshotCore, ref: string, opts: { brief?: boolean; rewarm?: boolean } = {}): Promise<SnapshotListing> {
  const vm = await loadVm(core, ref);
  const gate = gateOf(core);
  let readOnly = false;
  const fresh = async (write: boolean): Promise<{ r: Reconciled; snapshots: SnapshotView[]; brief?: SnapshotView[] }> => {
    const r = await reconcile(vm, write);
    return { r, snapshots: views(r.tree, r.missing) };
  };
  // A writing reconciliation is remembered until what it read changes (listing-cache.ts); one that only reports
  // (an operation holds the VM) is never cached.
  const got = await gate.reconcile(vm.entry.id, (write) => {
    readOnly = !write;
    // A list whose files were too fresh to cache lists once more when they have settled (that one does not again).
    const rewarm = opts.rewarm === false ? undefined : () => listSnapshots(core, vm.entry.id, { rewarm: false });
    return write ? cachedListing(gate, vm, () => fresh(true), (v) => v.r.settled, rewarm) : fresh(false);
  });
  const { r } = got;
  // Brief (the GUI): without each snapshot's settings, made once per cached listing.
  const snapshots = opts.brief ? (got.brief ??= got.snapshots.map((s) => ({ ...s, config: null }))) : got.snapshots;
  const notes = [...r.notes];
  if (readOnly) notes.push('a snapshot operation is in progress; the list may change when it finishes');
  return {
    vmId: vm.entry.id,
    vmName: vm.entry.config.name,
    state: vm.info.state,
    current: r.tree.current,
    // Shared with the cache: callers read the listing, never change it.
    snapshots: [...snapshots],
    notes,
    unsupported: unsupportedDisks(vm),
    schedule: await scheduleOf(core, vm),
    safetyKeep: (await readSnapshotPrefs(core.library.home)).safetyKeep,
  };
}

async function scheduleOf(core: SnapshotCore, vm: SnapVm): Promise<SnapshotListing['schedule']> {
  const s = vm.entry.config.snapshotSchedule;
  if (!s) return null;
  const status = (await schedulerOf(core)?.status(vm.info).catch(() => null)) ?? { nextAt: null };
  return { everyMinutes: s.everyMinutes, keep: s.keep, ...status };
}

export async function snapshotInfo(core: SnapshotCore, ref: string, snapRef: string): Promise<SnapshotDetails> {
  const listing = await listSnapshots(core, ref);
  const entry = await core.usable(ref);
  const node = findNode(await readTree(entry.dir), snapRef);
  // Found in the tree but not in the listing: it was deleted between the two reads.
  const view = listing.snapshots.find((s) => s.id === node.id) ?? { ...node, isCurrent: false, missingOn: [], children: [] };
  const thumb = thumbnailPath(entry.dir, node.id);
  return { ...view, configDiff: diffConfigs(node.config, entry.config), changes: configChanges(node.config, entry.config), thumbnailPath: node.thumbnail && existsSync(thumb) ? thumb : null };
}

export async function snapshotThumbnail(core: SnapshotCore, ref: string, snapRef: string): Promise<Buffer | null> {
  const entry = await core.usable(ref);
  const node = findNode(await readTree(entry.dir), snapRef);
  return node.thumbnail ? readThumbnail(entry.dir, node.id) : null;
}
