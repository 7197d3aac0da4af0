// Deleting a snapshot (or a whole branch): from the engine's storage (through the running guest when there
// is one), then from the tree, with its thumbnail and linked-clone bases. A snapshot that linked clones are
// built on is refused.
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { VmdeskError, ErrorCode } from '../../api/errors.js';
import { basesDir, readTree, removeThumbnail, stateFilePath, writeTree } from './store.js';
import { findNode, isStateFileNode, removeNode, subtree, type SnapshotNode } from './tree.js';
import { isRunning, refOf, requireSettled, runtimeOf, type ProgressFn, type SnapVm, type SnapshotCore } from './vm.js';

export interface DeleteOptions {
  /** Delete the snapshot and everything below it. */
  branch?: boolean;
  onProgress?: ProgressFn;
}

/** Linked clones of a snapshot that still exist (ids of clones deleted since are ignored). */
async function liveCloneNames(core: SnapshotCore, n: SnapshotNode): Promise<string[]> {
  const out: string[] = [];
  for (const id of n.linkedClones) {
    const e = await core.resolve(id).catch(() => null);
    if (e) out.push(e.config?.name ?? id);
  }
  return out;
}

/** Deletes; the caller holds the VM's snapshot gate. */
export async function deleteSnapshot(vm: SnapVm, snapRef: string, opts: DeleteOptions): Promise<{ deleted: string[] }> {
  const progress = opts.onProgress ?? (() => {});
  const { core, entry, eng, ctx } = vm;
  const tree0 = await readTree(entry.dir);
  const node = findNode(tree0, snapRef);
  const doomed = opts.branch ? subtree(tree0, node.id) : [node];
  for (const n of doomed) {
    const clones = await liveCloneNames(core, n);
    if (clones.length) throw new VmdeskError(ErrorCode.busy, `snapshot "${n.name}" is the base of linked clone${clones.length > 1 ? 's' : ''} ${clones.join(', ')}; delete ${clones.length > 1 ? 'them' : 'it'} first`);
  }
  requireSettled(vm);
  const rt = isRunning(vm.info.state) ? runtimeOf(vm) : undefined;
  if (rt && doomed.some((n) => !isStateFileNode(n))) {
    // Checked before anything goes, so a branch is never left half-deleted by work the engine is doing.
    const busy = await eng.snapshots.busy(rt);
    if (busy.length) throw new VmdeskError(ErrorCode.busy, `"${entry.config.name}" is busy with ${busy.join(', ')}; try again when it has finished`);
  }
  const deleted: string[] = [];
  // Deepest first, so an interruption leaves a consistent tree (children gone before parents).
  for (const [i, n] of [...doomed].reverse().entries()) {
    progress(`deleting ${n.name}`, i / doomed.length);
    if (isStateFileNode(n)) {
      // Its own file, nothing in the engine (a guest loaded from it keeps its own copy-on-write view).
      await writeTree(entry.dir, removeNode(await readTree(entry.dir), n.id));
      await fs.rm(stateFilePath(entry.dir, n.id), { force: true });
      deleted.push(n.id);
      continue;
    }
    // The provider removes the tag wherever it is and does nothing where it is not (a snapshot already
    // missing from its disks still leaves the tree).
    if (rt) await eng.snapshots.deleteLive(rt, ctx, refOf(entry.dir, n));
    else await eng.snapshots.deleteOffline(ctx, refOf(entry.dir, n));
    await writeTree(entry.dir, removeNode(await readTree(entry.dir), n.id));
    await removeThumbnail(entry.dir, n.id);
    await fs.rm(path.join(basesDir(entry.dir), n.id), { recursive: true, force: true });
    deleted.push(n.id);
  }
  progress('done', 1);
  return { deleted };
}
