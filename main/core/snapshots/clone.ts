// Clones a VM into a new one, from a snapshot or the current state: full (qemu-img convert) or linked (qcow2 overlay).
import { promises as fs, existsSync } from 'node:fs';
import path from 'node:path';
import type { Disk, VmConfig, VmInfo } from '../../api/schema.js';
import { VmdeskError, ErrorCode } from '../../api/errors.js';
import { fsyncDir, fsyncFile, writeJsonAtomic } from '../../platform/atomic.js';
import { containedPath, isInside } from '../../platform/contain.js';
import type { BundleEntry } from '../library.js';
import * as img from '../../platform/qemu-img.js';
import { SnapshotManager } from './manager.js';
import { isStalePartial, partialPath, uefiVarsDisk, vmDiskSource } from './sources.js';
import { cloneTpmState } from '../../platform/tpm-state.js';
import { basesDir, readTree, snapshotDir, writeTree } from './store.js';
import { SnapshotNode, findNode, updateNode } from './tree.js';
import { uefiVarsFile, uniqueSnapshotName, type ProgressFn, type SnapshotCore } from './vm.js';

// Where these lived before sources.ts: archive.ts and older callers import them from here.
export { isStalePartial, partialPath, vmDiskSource, writerAlive, writerTag } from './sources.js';

export interface CloneOptions {
  name: string;
  /** Snapshot to clone from (name or id); the current state when absent. */
  snapshot?: string;
  mode?: 'full' | 'linked';
  onProgress?: ProgressFn;
  /** Cancels the clone (ECANCELED): qemu-img is stopped and everything made so far is removed. */
  signal?: AbortSignal;
}

/** Written into a linked clone's bundle: which VM and snapshot its disks are built on. */
export interface LinkedBase {
  sourceVmId: string;
  snapshotId: string;
  bases: Record<string, string>;
}
export const LINKED_BASE_FILE = 'linked-base.json';

/**
 * A linked clone of the current state snapshots it first, under this name and description. The sweep
 * recognises such snapshots by both (a user who renamed one has made it theirs) and removes the ones no
 * clone was ever made from.
 */
export const LINKED_BASE_PREFIX = 'Linked base for ';
const linkedBaseDescription = (clone: string) => `Base of linked clone "${clone}".`;

function isAutoLinkedBase(n: Pick<SnapshotNode, 'name' | 'description'>): boolean {
  return n.name.startsWith(LINKED_BASE_PREFIX) && n.description.startsWith('Base of linked clone "');
}

