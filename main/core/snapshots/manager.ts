// Snapshots of one VM, the facade the CLI, the server and clones call: list (with reconciliation), info,
// thumbnail, take, restore, delete, rename, describe, disk conversion. The work is in one module per concern
// (views, reconcile, take, restore, delete, edit, convert); the engine is reached only through the VM's
// engine module (capabilities and snapshot provider). Every operation that changes a VM's snapshots holds
// its in-process gate (gate.ts), so a list running meanwhile only reports.
import type { VmInfo } from '../../api/schema.js';
import type { SnapshotTarget } from '../../engines/engine.js';
import { convertVmDisk } from './convert.js';
import { deleteSnapshot, type DeleteOptions } from './delete.js';
import { describePatch, editSnapshot, linkedClonePatch, renamePatch } from './edit.js';
import { gateOf } from './gate.js';
import { restoreSnapshot, type RestoreOptions, type RestoreResult } from './restore.js';
import { takeSnapshot, type TakeOptions } from './take.js';
import type { SnapshotNode } from './tree.js';
import { listSnapshots, snapshotInfo, snapshotThumbnail, type SnapshotDetails, type SnapshotListing } from './views.js';
import { loadVm, unsupportedError, type ProgressFn, type SnapshotCore, type SnapVm, type UsableEntry } from './vm.js';

export type { SnapshotTarget } from '../../engines/engine.js';
export type { DeleteOptions } from './delete.js';
export type { RestoreOptions, RestoreResult } from './restore.js';
export { MEMORY_SNAPSHOT_NOTE, type TakeOptions } from './take.js';
export type { SnapshotDetails, SnapshotListing, SnapshotView } from './views.js';
export { diskFile, uefiVarsFile, type ProgressFn, type SnapshotCore } from './vm.js';

export class SnapshotManager {
  constructor(private readonly core: SnapshotCore) {}

  /** Runs `fn` as the VM's one snapshot operation, on the VM as it is once the gate is held. */
  private async exclusive<T>(ref: string, what: string, fn: (vm: SnapVm) => Promise<T>): Promise<T> {
    const entry = await this.core.usable(ref);
    return gateOf(this.core).exclusive(entry.id, entry.config.name, what, async () => fn(await loadVm(this.core, entry.id)));
  }

  // ---- reading -------------------------------------------------------------------------------------------

  /**
   * The tree with reconciliation: snapshots recorded but missing from storage are reported; snapshots in
   * storage that the metadata lacks are adopted (and written back, when no snapshot operation runs).
   */
  list(ref: string): Promise<SnapshotListing> {
    return listSnapshots(this.core, ref);
  }

  /**
   * Reconciles every VM's snapshots (for start-up): finishes or drops interrupted takes, adopts snapshots
   * found only in storage, and returns what it found per VM. A VM it cannot read is reported, not fatal.
   */
  async reconcileAll(): Promise<{ vm: string; notes: string[] }[]> {
    const out: { vm: string; notes: string[] }[] = [];
    for (const e of await this.core.library.list()) {
      // Only VMs the core can use (a bundle on an engine this VMDesk lacks is listed as broken, not checked).
      if (!(await this.core.resolve(e.id).catch(() => null))?.config) continue;
      try {
        const l = await this.list(e.id);
        if (l.notes.length) out.push({ vm: l.vmName, notes: l.notes });
      } catch (err) {
        out.push({ vm: e.config?.name ?? e.id, notes: [`snapshots could not be checked: ${(err as Error).message}`] });
      }
    }
    return out;
  }

  info(ref: string, snapRef: string): Promise<SnapshotDetails> {
    return snapshotInfo(this.core, ref, snapRef);
  }

  thumbnail(ref: string, snapRef: string): Promise<Buffer | null> {
    return snapshotThumbnail(this.core, ref, snapRef);
  }

  /**
   * The files that carry the VM's snapshots, as its engine names them; with `strict` (the default), EINVAL
   * naming the first writable disk that cannot.
   */
  async targets(ref: string | UsableEntry, opts: { strict?: boolean } = { strict: true }): Promise<SnapshotTarget[]> {
    const vm = await loadVm(this.core, typeof ref === 'string' ? ref : ref.id);
    const { targets, unsupported } = vm.eng.snapshots.targets(vm.ctx);
    if (opts.strict && unsupported[0]) throw unsupportedError(vm.entry.config.name, unsupported[0]);
    return targets;
  }

  // ---- changing ------------------------------------------------------------------------------------------

  take(ref: string, opts: TakeOptions): Promise<SnapshotNode> {
    return this.exclusive(ref, `taking snapshot "${opts.name}"`, (vm) => takeSnapshot(vm, opts));
  }

  /**
   * Brings the VM back to a snapshot. Disk-only: the VM ends stopped with its disks reverted. Live: the VM
   * ends running where it was when the snapshot was taken. Settings return to the snapshot's.
   */
  restore(ref: string, snapRef: string, opts: RestoreOptions = {}): Promise<RestoreResult> {
    return this.exclusive(ref, `restoring snapshot "${snapRef}"`, (vm) => restoreSnapshot(vm, snapRef, opts));
  }

  delete(ref: string, snapRef: string, opts: DeleteOptions = {}): Promise<{ deleted: string[] }> {
    return this.exclusive(ref, `deleting snapshot "${snapRef}"`, (vm) => deleteSnapshot(vm, snapRef, opts));
  }

  rename(ref: string, snapRef: string, newName: string): Promise<SnapshotNode> {
    return this.exclusive(ref, `renaming snapshot "${snapRef}"`, (vm) => editSnapshot(vm.entry.dir, snapRef, renamePatch(newName)));
  }

  describe(ref: string, snapRef: string, description: string): Promise<SnapshotNode> {
    return this.exclusive(ref, `describing snapshot "${snapRef}"`, (vm) => editSnapshot(vm.entry.dir, snapRef, describePatch(description)));
  }

  /** Records (or forgets) a linked clone built on a snapshot, so the snapshot is protected from deletion. */
  async markLinkedClone(ref: string, snapId: string, cloneVmId: string, add: boolean): Promise<void> {
    await this.exclusive(ref, 'recording a linked clone', (vm) => editSnapshot(vm.entry.dir, snapId, linkedClonePatch(cloneVmId, add)));
  }

  /**
   * Holds the VM's snapshot gate while fn runs; `take` snapshots inside it (a clone from the current state
   * takes its base snapshot so, and nothing can delete it before the clone records itself).
   */
  withLock<T>(ref: string, fn: (entry: UsableEntry, take: (o: TakeOptions) => Promise<SnapshotNode>) => Promise<T>): Promise<T> {
    return this.exclusive(ref, 'cloning', (vm) => fn(vm.entry, async (o) => takeSnapshot(await loadVm(this.core, vm.entry.id), o)));
  }

  /** Converts a stopped VM's disk to its engine's own format (the fix offered for disks without snapshots). */
  convertDisk(ref: string, diskId: string, onProgress?: ProgressFn): Promise<VmInfo> {
    return this.exclusive(ref, `converting disk ${diskId}`, (vm) => convertVmDisk(vm, diskId, onProgress));
  }
}
