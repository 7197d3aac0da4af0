// Squares tree.json with what the engine's storage holds (provider.stored(): tag → target → saved RAM and
// date): takes a dead daemon interrupted are finished or dropped, snapshots found only in storage are
// adopted, snapshots missing from it are reported. Engine-neutral: a 'memory' snapshot lives in its state
// file (a path the core chose and owns), every other one in the targets the provider names.
import { existsSync, promises as fs } from 'node:fs';
import path from 'node:path';
import type { StoredSnapshots } from '../../engines/engine.js';
import { idFromTag, newSnapshotId, readTree, stateFilePath, writeTree } from './store.js';
import { addNode, isStateFileNode, type SnapshotNode, type SnapshotTree } from './tree.js';
import { isRunning, refOf, SETTLING, type SnapVm } from './vm.js';

export interface Reconciled {
  tree: SnapshotTree;
  /** Findings in words: adopted, missing, interrupted. */
  notes: string[];
  /** Snapshot id → targets (or "vmstate") that should hold it but do not. */
  missing: Map<string, string[]>;
  /** The storage was read, nothing was left pending and nothing written: the result holds while its inputs do. */
  settled: boolean;
}

type Holders = Map<string, { vmStateBytes: number; dateSec: number }>;

function firstDate(m: Holders): number {
  return Math.min(...[...m.values()].map((s) => s.dateSec));
}

function savedBytes(m: Holders): number {
  return [...m.values()].reduce((a, s) => a + s.vmStateBytes, 0);
}

