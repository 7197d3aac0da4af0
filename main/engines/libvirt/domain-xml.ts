// VMDesk's VM configuration as a libvirt domain and back, as pure functions (golden files in
// test/golden/libvirt/). Every user string is escaped; the VM's own disks are volumes in the host's pool,
// attached disks are files on the host; boot files and the CD are volumes VMDesk uploaded.
import type { Disk, VmConfig } from '../../api/schema.js';
import { ErrorCode, VmdeskError } from '../../api/errors.js';
import { kid, kids, parseXml, path, xmlEscape as x, type XmlNode } from './xml.js';

/** VMDesk's namespace in a domain's <metadata>: marks the domain as a VMDesk VM and keeps what libvirt cannot say. */
export const VMDESK_XMLNS = 'https://vmdesk.invalid/xmlns/libvirt/1';

export interface DomainPlan {
  config: VmConfig;
  /** kvm, or qemu (TCG). */
  domainType: 'kvm' | 'qemu';
  /** The storage pool holding VMDesk's volumes on the host. */
  pool: string;
  /** Volumes on the host for the kernel, initrd and CD (paths, as `vol-path` gives them). */
  bootFiles?: { kernel?: string; initrd?: string };
  cdrom?: string;
}

/** The volume holding one of the VM's own disks. */
export function diskVolumeName(vmId: string, disk: Pick<Disk, 'id' | 'format'>): string {
  return `vmdesk-${vmId}-${disk.id}.${disk.format === 'raw' ? 'img' : disk.format}`;
}

/** The volume holding a boot file (kernel, initrd) or the CD image. */
export function fileVolumeName(vmId: string, what: 'kernel' | 'initrd' | 'cdrom'): string {
  return `vmdesk-${vmId}-${what}${what === 'cdrom' ? '.iso' : ''}`;
}

/** Every volume VMDesk may have made for a VM starts with this. */
export function volumePrefix(vmId: string): string {
  return `vmdesk-${vmId}-`;
}

const NIC: Record<string, string> = { 'virtio-net': 'virtio', e1000e: 'e1000e', e1000: 'e1000', rtl8139: 'rtl8139' };

/** Guest device names per bus, in order (vda, vdb…; sda, sdb… shared by SATA and SCSI). */
function targetDev(prefix: 'vd' | 'sd', index: number): string {
  return prefix + String.fromCharCode(97 + index);
}

