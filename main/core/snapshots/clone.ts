// Clones a VM into a new one, from a snapshot or the current state: full (qemu-img convert) or linked (qcow2 overlay).
import { promises as fs, existsSync } from 'node:fs';
import path from 'node:path';
import { VmName, type Disk, type VmConfig, type VmInfo } from '../../api/schema.js';
import { VmdeskError, ErrorCode } from '../../api/errors.js';
import { writeJsonAtomic } from '../../platform/atomic.js';
import { parseOrThrow } from '../validate.js';
import * as img from './qemu-img.js';
import { diskFile, uefiVarsFile, type ProgressFn, type SnapshotCore, type SnapshotManager } from './manager.js';
import { basesDir, readTree, snapshotDir, writeTree } from './store.js';
import { findNode, updateNode, type SnapshotNode } from './tree.js';

export interface CloneOptions {
  name: string;
  /** Snapshot to clone from (name or id); the current state when absent. */
  snapshot?: string;
  mode?: 'full' | 'linked';
  onProgress?: ProgressFn;
}

/** Written into a linked clone's bundle: which VM and snapshot its disks are built on. */
export interface LinkedBase {
  sourceVmId: string;
  snapshotId: string;
  bases: Record<string, string>;
}
export const LINKED_BASE_FILE = 'linked-base.json';

/** Checks a new VM name and that no VM has it (case-insensitive), like Core.create does. */
export async function checkNewVmName(core: SnapshotCore, raw: unknown): Promise<string> {
  const name = parseOrThrow(VmName, raw, 'invalid name');
  const taken = (await core.library.list()).some((e) => e.config?.name.toLowerCase() === name.toLowerCase());
  if (taken) throw new VmdeskError(ErrorCode.exists, `a VM named "${name}" already exists`);
  return name;
}

/** A VM in a new bundle, created atomically under the library lock, announced with a vm-created event. */
export async function createVmBundle(core: SnapshotCore, name: string, fill: (staging: string, id: string) => Promise<VmConfig>): Promise<VmInfo> {
  const entry = await core.library.withLibraryLock(async () => {
    await checkNewVmName(core, name);
    return core.library.createBundle(fill);
  });
  const info = await core.get(entry.id);
  core.emit('event', { type: 'vm-created', id: info.id, info });
  return info;
}

/** The clone's settings: the source's, with a new identity and no fixed MAC addresses (two NICs must not share one). */
export function cloneConfig(src: VmConfig, id: string, name: string, disks: Disk[]): VmConfig {
  const now = new Date().toISOString();
  return {
    ...src,
    id,
    name,
    disks,
    network: src.network.map(({ mac: _mac, ...rest }) => rest),
    createdAt: now,
    modifiedAt: now,
  };
}

