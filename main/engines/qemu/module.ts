// The QEMU engine as a plug-in: host checks and the accelerator choice, the command line, launching QEMU as
// the daemon's own (detached) child, adopting one a previous daemon left running, snapshots and disks.
import { existsSync, mkdirSync } from 'node:fs';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import type { AccelChoice, VmConfig } from '../../api/schema.js';
import { ErrorCode, VmdeskError } from '../../api/errors.js';
import * as img from '../../platform/qemu-img.js';
import type { DiskProvider, EngineContext, EngineModule, LimitKind } from '../engine.js';
import { chooseAccel, hostAccelerators, resolveAccel } from './accel.js';
import { buildQemuArgs, type QemuArgsInput } from './args.js';
import { findUefiFirmware, qemuCapabilities, qemuImgPath, qemuStatus, requireQemuSystem, type FirmwarePaths, type QemuCapabilities } from './host.js';
import { bundleFiles, runtimeFiles, SOCKET_PATH_MAX } from './layout.js';
import { checkHostPortsFree, passtForwardWarning, passtHostNote, passtPath, PASST_MISSING } from './passt.js';
import { QemuRuntime, recordedQemuRuns } from './runtime.js';
import { qemuSnapshots } from './snapshots.js';
import { planShares, startVirtiofsd, stopVirtiofsd, readSharesRecord, virtiofsdPath, writeSharesRecord, shareSocket, type ResolvedShare } from './shares.js';
import { agentSocket } from './guest-devices.js';
import { join } from 'node:path';
import { chooseAudio, qemuAudioDrivers, secureBootOn, usbForRun, type AudioChoice } from './devices.js';
import { listUsbDevices } from '../../platform/usb-host.js';
import { findSecureBootFirmware, matchVarsToSecureBoot, SECURE_BOOT_MISSING } from './firmware.js';
import { startSwtpm, stopHelper, swtpmPath, swtpmSocket, SWTPM_MISSING, type HelperProcess } from './tpm.js';
import { checkSavedState, describeSavedState, discardSavedState, hardwareDigest, loadSavedState, migrationSocket } from './savestate.js';
import { detectHostAudio } from '../../platform/audio-host.js';
import type { SavedStateProvider } from '../engine.js';

const run = promisify(execFile);

interface LaunchPlan {
  qemuPath: string;
  caps: QemuCapabilities;
  accel: AccelChoice;
  firmware: FirmwarePaths | undefined;
  /** The plain (no Secure Boot) variable store template, when firmware is the Secure Boot build. */
  plainVars?: string;
  /** swtpm's path when the VM has a TPM. */
  swtpm?: string;
  /** passt's path when "nat" adapters are isolated through it; undefined falls back to QEMU's user network. */
  passt: string | undefined;
  warnings: string[];
}

function checkSocketPaths(runtimeDir: string): void {
  const files = runtimeFiles(runtimeDir);
  for (const p of [files.qmp, files.serial, files.vnc, files.net(3), agentSocket(runtimeDir), shareSocket(runtimeDir, 7), swtpmSocket(runtimeDir), migrationSocket(runtimeDir)]) {
    if (Buffer.byteLength(p) >= SOCKET_PATH_MAX) {
      throw new VmdeskError(ErrorCode.host, `runtime directory path is too long for unix sockets (${p} is ${Buffer.byteLength(p)} bytes, limit ${SOCKET_PATH_MAX})`);
    }
  }
}

function argsInput(ctx: EngineContext, plan: LaunchPlan, paused = false, shares?: ResolvedShare[], extra: { audio?: AudioChoice; incoming?: boolean } = {}): QemuArgsInput {
  return {
    ...(shares?.length ? { shares } : {}),
    ...(extra.audio ? { audio: extra.audio } : {}),
    ...(extra.incoming ? { incoming: true } : {}),
    config: ctx.config,
    bundleDir: ctx.bundleDir,
    runtimeDir: ctx.runtimeDir,
    accel: plan.accel.used,
    capabilities: { sandbox: plan.caps.sandbox, passt: !!plan.passt },
    ...(plan.firmware ? { uefi: { code: plan.firmware.code, vars: bundleFiles(ctx.bundleDir).uefiVars } } : {}),
    // The guest runs from the first instant (no -S round trip through QMP) unless asked to wait.
    paused,
  };
}

