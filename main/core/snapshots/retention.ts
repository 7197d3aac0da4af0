// Retention of automatic snapshots: each VM keeps its newest N safety snapshots ("Before restoring X", N from
// the library's preferences, 3 by default) and its newest K scheduled ones (K from its schedule). Older ones
// are deleted like any snapshot (their children move up to their parent). A snapshot a person took is never
// pruned, nor the one the current state descends from, nor a base of linked clones; "Keep" on an automatic
// snapshot makes it a person's.
import { deleteSnapshot } from './delete.js';
import { readTree } from './store.js';
import { autoKindOf, byTime, type AutoKind, type SnapshotNode, type SnapshotTree } from './tree.js';
import { loadVm, type ProgressFn, type SnapshotCore } from './vm.js';

/** The automatic snapshots of `kind` that keeping the newest `keep` would delete, oldest first. */
export function pruneCandidates(tree: SnapshotTree, kind: AutoKind, keep: number | null): SnapshotNode[] {
  if (keep === null) return [];
  const auto = tree.nodes.filter((n) => autoKindOf(n) === kind).sort(byTime);
  const excess = auto.slice(0, Math.max(0, auto.length - keep));
  return excess.filter((n) => n.id !== tree.current && n.linkedClones.length === 0);
}

/**
 * Deletes what retention says must go (the caller holds the VM's snapshot gate); returns the deleted
 * snapshots. One that cannot be deleted now (the engine busy) is left for the next time.
 */
export async function pruneAutomatic(core: SnapshotCore, vmId: string, kind: AutoKind, keep: number | null, progress: ProgressFn = () => {}): Promise<SnapshotNode[]> {
  const vm = await loadVm(core, vmId);
  const doomed = pruneCandidates(await readTree(vm.entry.dir), kind, keep);
  const done: SnapshotNode[] = [];
  for (const [i, n] of doomed.entries()) {
    progress(`removing old automatic snapshot ${n.name}`, i / doomed.length);
    try {
      await deleteSnapshot(await loadVm(core, vmId), n.id, {});
      done.push(n);
    } catch {
      // Busy or gone meanwhile: retention tries again after the next automatic snapshot.
    }
  }
  return done;
}
