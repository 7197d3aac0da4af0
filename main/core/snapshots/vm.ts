// What every snapshot module needs to know about the VM it works on: its bundle, its engine module (asked
// for capabilities and its snapshot provider, never named), the running guest, and a few shared rules.
import path from 'node:path';
import type { Disk, VmInfo, VmState } from '../../api/schema.js';
import { VmdeskError, ErrorCode } from '../../api/errors.js';
import type { EngineContext, EngineModule, SnapshotRef, VmRuntime } from '../../engines/engine.js';
import type { SnapshotCore, UsableEntry } from '../services.js';
import { stateFilePath } from './store.js';
import type { SnapshotNode } from './tree.js';

export type { ProgressFn, SnapshotCore, UsableEntry } from '../services.js';

/** A guest exists and answers: live snapshots, in-place loads. */
export const RUNNING: readonly VmState[] = ['running', 'paused'];
/** A guest is coming or going: nothing is snapshotted until it settles. */
export const SETTLING: readonly VmState[] = ['starting', 'stopping'];

export function diskFile(bundleDir: string, d: Disk): string {
  return path.isAbsolute(d.path) ? d.path : path.join(bundleDir, d.path);
}

/**
 * The per-VM UEFI variable store: part of the bundle's layout (the firmware's own store, kept as qcow2 so
 * disk snapshots can include it); clones and exports copy it with the disks.
 */
export function uefiVarsFile(bundleDir: string): string {
  return path.join(bundleDir, 'uefi-vars.qcow2');
}

/** One VM as a snapshot operation sees it when it starts. */
export interface SnapVm {
  core: SnapshotCore;
  entry: UsableEntry;
  eng: EngineModule;
  ctx: EngineContext;
  info: VmInfo;
}

export async function loadVm(core: SnapshotCore, ref: string): Promise<SnapVm> {
  const entry = await core.usable(ref);
  const eng = await core.engineOf(entry.config);
  return { core, entry, eng, ctx: core.ctx(entry), info: await core.get(entry.id) };
}

export function isRunning(state: VmState): boolean {
  return RUNNING.includes(state);
}

/** Refuses while the guest is starting or stopping (its disks and memory are in flux). */
export function requireSettled(vm: SnapVm): void {
  if (SETTLING.includes(vm.info.state)) throw new VmdeskError(ErrorCode.state, `"${vm.entry.config.name}" is ${vm.info.state}; wait until it has finished`);
}

/** The running guest; ESTATE when the index says it runs but no runtime is held (it just went away). */
export function runtimeOf(vm: SnapVm): VmRuntime {
  const rt = vm.core.runtime(vm.entry.id);
  if (!rt) throw new VmdeskError(ErrorCode.state, `"${vm.entry.config.name}" is not running any more; try again`);
  return rt;
}

/** How the engine names a snapshot: our tag, and the state file it would live in ('memory' snapshots). */
export function refOf(bundleDir: string, node: Pick<SnapshotNode, 'id' | 'tag'>): SnapshotRef {
  return { id: node.id, tag: node.tag, stateFile: stateFilePath(bundleDir, node.id) };
}

/** The words for an engine's live snapshots, in progress phases. */
export function livePhase(verb: 'saving' | 'loading', live: 'full' | 'memory'): string {
  return live === 'full' ? `${verb} memory and disks` : `${verb} memory and CPU state`;
}

/**
 * Forced power-off that tolerates the race where the guest goes away on its own while the kill is in
 * flight: what matters is that the VM is stopped afterwards.
 */
export async function powerOff(core: SnapshotCore, vmId: string): Promise<void> {
  try {
    await core.kill(vmId);
  } catch (e) {
    const deadline = Date.now() + 10_000;
    for (;;) {
      const st = (await core.get(vmId)).state;
      if (st === 'stopped' || st === 'crashed') return;
      if (Date.now() > deadline) throw e;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

/** A snapshot name no other snapshot has: "base", "base (2)", ... within the 64-character limit. */
export function uniqueSnapshotName(tree: { nodes: { name: string }[] }, base: string): string {
  let name = base.slice(0, 60);
  for (let i = 2; tree.nodes.some((n) => n.name.toLowerCase() === name.toLowerCase()); i++) name = `${base.slice(0, 56)} (${i})`;
  return name;
}

/** EINVAL naming a writable disk that cannot hold snapshots, with the provider's fix. */
export function unsupportedError(vmName: string, u: { diskId: string; format: string; hint: string }): VmdeskError {
  return new VmdeskError(ErrorCode.invalid, `disk ${u.diskId} of "${vmName}" is ${u.format}, which does not support snapshots; ${u.hint}`);
}
