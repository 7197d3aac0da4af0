// RPC handlers for snapshots, clones, export and import: maps SnapshotRpcMethods onto the snapshot modules.
import type { z } from 'zod';
import type { Core } from '../core/core.js';
import type { SnapshotRpcMethods, SnapshotRpcMethod } from '../api/rpc.js';
import { SnapshotManager } from '../core/snapshots/manager.js';
import { cloneVm } from '../core/snapshots/clone.js';
import { exportVm, importArchive } from '../core/backup/archive.js';
import { importAppliance, importDiskImage, importKind } from '../core/backup/ovf.js';
import { exportOva, OVA_EXTENSION } from '../core/backup/ova-export.js';
import { ErrorCode, VmdeskError } from '../api/errors.js';

type Parsed<M extends SnapshotRpcMethod> = z.output<(typeof SnapshotRpcMethods)[M]['params']>;
type Result<M extends SnapshotRpcMethod> = z.input<(typeof SnapshotRpcMethods)[M]['result']>;
type Progress = (phase: string, fraction?: number) => void;
export type SnapshotHandlers = { [M in SnapshotRpcMethod]: (core: Core, p: Parsed<M>, ctx: { progress: Progress }) => Promise<Result<M>> };

// One manager per core: it holds no state beyond the core, so this only saves allocations.
const managers = new WeakMap<Core, SnapshotManager>();
export function snaps(core: Core): SnapshotManager {
  let m = managers.get(core);
  if (!m) managers.set(core, (m = new SnapshotManager(core)));
  return m;
}

// Every method that changes a VM runs as that VM's one job (core.job): a second one is refused with EBUSY.
export const snapshotHandlers: SnapshotHandlers = {
  'snapshot.list': (core, p) => snaps(core).list(p.id, { brief: p.brief }),
  'snapshot.info': (core, p) => snaps(core).info(p.id, p.snapshot),
  'snapshot.thumbnail': async (core, p) => ({ png: (await snaps(core).thumbnail(p.id, p.snapshot))?.toString('base64') ?? null }),
  'snapshot.take': (core, p, { progress }) => core.job(p.id, 'snapshot.take', 'snapshot.take', () => snaps(core).take(p.id, { name: p.name, description: p.description, onProgress: progress })),
  'snapshot.restore': (core, p, { progress }) => core.job(p.id, 'snapshot.restore', 'snapshot.restore', () => snaps(core).restore(p.id, p.snapshot, { snapshotCurrent: p.saveCurrent, onProgress: progress })),
  'snapshot.delete': (core, p, { progress }) => core.job(p.id, 'snapshot.delete', 'snapshot.delete', () => snaps(core).delete(p.id, p.snapshot, { branch: p.branch, onProgress: progress })),
  'snapshot.rename': (core, p) => core.job(p.id, 'snapshot.edit', 'snapshot.rename', () => snaps(core).rename(p.id, p.snapshot, p.name)),
  'snapshot.describe': (core, p) => core.job(p.id, 'snapshot.edit', 'snapshot.describe', () => snaps(core).describe(p.id, p.snapshot, p.description)),
  'snapshot.restorePlan': (core, p) => snaps(core).restorePlan(p.id, p.snapshot, { snapshotCurrent: p.saveCurrent }),
  'snapshot.compare': (core, p) => snaps(core).compare(p.id, p.from, p.to),
  'snapshot.prune': (core, p, { progress }) =>
    core.job(p.id, 'snapshot.delete', 'snapshot.prune', async () => ({ deleted: (await snaps(core).prune(p.id, progress)).deleted.map((n) => n.name) })),
  'snapshot.keep': (core, p) => core.job(p.id, 'snapshot.edit', 'snapshot.keep', () => snaps(core).keep(p.id, p.snapshot)),
  'snapshot.schedule': (core, p) => core.job(p.id, 'update', 'snapshot.schedule', () => snaps(core).setSchedule(p.id, p.schedule)),
  'snapshot.preferences': (core, p) => snaps(core).preferences(p.safetyKeep === undefined ? {} : { safetyKeep: p.safetyKeep }),
  'snapshot.convertDisk': (core, p, { progress }) => core.job(p.id, 'disk', 'snapshot.convertDisk', () => snaps(core).convertDisk(p.id, p.disk, progress)),
  'snapshot.clone': (core, p, { progress }) =>
    core.job(p.id, 'clone', 'snapshot.clone', () => cloneVm(core, snaps(core), p.id, { name: p.name, snapshot: p.snapshot, mode: p.linked ? 'linked' : 'full', onProgress: progress })),
  'vm.export': (core, p, { progress }) => core.job(p.id, 'export', 'vm.export', () => exportAny(core, p, progress)),
  'vm.import': (core, p, { progress }) => importAny(core, p, progress),
};

async function exportAny(core: Core, p: Parsed<'vm.export'>, progress: Progress): Promise<Result<'vm.export'>> {
  if (p.file.toLowerCase().endsWith(OVA_EXTENSION)) {
    if (p.includeSnapshots) throw new VmdeskError(ErrorCode.invalid, 'an OVA appliance cannot carry snapshots; export to a .vmdesk archive to keep them');
    const r = await exportOva(core, p.id, p.file, { onProgress: progress });
    return { file: r.file, bytes: r.bytes, warnings: r.warnings };
  }
  const r = await exportVm(core, p.id, p.file, { includeSnapshots: p.includeSnapshots, onProgress: progress });
  return { file: r.file, bytes: r.bytes, warnings: [] };
}

async function importAny(core: Core, p: Parsed<'vm.import'>, progress: Progress): Promise<Result<'vm.import'>> {
  const kind = importKind(p.file);
  if (kind !== 'disk' && p.format) throw new VmdeskError(ErrorCode.invalid, 'a format can only be stated for a bare disk image; archives and appliances say what their disks are');
  if (kind === 'archive') {
    if (p.cpus !== undefined || p.memoryMiB !== undefined) throw new VmdeskError(ErrorCode.invalid, 'a .vmdesk archive keeps its own CPUs and memory; change them with vm.update after the import');
    return importArchive(core, p.file, { name: p.name, onProgress: progress });
  }
  if (kind === 'appliance') {
    const r = await importAppliance(core, p.file, { name: p.name, cpus: p.cpus, memoryMiB: p.memoryMiB, onProgress: progress });
    return { ...r.info, warnings: [...r.info.warnings, ...r.warnings] };
  }
  return importDiskImage(core, p.file, { name: p.name, cpus: p.cpus, memoryMiB: p.memoryMiB, format: p.format, onProgress: progress });
}