export async function cloneVm(core: SnapshotCore, snaps: SnapshotManager, ref: string, opts: CloneOptions): Promise<VmInfo> {
  const mode = opts.mode ?? 'full';
  const progress = opts.onProgress ?? (() => {});
  const name = await checkNewVmName(core, opts.name);

  return snaps.withLock(ref, async (src, take) => {
    if (mode === 'linked' && src.config.engine !== 'qemu') throw new VmdeskError(ErrorCode.invalid, `linked clones need qcow2 disks, which the ${src.config.engine} engine cannot use; make a full clone`);
    const state = (await core.get(src.id)).state;
    const running = state !== 'stopped' && state !== 'crashed';
    let snap: SnapshotNode | undefined = opts.snapshot ? findNode(await readTree(src.dir), opts.snapshot) : undefined;
    if (snap?.stateFile) throw new VmdeskError(ErrorCode.invalid, `snapshot "${snap.name}" is a micro-VM snapshot (memory and CPU state only, no disk contents); clone from the current state instead`);
    if (!snap && mode === 'linked') {
      // A linked clone needs an immutable base: like VirtualBox, snapshot the current state first.
      progress('snapshotting the current state', 0);
      snap = await take({ name: uniqueName(await readTree(src.dir), `Linked base for ${name}`), description: `Base of linked clone "${name}".` });
    }
    if (!snap && running) {
      throw new VmdeskError(ErrorCode.state, `"${src.config.name}" is ${state}: its disks are changing. Shut it down, or clone from a snapshot (--snapshot NAME)`);
    }
    const config = snap?.config ?? src.config;
    const sourceDisks = config.disks;
    // The disks must still exist (a snapshot's config may list a disk deleted since).
    for (const d of sourceDisks) if (!existsSync(diskFile(src.dir, d))) throw new VmdeskError(ErrorCode.broken, `disk ${d.id} (${diskFile(src.dir, d)}) of the source no longer exists`);
    if (snap) {
      for (const d of sourceDisks.filter((x) => !x.readOnly)) {
        if (d.format !== 'qcow2') throw new VmdeskError(ErrorCode.invalid, `disk ${d.id} is ${d.format}: it has no snapshots to clone from`);
        const has = (await img.imgInfo(diskFile(src.dir, d), { shared: running, format: 'qcow2' })).snapshots.some((s) => s.tag === snap!.tag);
        if (!has) throw new VmdeskError(ErrorCode.broken, `snapshot "${snap.name}" is missing from disk ${d.id}; cannot clone from it`);
      }
    }

    const bases: Record<string, string> = {};
    if (mode === 'linked' && snap) {
      // One base per snapshot and disk, shared by all linked clones of it; read-only so nothing writes into it.
      const dir = path.join(basesDir(src.dir), snap.id);
      await fs.mkdir(dir, { recursive: true });
      const writable = sourceDisks.filter((d) => !d.readOnly);
      for (const [i, d] of writable.entries()) {
        const base = path.join(dir, `${d.id}.qcow2`);
        if (!existsSync(base)) {
          const tmp = `${base}.partial`;
          await img.convert(diskFile(src.dir, d), tmp, { srcFormat: 'qcow2', dstFormat: 'qcow2', snapshotTag: snap.tag, shared: running, onProgress: (f) => progress(`making base of disk ${d.id}`, (i + f) / writable.length) });
          await fs.chmod(tmp, 0o444);
          await fs.rename(tmp, base);
        }
        bases[d.id] = base;
      }
    }

    const info = await createVmBundle(core, name, async (staging, id) => {
      await fs.mkdir(path.join(staging, 'disks'), { recursive: true });
      const disks: Disk[] = [];
      for (const [i, d] of sourceDisks.entries()) {
        if (d.readOnly && !d.owned) {
          disks.push(d); // shared read-only media (an installer image) stays shared
          continue;
        }
        // The micro-VMM reads raw images only: its clones keep raw disks (and cannot be linked).
        const fmt = config.engine === 'qemu' ? ('qcow2' as const) : ('raw' as const);
        const rel = `disks/${d.id}.${fmt === 'raw' ? 'img' : 'qcow2'}`;
        const dst = path.join(staging, rel);
        const frac = (f: number) => progress(`copying disk ${d.id}`, (i + f) / sourceDisks.length);
        if (mode === 'linked' && bases[d.id]) {
          await img.createOverlay(dst, bases[d.id]!);
        } else {
          await img.convert(diskFile(src.dir, d), dst, {
            srcFormat: d.format,
            dstFormat: fmt,
            snapshotTag: snap && d.format === 'qcow2' ? snap.tag : undefined,
            shared: running,
            onProgress: frac,
          });
        }
        disks.push({ id: d.id, path: rel, format: fmt, owned: true, readOnly: d.readOnly });
      }
      if (config.firmware === 'uefi' && existsSync(uefiVarsFile(src.dir))) {
        await img.convert(uefiVarsFile(src.dir), uefiVarsFile(staging), { srcFormat: 'qcow2', dstFormat: 'qcow2', snapshotTag: snap?.tag, shared: running });
      }
      if (mode === 'linked' && snap) {
        await fs.mkdir(snapshotDir(staging), { recursive: true });
        const link: LinkedBase = { sourceVmId: src.id, snapshotId: snap.id, bases };
        await writeJsonAtomic(path.join(snapshotDir(staging), LINKED_BASE_FILE), link);
      }
      return cloneConfig(config, id, name, disks);
    });
    if (mode === 'linked' && snap) {
      // Held under the snapshot lock already taken by withLock: write directly.
      const tree = await readTree(src.dir);
      const node = tree.nodes.find((n) => n.id === snap!.id);
      if (node) await writeTree(src.dir, updateNode(tree, node.id, { linkedClones: [...new Set([...node.linkedClones, info.id])] }));
    }
    progress('done', 1);
    return info;
  });
}

function uniqueName(tree: { nodes: { name: string }[] }, base: string): string {
  let name = base.slice(0, 60);
  for (let i = 2; tree.nodes.some((n) => n.name.toLowerCase() === name.toLowerCase()); i++) name = `${base.slice(0, 56)} (${i})`;
  return name;
}

/**
 * Names of existing VMs that are linked clones built on this VM's snapshots. Core.delete should refuse to
 * delete a VM while this is non-empty: the clones' disks read from its snapshots/bases/.
 */
export async function linkedClonesOf(core: Pick<SnapshotCore, 'library'>, bundleDir: string): Promise<string[]> {
  const tree = await readTree(bundleDir).catch(() => null);
  if (!tree) return [];
  const ids = new Set(tree.nodes.flatMap((n) => n.linkedClones));
  const out: string[] = [];
  for (const e of await core.library.list()) {
    if (!ids.has(e.id)) continue;
    // Only a clone that still points here counts (its link file names this bundle's VM).
    const link = await fs.readFile(path.join(snapshotDir(e.dir), LINKED_BASE_FILE), 'utf8').catch(() => null);
    if (link) out.push(e.config?.name ?? e.id);
  }
  return out;
}