function memoryOnly(snap: SnapshotNode): VmdeskError {
  return new VmdeskError(ErrorCode.invalid, `snapshot "${snap.name}" is a memory snapshot (memory and CPU state only, no disk contents); clone from the current state instead`);
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
  const signal = opts.signal;
  const name = await core.checkNewVmName(opts.name);
  const cancelled = () => {
    if (signal?.aborted) throw new VmdeskError(ErrorCode.cancelled, `cloning to "${name}" was cancelled`);
  };
  // A "Linked base for X" snapshot this call took: rolled back unless the clone X comes to exist.
  let taken: { vmId: string; snapId: string } | undefined;

  try {
    return await snaps.withLock(ref, async (src, take) => {
      const state = (await core.get(src.id)).state;
      const running = state !== 'stopped' && state !== 'crashed';
      let snap: SnapshotNode | undefined = opts.snapshot ? findNode(await readTree(src.dir), opts.snapshot) : undefined;
      if (snap?.stateFile) throw memoryOnly(snap);
      const config = snap?.config ?? src.config;
      // The clone runs on the engine of the settings it copies: its disks are made in that engine's format.
      const caps = (await core.engineOf(config)).capabilities;
      if (mode === 'linked' && !caps.linkedClones) throw new VmdeskError(ErrorCode.invalid, `the ${config.engine} engine has no linked clones (overlays on a shared base); make a full clone`);
      if (!snap && running && mode !== 'linked') {
        throw new VmdeskError(ErrorCode.state, `"${src.config.name}" is ${state}: its disks are changing. Shut it down, or clone from a snapshot (--snapshot NAME)`);
      }
      const sourceDisks = config.disks;
      // The disks must still exist (a snapshot's config may list a disk deleted since).
      for (const d of sourceDisks) {
        const file = d.owned ? await containedPath(src.dir, d.path) : d.path;
        if (!existsSync(file)) throw new VmdeskError(ErrorCode.broken, `disk ${d.id} (${file}) of the source no longer exists`);
      }
      cancelled();
      if (!snap && mode === 'linked') {
        // A linked clone needs an immutable base: like VirtualBox, snapshot the current state first.
        progress('snapshotting the current state', 0);
        snap = await take({ name: uniqueSnapshotName(await readTree(src.dir), `${LINKED_BASE_PREFIX}${name}`), description: linkedBaseDescription(name) });
        taken = { vmId: src.id, snapId: snap.id };
        if (snap.stateFile) throw memoryOnly(snap);
      }
      // Every file read goes through the gate (attached files) or at least its own format with backing off.
      const sources = new Map<string, string>();
      for (const d of sourceDisks) {
        if (d.readOnly && !d.owned) continue;
        sources.set(d.id, await vmDiskSource(src.dir, d, { what: `disk ${d.id} of "${src.config.name}"`, vmsDir: core.library.vmsDir }));
      }
      if (snap) {
        for (const d of sourceDisks.filter((x) => !x.readOnly)) {
          if (d.format !== 'qcow2') throw new VmdeskError(ErrorCode.invalid, `disk ${d.id} is ${d.format}: it has no snapshots to clone from`);
          const has = (await img.imgInfo(sources.get(d.id)!, { shared: running })).snapshots.some((s) => s.tag === snap!.tag);
          if (!has) throw new VmdeskError(ErrorCode.broken, `snapshot "${snap.name}" is missing from disk ${d.id}; cannot clone from it`);
        }
      }

      // Files this attempt made in the source's bundle; removed again if the clone does not come to exist.
      const made: string[] = [];
      let baseDir: string | undefined;
      try {
        const bases: Record<string, string> = {};
        if (mode === 'linked' && snap) {
          // One base per snapshot and disk, shared by all linked clones of it; read-only so nothing writes into it.
          baseDir = await containedPath(src.dir, path.relative(src.dir, basesDir(src.dir)), snap.id);
          await fs.mkdir(baseDir, { recursive: true });
          const writable = sourceDisks.filter((d) => !d.readOnly);
          for (const [i, d] of writable.entries()) {
            const base = await containedPath(baseDir, `${d.id}.qcow2`);
            if (!existsSync(base)) {
              // Written under a name that carries this process's pid: a crash leaves a file the sweep can tell is dead.
              const tmp = partialPath(base);
              made.push(tmp);
              await img.convert(sources.get(d.id)!, tmp, { dstFormat: 'qcow2', snapshotTag: snap.tag, shared: running, signal, onProgress: (f) => progress(`making base of disk ${d.id}`, (i + f) / writable.length) });
              await fs.chmod(tmp, 0o444);
              // Linked clones made from it are synced with their bundles; the base they lean on must be too.
              await fsyncFile(tmp);
              await fs.rename(tmp, base);
              await fsyncDir(baseDir);
              made.push(base);
            }
            cancelled();
            bases[d.id] = base;
          }
        }

        const info = await core.createVmBundle(name, async (staging, id) => {
          await fs.mkdir(await containedPath(staging, 'disks'), { recursive: true });
          const disks: Disk[] = [];
          for (const [i, d] of sourceDisks.entries()) {
            const bus = d.bus ? { bus: d.bus } : {};
            if (d.readOnly && !d.owned) {
              // Shared read-only media (an installer image) stays shared, named as the source names it.
              disks.push({ id: d.id, path: d.path, format: d.format, owned: false, readOnly: true, ...bus });
              continue;
            }
            cancelled();
            const frac = (f: number) => progress(`copying disk ${d.id}`, (i + f) / sourceDisks.length);
            if (mode === 'linked' && bases[d.id]) {
              const rel = `disks/${d.id}.qcow2`;
              await img.createOverlay(await containedPath(staging, rel), bases[d.id]!);
              // The engine opens no backing file an image names: it is given this base explicitly.
              disks.push({ id: d.id, path: rel, format: 'qcow2', owned: true, readOnly: d.readOnly, ...bus, base: bases[d.id]! });
              continue;
            }
            const fmt = caps.nativeDiskFormat;
            const rel = `disks/${d.id}.${fmt === 'raw' ? 'img' : fmt}`;
            const dst = await containedPath(staging, rel);
            await img.convert(sources.get(d.id)!, dst, {
              dstFormat: fmt,
              snapshotTag: snap && d.format === 'qcow2' ? snap.tag : undefined,
              shared: running,
              signal,
              onProgress: frac,
            });
            disks.push({ id: d.id, path: rel, format: fmt, owned: true, readOnly: d.readOnly, ...bus });
          }
          if (config.firmware === 'uefi' && existsSync(uefiVarsFile(src.dir))) {
            const vars = await vmDiskSource(src.dir, uefiVarsDisk(), { what: `the UEFI variables of "${src.config.name}"` });
            await img.convert(vars, await containedPath(staging, uefiVarsDisk().path), { dstFormat: 'qcow2', snapshotTag: snap?.tag, shared: running, signal });
          }
          // The TPM's state goes with the disks it sealed (issue 12: tpm.ts).
          if (config.tpm) cloneTpmState(src.dir, staging, snap?.id);
          cancelled();
          if (mode === 'linked' && snap) {
            await fs.mkdir(snapshotDir(staging), { recursive: true });
            const link: LinkedBase = { sourceVmId: src.id, snapshotId: snap.id, bases };
            await writeJsonAtomic(path.join(snapshotDir(staging), LINKED_BASE_FILE), link);
          }
          return cloneConfig(config, id, name, disks);
        });
        // The clone exists: its base snapshot and base images are now its own to keep.
        taken = undefined;
        made.length = 0;
        if (mode === 'linked' && snap) {
          // withLock holds the source's snapshot gate: write directly. A crash before this line is repaired
          // by sweepOrphanLinkedBases (it finds the clone through its linked-base.json).
          const tree = await readTree(src.dir);
          const node = tree.nodes.find((n) => n.id === snap!.id);
          if (node) await writeTree(src.dir, updateNode(tree, node.id, { linkedClones: [...new Set([...node.linkedClones, info.id])] }));
        }
        progress('done', 1);
        return info;
      } catch (e) {
        // Nothing can use what this attempt made: the snapshot gate is held and no clone was created.
        for (const f of made.reverse()) await fs.rm(f, { force: true }).catch(() => {});
        if (baseDir) await fs.rmdir(baseDir).catch(() => {}); // only when empty: other clones' bases stay
        throw e;
      }
    });
  } catch (e) {
    if (taken) {
      // Roll back the snapshot taken for a clone that does not exist (outside withLock: delete takes the
      // gate itself, and handles a running source through its engine). What cannot be removed now is left
      // to sweepOrphanLinkedBases.
      await snaps.delete(taken.vmId, taken.snapId).catch(() => {});
    }
    throw e;
  }
}

