// Snapshots of one VM: take, list (with reconciliation against the disks), restore, delete, rename, describe.
import { promises as fs, existsSync } from 'node:fs';
import path from 'node:path';
import type { VmConfig, VmInfo, VmState, Disk } from '../../api/schema.js';
import type { VmEvent } from '../../api/events.js';
import { VmdeskError, ErrorCode } from '../../api/errors.js';
import type { BundleEntry, VmLibrary } from '../library.js';
import * as img from './qemu-img.js';
import { vmDiskSource } from './clone.js';
import { activeJobs, dismissStaleJobs, runJob, type QmpFn } from './qmp-jobs.js';
import {
  addNode,
  checkDescription,
  checkSnapshotName,
  childrenOf,
  diffConfigs,
  findNode,
  isStateFileNode,
  removeNode,
  subtree,
  updateNode,
  type ConfigChange,
  type SnapshotKind,
  type SnapshotNode,
  type SnapshotTree,
  SNAPSHOT_DESCRIPTION_MAX,
} from './tree.js';
import { idFromTag, newSnapshotId, readThumbnail, readTree, removeThumbnail, stateFilePath, tagFor, withSnapshotLock, writeThumbnail, writeTree } from './store.js';

/** The parts of Core that snapshots use; Core satisfies it structurally, so nothing here imports the engine. */
export interface SnapshotCore {
  readonly library: VmLibrary;
  resolve(ref: string): Promise<BundleEntry>;
  get(ref: string): Promise<VmInfo>;
  command(ref: string, execute: string, args?: Record<string, unknown>, timeoutMs?: number): Promise<unknown>;
  screenshot(ref: string): Promise<Buffer>;
  start(ref: string, opts?: { paused?: boolean }): Promise<VmInfo>;
  kill(ref: string): Promise<VmInfo>;
  resume(ref: string): Promise<VmInfo>;
  emit(event: 'event', ev: VmEvent): boolean;
}

export type ProgressFn = (phase: string, fraction?: number) => void;

const RUNNING: VmState[] = ['running', 'paused'];
const BUSY: VmState[] = ['starting', 'stopping'];

/** Saving or loading a micro-VM's state file: memory is written sparse, but a big guest on a slow disk takes a while. */
const MICROVM_STATE_TIMEOUT_MS = 10 * 60_000;

/** Appended to the description of every micro-VM snapshot, so nobody expects their disks to come back. */
export const MICROVM_SNAPSHOT_NOTE = 'Micro-VM snapshot: memory, CPU and device state only; disk contents are not captured (restoring it does not revert the disks).';

function withMicrovmNote(description: string): string {
  if (!description) return MICROVM_SNAPSHOT_NOTE;
  const room = SNAPSHOT_DESCRIPTION_MAX - MICROVM_SNAPSHOT_NOTE.length - 2;
  return `${description.slice(0, room)}\n\n${MICROVM_SNAPSHOT_NOTE}`;
}

export function diskFile(bundleDir: string, d: Disk): string {
  return path.isAbsolute(d.path) ? d.path : path.join(bundleDir, d.path);
}

/** The per-VM UEFI variable store (qcow2, engine layout): snapshotted with the disks when present. */
export function uefiVarsFile(bundleDir: string): string {
  return path.join(bundleDir, 'uefi-vars.qcow2');
}

/** One file that carries snapshots: a writable VM disk or the UEFI variable store. */
export interface SnapshotTarget {
  /** Disk id, or "uefi-vars". */
  id: string;
  file: string;
  format: string;
}

/** A snapshot as list/info report it: the stored node plus what reconciliation found on the disks. */
export interface SnapshotView extends SnapshotNode {
  isCurrent: boolean;
  /** Disks (ids) that should hold it but do not: restoring would be incomplete. */
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
  /** Writable disks that cannot hold snapshots (raw, vmdk, ...), with the fix. */
  unsupported: { diskId: string; format: string; hint: string }[];
}

export interface SnapshotDetails extends SnapshotView {
  /** How the snapshot's settings differ from the VM's current ones (from = snapshot, to = now). */
  configDiff: ConfigChange[];
  thumbnailPath: string | null;
}

export interface TakeOptions {
  name: string;
  description?: string;
  /** Force a disk-only snapshot of a running VM's disks is not offered: a running VM always gets a live one. */
  onProgress?: ProgressFn;
}

export interface RestoreOptions {
  /** Take a snapshot of the current state first (default true), so nothing is lost by restoring. */
  snapshotCurrent?: boolean;
  /** Name for that safety snapshot. */
  currentName?: string;
  onProgress?: ProgressFn;
}

export interface DeleteOptions {
  /** Delete the snapshot and everything below it. */
  branch?: boolean;
  onProgress?: ProgressFn;
}

export class SnapshotManager {
  constructor(private readonly core: SnapshotCore) {}

  // ---- helpers ---------------------------------------------------------------------------------------

  private async usable(ref: string): Promise<BundleEntry & { config: VmConfig }> {
    const e = await this.core.resolve(ref);
    if (!e.config) throw new VmdeskError(ErrorCode.broken, `VM bundle ${e.dir} is broken: ${e.broken}`);
    return e as BundleEntry & { config: VmConfig };
  }