async function plan(ctx: EngineContext): Promise<LaunchPlan> {
  const qemuPath = requireQemuSystem();
  const caps = await qemuCapabilities(qemuPath);
  let accel = await resolveAccel(ctx.config.accel);
  if (caps.accelerators.length && !caps.accelerators.includes(accel.used)) {
    if (ctx.config.accel !== 'auto') throw new VmdeskError(ErrorCode.host, `this QEMU (${qemuPath}) was built without ${accel.used.toUpperCase()} support`);
    accel = { requested: 'auto', used: 'tcg', reason: `this QEMU was built without ${accel.used.toUpperCase()}; using TCG (software emulation, slower)` };
  }
  let firmware = ctx.config.firmware === 'uefi' ? findUefiFirmware() : undefined;
  if (ctx.config.firmware === 'uefi' && !firmware) throw new VmdeskError(ErrorCode.host, 'UEFI firmware (OVMF) is not installed; install it with: sudo apt install ovmf');
  let plainVars: string | undefined;
  if (secureBootOn(ctx.config)) {
    // OVMF's Secure Boot build runs with the Microsoft-keys store; the plain template stays at hand to take the keys out again.
    const sb = findSecureBootFirmware();
    if (!sb) throw new VmdeskError(ErrorCode.host, SECURE_BOOT_MISSING);
    plainVars = firmware!.varsTemplate;
    firmware = { code: sb.code, varsTemplate: sb.varsTemplate };
  }
  const swtpm = ctx.config.tpm ? swtpmPath() : undefined;
  if (ctx.config.tpm && !swtpm) throw new VmdeskError(ErrorCode.host, SWTPM_MISSING);
  checkSocketPaths(ctx.runtimeDir);
  const warnings: string[] = [];
  const nat = ctx.config.network.some((n) => n.mode === 'nat');
  const passt = nat ? passtPath() : undefined;
  if (nat && !passt) warnings.push(PASST_MISSING);
  if (passt) warnings.push(...[passtForwardWarning(passt, ctx.config.network.filter((n) => n.mode === 'nat').flatMap((n) => n.forwards))].filter((w): w is string => !!w));
  // Worth a warning only when the guest gets less than was asked for (TCG chosen on purpose is no surprise).
  if (accel.used === 'tcg' && accel.requested !== 'tcg') warnings.push(accel.reason);
  const p: LaunchPlan = { qemuPath, caps, accel, firmware, passt, warnings, ...(plainVars ? { plainVars } : {}), ...(swtpm ? { swtpm } : {}) };
  // Building the command line validates every user string (control characters) without side effects.
  buildQemuArgs(argsInput(ctx, p));
  return p;
}

const disks: DiskProvider = {
  create: (file, bytes) => img.createImage(file, bytes, 'qcow2'),
  resize: (file, format, bytes) => img.resize(file, format, bytes),
  async info(file, format) {
    const i = await img.imgInfo(file, { format, shared: true });
    return { virtualSize: i.virtualSize, actualSize: i.actualSize };
  },
  checkFree: (file, format) => img.checkFree(file, format),
};