/** The domain XML for a configuration; throws EINVAL for what cannot be said (control characters). */
export function buildDomainXml(plan: DomainPlan): string {
  const c = plan.config;
  const out: string[] = [];
  out.push(`<domain type='${plan.domainType}'>`);
  out.push(`  <name>${x(c.name)}</name>`);
  out.push(`  <uuid>${x(c.id)}</uuid>`);
  out.push('  <metadata>');
  out.push(`    <vmdesk:vm xmlns:vmdesk='${VMDESK_XMLNS}' os='${x(c.osType)}'/>`);
  out.push('  </metadata>');
  out.push(`  <memory unit='MiB'>${c.memoryMiB}</memory>`);
  out.push(`  <vcpu placement='static'>${c.cpus}</vcpu>`);
  out.push(c.firmware === 'uefi' ? "  <os firmware='efi'>" : '  <os>');
  out.push("    <type arch='x86_64' machine='q35'>hvm</type>");
  if (c.directKernel) {
    const kernel = plan.bootFiles?.kernel;
    if (!kernel) throw new VmdeskError(ErrorCode.internal, 'a direct-kernel VM needs its kernel uploaded before its definition is written');
    out.push(`    <kernel>${x(kernel)}</kernel>`);
    if (c.directKernel.initrd) {
      if (!plan.bootFiles?.initrd) throw new VmdeskError(ErrorCode.internal, 'the initrd must be uploaded before the definition is written');
      out.push(`    <initrd>${x(plan.bootFiles.initrd)}</initrd>`);
    }
    if (c.directKernel.cmdline) out.push(`    <cmdline>${x(c.directKernel.cmdline)}</cmdline>`);
  }
  if (c.cdrom) out.push("    <boot dev='cdrom'/>");
  out.push("    <boot dev='hd'/>");
  out.push('  </os>');
  out.push('  <features>');
  out.push('    <acpi/>');
  out.push('    <apic/>');
  out.push('  </features>');
  out.push(`  <clock offset='${c.osType === 'windows' ? 'localtime' : 'utc'}'/>`);
  out.push('  <on_poweroff>destroy</on_poweroff>');
  out.push('  <on_reboot>restart</on_reboot>');
  out.push('  <on_crash>destroy</on_crash>');
  out.push('  <devices>');
  let vd = 0;
  let sd = 0;
  let scsi = false;
  for (const d of c.disks) {
    const bus = d.bus ?? 'virtio';
    // q35 has no IDE controller: IDE disks go on AHCI (SATA), as the QEMU engine does.
    const libvirtBus = bus === 'ide' ? 'sata' : bus;
    const dev = bus === 'virtio' ? targetDev('vd', vd++) : targetDev('sd', sd++);
    if (bus === 'scsi') scsi = true;
    const fmt = d.format === 'vpc' ? 'vpc' : d.format;
    if (d.owned) {
      out.push("    <disk type='volume' device='disk'>");
      out.push(`      <driver name='qemu' type='${x(fmt)}'/>`);
      out.push(`      <source pool='${x(plan.pool)}' volume='${x(diskVolumeName(c.id, d))}'/>`);
    } else {
      out.push("    <disk type='file' device='disk'>");
      out.push(`      <driver name='qemu' type='${x(fmt)}'/>`);
      out.push(`      <source file='${x(d.path)}'/>`);
    }
    out.push(`      <target dev='${dev}' bus='${libvirtBus}'/>`);
    if (d.readOnly) out.push('      <readonly/>');
    out.push(`      <alias name='ua-${x(d.id)}'/>`);
    out.push('    </disk>');
  }
  if (c.cdrom) {
    if (!plan.cdrom) throw new VmdeskError(ErrorCode.internal, 'the CD image must be uploaded before the definition is written');
    out.push("    <disk type='file' device='cdrom'>");
    out.push("      <driver name='qemu' type='raw'/>");
    out.push(`      <source file='${x(plan.cdrom)}'/>`);
    out.push(`      <target dev='${targetDev('sd', sd++)}' bus='sata'/>`);
    out.push('      <readonly/>');
    out.push('    </disk>');
  }
  if (scsi) out.push("    <controller type='scsi' model='virtio-scsi'/>");
  for (const n of c.network) {
    if (n.mode === 'none') continue;
    out.push("    <interface type='user'>");
    if (n.mac) out.push(`      <mac address='${x(n.mac)}'/>`);
    out.push(`      <model type='${NIC[n.model ?? 'virtio-net']}'/>`);
    out.push('    </interface>');
  }
  out.push("    <serial type='pty'>");
  out.push("      <target port='0'/>");
  out.push('    </serial>');
  out.push("    <console type='pty'>");
  out.push("      <target type='serial' port='0'/>");
  out.push('    </console>');
  out.push("    <input type='tablet' bus='usb'/>");
  // VNC on a unix socket only (libvirt picks its path in the domain's private directory).
  out.push("    <graphics type='vnc'>");
  out.push("      <listen type='socket'/>");
  out.push('    </graphics>');
  out.push('    <video>');
  out.push("      <model type='vga'/>");
  out.push('    </video>');
  out.push(c.balloon ? "    <memballoon model='virtio'/>" : "    <memballoon model='none'/>");
  out.push('  </devices>');
  out.push('</domain>');
  return out.join('\n') + '\n';
}

