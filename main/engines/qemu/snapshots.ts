// QEMU's snapshots: internal qcow2 snapshots over every writable disk and the UEFI variable store. A running
// guest is saved and loaded by QMP jobs (snapshot-save/-load/-delete over block node names); a stopped one
// by qemu-img snapshot, always with the format stated.
import { existsSync } from 'node:fs';
import path from 'node:path';
import { ErrorCode, VmdeskError } from '../../api/errors.js';
import type { Disk, VmConfig } from '../../api/schema.js';
import * as img from '../../platform/qemu-img.js';
import type { EngineContext, Progress, SnapshotProvider, SnapshotRef, SnapshotTarget, StoredSnapshots, VmRuntime } from '../engine.js';
import { activeJobs, dismissStaleJobs, runJob, type QmpFn } from './jobs.js';
import { bundleFiles } from './layout.js';
import type { QemuRuntime } from './runtime.js';
import { liveSnapshotGuard, quiesced } from './guest-snapshot.js';
import { deleteTpmSnapshot, restoreTpmState, snapshotTpmState } from '../../platform/tpm-state.js';
import { fileStamp } from '../../platform/file-stamp.js';

function diskFile(bundleDir: string, d: Disk): string {
  return path.isAbsolute(d.path) ? d.path : path.join(bundleDir, d.path);
}

function unsupportedDisk(config: VmConfig, d: Disk): VmdeskError {
  return new VmdeskError(
    ErrorCode.invalid,
    `disk ${d.id} of "${config.name}" is ${d.format}, which does not support snapshots; convert it to qcow2 with: vmdesk snapshot convert-disk "${config.name}" ${d.id}`,
  );
}

function qmpOf(rt: VmRuntime): QmpFn {
  const q = rt as QemuRuntime;
  if (typeof q.command !== 'function') throw new VmdeskError(ErrorCode.internal, 'not a QEMU runtime');
  return (execute, args, timeoutMs) => q.command(execute, args, timeoutMs);
}

/** Every target, or EINVAL naming the first writable disk that cannot hold snapshots. */
function strictTargets(ctx: EngineContext): SnapshotTarget[] {
  const { targets, unsupported } = qemuSnapshots.targets(ctx);
  if (unsupported.length) throw unsupportedDisk(ctx.config, ctx.config.disks.find((d) => d.id === unsupported[0]!.diskId)!);
  if (!targets.some((t) => t.id !== 'uefi-vars')) throw new VmdeskError(ErrorCode.invalid, `"${ctx.config.name}" has no writable qcow2 disk to hold a snapshot; add a disk first`);
  return targets;
}

/** The QEMU node names of the targets, checked against what QEMU has open; a VM disk first (it gets the RAM). */
async function liveNodes(qmp: QmpFn, ctx: EngineContext, targets: SnapshotTarget[]): Promise<string[]> {
  const named = (await qmp('query-named-block-nodes', { flat: true })) as { 'node-name': string; drv: string; ro: boolean }[];
  const formatNodes = named.filter((n) => n.drv !== 'file' && n.drv !== 'host_device' && !n.ro);
  const out: string[] = [];
  for (const n of formatNodes) {
    if (n.drv !== 'qcow2') {
      const d = ctx.config.disks.find((x) => n['node-name'] === `disk-${x.id}`);
      throw d ? unsupportedDisk(ctx.config, d) : new VmdeskError(ErrorCode.invalid, `block node ${n['node-name']} (${n.drv}) cannot hold snapshots; only qcow2 can`);
    }
    out.push(n['node-name']);
  }
  if (out.length < targets.length) throw new VmdeskError(ErrorCode.engine, `QEMU has ${out.length} writable qcow2 nodes open but the VM has ${targets.length} snapshot targets; restart the VM`);
  out.sort((a, b) => Number(b.startsWith('disk-')) - Number(a.startsWith('disk-')) || a.localeCompare(b));
  return out;
}

function nodeOf(t: SnapshotTarget): string {
  return t.id === 'uefi-vars' ? 'uefi-vars' : `disk-${t.id}`;
}