/** The linked-base.json of a bundle, when it is a linked clone (and the file parses). */
async function readLinkedBase(bundleDir: string): Promise<LinkedBase | null> {
  const text = await fs.readFile(path.join(snapshotDir(bundleDir), LINKED_BASE_FILE), 'utf8').catch(() => null);
  if (!text) return null;
  try {
    const j = JSON.parse(text) as Partial<LinkedBase>;
    // The ids become path segments (the source's bundle, its bases folder): only well-formed ones count.
    const ok = typeof j.sourceVmId === 'string' && /^[0-9a-f-]{36}$/.test(j.sourceVmId) && SnapshotNode.shape.id.safeParse(j.snapshotId).success;
    return ok ? { sourceVmId: j.sourceVmId!, snapshotId: j.snapshotId!, bases: j.bases && typeof j.bases === 'object' ? j.bases : {} } : null;
  } catch {
    return null;
  }
}

/** Ids of VMs whose disks are built on snapshot `snapId` of the VM in `bundleDir` (link file or Disk.base). */
async function clonesBuiltOn(entries: BundleEntry[], bundleDir: string, snapId?: string): Promise<BundleEntry[]> {
  const vmId = path.basename(bundleDir);
  const under = snapId ? path.join(basesDir(bundleDir), snapId) : basesDir(bundleDir);
  const out: BundleEntry[] = [];
  for (const e of entries) {
    if (e.dir === bundleDir) continue;
    const link = await readLinkedBase(e.dir);
    const byLink = !!link && link.sourceVmId === vmId && (!snapId || link.snapshotId === snapId);
    const byBase = (e.config?.disks ?? []).some((d) => d.base && isInside(under, d.base));
    if (byLink || byBase) out.push(e);
  }
  return out;
}

/**
 * Names of existing VMs that are linked clones built on this VM's snapshots. Core.delete should refuse to
 * delete a VM while this is non-empty: the clones' disks read from its snapshots/bases/. A clone counts
 * whether or not the snapshot tree lists it (a crash can come between making the clone and recording it).
 */