/** What VMDesk reads back from a domain's XML. */
export interface DomainSummary {
  name: string;
  uuid: string;
  type: string;
  memoryMiB: number;
  cpus: number;
  /** From VMDesk's metadata, when the domain is one of its VMs. */
  osType?: string;
  vmdesk: boolean;
  firmware: 'bios' | 'uefi';
  kernel?: string;
  initrd?: string;
  cmdline?: string;
  disks: { device: string; source: { pool: string; volume: string } | { file: string } | null; format?: string; target?: string; bus?: string; readOnly: boolean }[];
  interfaces: { type: string; mac?: string; model?: string }[];
  /** The VNC unix socket of a running domain (its live XML). */
  vncSocket?: string;
  /** The pty of the serial console of a running domain. */
  serialPty?: string;
}

const UNITS: Record<string, number> = { b: 1, bytes: 1, k: 1024, kib: 1024, kb: 1000, m: 1024 ** 2, mib: 1024 ** 2, mb: 1000 ** 2, g: 1024 ** 3, gib: 1024 ** 3, gb: 1000 ** 3, t: 1024 ** 4, tib: 1024 ** 4, tb: 1000 ** 4 };

function memoryMiB(n: XmlNode | undefined): number {
  if (!n) return 0;
  const v = Number(n.text.trim());
  const unit = UNITS[(n.attrs.unit ?? 'KiB').toLowerCase()];
  if (!Number.isFinite(v) || v < 0 || !unit) throw new VmdeskError(ErrorCode.engine, `the domain's memory "${n.text.trim().slice(0, 40)} ${n.attrs.unit ?? ''}" is not a size`);
  return Math.floor((v * unit) / 1024 ** 2);
}

/** Reads a domain's XML (from `virsh dumpxml`): bounded, no DTDs; EENGINE when it is not a domain. */
export function parseDomainXml(xml: string): DomainSummary {
  const root = parseXml(xml, 'the domain XML');
  const dom = kid(root, 'domain');
  if (!dom) throw new VmdeskError(ErrorCode.engine, 'the domain XML has no <domain> element');
  const os = kid(dom, 'os');
  const meta = kids(kid(dom, 'metadata'), 'vm')[0];
  const devices = kid(dom, 'devices');
  const cpus = Number(kid(dom, 'vcpu')?.text.trim() ?? '0');
  const summary: DomainSummary = {
    name: kid(dom, 'name')?.text.trim() ?? '',
    uuid: kid(dom, 'uuid')?.text.trim() ?? '',
    type: dom.attrs.type ?? '',
    memoryMiB: memoryMiB(kid(dom, 'memory')),
    cpus: Number.isInteger(cpus) && cpus > 0 ? cpus : 0,
    vmdesk: !!meta,
    firmware: os?.attrs.firmware === 'efi' || !!kid(os, 'loader') ? 'uefi' : 'bios',
    disks: [],
    interfaces: [],
  };
  if (meta?.attrs.os) summary.osType = meta.attrs.os;
  const kernel = kid(os, 'kernel')?.text.trim();
  if (kernel) summary.kernel = kernel;
  const initrd = kid(os, 'initrd')?.text.trim();
  if (initrd) summary.initrd = initrd;
  const cmdline = kid(os, 'cmdline')?.text;
  if (cmdline !== undefined) summary.cmdline = cmdline.trim();
  for (const d of kids(devices, 'disk')) {
    const src = kid(d, 'source');
    const source = !src ? null : src.attrs.pool && src.attrs.volume ? { pool: src.attrs.pool, volume: src.attrs.volume } : src.attrs.file ? { file: src.attrs.file } : null;
    const target = kid(d, 'target');
    summary.disks.push({
      device: d.attrs.device ?? 'disk',
      source,
      ...(kid(d, 'driver')?.attrs.type ? { format: kid(d, 'driver')!.attrs.type } : {}),
      ...(target?.attrs.dev ? { target: target.attrs.dev } : {}),
      ...(target?.attrs.bus ? { bus: target.attrs.bus } : {}),
      readOnly: !!kid(d, 'readonly'),
    });
  }
  for (const i of kids(devices, 'interface')) {
    const mac = kid(i, 'mac')?.attrs.address;
    const model = kid(i, 'model')?.attrs.type;
    summary.interfaces.push({ type: i.attrs.type ?? '', ...(mac ? { mac } : {}), ...(model ? { model } : {}) });
  }
  const vnc = kids(devices, 'graphics').find((g) => g.attrs.type === 'vnc');
  const socket = vnc?.attrs.socket ?? kids(vnc, 'listen').find((l) => l.attrs.type === 'socket')?.attrs.socket;
  if (socket) summary.vncSocket = socket;
  const pty = path(devices, 'serial', 'source')?.attrs.path;
  if (pty) summary.serialPty = pty;
  return summary;
}

