// Runs QEMU's snapshot-save/-load/-delete QMP jobs on a running VM and waits for them to conclude.
import { VmdeskError, ErrorCode } from '../../api/errors.js';

/** The one thing these jobs need from the core: raw QMP to the VM (Core.command bound to a VM). */
export type QmpFn = (execute: string, args?: Record<string, unknown>, timeoutMs?: number) => Promise<unknown>;

export interface QmpJobInfo {
  id: string;
  type: string;
  status: string;
  'current-progress': number;
  'total-progress': number;
  error?: string;
}

/** A writable block node QEMU has open, with the host file behind it. */
export interface BlockNode {
  nodeName: string;
  driver: string;
  file: string;
  readOnly: boolean;
  /** qdev path or id of the guest device (pflash for UEFI variables). */
  device: string;
}

export async function queryJobs(qmp: QmpFn): Promise<QmpJobInfo[]> {
  return ((await qmp('query-jobs')) as QmpJobInfo[]) ?? [];
}

/** Jobs still doing something (not concluded/null). */
export async function activeJobs(qmp: QmpFn): Promise<QmpJobInfo[]> {
  return (await queryJobs(qmp)).filter((j) => j.status !== 'concluded' && j.status !== 'null');
}

/**
 * The format nodes that back guest devices, from query-block. Asking QEMU rather than re-deriving node names
 * from the engine's argument builder keeps snapshots right whatever naming the engine uses, and finds the
 * UEFI variable store (a pflash drive) too.
 */
export async function blockNodes(qmp: QmpFn): Promise<BlockNode[]> {
  const devices = (await qmp('query-block')) as {
    device?: string;
    qdev?: string;
    inserted?: { 'node-name'?: string; drv: string; file: string; ro: boolean; image?: { filename?: string } };
  }[];
  const out: BlockNode[] = [];
  for (const d of devices ?? []) {
    const ins = d.inserted;
    if (!ins || !ins['node-name']) continue;
    out.push({ nodeName: ins['node-name'], driver: ins.drv, file: ins.image?.filename ?? ins.file, readOnly: ins.ro, device: d.qdev || d.device || '' });
  }
  return out;
}

export interface JobProgress {
  (fraction: number): void;
}

/**
 * Starts a job and waits until it concludes, then dismisses it. Polls query-jobs (every `pollMs`): the
 * core's command channel has no event subscription, and polling costs one small QMP round trip per tick.
 */
export async function runJob(qmp: QmpFn, command: 'snapshot-save' | 'snapshot-load' | 'snapshot-delete', args: Record<string, unknown> & { 'job-id': string }, opts: { timeoutMs?: number; pollMs?: number; onProgress?: JobProgress } = {}): Promise<void> {
  const jobId = args['job-id'];
  const timeoutMs = opts.timeoutMs ?? 30 * 60_000;
  const pollMs = opts.pollMs ?? 15;
  await qmp(command, args, 30_000);
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const job = (await queryJobs(qmp)).find((j) => j.id === jobId);
    if (!job) throw new VmdeskError(ErrorCode.engine, `QEMU lost track of job ${jobId}`);
    if (job['total-progress'] > 0) opts.onProgress?.(Math.min(1, job['current-progress'] / job['total-progress']));
    if (job.status === 'concluded') {
      await qmp('job-dismiss', { id: jobId }).catch(() => {});
      if (job.error) throw new VmdeskError(ErrorCode.engine, `${command} failed: ${job.error}`);
      opts.onProgress?.(1);
      return;
    }
    if (Date.now() > deadline) {
      await qmp('job-cancel', { id: jobId }).catch(() => {});
      throw new VmdeskError(ErrorCode.timeout, `${command} did not finish within ${Math.round(timeoutMs / 1000)} s`);
    }
    await new Promise((r) => setTimeout(r, pollMs));
  }
}

/** Dismisses concluded jobs we started earlier (a VMDesk process died while waiting for them). */
export async function dismissStaleJobs(qmp: QmpFn, prefix = 'vmdesk-'): Promise<QmpJobInfo[]> {
  const jobs = await queryJobs(qmp);
  const stale = jobs.filter((j) => j.id.startsWith(prefix) && j.status === 'concluded');
  for (const j of stale) await qmp('job-dismiss', { id: j.id }).catch(() => {});
  return stale;
}