export const qemuEngine: EngineModule = {
  kind: 'qemu',
  description: 'QEMU, accelerated by KVM (Linux) or Hypervisor.framework (macOS), else TCG',
  async hostReport() {
    const [qemu, accelerators] = await Promise.all([qemuStatus(), hostAccelerators()]);
    const passt = passtHostNote(passtPath());
    return { qemu, accelerators, defaultAccel: chooseAccel('auto', accelerators), ...(passt ? { notes: [passt] } : {}) };
  },
  capabilities: {
    display: true,
    liveSnapshots: 'full',
    offlineSnapshots: true,
    diskFormats: ['qcow2', 'raw', 'vmdk', 'vdi', 'vhdx', 'vpc'],
    nativeDiskFormat: 'qcow2',
    linkedClones: true,
    directKernelOnly: false,
    acpi: true,
    diskBuses: ['virtio', 'sata', 'ide', 'scsi'],
    nicModels: ['virtio-net', 'e1000e', 'e1000', 'rtl8139'],
    networkModes: ['nat', 'nat-host', 'internal', 'none'],
    limits: { cpuCap: true, cpuPinning: true, memoryTarget: true, diskIo: true, live: ['cpuCap', 'cpuPinning', 'memoryTarget', 'diskIo'] },
    liveNetwork: { forwards: true, link: true },
    stats: true,
    // virtiofs where virtiofsd exists (Linux), 9p everywhere QEMU has it.
    guest: { clipboard: true, resize: true, shares: virtiofsdPath() ? ['virtiofs', '9p'] : ['9p'], agent: true },
    devices: { tpm: true, secureBoot: true, usbPassthrough: true, usbHotplug: true, audio: true, driverDisc: true },
    saveState: true,
  },

  validate(config: VmConfig) {
    const ahci = config.disks.filter((d) => d.bus === 'sata' || d.bus === 'ide').length + (config.cdrom ? 1 : 0) + (config.virtioDrivers ? 1 : 0);
    if (ahci > 6) throw new VmdeskError(ErrorCode.invalid, `${ahci} SATA/IDE devices (disks, CD-ROM and driver disc) but the machine has 6 ports; put some disks on virtio or scsi`);
  },

  async check(ctx) {
    const p = await plan(ctx);
    return { accel: p.accel, warnings: p.warnings };
  },

  async start(ctx, opts = {}) {
    const p = await plan(ctx);
    if (recordedQemuRuns(ctx)) throw new VmdeskError(ErrorCode.state, `"${ctx.config.name}" is already running`);
    await checkHostPortsFree(ctx.config.network.filter((n) => n.mode !== 'none').flatMap((n) => n.forwards), ctx.config.name);
    const files = bundleFiles(ctx.bundleDir);
    mkdirSync(files.logs, { recursive: true, mode: 0o700 });
    const saved = describeSavedState(ctx);
    const warnings = [...p.warnings];
    if (p.firmware && !existsSync(files.uefiVars)) {
      // The VM's own UEFI variable store, as qcow2 so snapshots include it (with Microsoft's keys for Secure Boot).
      await run(qemuImgPath(), ['convert', '-q', '-f', 'raw', '-O', 'qcow2', p.firmware.varsTemplate, files.uefiVars]);
    } else if (p.firmware && !saved) {
      // Secure Boot turned on or off since the store was made: its keys follow (firmware.ts). A resumed guest keeps its firmware's state.
      const sb = secureBootOn(ctx.config);
      const change = matchVarsToSecureBoot(files.uefiVars, sb, { secure: findSecureBootFirmware()?.varsTemplate, plain: p.plainVars ?? p.firmware.varsTemplate });
      const w = await (sb ? change : change.catch(() => undefined));
      if (w) warnings.push(w);
    }
    let audio: AudioChoice | undefined;
    if (ctx.config.audio) {
      audio = chooseAudio(ctx.config.audio, await qemuAudioDrivers(p.qemuPath), detectHostAudio());
      if (audio.warning) warnings.push(audio.warning);
    }
    // Limits QEMU applies itself (balloon target, disk throttling) are in place before the first instruction:
    // the guest starts with its vCPUs stopped and runs once they are.
    const limits = ctx.config.limits ?? {};
    const setup: LimitKind[] = [];
    if (limits.memoryTargetMiB !== undefined) setup.push('memoryTarget');
    if (limits.diskIops !== undefined || limits.diskBytesPerSec !== undefined) setup.push('diskIo');
    const paused = opts.paused === true || setup.length > 0 || !!saved;
    const net = ctx.config.network;
    // Shared folders: virtiofsd listens before QEMU connects to it (issue 12, shares.ts).
    const shares = await startShares(ctx);
    // Host USB devices as the host has them now (usbForRun): one gone from its bus/address is left out.
    let thisRun = ctx;
    if (ctx.config.usb?.length) {
      const usb = usbForRun(ctx.config, listUsbDevices().devices);
      warnings.push(...usb.warnings);
      thisRun = { ...ctx, config: { ...ctx.config, usb: usb.usb } };
    }
    const args = buildQemuArgs(argsInput(thisRun, p, paused, shares.shares, { audio, incoming: !!saved }));
    const hardware = hardwareDigest(args);
    let swtpm: HelperProcess | undefined;
    let rt: QemuRuntime;
    try {
      // A saved state is checked before anything runs: changed hardware or another QEMU is refused with what to do.
      const state = saved ? await checkSavedState(ctx, { hardware, qemuVersion: fullVersion(p.caps.version) }) : undefined;
      // The TPM listens before QEMU connects to it; its state is in the bundle's tpm/ folder.
      if (p.swtpm) swtpm = await startSwtpm({ swtpm: p.swtpm, bundleDir: ctx.bundleDir, runtimeDir: ctx.runtimeDir, logFile: join(files.logs, 'swtpm.log') });
      rt = await QemuRuntime.launch(ctx, {
        qemuPath: p.qemuPath,
        args,
        accel: p.accel,
        paused,
        hardware,
        ...(swtpm ? { swtpm } : {}),
        warnings: [...warnings, ...shares.warnings],
        ...(p.passt ? { passt: { path: p.passt, adapters: net.flatMap((n, index) => (n.mode === 'nat' ? [{ index, forwards: n.forwards }] : [])) } } : {}),
        internal: net.flatMap((n, index) => (n.mode === 'internal' && n.network ? [{ index, network: n.network }] : [])),
        forwards: Object.fromEntries(net.flatMap((n, index) => (n.mode === 'nat' || n.mode === 'nat-host' ? [[String(index), n.forwards]] : []))),
      });
      if (state) {
        try {
          await loadSavedState(rt, ctx, state);
        } catch (e) {
          await rt.kill().catch(() => undefined);
          throw new VmdeskError(ErrorCode.engine, `the saved state of "${ctx.config.name}" could not be loaded (${(e as Error).message}); it is kept: start again, or discard it to boot afresh (vmdesk discard-state "${ctx.config.name}")`);
        }
        // The guest runs on from here: the state on disk is behind it now (a later suspend writes a new one).
        await discardSavedState(ctx);
        if (!setup.length && opts.paused !== true) await rt.resume();
      }
    } catch (e) {
      if (swtpm) stopHelper(swtpm);
      await stopVirtiofsd(readSharesRecord(ctx.runtimeDir, ctx.config.id), ctx.runtimeDir);
      throw e;
    }
    followShares(ctx, rt);
    if (setup.length) {
      try {
        await rt.applyLimits(limits, setup);
        if (opts.paused !== true) await rt.resume();
      } catch (e) {
        await rt.kill().catch(() => undefined);
        throw new VmdeskError(ErrorCode.engine, `"${ctx.config.name}" was stopped: its limits could not be applied before it ran: ${(e as Error).message}`);
      }
    }
    return rt;
  },

  async adopt(ctx) {
    const rt = await QemuRuntime.adopt(ctx);
    if (rt) followShares(ctx, rt);
    return rt;
  },
  reapOrphan: (ctx) => QemuRuntime.reapOrphan(ctx),
  snapshots: qemuSnapshots,
  disks,
  savedState: { describe: describeSavedState, discard: discardSavedState } satisfies SavedStateProvider,
};