const MODEL_BACK: Record<string, VmConfig['network'][number]['model']> = { virtio: 'virtio-net', e1000e: 'e1000e', e1000: 'e1000', rtl8139: 'rtl8139' };

/**
 * The VMDesk settings a domain expresses (the inverse of buildDomainXml for what it writes): name, id, CPUs,
 * memory, firmware, direct kernel (paths on the host), disks (owned volumes by VMDesk's names, other files as
 * attached disks), network cards. What VMDesk has no setting for is reported in `ignored`.
 */
export function configFromDomain(s: DomainSummary, opts: { pool: string }): { settings: Partial<VmConfig>; ignored: string[] } {
  const ignored: string[] = [];
  const settings: Partial<VmConfig> = {
    name: s.name,
    id: s.uuid,
    cpus: s.cpus,
    memoryMiB: s.memoryMiB,
    firmware: s.firmware,
    accel: s.type === 'kvm' ? 'kvm' : 'tcg',
    ...(s.osType === 'linux' || s.osType === 'windows' || s.osType === 'bsd' || s.osType === 'other' ? { osType: s.osType } : {}),
  };
  if (s.kernel) settings.directKernel = { kernel: s.kernel, ...(s.initrd ? { initrd: s.initrd } : {}), cmdline: s.cmdline ?? '' };
  const disks: Disk[] = [];
  const prefix = volumePrefix(s.uuid);
  let ext = 0;
  for (const d of s.disks) {
    if (d.device === 'cdrom') {
      if (d.source && 'file' in d.source) settings.cdrom = d.source.file;
      continue;
    }
    if (d.device !== 'disk' || !d.source) {
      ignored.push(`a ${d.device} device${d.target ? ` (${d.target})` : ''}`);
      continue;
    }
    const format = (['qcow2', 'raw', 'vmdk', 'vdi', 'vhdx', 'vpc'] as const).find((f) => f === d.format) ?? 'raw';
    const bus: Disk['bus'] = d.bus === 'sata' ? 'sata' : d.bus === 'scsi' ? 'scsi' : d.bus === 'ide' ? 'ide' : 'virtio';
    const common: Pick<Disk, 'format' | 'readOnly' | 'bus'> = { format, readOnly: d.readOnly, ...(bus !== 'virtio' ? { bus } : {}) };
    if ('volume' in d.source && d.source.pool === opts.pool && d.source.volume.startsWith(prefix)) {
      const id = d.source.volume.slice(prefix.length).replace(/\.[a-z0-9]+$/, '');
      disks.push({ id, path: `disks/${id}.${format === 'raw' ? 'img' : format}`, owned: true, ...common });
    } else if ('file' in d.source) {
      disks.push({ id: `ext${ext++}`, path: d.source.file, owned: false, ...common });
    } else {
      ignored.push(`disk ${d.target ?? ''} in pool ${d.source.pool} (volume ${d.source.volume})`);
    }
  }
  settings.disks = disks;
  const network: VmConfig['network'] = [];
  for (const i of s.interfaces) {
    if (i.type !== 'user') {
      ignored.push(`a network card of type ${i.type}`);
      continue;
    }
    network.push({ mode: 'nat-host', forwards: [], ...(i.mac ? { mac: i.mac.toLowerCase() } : {}), ...(i.model && MODEL_BACK[i.model] && i.model !== 'virtio' ? { model: MODEL_BACK[i.model] } : {}) });
  }
  settings.network = network.length ? network : [{ mode: 'none', forwards: [] }];
  return { settings, ignored };
}
