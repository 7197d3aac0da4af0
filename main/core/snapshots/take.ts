// Taking a snapshot. A running guest gets a live one when its engine offers it ('full': memory, devices and
// disks together; 'memory': memory and device state in a state file, disks not captured); a stopped VM a
// disk-only one when its engine offers offline snapshots. The intent is recorded first (tree.json
// "pending"), so a daemon that dies mid-save leaves reconciliation something to finish or drop.
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { VmdeskError, ErrorCode } from '../../api/errors.js';
import { newSnapshotId, readTree, tagFor, writeThumbnail, writeTree } from './store.js';
import { addNode, checkDescription, checkSnapshotName, SNAPSHOT_DESCRIPTION_MAX, type AutoKind, type SnapshotNode, type SnapshotTree } from './tree.js';
import { isRunning, livePhase, refOf, requireSettled, runtimeOf, unsupportedError, type ProgressFn, type SnapVm } from './vm.js';

export interface TakeOptions {
  name: string;
  description?: string;
  /** A running VM always gets a live snapshot (where its engine has them); a stopped one a disk-only one. */
  onProgress?: ProgressFn;
  /** Taken by VMDesk on its own (a restore's safety snapshot, a schedule's): retention may prune it. */
  auto?: AutoKind;
}

/** Appended to the description of every memory-only snapshot, so nobody expects their disks to come back. */
export const MEMORY_SNAPSHOT_NOTE = 'Memory snapshot: memory, CPU and device state only; disk contents are not captured (restoring it does not revert the disks).';

function withMemoryNote(description: string): string {
  if (!description) return MEMORY_SNAPSHOT_NOTE;
  const room = SNAPSHOT_DESCRIPTION_MAX - MEMORY_SNAPSHOT_NOTE.length - 2;
  return `${description.slice(0, room)}\n\n${MEMORY_SNAPSHOT_NOTE}`;
}

/** Formats of the VM's writable disks, for "whose raw disks cannot hold snapshots". */
function diskWords(vm: SnapVm): string {
  const formats = [...new Set(vm.entry.config.disks.filter((d) => !d.readOnly).map((d) => d.format))];
  return formats.length ? `${formats.join('/')} disks` : 'disks';
}

/** Why this VM cannot be snapshotted in its current state; nothing has been touched yet. */
function refusal(vm: SnapVm, running: boolean): VmdeskError {
  const { name, engine } = vm.entry.config;
  const caps = vm.eng.capabilities;
  if (running) {
    return new VmdeskError(
      ErrorCode.invalid,
      caps.offlineSnapshots
        ? `the ${engine} engine cannot snapshot a running VM; shut "${name}" down to take a disk snapshot`
        : `the ${engine} engine has no snapshots; switch "${name}" to an engine that has them (vmdesk set "${name}" --engine KIND)`,
    );
  }
  if (caps.liveSnapshots === 'memory') {
    return new VmdeskError(
      ErrorCode.invalid,
      `"${name}" is stopped and runs on the ${engine} engine, whose ${diskWords(vm)} cannot hold snapshots: only live snapshots of the running VM are possible (memory and CPU state; disk contents are not captured). Start it to take one, or switch it to an engine with disk snapshots (vmdesk set "${name}" --engine KIND) for disk snapshots`,
    );
  }
  return new VmdeskError(ErrorCode.invalid, `"${name}" is stopped and the ${engine} engine cannot snapshot a stopped VM${caps.liveSnapshots ? '; start it to take a live snapshot' : ''}`);
}

/** Puts `node` into pending, runs `save`, then records it; on failure the pending entry goes again. */
async function recorded(dir: string, node: SnapshotNode, save: () => Promise<void>, undo: () => Promise<void> = async () => {}): Promise<SnapshotNode> {
  const tree = await readTree(dir);
  await writeTree(dir, { ...tree, pending: [...tree.pending, node] });
  try {
    await save();
  } catch (e) {
    await undo().catch(() => {});
    const now = await readTree(dir);
    await writeTree(dir, { ...now, pending: now.pending.filter((p) => p.id !== node.id) });
    throw e;
  }
  const now = await readTree(dir);
  await writeTree(dir, addNode({ ...now, pending: now.pending.filter((p) => p.id !== node.id) }, node, true));
  return node;
}

/** Takes a snapshot; the caller holds the VM's snapshot gate. Everything is validated before anything is written. */
export async function takeSnapshot(vm: SnapVm, opts: TakeOptions): Promise<SnapshotNode> {
  const { entry, eng, ctx, core } = vm;
  const progress = opts.onProgress ?? (() => {});
  const tree: SnapshotTree = await readTree(entry.dir);
  const name = checkSnapshotName(tree, opts.name);
  const description = checkDescription(opts.description);
  requireSettled(vm);
  const running = isRunning(vm.info.state);
  const caps = eng.capabilities;
  const live = running ? caps.liveSnapshots : false;
  if (running ? !live : !caps.offlineSnapshots) throw refusal(vm, running);

  const id = newSnapshotId();
  const ref = refOf(entry.dir, { id, tag: tagFor(id) });
  const node: SnapshotNode = {
    id,
    tag: ref.tag,
    name,
    description,
    // Never before the newest snapshot of the tree, so time order is the order they were taken in.
    time: new Date(Math.max(Date.now(), ...tree.nodes.map((n) => Date.parse(n.time) + 1))).toISOString(),
    parent: tree.current,
    kind: running ? 'live' : 'disk-only',
    config: entry.config,
    thumbnail: false,
    vmStateBytes: 0,
    disks: [],
    adopted: false,
    linkedClones: [],
    ...(opts.auto ? { auto: opts.auto } : {}),
  };

  if (live === 'memory') {
    // Lives in its own state file, not in any disk.
    node.description = withMemoryNote(description);
    node.stateFile = path.basename(ref.stateFile);
  } else {
    const { targets, unsupported } = eng.snapshots.targets(ctx);
    if (unsupported[0]) throw unsupportedError(entry.config.name, unsupported[0]);
    if (!targets.length) throw new VmdeskError(ErrorCode.invalid, `"${entry.config.name}" has no writable disk to hold a snapshot; add a disk first`);
    node.disks = targets.map((t) => t.id);
  }

  if (live) {
    const rt = runtimeOf(vm);
    let png: Buffer | null = null;
    if (caps.display) {
      progress('capturing screen', 0);
      png = await core.screenshot(entry.id).catch(() => null);
    }
    const phase = livePhase('saving', live);
    progress(phase, 0);
    await recorded(
      entry.dir,
      node,
      async () => {
        const r = await eng.snapshots.saveLive(rt, ctx, ref, progress);
        node.vmStateBytes = r.vmStateBytes || (live === 'memory' ? ((await fs.stat(ref.stateFile).catch(() => null))?.size ?? 0) : 0);
        if (live === 'full' && r.targets.length) node.disks = r.targets;
        if (png) {
          await writeThumbnail(entry.dir, id, png);
          node.thumbnail = true;
        }
      },
      // A state file the engine did not finish is worthless.
      async () => {
        if (live === 'memory') await fs.rm(ref.stateFile, { force: true });
      },
    );
  } else {
    await recorded(entry.dir, node, async () => {
      const r = await eng.snapshots.saveOffline(ctx, ref, progress);
      if (r.targets.length) node.disks = r.targets;
    });
  }
  progress('done', 1);
  return node;
}
