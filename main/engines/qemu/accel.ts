// Decides which accelerator QEMU uses (KVM, HVF or TCG) and explains why, for the VM and for host info.
import { execFile } from 'node:child_process';
import { closeSync, existsSync, openSync } from 'node:fs';
import { promisify } from 'node:util';
import type { AccelChoice, AcceleratorReport } from '../../api/schema.js';
import { ErrorCode, VmdeskError } from '../../api/errors.js';

type Accel = AccelChoice['requested'];
export type UsedAccel = AccelChoice['used'];

/** A deeper KVM check (the native addon's self-test runs a tiny guest); plugged in by whoever has one. */
export type KvmProbe = () => AcceleratorReport | Promise<AcceleratorReport>;

let kvmProbe: KvmProbe | undefined;

/** Installs (or with undefined removes) the deeper KVM probe consulted after the basic /dev/kvm checks. */
export function setKvmProbe(fn: KvmProbe | undefined): void {
  kvmProbe = fn;
}

/** Where the host facts come from; tests point these at fake files. */
export interface HostPaths {
  devKvm: string;
  /** Present when the host's KVM is the paravirtual nested kvm_pvm module. */
  kvmPvmModule: string;
  platform: NodeJS.Platform;
}

const defaultPaths = (): HostPaths => ({ devKvm: '/dev/kvm', kvmPvmModule: '/sys/module/kvm_pvm', platform: process.platform });

export const PVM_REASON =
  'KVM is kvm_pvm (nested paravirtual) and cannot run a stock kernel; using TCG (software emulation, slower)';

export async function detectKvm(paths: HostPaths = defaultPaths()): Promise<AcceleratorReport> {
  if (paths.platform !== 'linux') return { available: false, class: 'unusable', reason: 'KVM exists only on Linux' };
  if (!existsSync(paths.devKvm)) {
    return { available: false, class: 'unusable', reason: `${paths.devKvm} does not exist (KVM module not loaded, or virtualization disabled in firmware)` };
  }
  try {
    closeSync(openSync(paths.devKvm, 'r+'));
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code ?? 'error';
    return {
      available: false,
      class: 'unusable',
      reason: `cannot open ${paths.devKvm} read-write (${code}); add your user to the kvm group: sudo usermod -aG kvm $USER`,
    };
  }
  if (existsSync(paths.kvmPvmModule)) return { available: true, class: 'unusable', reason: PVM_REASON };
  if (kvmProbe) {
    try {
      const report = await kvmProbe();
      return report;
    } catch (e) {
      return { available: true, class: 'unusable', reason: `KVM self-test failed: ${(e as Error).message}` };
    }
  }
  return { available: true, class: 'hardware', reason: `${paths.devKvm} is usable` };
}

const run = promisify(execFile);

export async function detectHvf(platform: NodeJS.Platform = process.platform): Promise<AcceleratorReport> {
  if (platform !== 'darwin') return { available: false, class: 'unusable', reason: 'Hypervisor.framework exists only on macOS' };
  try {
    const { stdout } = await run('sysctl', ['-n', 'kern.hv_support'], { timeout: 5000 });
    if (stdout.trim() === '1') return { available: true, class: 'hardware', reason: 'kern.hv_support is 1' };
    return { available: false, class: 'unusable', reason: 'kern.hv_support is not 1 (no hardware virtualization on this Mac)' };
  } catch (e) {
    return { available: false, class: 'unusable', reason: `sysctl kern.hv_support failed: ${(e as Error).message}` };
  }
}

export const TCG_REPORT: AcceleratorReport = {
  available: true,
  class: 'slow',
  reason: 'TCG software emulation is always available (much slower than hardware virtualization)',
};

export interface AcceleratorReports {
  kvm: AcceleratorReport;
  hvf: AcceleratorReport;
  tcg: AcceleratorReport;
}

/** What each accelerator looks like on this host (for host info and for choosing). */
export async function hostAccelerators(paths: HostPaths = defaultPaths()): Promise<AcceleratorReports> {
  const [kvm, hvf] = await Promise.all([detectKvm(paths), detectHvf(paths.platform)]);
  return { kvm, hvf, tcg: TCG_REPORT };
}

const usable = (r: AcceleratorReport) => r.available && r.class === 'hardware';

/**
 * Pure decision from the reports. "auto" takes hardware acceleration when it is really usable and otherwise
 * TCG with the reason; an explicit request for an unusable accelerator is an EHOST error carrying that reason.
 */
export function chooseAccel(requested: Accel, reports: AcceleratorReports, platform: NodeJS.Platform = process.platform): AccelChoice {
  if (requested === 'tcg') return { requested, used: 'tcg', reason: 'software emulation, as chosen in the VM\'s settings' };
  if (requested === 'kvm' || requested === 'hvf') {
    const report = reports[requested];
    if (!usable(report)) {
      throw new VmdeskError(ErrorCode.host, `${requested.toUpperCase()} was requested but cannot be used: ${report.reason}`);
    }
    return { requested, used: requested, reason: `${requested.toUpperCase()} requested: ${report.reason}` };
  }
  if (platform === 'darwin') {
    if (usable(reports.hvf)) return { requested, used: 'hvf', reason: `using HVF: ${reports.hvf.reason}` };
    return { requested, used: 'tcg', reason: `HVF unavailable (${reports.hvf.reason}); using TCG (software emulation, slower)` };
  }
  if (platform === 'linux') {
    if (usable(reports.kvm)) return { requested, used: 'kvm', reason: `using KVM: ${reports.kvm.reason}` };
    const why = reports.kvm.reason;
    // The kvm_pvm reason already says what happens next.
    return { requested, used: 'tcg', reason: why.includes('using TCG') ? why : `KVM unavailable (${why}); using TCG (software emulation, slower)` };
  }
  return { requested, used: 'tcg', reason: `no hardware accelerator supported on ${platform}; using TCG (software emulation, slower)` };
}

/** Detects and chooses in one step; throws EHOST for an explicit unusable accelerator. */
export async function resolveAccel(requested: Accel, paths: HostPaths = defaultPaths()): Promise<AccelChoice> {
  return chooseAccel(requested, await hostAccelerators(paths), paths.platform);
}
