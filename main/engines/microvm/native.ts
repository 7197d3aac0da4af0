// Typed loader for the native micro-VMM addon (native/build/Release/vmdesk_native.node) and the KVM report
// that the QEMU engine's accel "auto" and `vmdesk host` use.
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { addonPath } from '../../platform/native-addon.js';
import { ErrorCode, VmdeskError } from '../../api/errors.js';
import type { AcceleratorReport } from '../../api/schema.js';

export interface KvmProbe {
  platform: string;
  hypervisor: string;
  available: boolean;
  reason: string;
  /** What the user can do when KVM is not available (e.g. join the kvm group). */
  fix?: string;
  apiVersion?: number;
  maxVcpus?: number;
  recommendedVcpus?: number;
  module?: string;
  paravirtualized?: boolean;
  missing?: string;
  caps?: Record<string, boolean>;
}

export type AccelClass = 'hardware' | 'slow' | 'unusable';

export interface SelfTestResult {
  ok: boolean;
  class: AccelClass;
  reason: string;
  loops: number;
  nanos: number;
  loopsPerSecond: number;
}

export interface GuestRegs {
  rax: bigint; rbx: bigint; rcx: bigint; rdx: bigint; rsi: bigint; rdi: bigint; rsp: bigint; rbp: bigint;
  r8: bigint; r9: bigint; r10: bigint; r11: bigint; r12: bigint; r13: bigint; r14: bigint; r15: bigint;
  rip: bigint; rflags: bigint;
}

export interface NativeExit {
  /** guest-poweroff | crashed | stopped | killed (or whatever reason stop() was given) */
  reason: string;
  detail: string;
  /** vCPU that caused the exit, -1 for host requests. */
  vcpu: number;
  regs?: GuestRegs;
}

export interface NativeDisk {
  path: string;
  readOnly?: boolean;
}

export interface NativeVmOptions {
  cpus?: number;
  memoryMiB?: number;
  /** bzImage with a 64-bit entry point (boot protocol 2.12+). */
  kernel?: string;
  initrd?: string;
  cmdline?: string;
  disks?: NativeDisk[];
  /** Restore from a snapshot file instead of booting (kernel etc. are then ignored; disks override paths). */
  restoreFrom?: string;
  onSerial: (chunk: Buffer) => void;
  onExit: (exit: NativeExit) => void;
}

export interface NativeVmInfo {
  cpus: number;
  memoryBytes: number;
  bootProtocol: number;
  kernelLoadAddr: number;
  kernelEntry: number;
  initrdAddr: number;
  initrdBytes: number;
}

/** One micro-VM inside this process. vCPUs run on native threads; callbacks arrive on the event loop. */
export interface NativeVm {
  start(paused?: boolean): void;
  pause(): void;
  resume(): void;
  /** Asks the vCPUs to stop; onExit follows with this reason. */
  stop(reason?: string, detail?: string): void;
  writeSerial(data: Buffer): void;
  /** Presses Ctrl+Alt+Del on the i8042 keyboard: the graceful shutdown request a micro-VM (no ACPI) has. */
  sendCtrlAltDel(): void;
  /** Pauses, writes the snapshot (state + sparse memory) atomically, resumes if it was running. */
  snapshot(path: string): Promise<{ bytes: number; nanos: number }>;
  state(): 'created' | 'running' | 'pausing' | 'paused' | 'stopping' | 'stopped' | 'closed';
  /** Registers of a paused or stopped vCPU. */
  regs(cpu?: number): GuestRegs;
  info(): NativeVmInfo;
  /** Stops the vCPUs if still running, joins their threads and frees guest memory. */
  close(): void;
}

/** flock(2) on an open file: the kernel releases the lock when the holder's process dies, however it dies. */
export interface NativeFlock {
  /**
   * Takes an exclusive (or shared) lock. Without `wait` it returns false at once when another open file holds a
   * conflicting lock; with `wait` it blocks the calling thread until the lock is free. Throws (code EINVAL for a
   * bad fd, EHOST otherwise) on any other failure.
   */
  flockFile(fd: number, exclusive: boolean, wait: boolean): boolean;
  funlockFile(fd: number): void;
}

/** How a child ended: exit code, or the signal's name (SIGKILL); error when it was not ours to wait for. */
export interface ChildExit {
  code: number | null;
  signal: NodeJS.Signals | null;
  error?: string;
}

/** Starting the micro-VM executable without forking the Node process (Linux). */
export interface NativeSpawn {
  /**
   * posix_spawn in a new session: stdin /dev/null, stdout and stderr on outputFd, fd 3 the write end of a pipe
   * whose read end (close-on-exec) is returned. Throws (EHOST when the file cannot be executed).
   */
  spawnDetached(file: string, argv: string[], outputFd: number): { pid: number; readyFd: number };
  /** The exit status of a child spawnDetached started; does not keep the event loop alive. Call once per pid. */
  waitChild(pid: number): Promise<ChildExit>;
}