  /**
   * Raw QMP to the VM. QEMU's monitor does not answer while it writes or loads a snapshot (seconds for a
   * big guest on a busy host); meanwhile the core may time out, drop its connection to the supervisor
   * (rejecting in-flight calls with ECANCELED) and even report the VM as not running. Calls are therefore
   * retried for up to a minute on those two errors; starting a job is safe to retry thanks to its job-id.
   */
  private qmp(vmId: string): QmpFn {
    const call: QmpFn = async (execute, args, timeoutMs) => {
      const deadline = Date.now() + 60_000;
      for (let attempt = 0; ; attempt++) {
        try {
          return await this.core.command(vmId, execute, args, timeoutMs);
        } catch (e) {
          const transient = e instanceof VmdeskError && (e.code === ErrorCode.cancelled || (e.code === ErrorCode.state && /not running/.test(e.message)));
          if (!transient || Date.now() > deadline) throw e;
          await new Promise((r) => setTimeout(r, Math.min(1000, 50 * (attempt + 1))));
          const jobId = (args as { 'job-id'?: string } | undefined)?.['job-id'];
          if (jobId) {
            // Did the job start before the connection dropped? Then it is running: do not start it twice.
            const jobs = (await call('query-jobs').catch(() => [])) as { id: string }[];
            if (jobs.some((j) => j.id === jobId)) return {};
          }
        }
      }
    };
    return call;
  }

  /** Files that carry the VM's snapshots; throws EINVAL naming any writable disk that cannot. */
  targets(entry: BundleEntry & { config: VmConfig }, opts: { strict?: boolean } = { strict: true }): SnapshotTarget[] {
    const out: SnapshotTarget[] = [];
    if (entry.config.engine !== 'qemu') {
      // The micro-VMM reads raw disks only, so converting them (the usual fix) would break it.
      if (opts.strict) throw new VmdeskError(ErrorCode.invalid, `"${entry.config.name}" runs on the ${entry.config.engine} engine, whose raw disks cannot hold snapshots; switch it to the qemu engine (vmdesk set "${entry.config.name}" --engine qemu) and convert its disks to take snapshots`);
      return out;
    }
    for (const d of entry.config.disks) {
      if (d.readOnly) continue;
      if (d.format !== 'qcow2') {
        if (opts.strict) throw unsupportedDisk(entry.config.name, d);
        continue;
      }
      out.push({ id: d.id, file: diskFile(entry.dir, d), format: d.format });
    }
    if (entry.config.firmware === 'uefi' && existsSync(uefiVarsFile(entry.dir))) out.push({ id: 'uefi-vars', file: uefiVarsFile(entry.dir), format: 'qcow2' });
    return out;
  }

  private unsupported(config: VmConfig): SnapshotListing['unsupported'] {
    if (config.engine !== 'qemu') {
      return config.disks.map((d) => ({
        diskId: d.id,
        format: d.format,
        hint: `the ${config.engine} engine's raw disks are not captured by snapshots: live snapshots of the running VM save memory and CPU state only; disk snapshots need the qemu engine`,
      }));
    }
    return config.disks
      .filter((d) => !d.readOnly && d.format !== 'qcow2')
      .map((d) => ({ diskId: d.id, format: d.format, hint: `convert it to qcow2 with: vmdesk snapshot convert-disk "${config.name}" ${d.id}` }));
  }

