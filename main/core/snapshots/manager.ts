// Snapshots of one VM, the facade the CLI, the server and clones call: list (with reconciliation), info,
// thumbnail, take, restore, delete, rename, describe, disk conversion. The work is in one module per concern
// (views, reconcile, take, restore, delete, edit, convert); the engine is reached only through the VM's
// engine module (capabilities and snapshot provider). Every operation that changes a VM's snapshots holds
// its in-process gate (gate.ts), so a list running meanwhile only reports.
import type { SnapshotSchedule, VmInfo } from '../../api/schema.js';
import type { SnapshotTarget } from '../../engines/engine.js';
import { convertVmDisk } from './convert.js';
import { deleteSnapshot, type DeleteOptions } from './delete.js';
import { describePatch, editSnapshot, linkedClonePatch, renamePatch } from './edit.js';
import { gateOf } from './gate.js';
import { readSnapshotPrefs, writeSnapshotPrefs, type SnapshotPrefs } from './prefs.js';
import { restorePlan, restoreSnapshot, type RestoreOptions, type RestorePlan, type RestoreResult } from './restore.js';
import { pruneAutomatic } from './retention.js';
import { readTree } from './store.js';
import { takeSnapshot, type TakeOptions } from './take.js';
import { autoKindOf, findNode, type SnapshotNode } from './tree.js';
import { listSnapshots, snapshotInfo, snapshotThumbnail, type SnapshotDetails, type SnapshotListing } from './views.js';
import { loadVm, uniqueSnapshotName, unsupportedError, type ProgressFn, type SnapshotCore, type SnapVm, type UsableEntry } from './vm.js';
import { configChanges, type WordChange } from './words.js';
import { VmdeskError, ErrorCode } from '../../api/errors.js';

export type { SnapshotTarget } from '../../engines/engine.js';
export type { DeleteOptions } from './delete.js';
export type { RestoreOptions, RestorePlan, RestoreResult } from './restore.js';
export type { SnapshotPrefs } from './prefs.js';
export type { WordChange } from './words.js';
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
  list(ref: string, opts: { brief?: boolean } = {}): Promise<SnapshotListing> {
    return listSnapshots(this.core, ref, opts);
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

  // ---- automatic snapshots, retention, schedules, comparisons ------------------------------------------------

  /** What restoring would do (state before and after, settings that revert, safety snapshot, retention). */
  restorePlan(ref: string, snapRef: string, opts: { snapshotCurrent?: boolean } = {}): Promise<RestorePlan> {
    return restorePlan(this.core, ref, snapRef, opts);
  }

  /** Settings of snapshot `fromRef` against snapshot `toRef`, or against the VM's settings now when absent. */
  async compare(ref: string, fromRef: string, toRef?: string): Promise<{ from: { id: string; name: string }; to: { id: string; name: string } | null; changes: WordChange[]; unknown: boolean }> {
    const entry = await this.core.usable(ref);
    const tree = await readTree(entry.dir);
    const a = findNode(tree, fromRef);
    const b = toRef === undefined ? null : findNode(tree, toRef);
    const toConfig = b ? b.config : entry.config;
    return { from: { id: a.id, name: a.name }, to: b ? { id: b.id, name: b.name } : null, changes: configChanges(a.config, toConfig), unknown: !a.config || !toConfig };
  }

  /** A scheduled snapshot and the retention of its schedule, as one operation (the scheduler runs it as the VM's job). */
  takeScheduled(ref: string, o: { name: string; description: string; keep: number }): Promise<{ node: SnapshotNode; pruned: string[] }> {
    return this.exclusive(ref, 'taking a scheduled snapshot', async (vm) => {
      const node = await takeSnapshot(vm, { name: uniqueSnapshotName(await readTree(vm.entry.dir), o.name), description: o.description, auto: 'scheduled' });
      const pruned = await pruneAutomatic(this.core, vm.entry.id, 'scheduled', o.keep);
      return { node, pruned: pruned.map((n) => n.name) };
    });
  }

  /** Applies retention now: safety snapshots past the library's limit, scheduled ones past the VM's schedule. */
  prune(ref: string, onProgress?: ProgressFn): Promise<{ deleted: SnapshotNode[] }> {
    return this.exclusive(ref, 'removing old automatic snapshots', async (vm) => {
      const { safetyKeep } = await readSnapshotPrefs(this.core.library.home);
      const a = await pruneAutomatic(this.core, vm.entry.id, 'safety', safetyKeep, onProgress);
      const keep = vm.entry.config.snapshotSchedule?.keep;
      const b = keep ? await pruneAutomatic(this.core, vm.entry.id, 'scheduled', keep, onProgress) : [];
      return { deleted: [...a, ...b] };
    });
  }

  /** Makes an automatic snapshot a person's: retention never deletes it. */
  keep(ref: string, snapRef: string): Promise<SnapshotNode> {
    return this.exclusive(ref, `keeping snapshot "${snapRef}"`, (vm) =>
      editSnapshot(vm.entry.dir, snapRef, (_t, n) => {
        if (!autoKindOf(n)) throw new VmdeskError(ErrorCode.invalid, `snapshot "${n.name}" was not taken automatically; retention never deletes it`);
        return { auto: undefined, kept: true };
      }),
    );
  }

  /** Sets (or, with null, removes) the VM's snapshot schedule in vm.json. */
  async setSchedule(ref: string, schedule: SnapshotSchedule | null): Promise<VmInfo> {
    const entry = await this.core.usable(ref);
    if (schedule) {
      const eng = await this.core.engineOf(entry.config);
      if (eng.capabilities.liveSnapshots === false) throw new VmdeskError(ErrorCode.invalid, `the ${entry.config.engine} engine cannot snapshot a running VM, so "${entry.config.name}" cannot have scheduled snapshots`);
    }
    const { snapshotSchedule: _old, ...rest } = entry.config;
    void _old;
    return this.core.saveConfig(entry.id, { ...rest, ...(schedule ? { snapshotSchedule: schedule } : {}), modifiedAt: new Date().toISOString() });
  }

  preferences(patch?: Partial<SnapshotPrefs>): Promise<SnapshotPrefs> {
    return patch && Object.keys(patch).length ? writeSnapshotPrefs(this.core.library.home, patch) : readSnapshotPrefs(this.core.library.home);
  }

  /** Converts a stopped VM's disk to its engine's own format (the fix offered for disks without snapshots). */
  convertDisk(ref: string, diskId: string, onProgress?: ProgressFn): Promise<VmInfo> {
    return this.exclusive(ref, `converting disk ${diskId}`, (vm) => convertVmDisk(vm, diskId, onProgress));
  }
}