export const qemuSnapshots: SnapshotProvider = {
  targets(ctx) {
    const targets: SnapshotTarget[] = [];
    const unsupported: { diskId: string; format: string; hint: string }[] = [];
    for (const d of ctx.config.disks) {
      if (d.readOnly) continue;
      if (d.format !== 'qcow2') {
        unsupported.push({ diskId: d.id, format: d.format, hint: `convert it to qcow2 with: vmdesk snapshot convert-disk "${ctx.config.name}" ${d.id}` });
        continue;
      }
      targets.push({ id: d.id, file: diskFile(ctx.bundleDir, d), format: 'qcow2' });
    }
    const vars = bundleFiles(ctx.bundleDir).uefiVars;
    if (ctx.config.firmware === 'uefi' && existsSync(vars)) targets.push({ id: 'uefi-vars', file: vars, format: 'qcow2' });
    return { targets, unsupported };
  },

  async saveLive(rt, ctx, snap: SnapshotRef, progress: Progress) {
    const targets = strictTargets(ctx);
    const qmp = qmpOf(rt);
    const running = await activeJobs(qmp);
    if (running.length) throw new VmdeskError(ErrorCode.busy, `"${ctx.config.name}" is busy with QEMU job ${running.map((j) => `${j.id} (${j.type})`).join(', ')}; try again when it has finished`);
    liveSnapshotGuard(rt, ctx);
    const nodes = await liveNodes(qmp, ctx, targets);
    // With the guest agent answering, its file systems are frozen around the save (guest-snapshot.ts).
    await quiesced(rt, ctx, () => runJob(qmp, 'snapshot-save', { 'job-id': `vmdesk-save-${snap.id}`, tag: snap.tag, vmstate: nodes[0]!, devices: nodes }, { onProgress: (f) => progress('saving memory and disks', f) }));
    let vmStateBytes = 0;
    for (const t of targets) {
      const s = (await img.imgInfo(t.file, { shared: true, format: 'qcow2' }).catch(() => null))?.snapshots.find((x) => x.tag === snap.tag);
      vmStateBytes += s?.vmStateBytes ?? 0;
    }
    return { vmStateBytes, targets: targets.map((t) => t.id) };
  },

  async loadLive(rt, ctx, snap, progress) {
    const qmp = qmpOf(rt);
    const nodes = await liveNodes(qmp, ctx, strictTargets(ctx));
    await runJob(qmp, 'snapshot-load', { 'job-id': `vmdesk-load-${snap.id}`, tag: snap.tag, vmstate: nodes[0]!, devices: nodes }, { onProgress: (f) => progress('loading memory and disks', f) });
    // snapshot-load resumes a guest that was running; the contract is "ends paused": the caller resumes.
    const status = (await qmp('query-status')) as { running?: boolean };
    if (status.running) await rt.pause();
  },

  async deleteLive(rt, ctx, snap) {
    const qmp = qmpOf(rt);
    const running = await activeJobs(qmp);
    if (running.length) throw new VmdeskError(ErrorCode.busy, `"${ctx.config.name}" is busy with QEMU job ${running.map((j) => j.id).join(', ')}`);
    const { targets } = qemuSnapshots.targets(ctx);
    const holders: SnapshotTarget[] = [];
    for (const t of targets) {
      const snaps = (await img.imgInfo(t.file, { shared: true, format: 'qcow2' }).catch(() => null))?.snapshots ?? [];
      if (snaps.some((s) => s.tag === snap.tag)) holders.push(t);
    }
    if (!holders.length) return;
    const nodes = await liveNodes(qmp, ctx, targets);
    const devices = nodes.filter((n) => holders.some((h) => nodeOf(h) === n));
    await runJob(qmp, 'snapshot-delete', { 'job-id': `vmdesk-del-${snap.id}`, tag: snap.tag, devices: devices.length ? devices : nodes });
    deleteTpmSnapshot(ctx.bundleDir, snap.id);
  },

  async saveOffline(ctx, snap, progress) {
    const targets = strictTargets(ctx);
    const done: SnapshotTarget[] = [];
    try {
      for (const [i, t] of targets.entries()) {
        progress(`snapshotting disk ${t.id}`, i / targets.length);
        await img.snapshotCreate(t.file, snap.tag);
        done.push(t);
      }
    } catch (e) {
      // All or nothing: undo the disks already done.
      for (const t of done) await img.snapshotDelete(t.file, snap.tag).catch(() => {});
      throw e;
    }
    // The TPM's state files (tpm.ts): a stopped VM's TPM is only those.
    snapshotTpmState(ctx.bundleDir, snap.id);
    return { targets: targets.map((t) => t.id) };
  },

  async applyOffline(ctx, snap, progress) {
    const targets = strictTargets(ctx);
    for (const [i, t] of targets.entries()) {
      progress(`reverting disk ${t.id}`, i / targets.length);
      await img.snapshotApply(t.file, snap.tag);
    }
    restoreTpmState(ctx.bundleDir, snap.id);
  },

  async deleteOffline(ctx, snap) {
    for (const t of qemuSnapshots.targets(ctx).targets) {
      const snaps = (await img.imgInfo(t.file, { format: 'qcow2' }).catch(() => null))?.snapshots ?? [];
      if (snaps.some((s) => s.tag === snap.tag)) await img.snapshotDelete(t.file, snap.tag);
    }
    deleteTpmSnapshot(ctx.bundleDir, snap.id);
  },

  async stored(ctx, live) {
    const out: StoredSnapshots = new Map();
    for (const t of qemuSnapshots.targets(ctx).targets) {
      const snaps = (await img.imgInfo(t.file, { shared: live, format: 'qcow2' })).snapshots;
      for (const s of snaps) {
        if (!out.has(s.tag)) out.set(s.tag, new Map());
        out.get(s.tag)!.set(t.id, { vmStateBytes: s.vmStateBytes, dateSec: s.dateSec });
      }
    }
    return out;
  },

  async stamp(ctx) {
    // stored() reads the targets' snapshot tables and nothing else: a table changes only by writing its file,
    // which moves the file's mtime/ctime (or, written by rename, its inode); fileStamp declines times too recent
    // to trust, and a file it cannot read (whose listing would not be settled anyway).
    const parts: string[] = [];
    const now = Date.now();
    for (const t of qemuSnapshots.targets(ctx).targets) {
      const s = await fileStamp(t.file, now);
      if (s === null) return null;
      parts.push(`${t.id}=${t.file}:${s}`);
    }
    return parts.join('|');
  },

  async busy(rt) {
    return (await activeJobs(qmpOf(rt))).map((j) => `${j.id} (${j.type})`);
  },

  async recover(rt) {
    await dismissStaleJobs(qmpOf(rt));
  },
};