/** Reconciles one VM. Only writes (tree.json, partial state files, partial tags) when `write`. */
export async function reconcile(vm: SnapVm, write: boolean): Promise<Reconciled> {
  const { entry, eng, ctx } = vm;
  const provider = eng.snapshots;
  let tree = await readTree(entry.dir);
  const notes: string[] = [];
  const running = isRunning(vm.info.state);
  // A guest that exists (even one starting or stopping) holds its disks: read them shared.
  const live = running || SETTLING.includes(vm.info.state);
  const rt = running ? vm.core.runtime(entry.id) : undefined;
  if (write && rt) {
    // A daemon that died mid-job leaves concluded work behind in the engine: clear it away.
    await provider.recover(rt).catch(() => {});
  }
  const targetIds = new Set(provider.targets(ctx).targets.map((t) => t.id));
  let stored: StoredSnapshots | null;
  try {
    stored = await provider.stored(ctx, live);
  } catch (e) {
    // Nothing can be judged without the storage: finish nothing, drop nothing, report nothing as missing.
    notes.push(`cannot read the snapshots in the VM's storage: ${(e as Error).message}`);
    stored = null;
  }
  let changed = false;
  // Work the engine is still doing (a job a dead daemon started) may yet complete a pending take.
  const engineBusy = write && rt && tree.pending.length ? (await provider.busy(rt).catch(() => [])).length > 0 : false;

  // Interrupted takes: finish those the engine completed on every target, drop the others.
  for (const p of tree.pending) {
    if (!write) continue;
    if (isStateFileNode(p)) {
      // A state file whose save was not recorded may be partial: never trust it.
      tree = { ...tree, pending: tree.pending.filter((x) => x.id !== p.id) };
      await fs.rm(stateFilePath(entry.dir, p.id), { force: true });
      notes.push(`snapshot "${p.name}" was interrupted while its state file was being saved and was not kept`);
      changed = true;
      continue;
    }
    if (!stored) continue;
    const found = stored.get(p.tag);
    const expected = p.disks.length ? p.disks : [...targetIds];
    if (found && expected.length && expected.every((d) => found.has(d))) {
      tree = addNode({ ...tree, pending: tree.pending.filter((x) => x.id !== p.id) }, { ...p, vmStateBytes: savedBytes(found), disks: [...found.keys()] }, true);
      notes.push(`snapshot "${p.name}" was interrupted after it was saved; it has been recorded`);
    } else if (engineBusy) {
      notes.push(`snapshot "${p.name}" is still being saved by the engine; it will be recorded (or dropped) once that has finished`);
      continue;
    } else if (found && live) {
      // The partial tag cannot be removed from disks a guest holds; the pending entry stays (so the tag is
      // not adopted) until a list of the stopped VM drops both.
      for (const [tid] of found) notes.push(`disk ${tid} still holds the partial snapshot ${p.tag}; it will be removed when the VM is stopped`);
      continue;
    } else {
      tree = { ...tree, pending: tree.pending.filter((x) => x.id !== p.id) };
      notes.push(`snapshot "${p.name}" was interrupted before it was completely saved and was not kept`);
      // A partial save may have left the tag on some targets: remove it so it is not adopted later.
      if (found) await provider.deleteOffline(ctx, refOf(entry.dir, p)).catch(() => {});
    }
    changed = true;
  }

  // Missing: recorded, but not where it should be.
  const missing = new Map<string, string[]>();
  for (const n of tree.nodes) {
    if (isStateFileNode(n)) {
      if (!existsSync(stateFilePath(entry.dir, n.id))) {
        missing.set(n.id, ['vmstate']);
        notes.push(`snapshot "${n.name}" has lost its state file ${stateFilePath(entry.dir, n.id)}; restoring it is impossible`);
      }
      continue;
    }
    if (!stored) continue;
    const found = stored.get(n.tag);
    const expected = (n.disks.length ? n.disks : [...targetIds]).filter((d) => targetIds.has(d));
    const lack = expected.filter((d) => !found?.has(d));
    if (lack.length) {
      missing.set(n.id, lack);
      notes.push(`snapshot "${n.name}" is missing from disk${lack.length > 1 ? 's' : ''} ${lack.join(', ')}; restoring it ${lack.length === expected.length ? 'is impossible' : 'would be incomplete'}`);
    }
  }

  // Adopt: in storage, unknown to the metadata (made by hand, by another tool, or a lost tree.json).
  const known = new Set([...tree.nodes.map((n) => n.tag), ...tree.pending.map((n) => n.tag)]);
  const strangers = [...(stored ?? new Map<string, Holders>()).entries()].filter(([tag]) => !known.has(tag)).sort((a, b) => firstDate(a[1]) - firstDate(b[1]));
  for (const [tag, where] of strangers) {
    if (!write) {
      notes.push(`snapshot "${tag}" on the disks is not in the metadata yet`);
      continue;
    }
    const node = adopted(entry.dir, tree, tag, where);
    // An adopted snapshot newer than "current" was most likely taken from the current state: it becomes current.
    const cur = tree.current ? tree.nodes.find((n) => n.id === tree.current) : undefined;
    tree = addNode(tree, node, !cur || cur.time <= node.time);
    notes.push(`snapshot "${tag}" found on the disks and adopted`);
    changed = true;
  }
  if (changed && write) await writeTree(entry.dir, tree);
  return { tree, notes, missing, settled: stored !== null && tree.pending.length === 0 && !changed };
}

/** The node for a snapshot found in storage; it lives in its state file when one exists under our id. */
function adopted(bundleDir: string, tree: SnapshotTree, tag: string, where: Holders): SnapshotNode {
  const ours = idFromTag(tag);
  const id = ours && !tree.nodes.some((n) => n.id === ours) ? ours : newSnapshotId();
  const vmState = savedBytes(where);
  let name = tag;
  for (let i = 2; tree.nodes.some((n) => n.name.toLowerCase() === name.toLowerCase()); i++) name = `${tag} (${i})`;
  const inStateFile = ours === id && existsSync(stateFilePath(bundleDir, id));
  return {
    id,
    tag,
    name: name.slice(0, 64),
    description: 'Found on the disks and adopted by VMDesk.',
    time: new Date(firstDate(where) * 1000).toISOString(),
    parent: tree.current,
    kind: vmState > 0 || inStateFile ? 'live' : 'disk-only',
    config: null,
    thumbnail: false,
    vmStateBytes: vmState,
    disks: inStateFile ? [] : [...where.keys()],
    adopted: true,
    linkedClones: [],
    ...(inStateFile ? { stateFile: path.basename(stateFilePath(bundleDir, id)) } : {}),
  };
}
