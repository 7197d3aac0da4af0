// What this host offers VMs: CPUs, memory, QEMU, and each accelerator with the reason it can or cannot be used.
import os from 'node:os';
import type { AcceleratorReport, HostInfo } from '../api/schema.js';
import { hostCapacity } from './validate.js';
import { qemuStatus } from '../engines/qemu/host.js';
import { chooseAccel, hostAccelerators } from '../engines/qemu/accel.js';

/** The native addon's probe and self-test, when the addon is built; undefined otherwise. */
async function nativeKvmReport(): Promise<AcceleratorReport | undefined> {
  try {
    const native = await import('../engines/microvm/native.js');
    return await native.kvmReport();
  } catch {
    return undefined;
  }
}

/**
 * Merges the QEMU-level verdict (can QEMU run a stock kernel on this KVM?) with the native self-test's
 * measurements (API version, timing, class), keeping both reasons.
 */
export function mergeKvmReports(qemuView: AcceleratorReport, native: AcceleratorReport | undefined): AcceleratorReport {
  if (!native) return qemuView;
  const merged: AcceleratorReport = { ...native };
  if (qemuView.available && qemuView.class === 'unusable' && native.class === 'hardware') merged.class = 'unusable';
  merged.reason = native.reason === qemuView.reason ? native.reason : `${qemuView.reason}; self-test: ${native.reason}`;
  return merged;
}

export async function hostInfo(): Promise<HostInfo> {
  const cap = hostCapacity();
  const [qemu, reports, native] = await Promise.all([qemuStatus(), hostAccelerators(), nativeKvmReport()]);
  const kvm = mergeKvmReports(reports.kvm, native);
  const accelerators = { kvm, hvf: reports.hvf, tcg: reports.tcg };
  return {
    platform: process.platform,
    arch: os.arch(),
    cpus: cap.cpus,
    memoryMiB: cap.memoryMiB,
    freeMemoryMiB: cap.freeMemoryMiB,
    qemu,
    accelerators,
    defaultAccel: chooseAccel('auto', accelerators),
  };
}
