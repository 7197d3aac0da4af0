// The reconciled listing of a VM, kept between lists while nothing it was read from has changed. Reconciling
// 1,000 snapshots reads tree.json (parse and validate) and asks the engine what its storage holds (qemu-img
// info over every disk): ~300 ms, for an answer that is the same until something writes. The key is a stamp
// of every input, taken before reading them:
//   - the engine's own stamp of what stored() reads (provider.stamp: for QEMU the disks' and the UEFI store's
//     identity, size and change times); an engine without one is never cached;
//   - tree.json's and the snapshots/ directory's identity, size and change times (the directory moves when a
//     state file, a thumbnail or an atomically written tree.json comes or goes);
//   - the VM's state (a running guest's disks are read shared, and recovery differs).
// A file changed less than a second ago makes the stamp null (its coarse timestamps could hide a second change
// in the same tick), and so does a listing that could not read the storage or left a take pending. Snapshot
// operations of this daemon also drop the entry (gate.ts). So a change by any path (this daemon, qemu-img by
// hand, another tool, a crash that left tree.json behind) changes a stamp and the next list reconciles afresh.
// A list that found files too fresh to stamp asks for one more list once they have settled (rewarm), so the
// next visit to the Snapshots tab after a take or a scheduled snapshot finds the listing ready.
import path from 'node:path';
import { fileStamp, RACY_MS } from '../../platform/file-stamp.js';
import type { SnapshotGate } from './gate.js';
import { snapshotDir, TREE_FILE } from './store.js';
import type { SnapVm } from './vm.js';

/** The stamp of everything a reconciliation of `vm` reads, or null when it cannot be cached now. */
export async function listingStamp(vm: SnapVm): Promise<string | null> {
  const provider = vm.eng.snapshots;
  if (!provider.stamp) return null;
  const now = Date.now();
  const dir = snapshotDir(vm.entry.dir);
  const tree = await fileStamp(path.join(dir, TREE_FILE), now);
  const folder = await fileStamp(dir, now);
  if (tree === null || folder === null) return null;
  const engine = await provider.stamp(vm.ctx).catch(() => null);
  if (engine === null) return null;
  return [vm.info.state, vm.entry.config.engine, tree, folder, engine].join('#');
}

/**
 * `read()` (a writing reconciliation and what is derived from it), or what it returned last time when the
 * stamp is the same. `settled(value)` says whether a fresh value may be remembered.
 */
export async function cachedListing<T>(gate: SnapshotGate, vm: SnapVm, read: () => Promise<T>, settled: (v: T) => boolean, rewarm?: () => Promise<unknown>): Promise<T> {
  const stamp = await listingStamp(vm);
  if (stamp !== null) {
    const hit = gate.cachedListing<T>(vm.entry.id, stamp);
    if (hit !== undefined) return hit;
  }
  const value = await read();
  if (stamp !== null && settled(value)) gate.rememberListing(vm.entry.id, stamp, value);
  else {
    gate.forgetListing(vm.entry.id);
    // Too fresh to stamp (an engine that can stamp): one more list once the files have settled.
    if (rewarm && vm.eng.snapshots.stamp) gate.later(vm.entry.id, RACY_MS + 100, rewarm);
  }
  return value;
}