export async function linkedClonesOf(core: Pick<SnapshotCore, 'library'>, bundleDir: string): Promise<string[]> {
  const clones = await clonesBuiltOn(await core.library.list(), bundleDir);
  return clones.map((e) => e.config?.name ?? e.id);
}

/**
 * Start-up reconciliation of linked clones across the library (call it once a long-lived core has booted,
 * and from `vmdesk` commands that clone if you like; it is idempotent and cheap when nothing is wrong):
 * - removes half-written base images (`*.partial-<pid>-<start>`) whose writer has died;
 * - removes "Linked base for X" snapshots that VMDesk took for a linked clone when no VM is built on them
 *   (the clone was never created because the process crashed, or was deleted since);
 * - records clones missing from their base snapshot's `linkedClones` (a crash right after the clone was made),
 *   so the snapshot stays protected.
 * Snapshots the user renamed or described differently are theirs and are left alone. Returns notes in words.
 */
export async function sweepOrphanLinkedBases(core: SnapshotCore, snaps: SnapshotManager = new SnapshotManager(core)): Promise<string[]> {
  const notes: string[] = [];
  const entries = await core.library.list();
  for (const e of entries) notes.push(...(await recordBases(core, e)));
  for (const e of entries) {
    if (!e.config) continue;
    const vmName = e.config.name;
    for (const sid of await fs.readdir(basesDir(e.dir)).catch(() => [] as string[])) {
      const dir = path.join(basesDir(e.dir), sid);
      for (const f of await fs.readdir(dir).catch(() => [] as string[])) {
        if (!isStalePartial(f)) continue;
        await fs.rm(path.join(dir, f), { force: true });
        notes.push(`removed ${path.join(dir, f)}, a base image a crashed clone of "${vmName}" left half-written`);
      }
    }
    const tree = await readTree(e.dir).catch(() => null);
    if (!tree) continue;
    for (const n of tree.nodes) {
      const users = await clonesBuiltOn(entries, e.dir, n.id);
      const known = new Set(n.linkedClones);
      for (const u of users.filter((x) => !known.has(x.id))) {
        await snaps.markLinkedClone(e.id, n.id, u.id, true).then(
          () => notes.push(`snapshot "${n.name}" of "${vmName}" now records its linked clone "${u.config?.name ?? u.id}"`),
          (err: Error) => notes.push(`could not record linked clone "${u.config?.name ?? u.id}" on snapshot "${n.name}" of "${vmName}": ${err.message}`),
        );
      }
      if (users.length || !isAutoLinkedBase(n)) continue;
      // Delete re-checks linkedClones under the snapshot gate, and a clone in progress holds that gate.
      await snaps.delete(e.id, n.id).then(
        () => notes.push(`removed snapshot "${n.name}" of "${vmName}": no linked clone is built on it`),
        (err: Error) => notes.push(`could not remove snapshot "${n.name}" of "${vmName}": ${err.message}`),
      );
    }
  }
  return notes;
}

/**
 * Linked clones made before Disk.base existed name their base only in linked-base.json (and in the overlay's
 * own header, which QEMU no longer follows): copy it into each Disk, when it is where VMDesk puts bases.
 */
async function recordBases(core: SnapshotCore, e: BundleEntry): Promise<string[]> {
  const link = await readLinkedBase(e.dir);
  if (!link || !e.config || !e.config.disks.some((d) => d.owned && !d.base && link.bases[d.id])) return [];
  const where = path.join(basesDir(core.library.bundleDir(link.sourceVmId)), link.snapshotId);
  const name = e.config.name;
  try {
    // The index's config (the daemon is the only writer), saved back through the core so clients see it.
    const fresh = await core.usable(e.id);
    const notes: string[] = [];
    const disks = fresh.config.disks.map((d) => {
      const base = link.bases[d.id];
      if (!d.owned || d.base || d.format !== 'qcow2' || typeof base !== 'string' || !path.isAbsolute(base) || !isInside(where, base) || !existsSync(base)) return d;
      notes.push(`linked clone "${name}": disk ${d.id} now names its base ${base} explicitly`);
      return { ...d, base };
    });
    if (notes.length) await core.saveConfig(e.id, { ...fresh.config, disks });
    return notes;
  } catch (err) {
    return [`could not record the base images of linked clone "${name}": ${(err as Error).message}`];
  }
}
