// Builds QEMU's argv from a validated VM config: a pure function, pinned by the golden files in test/golden/qemu.
import { isAbsolute, resolve } from 'node:path';
import type { VmConfig } from '../../api/schema.js';
import { ErrorCode, VmdeskError } from '../../api/errors.js';
import { bundleFiles, runtimeFiles } from './layout.js';

export interface QemuArgsInput {
  config: VmConfig;
  bundleDir: string;
  runtimeDir: string;
  /** The accelerator actually used (after detection), not the one requested. */
  accel: 'kvm' | 'hvf' | 'tcg';
  capabilities: { sandbox: boolean };
  /** Required when config.firmware is 'uefi': read-only code image and the VM's own vars (qcow2) file. */
  uefi?: { code: string; vars: string };
  /** Start with the vCPUs stopped (-S). */
  paused?: boolean;
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

const DISK_DRIVERS: Record<VmConfig['disks'][number]['format'], string> = {
  qcow2: 'qcow2',
  raw: 'raw',
  vmdk: 'vmdk',
  vdi: 'vdi',
  vhdx: 'vhdx',
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
  args.push('-machine', machine.join(','));
  args.push('-accel', accel);
  // Hardware acceleration passes the host CPU through; TCG keeps QEMU's default model (host/max abort under
  // some nested setups and are slow to emulate).
  if (accel !== 'tcg') args.push('-cpu', 'host');
  args.push('-smp', String(config.cpus));
  args.push('-m', `${config.memoryMiB}M`);

  if (config.firmware === 'uefi' && input.uefi) {
    const code = optValue('UEFI code path', input.uefi.code);
    const vars = optValue('UEFI vars path', input.uefi.vars);
    args.push('-blockdev', `driver=file,filename=${code},node-name=uefi-code-file,read-only=on`);
    args.push('-blockdev', `driver=raw,file=uefi-code-file,node-name=uefi-code,read-only=on`);
    args.push('-blockdev', `driver=file,filename=${vars},node-name=uefi-vars-file`);
    args.push('-blockdev', `driver=qcow2,file=uefi-vars-file,node-name=uefi-vars`);
  }

  // Boot order: the install medium first, then the disks in their order. Index 0 is left free because
  // -kernel's option ROM claims it.
  let bootIndex = 1;
  if (config.cdrom) {
    const iso = optValue('ISO path', config.cdrom);
    args.push('-blockdev', `driver=file,filename=${iso},node-name=cdrom-file,read-only=on`);
    args.push('-blockdev', `driver=raw,file=cdrom-file,node-name=cdrom,read-only=on`);
    // q35's built-in AHCI controller provides the ide.N buses.
    args.push('-device', `ide-cd,drive=cdrom,bus=ide.0,id=cdrom0,bootindex=${bootIndex++}`);
  }

  for (const disk of config.disks) {
    const path = isAbsolute(disk.path) ? disk.path : resolve(bundleDir, disk.path);
    const file = optValue(`disk ${disk.id} path`, path);
    const ro = disk.readOnly ? ',read-only=on' : '';
    const node = `disk-${disk.id}`;
    args.push('-blockdev', `driver=file,filename=${file},node-name=${node}-file${ro},discard=unmap`);
    args.push('-blockdev', `driver=${DISK_DRIVERS[disk.format]},file=${node}-file,node-name=${node}${ro},discard=unmap`);
    args.push('-device', `virtio-blk-pci,drive=${node},id=vd-${disk.id},bootindex=${bootIndex++}`);
  }

  if (config.directKernel) {
    const dk = config.directKernel;
    args.push('-kernel', verbatim('kernel path', dk.kernel));
    if (dk.initrd) args.push('-initrd', verbatim('initrd path', dk.initrd));
    if (dk.cmdline) args.push('-append', verbatim('kernel command line', dk.cmdline));
  }

  let nics = 0;
  config.network.forEach((adapter, index) => {
    if (adapter.mode !== 'nat') return;
    const id = `net${index}`;
    const netdev = [`user`, `id=${id}`];
    for (const fwd of adapter.forwards) {
      // Forwards listen on loopback only: a VM's services are not exposed to the network by default.
      netdev.push(`hostfwd=${fwd.protocol}:127.0.0.1:${fwd.hostPort}-:${fwd.guestPort}`);
    }
    args.push('-netdev', netdev.join(','));
    args.push('-device', `virtio-net-pci,netdev=${id},id=nic${index}${adapter.mac ? `,mac=${adapter.mac}` : ''}`);
    nics++;
  });
  if (nics === 0) args.push('-nic', 'none');

  args.push('-device', 'VGA,id=video0');
  // A USB tablet gives absolute pointer positions, so the VNC cursor follows the mouse exactly.
  args.push('-device', 'qemu-xhci,id=usb0', '-device', 'usb-tablet,bus=usb0.0,id=tablet0');
  args.push('-vnc', `unix:${optValue('VNC socket path', run.vnc)}`);

  args.push(
    '-chardev',
    `socket,id=serial0,path=${optValue('serial socket path', run.serial)},server=on,wait=off,` +
      `logfile=${optValue('serial log path', logs.serialLog)},logappend=on`,
  );
  args.push('-device', 'isa-serial,chardev=serial0,id=com1');

  args.push('-chardev', `socket,id=qmp,path=${optValue('QMP socket path', run.qmp)},server=on,wait=off`);
  args.push('-mon', 'chardev=qmp,mode=control');

  if (config.osType === 'windows') args.push('-rtc', 'base=localtime');
  args.push('-msg', 'timestamp=on');

  if (input.capabilities.sandbox) {
    args.push('-sandbox', 'on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny');
  }
  if (input.paused) args.push('-S');
  return args;
}
