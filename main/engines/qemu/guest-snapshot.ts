// What guest integration means for a live snapshot: the guest's file systems frozen around the save when its
// agent answers (noted in logs/qemu.log either way), and a plain refusal where QEMU cannot save the state at all
// (virtiofs shares: vhost-user-fs has no migration support in QEMU 7.2).
import { appendFileSync } from 'node:fs';
import { ErrorCode, VmdeskError } from '../../api/errors.js';
import type { EngineContext, VmRuntime } from '../engine.js';
import { withFrozenGuest } from './guest-agent.js';
import { agentSocket } from './guest-devices.js';
import { bundleFiles } from './layout.js';
import type { QemuRuntime } from './runtime.js';

export function liveSnapshotGuard(rt: VmRuntime, ctx: EngineContext): void {
  const virtiofs = (rt.activeShares?.() ?? []).filter((s) => s.driver === 'virtiofs');
  if (!virtiofs.length) return;
  throw new VmdeskError(
    ErrorCode.invalid,
    `a live snapshot of "${ctx.config.name}" cannot be taken while it runs with virtiofs shared folders (${virtiofs.map((s) => s.tag).join(', ')}): QEMU cannot save virtiofs state. ` +
      'Shut it down and take a disk-only snapshot, or switch those shares to 9p (vmdesk share add NAME DIR --tag T --driver 9p) and unmount them in the guest while snapshotting',
  );
}

/** Runs the save with the guest frozen where its agent answers; what happened goes to the VM's QEMU log. */
export function quiesced<T>(rt: VmRuntime, ctx: EngineContext, fn: () => Promise<T>): Promise<T> {
  const q = rt as QemuRuntime;
  if (!ctx.config.guestAgent || typeof q.command !== 'function') return fn();
  const log = bundleFiles(ctx.bundleDir).qemuLog;
  const note = (line: string) => {
    try {
      appendFileSync(log, `${new Date().toISOString()} vmdesk: ${line}\n`);
    } catch {
      // the log is a courtesy
    }
  };
  return withFrozenGuest(agentSocket(ctx.runtimeDir), (c, a, t) => q.command(c, a, t), fn, note);
}
