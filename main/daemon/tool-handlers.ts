// RPC handlers for ToolRpcMethods (main/api/rpc-tools.ts): the file picker, logs, the CD drive, disks
// detached and reordered, port checks. Methods that change a VM run as its one job; job.cancel is dispatch's.
import type { z } from 'zod';
import type { Core } from '../core/core.js';
import type { ToolRpcMethods, ToolRpcMethod } from '../api/rpc-tools.js';
import { SnapshotManager } from '../core/snapshots/manager.js';
import { changeMedia, checkPorts, detachDisk, listFiles, reorderDisks, setDisk, statFile, vmLogs } from '../core/tools.js';

type Parsed<M extends ToolRpcMethod> = z.output<(typeof ToolRpcMethods)[M]['params']>;
type Result<M extends ToolRpcMethod> = z.input<(typeof ToolRpcMethods)[M]['result']>;
export type ToolHandlers = { [M in Exclude<ToolRpcMethod, 'job.cancel'>]: (core: Core, p: Parsed<M>) => Promise<Result<M>> };

async function diskHasSnapshots(core: Core, vmId: string, diskId: string): Promise<boolean> {
  const listing = await new SnapshotManager(core).list(vmId).catch(() => null);
  return !!listing?.snapshots.some((s) => s.disks.includes(diskId));
}

export const toolHandlers: ToolHandlers = {
  'files.list': (_core, p) => listFiles(p),
  'files.stat': (_core, p) => statFile(p.path),
  'vm.logs': (core, p) => vmLogs(core, p.id, p.source, p.maxBytes),
  // Changing the disc is no hardware change (the drive stays): allowed while the guest runs.
  'vm.media': (core, p) => core.job(p.id, 'update', 'vm.media', () => changeMedia(core, p.id, p.cdrom)),
  'disk.detach': (core, p) => core.job(p.id, 'disk', 'disk.detach', () => detachDisk(core, p.id, p.disk, (vm, disk) => diskHasSnapshots(core, vm, disk))),
  'disk.set': (core, p) => core.job(p.id, 'disk', 'disk.set', () => setDisk(core, p.id, p.disk, { bus: p.bus, readOnly: p.readOnly })),
  'disk.reorder': (core, p) => core.job(p.id, 'disk', 'disk.reorder', () => reorderDisks(core, p.id, p.order)),
  'host.ports': (core, p) => checkPorts(core, p.forwards, p.id),
};