export interface NativeAddon extends Partial<NativeFlock>, Partial<NativeSpawn> {
  abiVersion: number;
  probe(): KvmProbe;
  selfTest(): Promise<SelfTestResult>;
  Vm: new (opts: NativeVmOptions) => NativeVm;
}

export { addonPath };

let cached: NativeAddon | undefined;
let loadError: VmdeskError | undefined;

/** Loads the addon once; throws VmdeskError(EHOST) saying how to build it when it is missing or broken. */
export function loadNative(): NativeAddon {
  if (cached) return cached;
  if (loadError) throw loadError;
  const file = addonPath();
  if (!existsSync(file)) {
    loadError = new VmdeskError(ErrorCode.host, `the native micro-VM addon is not built (${file} is missing)`, [
      'build it with: npm run build:native   (or: node native/build.mjs, which uses the local Node headers offline)',
      'it needs a C++17 compiler, make and python3',
    ]);
    throw loadError;
  }
  try {
    const require = createRequire(import.meta.url);
    cached = require(file) as NativeAddon;
    return cached;
  } catch (e) {
    loadError = new VmdeskError(ErrorCode.host, `the native micro-VM addon failed to load: ${(e as Error).message}`, [
      'rebuild it for this Node version: npm run build:native',
    ]);
    throw loadError;
  }
}

/** True when the addon can be loaded (does not throw). */
export function nativeAvailable(): boolean {
  try {
    loadNative();
    return true;
  } catch {
    return false;
  }
}

/** The addon's flock functions, or undefined when the addon is not built (or predates them). Never throws. */
export function nativeFlock(): NativeFlock | undefined {
  try {
    const m = loadNative();
    if (typeof m.flockFile !== 'function' || typeof m.funlockFile !== 'function') return undefined;
    return { flockFile: m.flockFile.bind(m), funlockFile: m.funlockFile.bind(m) };
  } catch {
    return undefined;
  }
}

/** The addon's spawn functions, or undefined when the addon is not built (or predates them). Never throws. */
export function nativeSpawn(): NativeSpawn | undefined {
  try {
    const m = loadNative();
    if (typeof m.spawnDetached !== 'function' || typeof m.waitChild !== 'function') return undefined;
    return { spawnDetached: m.spawnDetached.bind(m), waitChild: m.waitChild.bind(m) };
  } catch {
    return undefined;
  }
}

/** Rethrows a native error (which carries a VMDesk error code) as a VmdeskError. */
export function asVmdeskError(e: unknown): VmdeskError {
  if (e instanceof VmdeskError) return e;
  const err = e as { code?: string; message?: string };
  const codes = Object.values(ErrorCode) as string[];
  const code = (err?.code && codes.includes(err.code) ? err.code : ErrorCode.engine) as ErrorCode;
  return new VmdeskError(code, err?.message ?? String(e));
}

export function probeKvm(): KvmProbe {
  return loadNative().probe();
}

export function selfTestKvm(): Promise<SelfTestResult> {
  return loadNative().selfTest();
}

let reportPromise: Promise<AcceleratorReport> | undefined;

/**
 * KVM availability as the host report and accel "auto" need it: can /dev/kvm be opened, the API version,
 * and the self-test's class. Cached for the process (the self-test boots a tiny guest, ~50-300 ms).
 */
export function kvmReport(opts: { fresh?: boolean } = {}): Promise<AcceleratorReport> {
  if (!reportPromise || opts.fresh) reportPromise = buildReport();
  return reportPromise;
}

async function buildReport(): Promise<AcceleratorReport> {
  if (process.platform !== 'linux') {
    return { available: false, class: 'unusable', reason: `KVM exists only on Linux (this is ${process.platform})` };
  }
  let probe: KvmProbe;
  try {
    probe = probeKvm();
  } catch (e) {
    const err = asVmdeskError(e);
    return { available: existsSync('/dev/kvm'), class: 'unusable', reason: `cannot check KVM: ${err.message}` };
  }
  if (!probe.available) {
    const report: AcceleratorReport = { available: false, class: 'unusable', reason: probe.reason };
    if (probe.apiVersion !== undefined && probe.apiVersion >= 0) report.apiVersion = probe.apiVersion;
    return report;
  }
  try {
    const st = await selfTestKvm();
    return {
      available: st.ok,
      class: st.class,
      reason: st.reason,
      apiVersion: probe.apiVersion,
      selfTest: { ok: st.ok, nanos: st.nanos, loopsPerSecond: st.loopsPerSecond },
    };
  } catch (e) {
    return { available: false, class: 'unusable', reason: `KVM self-test failed: ${(e as Error).message}`, apiVersion: probe.apiVersion, selfTest: { ok: false } };
  }
}
