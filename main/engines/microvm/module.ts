// The built-in micro-VM engine as a plug-in: each guest is one vmdesk-microvm process (native, built from
// native/ with the same VMM sources as the addon; no Node in it), started detached so it outlives the daemon.
// The addon serves the host checks (KVM probe and self-test); everything about a running guest goes through
// the executable's control socket.
import { existsSync, statSync } from 'node:fs';
import type { AccelChoice, VmConfig } from '../../api/schema.js';
import { ErrorCode, VmdeskError } from '../../api/errors.js';
import type { EngineContext, EngineModule } from '../engine.js';
import { diskFile } from './argv.js';
import { microvmDisks } from './disks.js';
import { microvmExecutable, microvmRuntimeFiles, SOCKET_PATH_MAX } from './layout.js';
import { kvmReport } from './native.js';
import { MicrovmRuntime, recordedMicrovmRuns, type MicrovmRecord } from './runtime.js';
import { microvmSnapshots } from './snapshots.js';

/** What the VMM supports (native/src/vstate/vm.h: kMaxVcpus; memory.h: kMaxMemBytes). */
const MAX_VCPUS = 255;
const MAX_MEMORY_MIB = 1024 * 1024;

function refuse(message: string): never {
  throw new VmdeskError(ErrorCode.invalid, message);
}

function validate(c: VmConfig): void {
  if (c.accel !== 'auto' && c.accel !== 'kvm') refuse(`the microvm engine runs on KVM only; accel "${c.accel}" needs the qemu engine`);
  if (!c.directKernel) refuse('the microvm engine boots a kernel directly: set a kernel (and initrd)');
  if (c.firmware === 'uefi') refuse('the microvm engine has no firmware: use firmware "bios" (ignored) with a direct kernel');
  if (c.cdrom) refuse('the microvm engine has no CD-ROM drive');
  if (c.cpus > MAX_VCPUS) refuse(`the microvm engine runs at most ${MAX_VCPUS} vCPUs`);
  if (c.memoryMiB > MAX_MEMORY_MIB) refuse(`the microvm engine runs at most ${MAX_MEMORY_MIB / 1024} GiB of memory`);
  for (const d of c.disks) {
    if (d.format !== 'raw') refuse(`disk "${d.id}" is ${d.format}: the microvm engine reads raw images only (convert with qemu-img convert -O raw)`);
    if (d.bus && d.bus !== 'virtio') refuse(`disk "${d.id}" is on ${d.bus}: the microvm engine has virtio disks only`);
    if (d.base) refuse(`disk "${d.id}" is a linked clone: the microvm engine has no linked clones (raw disks have no backing files)`);
  }
  if (c.network.some((n) => n.mode !== 'none')) refuse('the microvm engine has no network device yet: set the network to none');
}

/** Why this VM cannot start here (files, sockets, the executable, KVM); the accelerator otherwise. */
async function check(ctx: EngineContext): Promise<{ accel: AccelChoice; warnings: string[] }> {
  const c = ctx.config;
  validate(c);
  if (process.platform !== 'linux') throw new VmdeskError(ErrorCode.host, `the microvm engine runs on Linux with KVM only (this is ${process.platform})`);
  for (const [what, p] of [['kernel', c.directKernel!.kernel], ['initrd', c.directKernel!.initrd]] as const) {
    if (p && !existsSync(p)) throw new VmdeskError(ErrorCode.invalid, `${what} ${p} does not exist`);
  }
  for (const d of c.disks) {
    const f = diskFile(ctx.bundleDir, d.path);
    if (!existsSync(f)) throw new VmdeskError(ErrorCode.invalid, `disk "${d.id}" (${f}) does not exist`);
    if (statSync(f).size % 512 !== 0) throw new VmdeskError(ErrorCode.invalid, `disk "${d.id}" (${f}) is not a whole number of 512-byte sectors`);
  }
  const rt = microvmRuntimeFiles(ctx.runtimeDir);
  for (const p of [rt.control, rt.serial]) {
    if (Buffer.byteLength(p) >= SOCKET_PATH_MAX) {
      throw new VmdeskError(ErrorCode.host, `runtime directory path is too long for unix sockets (${p} is ${Buffer.byteLength(p)} bytes, limit ${SOCKET_PATH_MAX})`);
    }
  }
  const exe = microvmExecutable();
  if (!existsSync(exe)) {
    throw new VmdeskError(ErrorCode.host, `the micro-VM executable is not built (${exe} is missing)`, [
      'build it with: npm run build:native   (it needs a C++17 compiler, make and python3)',
    ]);
  }
  const report = await kvmReport();
  if (!report.available) throw new VmdeskError(ErrorCode.host, `KVM is not usable here: ${report.reason}`);
  if (report.class === 'slow') {
    return {
      accel: { requested: c.accel, used: 'kvm', reason: `built-in micro-VMM on KVM (slow: ${report.reason})` },
      warnings: [`KVM on this host is slow (${report.reason}): micro-VMs run, but far slower than on hardware virtualization`],
    };
  }
  return { accel: { requested: c.accel, used: 'kvm', reason: 'built-in micro-VMM on KVM' }, warnings: [] };
}

/** An adopted guest's accelerator, from what its executable recorded at start. */
function accelFromRecord(config: VmConfig, r: MicrovmRecord): AccelChoice {
  return { requested: config.accel, used: 'kvm', reason: r.accelReason || 'built-in micro-VMM on KVM' };
}

export const microvmEngine: EngineModule = {
  kind: 'microvm',
  description: 'Built-in micro-VMM on KVM (Linux): a direct-boot kernel, raw virtio disks, a serial console and memory snapshots; one small native process per VM',
  /** The native addon's probe and self-test of KVM (API version, timing, class). */
  async hostReport() {
    return { accelerators: { kvm: await kvmReport() } };
  },
  capabilities: {
    display: false,
    liveSnapshots: 'memory',
    offlineSnapshots: false,
    diskFormats: ['raw'],
    nativeDiskFormat: 'raw',
    linkedClones: false,
    directKernelOnly: true,
    acpi: false,
    diskBuses: ['virtio'],
    nicModels: [],
    networkModes: ['none'],
    // One host process per guest: the core caps and pins it; no balloon, no disk throttling in the VMM.
    limits: { cpuCap: true, cpuPinning: true, memoryTarget: false, diskIo: false, live: ['cpuCap', 'cpuPinning'] },
    // A serial console only: no display, no virtio-serial, no shared-folder transport in the VMM.
    guest: { clipboard: false, resize: false, shares: [], agent: false },
    // No TPM, firmware, USB, sound or second drive, and no saved state to disk (its snapshots are in memory only).
    devices: { tpm: false, secureBoot: false, usbPassthrough: false, usbHotplug: false, audio: false, driverDisc: false },
    saveState: false,
  },

  validate,
  check,

  async start(ctx, opts = {}) {
    if (recordedMicrovmRuns(ctx)) throw new VmdeskError(ErrorCode.state, `"${ctx.config.name}" is already running`);
    const { accel, warnings } = await check(ctx);
    return MicrovmRuntime.launch(ctx, { accel, warnings, paused: opts.paused === true });
  },

  adopt: (ctx) => MicrovmRuntime.adopt(ctx, (r) => accelFromRecord(ctx.config, r)),
  reapOrphan: async (ctx) => MicrovmRuntime.reapOrphan(ctx),
  snapshots: microvmSnapshots,
  disks: microvmDisks,
};