/** 7.2 and 7.2.0 are one version (QMP's greeting always has three parts). */
function fullVersion(v: string): string | undefined {
  if (!/^\d+\.\d+(\.\d+)?$/.test(v)) return undefined;
  return [...v.split('.'), '0'].slice(0, 3).join('.');
}

/** Decides each share's driver and starts virtiofsd for the virtiofs ones; the record lets activeShares and an adopting daemon know. */
async function startShares(ctx: EngineContext): Promise<{ shares: ResolvedShare[]; warnings: string[] }> {
  if (!ctx.config.shares?.length) return { shares: [], warnings: [] };
  const binary = virtiofsdPath();
  const planned = planShares(ctx.config, ctx.runtimeDir, binary);
  mkdirSync(ctx.runtimeDir, { recursive: true, mode: 0o700 });
  if (binary && planned.shares.some((s) => s.driver === 'virtiofs')) {
    const logs = bundleFiles(ctx.bundleDir).logs;
    mkdirSync(logs, { recursive: true, mode: 0o700 });
    await startVirtiofsd({ vmId: ctx.config.id, runtimeDir: ctx.runtimeDir, logFile: join(logs, 'virtiofsd.log'), binary, shares: planned.shares });
  } else {
    writeSharesRecord(ctx.runtimeDir, ctx.config.id, planned.shares);
  }
  return planned;
}

/** virtiofsd ends with its QEMU: whatever is left of it is ended once the guest has gone. */
function followShares(ctx: EngineContext, rt: QemuRuntime): void {
  const record = readSharesRecord(ctx.runtimeDir, ctx.config.id);
  if (record) void rt.exited.then(() => stopVirtiofsd(record, ctx.runtimeDir));
}