  /**
   * Forced power-off that tolerates the race where the core's own exit watcher closes the handle while the
   * kill request is in flight ("handle was closed"): what matters is that the VM is stopped afterwards.
   */
  private async powerOff(vmId: string): Promise<void> {
    try {
      await this.core.kill(vmId);
    } catch (e) {
      const deadline = Date.now() + 10_000;
      for (;;) {
        const st = (await this.core.get(vmId)).state;
        if (st === 'stopped' || st === 'crashed') return;
        if (Date.now() > deadline) throw e;
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  }

  private emitUpdated(info: VmInfo): void {
    this.core.emit('event', { type: 'vm-updated', id: info.id, info });
  }

  // ---- reading ---------------------------------------------------------------------------------------

  /**
   * The tree with reconciliation: snapshots recorded but missing from disks are reported; snapshots on the
   * disks that the metadata lacks are adopted (and written back, when no other snapshot operation runs).
   */
  async list(ref: string): Promise<SnapshotListing> {
    const entry = await this.usable(ref);
    const info = await this.core.get(entry.id);
    let result: { tree: SnapshotTree; notes: string[]; missing: Map<string, string[]> } | undefined;
    try {
      result = await withSnapshotLock(entry.dir, entry.config.name, () => this.reconcile(entry, info.state, true), 200);
    } catch (e) {
      if (!(e instanceof VmdeskError && e.code === ErrorCode.busy)) throw e;
      // A snapshot operation is running: report without writing, so we never adopt its half-made snapshot.
      result = await this.reconcile(entry, info.state, false);
      result.notes.push('a snapshot operation is in progress; the list may change when it finishes');
    }
    return {
      vmId: entry.id,
      vmName: entry.config.name,
      state: info.state,
      current: result.tree.current,
      snapshots: this.views(result.tree, result.missing),
      notes: result.notes,
      unsupported: this.unsupported(entry.config),
    };
  }

  /**
   * Reconciles every VM's snapshots (for start-up): finishes or drops interrupted takes, adopts snapshots
   * found only on the disks, and returns what it found per VM. A VM it cannot read is reported, not fatal.
   */
  async reconcileAll(): Promise<{ vm: string; notes: string[] }[]> {
    const out: { vm: string; notes: string[] }[] = [];
    for (const e of await this.core.library.list()) {
      if (!e.config) continue;
      try {
        const l = await this.list(e.id);
        if (l.notes.length) out.push({ vm: l.vmName, notes: l.notes });
      } catch (err) {
        out.push({ vm: e.config.name, notes: [`snapshots could not be checked: ${(err as Error).message}`] });
      }
    }
    return out;
  }

  async info(ref: string, snapRef: string): Promise<SnapshotDetails> {
    const listing = await this.list(ref);
    const entry = await this.usable(ref);
    const tree = await readTree(entry.dir);
    const node = findNode(tree, snapRef);
    const view = listing.snapshots.find((s) => s.id === node.id)!;
    const thumb = path.join(entry.dir, 'snapshots', `${node.id}.png`);
    return { ...view, configDiff: diffConfigs(node.config, entry.config), thumbnailPath: node.thumbnail && existsSync(thumb) ? thumb : null };
  }

  async thumbnail(ref: string, snapRef: string): Promise<Buffer | null> {
    const entry = await this.usable(ref);
    const node = findNode(await readTree(entry.dir), snapRef);
    return node.thumbnail ? readThumbnail(entry.dir, node.id) : null;
  }

  private views(tree: SnapshotTree, missing: Map<string, string[]>): SnapshotView[] {
    return [...tree.nodes]
      .sort((a, b) => (a.time < b.time ? -1 : a.time > b.time ? 1 : 0))
      .map((n) => ({ ...n, isCurrent: tree.current === n.id, missingOn: missing.get(n.id) ?? [], children: childrenOf(tree, n.id).map((c) => c.id) }));
  }

  /** Compares tree.json with what the qcow2 files hold. Only writes when `write` (caller holds the lock). */
  private async reconcile(entry: BundleEntry & { config: VmConfig }, state: VmState, write: boolean): Promise<{ tree: SnapshotTree; notes: string[]; missing: Map<string, string[]> }> {
    let tree = await readTree(entry.dir);
    const notes: string[] = [];
    const live = RUNNING.includes(state) || BUSY.includes(state);
    if (write && RUNNING.includes(state) && entry.config.engine === 'qemu') {
      // A VMDesk process that died mid-job leaves a concluded job behind in QEMU: clear it away.
      await dismissStaleJobs(this.qmp(entry.id)).catch(() => []);
    }
    const onDisk = new Map<string, Map<string, img.ImgSnapshot>>(); // tag -> target id -> snapshot
    const targets = this.targets(entry, { strict: false });
    for (const t of targets) {
      let snaps: img.ImgSnapshot[];
      try {
        snaps = (await img.imgInfo(t.file, { shared: live, format: 'qcow2' })).snapshots;
      } catch (e) {
        notes.push(`cannot read snapshots of disk ${t.id}: ${(e as Error).message}`);
        continue;
      }
      for (const s of snaps) {
        if (!onDisk.has(s.tag)) onDisk.set(s.tag, new Map());
        onDisk.get(s.tag)!.set(t.id, s);
      }
    }
    let changed = false;

    // Interrupted takes: finish those whose job completed on every disk, drop the others.
    for (const p of tree.pending) {
      if (isStateFileNode(p)) {
        // A micro-VM state file whose save was not recorded may be partial: drop it.
        if (!write) continue;
        tree = { ...tree, pending: tree.pending.filter((x) => x.id !== p.id) };
        await fs.rm(stateFilePath(entry.dir, p.id), { force: true });
        notes.push(`snapshot "${p.name}" was interrupted while its state file was being saved and was not kept`);
        changed = true;
        continue;
      }
      const found = onDisk.get(p.tag);
      if (found && found.size === targets.length) {
        if (!write) continue;
        const vmState = [...found.values()].reduce((a, s) => a + s.vmStateBytes, 0);
        tree = addNode({ ...tree, pending: tree.pending.filter((x) => x.id !== p.id) }, { ...p, vmStateBytes: vmState, disks: [...found.keys()] }, true);
        notes.push(`snapshot "${p.name}" was interrupted after QEMU saved it; it has been recorded`);
        changed = true;
      } else if (write) {
        tree = { ...tree, pending: tree.pending.filter((x) => x.id !== p.id) };
        notes.push(`snapshot "${p.name}" was interrupted before QEMU finished saving it and was not kept`);
        // A partial save may have left the tag on some disks: remove it there so it is not adopted later.
        for (const [tid] of found ?? []) {
          const t = targets.find((x) => x.id === tid);
          if (t && !live) await img.snapshotDelete(t.file, p.tag).catch(() => {});
        }
        if (found && live) for (const [tid] of found) notes.push(`disk ${tid} still holds the partial snapshot ${p.tag}; it will be removed when the VM is stopped`);
        changed = true;
      }
    }

    // Missing: recorded, but not on (some of) the disks that should hold it.
    const missing = new Map<string, string[]>();
    const targetIds = new Set(targets.map((t) => t.id));
    for (const n of tree.nodes) {
      if (isStateFileNode(n)) {
        // Micro-VM snapshots live in their state file, never in the disks.
        if (!existsSync(stateFilePath(entry.dir, n.id))) {
          missing.set(n.id, ['vmstate']);
          notes.push(`snapshot "${n.name}" has lost its state file ${stateFilePath(entry.dir, n.id)}; restoring it is impossible`);
        }
        continue;
      }
      const found = onDisk.get(n.tag);
      const expected = (n.disks.length ? n.disks : [...targetIds]).filter((d) => targetIds.has(d));
      const lack = expected.filter((d) => !found?.has(d));
      if (lack.length) {
        missing.set(n.id, lack);
        notes.push(`snapshot "${n.name}" is missing from disk${lack.length > 1 ? 's' : ''} ${lack.join(', ')}; restoring it ${lack.length === expected.length ? 'is impossible' : 'would be incomplete'}`);
      }
    }

    // Adopt: on the disks, unknown to the metadata (qemu-img by hand, another tool, or a lost tree.json).
    const known = new Set([...tree.nodes.map((n) => n.tag), ...tree.pending.map((n) => n.tag)]);
    const strangers = [...onDisk.entries()].filter(([tag]) => !known.has(tag)).sort((a, b) => firstDate(a[1]) - firstDate(b[1]));
    for (const [tag, where] of strangers) {
      if (!write) {
        notes.push(`snapshot "${tag}" on the disks is not in the metadata yet`);
        continue;
      }
      const id = idFromTag(tag) && !tree.nodes.some((n) => n.id === idFromTag(tag)) ? idFromTag(tag)! : newSnapshotId();
      const vmState = [...where.values()].reduce((a, s) => a + s.vmStateBytes, 0);
      let name = tag;
      for (let i = 2; tree.nodes.some((n) => n.name.toLowerCase() === name.toLowerCase()); i++) name = `${tag} (${i})`;
      const node: SnapshotNode = {
        id,
        tag,
        name: name.slice(0, 64),
        description: 'Found on the disks and adopted by VMDesk.',
        time: new Date(firstDate(where) * 1000).toISOString(),
        parent: tree.current,
        kind: vmState > 0 ? 'live' : 'disk-only',
        config: null,
        thumbnail: false,
        vmStateBytes: vmState,
        disks: [...where.keys()],
        adopted: true,
        linkedClones: [],
      };
      // An adopted snapshot newer than "current" was most likely taken from the current state: it becomes current.
      const cur = tree.current ? tree.nodes.find((n) => n.id === tree.current) : undefined;
      tree = addNode(tree, node, !cur || cur.time <= node.time);
      notes.push(`snapshot "${tag}" found on the disks and adopted`);
      changed = true;
    }
    if (changed && write) await writeTree(entry.dir, tree);
    return { tree, notes, missing };
  }

  // ---- take ------------------------------------------------------------------------------------------

  async take(ref: string, opts: TakeOptions): Promise<SnapshotNode> {
    const entry = await this.usable(ref);
    return withSnapshotLock(entry.dir, entry.config.name, async () => {
      const fresh = await this.usable(entry.id);
      return this.takeLocked(fresh, opts);
    });
  }

  /** Takes a snapshot; the caller holds the snapshot lock. */
  private async takeLocked(entry: BundleEntry & { config: VmConfig }, opts: TakeOptions): Promise<SnapshotNode> {
    const progress = opts.onProgress ?? (() => {});
    // Validate everything before touching anything.
    let tree = await readTree(entry.dir);
    const name = checkSnapshotName(tree, opts.name);
    const description = checkDescription(opts.description);
    if (entry.config.engine === 'microvm') return this.takeMicrovm(entry, tree, name, description, progress);
    const targets = this.targets(entry);
    if (!targets.length) throw new VmdeskError(ErrorCode.invalid, `"${entry.config.name}" has no writable qcow2 disk to hold a snapshot; add a disk first`);
    const info = await this.core.get(entry.id);
    if (BUSY.includes(info.state)) throw new VmdeskError(ErrorCode.state, `"${entry.config.name}" is ${info.state}; wait until it has finished`);
    const kind: SnapshotKind = RUNNING.includes(info.state) ? 'live' : 'disk-only';

    const id = newSnapshotId();
    const node: SnapshotNode = {
      id,
      tag: tagFor(id),
      name,
      description,
      time: new Date().toISOString(),
      parent: tree.current,
      kind,
      config: entry.config,
      thumbnail: false,
      vmStateBytes: 0,
      disks: targets.map((t) => t.id),
      adopted: false,
      linkedClones: [],
    };

    if (kind === 'live') {
      const qmp = this.qmp(entry.id);
      const running = await activeJobs(qmp);
      if (running.length) throw new VmdeskError(ErrorCode.busy, `"${entry.config.name}" is busy with QEMU job ${running.map((j) => `${j.id} (${j.type})`).join(', ')}; try again when it has finished`);
      const nodes = await this.liveNodes(entry, targets);
      progress('capturing screen', 0);
      const png = await this.core.screenshot(entry.id).catch(() => null);
      // Record the intent first: if this process dies mid-job, reconciliation can finish or drop it.
      await writeTree(entry.dir, { ...tree, pending: [...tree.pending, node] });
      progress('saving memory and disks', 0);
      try {
        await runJob(qmp, 'snapshot-save', { 'job-id': `vmdesk-save-${id}`, tag: node.tag, vmstate: nodes[0]!, devices: nodes }, { onProgress: (f) => progress('saving memory and disks', f) });
      } catch (e) {
        await writeTree(entry.dir, tree);
        throw e;
      }
      if (png) {
        await writeThumbnail(entry.dir, id, png);
        node.thumbnail = true;
      }
      node.vmStateBytes = await this.vmStateBytes(targets, node.tag, true);
    } else {
      await this.core.library.withVmLock(entry.id, entry.config.name, async () => {
        const now = await this.core.get(entry.id);
        if (now.state !== 'stopped' && now.state !== 'crashed') throw new VmdeskError(ErrorCode.state, `"${entry.config.name}" started meanwhile; try again`);
        await writeTree(entry.dir, { ...tree, pending: [...tree.pending, node] });
        const done: SnapshotTarget[] = [];
        try {
          for (const [i, t] of targets.entries()) {
            progress(`snapshotting disk ${t.id}`, i / targets.length);
            await img.snapshotCreate(t.file, node.tag);
            done.push(t);
          }
        } catch (e) {
          // All or nothing: undo the disks already done.
          for (const t of done) await img.snapshotDelete(t.file, node.tag).catch(() => {});
          await writeTree(entry.dir, tree);
          throw e;
        }
      });
    }
    tree = await readTree(entry.dir);
    tree = addNode({ ...tree, pending: tree.pending.filter((p) => p.id !== id) }, node, true);
    await writeTree(entry.dir, tree);
    progress('done', 1);
    return node;
  }

  /**
   * A micro-VM snapshot: the running (or paused) guest's memory, vCPU and device state saved by the
   * micro-VMM into snapshots/<id>.vmstate. A stopped micro-VM has nothing but raw disks, which cannot hold
   * snapshots, so it is refused. The caller holds the snapshot lock.
   */
  private async takeMicrovm(entry: BundleEntry & { config: VmConfig }, tree: SnapshotTree, name: string, description: string, progress: ProgressFn): Promise<SnapshotNode> {
    const info = await this.core.get(entry.id);
    if (BUSY.includes(info.state)) throw new VmdeskError(ErrorCode.state, `"${entry.config.name}" is ${info.state}; wait until it has finished`);
    if (!RUNNING.includes(info.state)) {
      throw new VmdeskError(
        ErrorCode.invalid,
        `"${entry.config.name}" is stopped and runs on the microvm engine, whose raw disks cannot hold snapshots: only live snapshots of the running micro-VM are possible (memory and CPU state; disk contents are not captured). Start it to take one, or switch it to the qemu engine (vmdesk set "${entry.config.name}" --engine qemu) and convert its disks for disk snapshots`,
      );
    }
    const id = newSnapshotId();
    const file = stateFilePath(entry.dir, id);
    const node: SnapshotNode = {
      id,
      tag: tagFor(id),
      name,
      description: withMicrovmNote(description),
      time: new Date().toISOString(),
      parent: tree.current,
      kind: 'live',
      config: entry.config,
      thumbnail: false, // a micro-VM has no display
      vmStateBytes: 0,
      disks: [],
      adopted: false,
      linkedClones: [],
      stateFile: path.basename(file),
    };
    // Record the intent first: if this process dies mid-save, reconciliation drops the partial file.
    await writeTree(entry.dir, { ...tree, pending: [...tree.pending, node] });
    progress('saving memory and CPU state', 0);
    try {
      await this.core.command(entry.id, 'snapshot-save', { path: file }, MICROVM_STATE_TIMEOUT_MS);
    } catch (e) {
      await fs.rm(file, { force: true });
      await writeTree(entry.dir, tree);
      throw e;
    }
    node.vmStateBytes = (await fs.stat(file)).size;
    let next = await readTree(entry.dir);
    next = addNode({ ...next, pending: next.pending.filter((p) => p.id !== id) }, node, true);
    await writeTree(entry.dir, next);
    progress('done', 1);
    return node;
  }

  /** The QEMU node names of the snapshot targets, checked against what QEMU actually has open. */
  private async liveNodes(entry: BundleEntry & { config: VmConfig }, targets: SnapshotTarget[]): Promise<string[]> {
    const named = (await this.qmp(entry.id)('query-named-block-nodes', { flat: true })) as { 'node-name': string; drv: string; ro: boolean; file: string }[];
    const formatNodes = named.filter((n) => n.drv !== 'file' && n.drv !== 'host_device' && !n.ro);
    const out: string[] = [];
    for (const n of formatNodes) {
      if (n.drv !== 'qcow2') {
        const d = entry.config.disks.find((x) => n['node-name'] === `disk-${x.id}`);
        throw d ? unsupportedDisk(entry.config.name, d) : new VmdeskError(ErrorCode.invalid, `block node ${n['node-name']} (${n.drv}) cannot hold snapshots; only qcow2 can`);
      }
      out.push(n['node-name']);
    }
    if (out.length < targets.length) throw new VmdeskError(ErrorCode.engine, `QEMU has ${out.length} writable qcow2 nodes open but the VM has ${targets.length} snapshot targets; restart the VM`);
    // Put a VM disk first: it receives the RAM image (vmstate); the UEFI vars store is tiny.
    out.sort((a, b) => Number(b.startsWith('disk-')) - Number(a.startsWith('disk-')) || a.localeCompare(b));
    return out;
  }

  private async vmStateBytes(targets: SnapshotTarget[], tag: string, shared: boolean): Promise<number> {
    let sum = 0;
    for (const t of targets) {
      const s = (await img.imgInfo(t.file, { shared, format: 'qcow2' }).catch(() => null))?.snapshots.find((x) => x.tag === tag);
      sum += s?.vmStateBytes ?? 0;
    }
    return sum;
  }

  // ---- restore ---------------------------------------------------------------------------------------

  /**
   * Brings the VM back to a snapshot. Disk-only: the VM ends stopped with its disks reverted. Live: the VM
   * ends running where it was when the snapshot was taken. Settings return to the snapshot's.
   */
  async restore(ref: string, snapRef: string, opts: RestoreOptions = {}): Promise<{ restored: SnapshotNode; safety?: SnapshotNode; info: VmInfo; warnings: string[] }> {
    const progress = opts.onProgress ?? (() => {});
    const entry = await this.usable(ref);
    return withSnapshotLock(entry.dir, entry.config.name, async () => {
      const fresh = await this.usable(entry.id);
      const tree0 = await readTree(fresh.dir);
      const node = findNode(tree0, snapRef);
      if (isStateFileNode(node)) return this.restoreMicrovm(fresh, tree0, node, opts, progress);
      const targets = this.targets(fresh);
      const info = await this.core.get(fresh.id);
      if (BUSY.includes(info.state)) throw new VmdeskError(ErrorCode.state, `"${fresh.config.name}" is ${info.state}; wait until it has finished`);
      // Every target must hold the snapshot, or the guest would come back with a mix of old and new disks.
      const live0 = RUNNING.includes(info.state);
      const holders = await Promise.all(targets.map(async (t) => (await img.imgInfo(t.file, { shared: live0, format: 'qcow2' })).snapshots.some((s) => s.tag === node.tag)));
      targets.forEach((t, i) => {
        if (holders[i]) return;
        const expected = node.disks.length ? node.disks.includes(t.id) : true;
        if (expected) throw new VmdeskError(ErrorCode.broken, `snapshot "${node.name}" is missing from disk ${t.id}; it cannot be restored`);
        throw new VmdeskError(ErrorCode.invalid, `disk ${t.id} was added after snapshot "${node.name}"; detach it before restoring`);
      });
      const warnings: string[] = [];
      const safety = opts.snapshotCurrent !== false ? await this.takeSafety(fresh, tree0, node, opts, progress) : undefined;

      // Taking the safety snapshot does not change the run state; only ask again when it happened.
      const running = safety ? RUNNING.includes((await this.core.get(fresh.id)).state) : live0;
      const sameConfig = node.config === null || diffConfigs(node.config, fresh.config).length === 0;
      if (node.kind === 'live' && running && sameConfig) {
        // Fast path: the running QEMU loads the snapshot in place.
        progress('loading memory and disks', 0);
        const nodes = await this.liveNodes(fresh, targets);
        await runJob(this.qmp(fresh.id), 'snapshot-load', { 'job-id': `vmdesk-load-${node.id}`, tag: node.tag, vmstate: nodes[0]!, devices: nodes }, { onProgress: (f) => progress('loading memory and disks', f) });
        // snapshot-load resumes a guest that was running; one that was paused stays paused: resume it.
        const status = (await this.qmp(fresh.id)('query-status')) as { running?: boolean };
        if (status.running === false) await this.core.resume(fresh.id);
      } else {
        if (running) {
          // The guest's current state is being replaced (and was saved above unless the caller declined).
          progress('powering off', 0);
          await this.powerOff(fresh.id);
        }
        const config = node.config ? this.configForRestore(fresh, node.config, warnings) : fresh.config;
        await this.whileStopped(fresh, config, async () => {
          if (node.kind === 'disk-only') {
            for (const [i, t] of targets.entries()) {
              progress(`reverting disk ${t.id}`, i / targets.length);
              await img.snapshotApply(t.file, node.tag);
            }
          }
        });
        if (node.kind === 'live') {
          progress('starting paused', 0.2);
          await this.core.start(fresh.id, { paused: true });
          const restarted = await this.usable(fresh.id);
          const nodes = await this.liveNodes(restarted, this.targets(restarted));
          progress('loading memory and disks', 0.4);
          try {
            await runJob(this.qmp(fresh.id), 'snapshot-load', { 'job-id': `vmdesk-load-${node.id}`, tag: node.tag, vmstate: nodes[0]!, devices: nodes }, { onProgress: (f) => progress('loading memory and disks', 0.4 + f * 0.5) });
          } catch (e) {
            // A half-loaded guest must not run: stop it, leave the disks to the next restore attempt.
            await this.powerOff(fresh.id).catch(() => {});
            throw e;
          }
          await this.core.resume(fresh.id);
        }
      }
      return this.finishRestore(fresh, node, safety, warnings, progress);
    });
  }

  /**
   * Restores a micro-VM snapshot: a running micro-VM with the same settings loads the state file in place;
   * otherwise the VM is stopped, its settings return to the snapshot's, it starts paused and loads the
   * state file. The disks are not reverted (micro-VM snapshots do not capture them). Lock held by caller.
   */
  private async restoreMicrovm(
    fresh: BundleEntry & { config: VmConfig },
    tree0: SnapshotTree,
    node: SnapshotNode,
    opts: RestoreOptions,
    progress: ProgressFn,
  ): Promise<{ restored: SnapshotNode; safety?: SnapshotNode; info: VmInfo; warnings: string[] }> {
    const file = stateFilePath(fresh.dir, node.id);
    if (!existsSync(file)) throw new VmdeskError(ErrorCode.broken, `the state file of snapshot "${node.name}" (${file}) is missing; it cannot be restored`);
    const engine = node.config?.engine ?? fresh.config.engine;
    if (engine !== 'microvm') throw new VmdeskError(ErrorCode.invalid, `snapshot "${node.name}" was taken by the microvm engine; it can only be restored into a micro-VM`);
    const info = await this.core.get(fresh.id);
    if (BUSY.includes(info.state)) throw new VmdeskError(ErrorCode.state, `"${fresh.config.name}" is ${info.state}; wait until it has finished`);
    const warnings: string[] = [];
    const live0 = RUNNING.includes(info.state);
    // Only a running VM has a current state beyond its disks worth saving first.
    const safety = opts.snapshotCurrent !== false && live0 ? await this.takeSafety(fresh, tree0, node, opts, progress) : undefined;
    const running = safety ? RUNNING.includes((await this.core.get(fresh.id)).state) : live0;
    const sameConfig = node.config === null || diffConfigs(node.config, fresh.config).length === 0;
    if (running && sameConfig && fresh.config.engine === 'microvm') {
      // Fast path: the running micro-VMM replaces its guest with the snapshot's.
      progress('loading memory and CPU state', 0);
      await this.core.command(fresh.id, 'snapshot-load', { path: file, paused: false }, MICROVM_STATE_TIMEOUT_MS);
    } else {
      if (running) {
        progress('powering off', 0);
        await this.powerOff(fresh.id);
      }
      const config = node.config ? this.configForRestore(fresh, node.config, warnings) : fresh.config;
      await this.whileStopped(fresh, config, async () => {});
      progress('starting paused', 0.2);
      await this.core.start(fresh.id, { paused: true });
      progress('loading memory and CPU state', 0.4);
      try {
        await this.core.command(fresh.id, 'snapshot-load', { path: file, paused: false }, MICROVM_STATE_TIMEOUT_MS);
      } catch (e) {
        // The freshly booted (paused) kernel is not the state asked for: do not leave it around.
        await this.powerOff(fresh.id).catch(() => {});
        throw e;
      }
    }
    if ((node.config ?? fresh.config).disks.some((d) => !d.readOnly)) warnings.push('the disks were not reverted: micro-VM snapshots do not capture disk contents');
    return this.finishRestore(fresh, node, safety, warnings, progress);
  }

  /** The automatic "Before restoring X" snapshot, named so it never clashes with an existing one. */
  private takeSafety(fresh: BundleEntry & { config: VmConfig }, tree0: SnapshotTree, node: SnapshotNode, opts: RestoreOptions, progress: ProgressFn): Promise<SnapshotNode> {
    progress('saving the current state', 0);
    const base = opts.currentName ?? `Before restoring ${node.name}`;
    let name = base.slice(0, 60);
    for (let i = 2; tree0.nodes.some((n) => n.name.toLowerCase() === name.toLowerCase()); i++) name = `${base.slice(0, 56)} (${i})`;
    return this.takeLocked(fresh, { name, description: `Taken automatically before restoring "${node.name}".`, onProgress: (p, f) => progress(`saving the current state: ${p}`, f) });
  }

  /** Under the VM lock, with the VM verified stopped: writes the restored settings, then runs `work`. */
  private whileStopped(fresh: BundleEntry & { config: VmConfig }, config: VmConfig, work: () => Promise<void>): Promise<void> {
    return this.core.library.withVmLock(fresh.id, fresh.config.name, async () => {
      const now = await this.core.get(fresh.id);
      if (now.state !== 'stopped' && now.state !== 'crashed') throw new VmdeskError(ErrorCode.state, `"${fresh.config.name}" started meanwhile; try again`);
      if (config !== fresh.config) await this.core.library.saveConfig(fresh.id, config);
      await work();
    });
  }

  /** Moves "you are here" to the restored node and reports the VM as it now is. */
  private async finishRestore(
    fresh: BundleEntry & { config: VmConfig },
    node: SnapshotNode,
    safety: SnapshotNode | undefined,
    warnings: string[],
    progress: ProgressFn,
  ): Promise<{ restored: SnapshotNode; safety?: SnapshotNode; info: VmInfo; warnings: string[] }> {
    const tree = await readTree(fresh.dir);
    await writeTree(fresh.dir, { ...tree, current: node.id });
    progress('done', 1);
    const out = await this.core.get(fresh.id);
    this.emitUpdated(out);
    return { restored: node, safety, info: out, warnings };
  }

  /** The snapshot's settings, keeping the VM's identity (id, name) and disks that still exist. */
  private configForRestore(entry: BundleEntry & { config: VmConfig }, snap: VmConfig, warnings: string[]): VmConfig {
    const next: VmConfig = { ...snap, id: entry.config.id, name: entry.config.name, createdAt: entry.config.createdAt };
    for (const d of entry.config.disks) {
      if (!snap.disks.some((x) => x.id === d.id)) warnings.push(`disk ${d.id} was added after the snapshot and is now detached; its file is kept at ${diskFile(entry.dir, d)}`);
    }
    return next;
  }

  // ---- delete / rename / describe --------------------------------------------------------------------

  async delete(ref: string, snapRef: string, opts: DeleteOptions = {}): Promise<{ deleted: string[] }> {
    const progress = opts.onProgress ?? (() => {});
    const entry = await this.usable(ref);
    return withSnapshotLock(entry.dir, entry.config.name, async () => {
      const fresh = await this.usable(entry.id);
      let tree = await readTree(fresh.dir);
      const node = findNode(tree, snapRef);
      const doomed = opts.branch ? subtree(tree, node.id) : [node];
      for (const n of doomed) {
        const clones = await this.liveCloneIds(n);
        if (clones.length) throw new VmdeskError(ErrorCode.busy, `snapshot "${n.name}" is the base of linked clone${clones.length > 1 ? 's' : ''} ${clones.join(', ')}; delete ${clones.length > 1 ? 'them' : 'it'} first`);
      }
      const info = await this.core.get(fresh.id);
      if (BUSY.includes(info.state)) throw new VmdeskError(ErrorCode.state, `"${fresh.config.name}" is ${info.state}; wait until it has finished`);
      const targets = this.targets(fresh, { strict: false });
      const live = RUNNING.includes(info.state);
      if (live && fresh.config.engine === 'qemu') {
        const running = await activeJobs(this.qmp(fresh.id));
        if (running.length) throw new VmdeskError(ErrorCode.busy, `"${fresh.config.name}" is busy with QEMU job ${running.map((j) => j.id).join(', ')}`);
      }
      const deleted: string[] = [];
      // Deepest first, so an interruption leaves a consistent tree (children gone before parents).
      for (const [i, n] of [...doomed].reverse().entries()) {
        progress(`deleting ${n.name}`, i / doomed.length);
        if (isStateFileNode(n)) {
          // A micro-VM snapshot is its state file (a running guest loaded from it has its own copy-on-write view).
          tree = removeNode(await readTree(fresh.dir), n.id);
          await writeTree(fresh.dir, tree);
          await fs.rm(stateFilePath(fresh.dir, n.id), { force: true });
          deleted.push(n.id);
          continue;
        }
        const holders: SnapshotTarget[] = [];
        for (const t of targets) {
          const snaps = (await img.imgInfo(t.file, { shared: live, format: 'qcow2' }).catch(() => null))?.snapshots ?? [];
          if (snaps.some((s) => s.tag === n.tag)) holders.push(t);
        }
        if (holders.length) {
          if (live) {
            const nodes = await this.liveNodes(fresh, targets);
            const holderNodes = nodes.filter((nn) => holders.some((h) => nn === (h.id === 'uefi-vars' ? 'uefi-vars' : `disk-${h.id}`)));
            await runJob(this.qmp(fresh.id), 'snapshot-delete', { 'job-id': `vmdesk-del-${n.id}`, tag: n.tag, devices: holderNodes.length ? holderNodes : nodes });
          } else {
            await this.core.library.withVmLock(fresh.id, fresh.config.name, async () => {
              for (const t of holders) await img.snapshotDelete(t.file, n.tag);
            });
          }
        }
        tree = removeNode(await readTree(fresh.dir), n.id);
        await writeTree(fresh.dir, tree);
        await removeThumbnail(fresh.dir, n.id);
        await fs.rm(path.join(fresh.dir, 'snapshots', 'bases', n.id), { recursive: true, force: true });
        deleted.push(n.id);
      }
      progress('done', 1);
      return { deleted };
    });
  }

  /** Linked clones of a snapshot that still exist (stale ids of deleted clones are ignored). */
  private async liveCloneIds(n: SnapshotNode): Promise<string[]> {
    const out: string[] = [];
    for (const id of n.linkedClones) {
      const e = await this.core.resolve(id).catch(() => null);
      if (e) out.push(e.config?.name ?? id);
    }
    return out;
  }

  async rename(ref: string, snapRef: string, newName: string): Promise<SnapshotNode> {
    return this.edit(ref, snapRef, (tree, node) => ({ name: checkSnapshotName(tree, newName, node.id) }));
  }

  async describe(ref: string, snapRef: string, description: string): Promise<SnapshotNode> {
    return this.edit(ref, snapRef, () => ({ description: checkDescription(description) }));
  }

  private async edit(ref: string, snapRef: string, patch: (tree: SnapshotTree, node: SnapshotNode) => Partial<SnapshotNode>): Promise<SnapshotNode> {
    const entry = await this.usable(ref);
    return withSnapshotLock(entry.dir, entry.config.name, async () => {
      const tree = await readTree(entry.dir);
      const node = findNode(tree, snapRef);
      const next = updateNode(tree, node.id, patch(tree, node));
      await writeTree(entry.dir, next);
      return next.nodes.find((n) => n.id === node.id)!;
    });
  }

  /** Records (or forgets) a linked clone built on a snapshot, so the snapshot is protected from deletion. */
  async markLinkedClone(ref: string, snapId: string, cloneVmId: string, add: boolean): Promise<void> {
    const entry = await this.usable(ref);
    await withSnapshotLock(entry.dir, entry.config.name, async () => {
      const tree = await readTree(entry.dir);
      const node = findNode(tree, snapId);
      const set = new Set(node.linkedClones);
      if (add) set.add(cloneVmId);
      else set.delete(cloneVmId);
      await writeTree(entry.dir, updateNode(tree, node.id, { linkedClones: [...set] }));
    });
  }

  /** Takes the snapshot lock and runs fn (clone from the current state uses it to snapshot first). */
  async withLock<T>(ref: string, fn: (entry: BundleEntry & { config: VmConfig }, take: (o: TakeOptions) => Promise<SnapshotNode>) => Promise<T>): Promise<T> {
    const entry = await this.usable(ref);
    return withSnapshotLock(entry.dir, entry.config.name, async () => {
      const fresh = await this.usable(entry.id);
      return fn(fresh, (o) => this.takeLocked(fresh, o));
    }, 2000);
  }

  // ---- disk conversion (the fix offered for raw disks) -----------------------------------------------

  /** Converts a stopped VM's disk to qcow2 in place (new file, then switch the config, then remove the old). */
  async convertDisk(ref: string, diskId: string, onProgress?: ProgressFn): Promise<VmInfo> {
    const entry = await this.usable(ref);
    return this.core.library.withVmLock(entry.id, entry.config.name, async () => {
      const fresh = await this.usable(entry.id);
      const state = (await this.core.get(fresh.id)).state;
      if (state !== 'stopped' && state !== 'crashed') throw new VmdeskError(ErrorCode.state, `shut "${fresh.config.name}" down before converting its disk`);
      const d = fresh.config.disks.find((x) => x.id === diskId);
      if (!d) throw new VmdeskError(ErrorCode.notFound, `no disk "${diskId}" (disks: ${fresh.config.disks.map((x) => x.id).join(', ') || 'none'})`);
      if (d.format === 'qcow2') throw new VmdeskError(ErrorCode.invalid, `disk ${diskId} is already qcow2`);
      const src = diskFile(fresh.dir, d);
      await fs.mkdir(path.join(fresh.dir, 'disks'), { recursive: true });
      let rel = `disks/${d.id}.qcow2`;
      for (let i = 1; existsSync(path.join(fresh.dir, rel)); i++) rel = `disks/${d.id}-${i}.qcow2`;
      const dst = path.join(fresh.dir, rel);
      try {
        // Read with its format stated and backing files off (an attached disk passes the image gate first).
        const source = await vmDiskSource(fresh.dir, d, { what: `disk ${d.id} of "${fresh.config.name}"`, vmsDir: this.core.library.vmsDir });
        await img.convert(source, dst, { dstFormat: 'qcow2', onProgress: (f) => onProgress?.(`converting disk ${d.id}`, f) });
      } catch (e) {
        await fs.rm(dst, { force: true });
        throw e;
      }
      const next: VmConfig = { ...fresh.config, disks: fresh.config.disks.map((x) => (x.id === d.id ? { ...x, path: rel, format: 'qcow2' as const, owned: true } : x)) };
      await this.core.library.saveConfig(fresh.id, next);
      // Only the VM's own file is removed; an attached image belongs to the user and stays.
      if (d.owned) await fs.rm(src, { force: true });
      const out = await this.core.get(fresh.id);
      this.emitUpdated(out);
      return out;
    });
  }
}

function firstDate(m: Map<string, img.ImgSnapshot>): number {
  return Math.min(...[...m.values()].map((s) => s.dateSec));
}

export function unsupportedDisk(vmName: string, d: Disk): VmdeskError {
  return new VmdeskError(
    ErrorCode.invalid,
    `disk ${d.id} of "${vmName}" is ${d.format}, which does not support snapshots; convert it to qcow2 with: vmdesk snapshot convert-disk "${vmName}" ${d.id}`,
  );
}
