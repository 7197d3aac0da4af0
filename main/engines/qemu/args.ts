// Builds QEMU's argv from a validated VM config: a pure function, pinned by the golden files in test/golden/qemu.
import { isAbsolute, resolve } from 'node:path';
import type { VmConfig } from '../../api/schema.js';
import { ErrorCode, VmdeskError } from '../../api/errors.js';
import { bundleFiles, runtimeFiles } from './layout.js';
import { displayDevice, guestChannelArgs } from './guest-devices.js';
import { shareArgs, type ResolvedShare } from './shares.js';
import { audioArgs, machineOptions, secureBootGlobals, tpmArgs, usbHostArgs, usbTabletArgs, type AudioChoice } from './devices.js';
import { swtpmSocket } from './tpm.js';

export interface QemuArgsInput {
  config: VmConfig;
  bundleDir: string;
  runtimeDir: string;
  /** The accelerator actually used (after detection), not the one requested. */
  accel: 'kvm' | 'hvf' | 'tcg';
  /** sandbox: QEMU has seccomp (-sandbox). passt: NAT adapters go through passt (isolated from the host). */
  capabilities: { sandbox: boolean; passt?: boolean };
  /** Required when config.firmware is 'uefi': read-only code image and the VM's own vars (qcow2) file. */
  uefi?: { code: string; vars: string };
  /** Start with the vCPUs stopped (-S). */
  paused?: boolean;
  /** Shared folders with their driver decided (shares.ts planShares); absent: none. */
  shares?: readonly ResolvedShare[];
  /** The host backend the sound card plays through this run (config.audio); absent: a silent card. */
  audio?: AudioChoice;
  /** Resume a saved state: QEMU waits for migrate-incoming (savestate.ts) before the guest runs. */
  incoming?: boolean;
}

const CONTROL_CHARS = /[\u0000-\u001f\u007f]/;

function rejectControlChars(what: string, value: string): string {
  if (CONTROL_CHARS.test(value)) {
    throw new VmdeskError(ErrorCode.invalid, `${what} must not contain newlines or control characters`);
  }
  return value;
}

/**
 * A value inside a comma-separated QEMU option list (-blockdev, -chardev, -vnc, -name ...): commas doubled so
 * QEMU reads them as part of the value.
 */
export function optValue(what: string, value: string): string {
  return rejectControlChars(what, value).replaceAll(',', ',,');
}

/**
 * -kernel, -initrd and -append take their argument verbatim (QEMU 7.2 stores them as single machine
 * properties without splitting), so commas must NOT be doubled there: "a,,b" would reach the kernel as is.
 */
function verbatim(what: string, value: string): string {
  return rejectControlChars(what, value);
}

/**
 * A -blockdev in QEMU's JSON syntax: paths need no comma escaping there, and `"backing": null` (which the
 * keyval syntax cannot say) keeps QEMU from opening a backing file named inside an image.
 */
function blockdev(node: Record<string, unknown>): string {
  for (const [k, v] of Object.entries(node)) if (typeof v === 'string') rejectControlChars(`block option ${k}`, v);
  return JSON.stringify(node);
}

/** File node + format node for one image; `backing` names a base node, null switches backing files off. */
function imageNodes(args: string[], node: string, file: string, format: string, opts: { readOnly?: boolean; backing?: string | null; discard?: boolean } = {}): void {
  const ro = opts.readOnly ? { 'read-only': true } : {};
  const discard = opts.discard ? { discard: 'unmap' } : {};
  args.push('-blockdev', blockdev({ driver: 'file', filename: file, 'node-name': `${node}-file`, ...ro, ...discard }));
  const backing = ['qcow2', 'vmdk'].includes(format) ? { backing: opts.backing ?? null } : {};
  args.push('-blockdev', blockdev({ driver: format, file: `${node}-file`, 'node-name': node, ...ro, ...discard, ...backing }));
}

const NIC_DEVICES: Record<NonNullable<VmConfig['network'][number]['model']>, string> = {
  'virtio-net': 'virtio-net-pci',
  e1000e: 'e1000e',
  e1000: 'e1000',
  rtl8139: 'rtl8139',
};

export function buildQemuArgs(input: QemuArgsInput): string[] {
  const { config, bundleDir, runtimeDir, accel } = input;
  const run = runtimeFiles(runtimeDir);
  const logs = bundleFiles(bundleDir);
  const args: string[] = ['-nodefaults', '-no-user-config'];

  args.push('-name', `guest=${optValue('VM name', config.name)},debug-threads=on`);

  const machine = ['q35'];
  if (config.firmware === 'uefi') {
    if (!input.uefi) throw new VmdeskError(ErrorCode.host, 'UEFI firmware (OVMF) not found; install it with: sudo apt install ovmf');
    machine.push('pflash0=uefi-code', 'pflash1=uefi-vars');
  }
  const shares = shareArgs(input.shares ?? [], config.memoryMiB);
  machine.push(...shares.machine);
  machine.push(...machineOptions(config));
  args.push('-machine', machine.join(','));
  args.push(...secureBootGlobals(config));
  args.push('-accel', accel);
  // Hardware acceleration passes the host CPU through; TCG keeps QEMU's default model (host/max abort under
  // some nested setups and are slow to emulate).
  if (accel !== 'tcg') args.push('-cpu', 'host');
  args.push('-smp', String(config.cpus));
  args.push('-m', `${config.memoryMiB}M`);

  if (config.firmware === 'uefi' && input.uefi) {
    imageNodes(args, 'uefi-code', input.uefi.code, 'raw', { readOnly: true });
    imageNodes(args, 'uefi-vars', input.uefi.vars, 'qcow2');
  }

  // Boot order: the install medium first, then the disks in their order. Index 0 is left free because
  // -kernel's option ROM claims it.
  let bootIndex = 1;
  // q35's built-in AHCI controller provides buses ide.0-ide.5 (one device each) for SATA disks and CD-ROMs.
  let ahciPort = 0;
  if (config.cdrom) {
    imageNodes(args, 'cdrom', config.cdrom, 'raw', { readOnly: true });
    args.push('-device', `ide-cd,drive=cdrom,bus=ide.${ahciPort++},id=cdrom0,bootindex=${bootIndex++}`);
  }
  // A driver disc (virtio-win.iso) in a second drive, never booted from: installers load drivers off it.
  if (config.virtioDrivers) {
    imageNodes(args, 'drivers', config.virtioDrivers, 'raw', { readOnly: true });
    args.push('-device', `ide-cd,drive=drivers,bus=ide.${ahciPort++},id=cdrom1`);
  }

  let scsi = false;
  for (const disk of config.disks) {
    const path = isAbsolute(disk.path) ? disk.path : resolve(bundleDir, disk.path);
    const node = `disk-${disk.id}`;
    let backing: string | null = null;
    if (disk.base) {
      // A linked clone's base: opened read-only, itself without a backing file.
      imageNodes(args, `${node}-base`, disk.base, 'qcow2', { readOnly: true });
      backing = `${node}-base`;
    }
    imageNodes(args, node, path, disk.format, { readOnly: disk.readOnly, backing, discard: true });
    const common = `drive=${node},id=vd-${disk.id},bootindex=${bootIndex++}`;
    const bus = disk.bus ?? 'virtio';
    if (bus === 'virtio') args.push('-device', `virtio-blk-pci,${common}`);
    else if (bus === 'sata' || bus === 'ide') {
      if (ahciPort > 5) throw new VmdeskError(ErrorCode.invalid, `too many SATA/IDE devices: q35 has 6 ports (disk ${disk.id})`);
      // q35 has no legacy IDE controller: "ide" disks sit on the AHCI ports too, which every OS drives.
      args.push('-device', `ide-hd,bus=ide.${ahciPort++},${common}`);
    } else {
      if (!scsi) {
        args.push('-device', 'virtio-scsi-pci,id=scsi0');
        scsi = true;
      }
      args.push('-device', `scsi-hd,bus=scsi0.0,${common}`);
    }
  }

  if (config.directKernel) {
    const dk = config.directKernel;
    args.push('-kernel', verbatim('kernel path', dk.kernel));
    if (dk.initrd) args.push('-initrd', verbatim('initrd path', dk.initrd));
    if (dk.cmdline) args.push('-append', verbatim('kernel command line', dk.cmdline));
  }

  let nics = 0;
  config.network.forEach((adapter, index) => {
    if (adapter.mode === 'none') return;
    const id = `net${index}`;
    if ((adapter.mode === 'nat' && input.capabilities.passt) || adapter.mode === 'internal') {
      // QEMU listens; the engine connects passt to this socket (see passt.ts), or the daemon its switch for
      // an internal network (main/core/switch.ts).
      args.push('-netdev', `stream,id=${id},server=on,addr.type=unix,addr.path=${optValue('network socket path', run.net(index))}`);
    } else {
      // QEMU's own user network: the guest reaches the host's loopback at 10.0.2.2 (VirtualBox's NAT).
      const netdev = [`user`, `id=${id}`];
      for (const fwd of adapter.forwards) {
        // Forwards listen on loopback only: a VM's services are not exposed to the network by default.
        netdev.push(`hostfwd=${fwd.protocol}:127.0.0.1:${fwd.hostPort}-:${fwd.guestPort}`);
      }
      args.push('-netdev', netdev.join(','));
    }
    args.push('-device', `${NIC_DEVICES[adapter.model ?? 'virtio-net']},netdev=${id},id=nic${index}${adapter.mac ? `,mac=${adapter.mac}` : ''}`);
    nics++;
  });
  if (nics === 0) args.push('-nic', 'none');

  args.push('-device', displayDevice(config));
  // A USB tablet gives absolute pointer positions, so the VNC cursor follows the mouse exactly.
  args.push('-device', 'qemu-xhci,id=usb0', ...usbTabletArgs(config), ...usbHostArgs(config));
  args.push('-vnc', `unix:${optValue('VNC socket path', run.vnc)}`);

  args.push(
    '-chardev',
    `socket,id=serial0,path=${optValue('serial socket path', run.serial)},server=on,wait=off,` +
      `logfile=${optValue('serial log path', logs.serialLog)},logappend=on`,
  );
  args.push('-device', 'isa-serial,chardev=serial0,id=com1');
  // Guest integration (issue 12): the agent's and the clipboard's channels, shared folders.
  args.push(...guestChannelArgs(config, runtimeDir), ...shares.args);
  // The memory balloon comes after every other PCI device so their slots (and saved states) stay as they were.
  // Free page reporting hands pages the guest frees back to the host; deflate-on-oom lets a guest short of
  // memory take balloon pages back rather than kill its processes.
  if (config.balloon) args.push('-device', 'virtio-balloon-pci,id=balloon0,free-page-reporting=on,deflate-on-oom=on');
  // Issue 12 part B, after the balloon for the same reason: a VM without them keeps every slot it had.
  args.push(...tpmArgs(config, swtpmSocket(runtimeDir)), ...audioArgs(config, input.audio));

  args.push('-chardev', `socket,id=qmp,path=${optValue('QMP socket path', run.qmp)},server=on,wait=off`);
  args.push('-mon', 'chardev=qmp,mode=control');

  if (config.osType === 'windows') args.push('-rtc', 'base=localtime');
  args.push('-msg', 'timestamp=on');

  if (input.capabilities.sandbox) {
    args.push('-sandbox', 'on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny');
  }
  if (input.paused) args.push('-S');
  if (input.incoming) args.push('-incoming', 'defer');
  return args;
}
