// Exports a VM as an OVA that VirtualBox, VMware and VMDesk itself import: a tar with the OVF 1.0 descriptor
// first (in the shape VirtualBox 7 writes), then each disk as a streamOptimized VMDK, then a SHA256 manifest.
// Disks are read through the same sources as clones and archive exports (sources.ts: format stated, backing
// files off but for a linked clone's recorded base, attached files through the image gate); a running VM is
// refused (its disks change).
import { createReadStream, promises as fs, existsSync } from 'node:fs';
import path from 'node:path';
import { fsyncDir } from '../../platform/atomic.js';
import type { DiskBus, NetAdapter, VmConfig } from '../../api/schema.js';
import { VmdeskError, ErrorCode } from '../../api/errors.js';
import * as img from '../../platform/qemu-img.js';
import type { ProgressFn, SnapshotCore } from '../services.js';
import { vmDiskSource } from '../snapshots/sources.js';
import { TarWriter } from './tar.js';
import { xmlEscape } from './ovf-xml.js';

export const OVA_EXTENSION = '.ova';

export interface OvfDiskOut {
  /** Entry name of the VMDK in the OVA. */
  href: string;
  capacityBytes: number;
  bus: DiskBus;
}

/** OVF/CIM and VirtualBox names for each OS family (64-bit: VMDesk guests are x86_64). */
const OS_IDS: Record<VmConfig['osType'], { cim: number; vbox: string }> = {
  linux: { cim: 101, vbox: 'Linux_64' },
  windows: { cim: 120, vbox: 'Windows10_64' },
  bsd: { cim: 78, vbox: 'FreeBSD_64' },
  other: { cim: 102, vbox: 'Other_64' },
};

/** rasd:ResourceSubType per NIC model: VirtualBox's names (E1000, virtio), VMware's E1000e. */
const NIC_SUBTYPES: Record<NonNullable<NetAdapter['model']>, string> = { 'virtio-net': 'virtio', e1000: 'E1000', e1000e: 'E1000e', rtl8139: 'RTL8139' };

/** CIM_ResourceAllocationSettingData elements must appear in this (alphabetical) order; VMware checks. */
const RASD_ORDER = ['Address', 'AddressOnParent', 'AllocationUnits', 'AutomaticAllocation', 'Caption', 'Connection', 'Description', 'ElementName', 'HostResource', 'InstanceID', 'Parent', 'ResourceSubType', 'ResourceType', 'VirtualQuantity'];

function item(fields: Record<string, string | number>): string {
  const lines = RASD_ORDER.filter((k) => fields[k] !== undefined).map((k) => `        <rasd:${k}>${xmlEscape(String(fields[k]))}</rasd:${k}>`);
  return `      <Item>\n${lines.join('\n')}\n      </Item>`;
}

/** Controllers as VirtualBox 7 writes them; virtio-blk has no OVF name and goes on SATA (see the vmdesk hint). */
const CONTROLLERS: Record<'ide' | 'sata' | 'scsi', { caption: string; description: string; subtype: string; type: number }> = {
  ide: { caption: 'ideController0', description: 'IDE Controller', subtype: 'PIIX4', type: 5 },
  sata: { caption: 'sataController0', description: 'SATA Controller', subtype: 'AHCI', type: 20 },
  scsi: { caption: 'virtioSCSIController0', description: 'VirtioSCSI Controller', subtype: 'VirtioSCSI', type: 20 },
};

/**
 * The OVF 1.0 descriptor for a VM and its exported disks. Items follow VirtualBox 7's export (System type
 * virtualbox-2.2, MegaBytes, controllers with AHCI/PIIX4/VirtioSCSI, NICs with E1000/virtio). Two extension
 * elements other importers skip: VMware's firmware=efi, and VMDesk's exact bus for virtio disks (which no OVF
 * controller names: VirtualBox and VMware see them on SATA, which every OS drives).
 */
export function buildOvf(config: VmConfig, disks: OvfDiskOut[]): { xml: string; warnings: string[] } {
  const warnings: string[] = [];
  const name = xmlEscape(config.name);
  const nics = config.network.filter((n) => n.mode !== 'none');
  let instance = 1;
  const items: string[] = [];
  items.push(item({ Caption: `${config.cpus} virtual CPU`, Description: 'Number of virtual CPUs', ElementName: `${config.cpus} virtual CPU`, InstanceID: instance++, ResourceType: 3, VirtualQuantity: config.cpus }));
  items.push(item({ AllocationUnits: 'MegaBytes', Caption: `${config.memoryMiB} MB of memory`, Description: 'Memory Size', ElementName: `${config.memoryMiB} MB of memory`, InstanceID: instance++, ResourceType: 4, VirtualQuantity: config.memoryMiB }));
  const ovfBus = (b: DiskBus): 'ide' | 'sata' | 'scsi' => (b === 'virtio' ? 'sata' : b);
  const needed = new Set<'ide' | 'sata' | 'scsi'>(disks.map((d) => ovfBus(d.bus)));
  if (config.cdrom) needed.add('ide');
  const controllerId = new Map<string, number>();
  for (const c of ['ide', 'sata', 'scsi'] as const) {
    if (!needed.has(c)) continue;
    const k = CONTROLLERS[c];
    controllerId.set(c, instance);
    items.push(item({ Address: 0, Caption: k.caption, Description: k.description, ElementName: k.caption, InstanceID: instance++, ResourceSubType: k.subtype, ResourceType: k.type }));
  }
  const ports = new Map<string, number>();
  const hints: string[] = [];
  disks.forEach((d, i) => {
    const c = ovfBus(d.bus);
    const port = ports.get(c) ?? 0;
    ports.set(c, port + 1);
    items.push(item({ AddressOnParent: port, Caption: `disk${i + 1}`, Description: 'Disk Image', ElementName: `disk${i + 1}`, HostResource: `/disk/vmdisk${i + 1}`, InstanceID: instance++, Parent: controllerId.get(c)!, ResourceType: 17 }));
    if (d.bus === 'virtio') hints.push(`      <vmdesk:Config ovf:required="false" vmdesk:key="vmdesk.disk.vmdisk${i + 1}.bus" vmdesk:value="virtio"/>`);
  });
  if ((ports.get('ide') ?? 0) + (config.cdrom ? 1 : 0) > 4) warnings.push('more than four IDE devices: VirtualBox and VMware accept at most four on one IDE controller');
  if (config.cdrom) {
    items.push(item({ AddressOnParent: ports.get('ide') ?? 0, AutomaticAllocation: 'true', Caption: 'cdrom1', Description: 'CD-ROM Drive', ElementName: 'cdrom1', InstanceID: instance++, Parent: controllerId.get('ide')!, ResourceType: 15 }));
    warnings.push(`the ISO in the CD/DVD drive (${config.cdrom}) is not included; the drive is exported empty`);
  }
  for (const n of nics) {
    const caption = `Ethernet adapter on 'NAT'`;
    items.push(item({ AutomaticAllocation: 'true', Caption: caption, Connection: 'NAT', ElementName: caption, InstanceID: instance++, ResourceSubType: NIC_SUBTYPES[n.model ?? 'virtio-net'], ResourceType: 10 }));
  }
  const extra: string[] = [];
  if (config.firmware === 'uefi') {
    extra.push('      <vmw:Config ovf:required="false" vmw:key="firmware" vmw:value="efi"/>');
    warnings.push('UEFI firmware is recorded the way VMware reads it; in VirtualBox, enable EFI in the imported VM\'s settings');
  }
  // Windows 11 devices: Secure Boot as VMware reads it, the TPM as a VMDesk hint (its state is not exported: a TPM's keys stay with the VM).
  if (config.firmware === 'uefi' && config.secureBoot) extra.push('      <vmw:Config ovf:required="false" vmw:key="uefi.secureBoot.enabled" vmw:value="true"/>');
  if (config.tpm) {
    extra.push('      <vmdesk:Config ovf:required="false" vmdesk:key="vmdesk.tpm" vmdesk:value="2.0"/>');
    warnings.push("the VM's TPM 2.0 is noted but its state (keys, BitLocker's protector) is not exported; the imported VM gets a new, empty TPM");
  }
  if (config.directKernel) warnings.push('the direct kernel boot settings (kernel, initrd, command line) are not part of an OVF and are not exported');
  const os = OS_IDS[config.osType];
  const xml = `<?xml version="1.0" encoding="UTF-8"?>
<Envelope ovf:version="1.0" xml:lang="en-US" xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData" xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns:vbox="http://www.virtualbox.org/ovf/machine" xmlns:vmw="http://www.vmware.com/schema/ovf" xmlns:vmdesk="urn:vmdesk:ovf:1">
  <References>
${disks.map((d, i) => `    <File ovf:id="file${i + 1}" ovf:href="${xmlEscape(d.href)}"/>`).join('\n')}
  </References>
  <DiskSection>
    <Info>List of the virtual disks used in the package</Info>
${disks.map((d, i) => `    <Disk ovf:capacity="${d.capacityBytes}" ovf:diskId="vmdisk${i + 1}" ovf:fileRef="file${i + 1}" ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"/>`).join('\n')}
  </DiskSection>${
    nics.length
      ? `
  <NetworkSection>
    <Info>Logical networks used in the package</Info>
    <Network ovf:name="NAT">
      <Description>Logical network used by this appliance.</Description>
    </Network>
  </NetworkSection>`
      : ''
  }
  <VirtualSystem ovf:id="${name}">
    <Info>A virtual machine</Info>
    <Name>${name}</Name>
    <OperatingSystemSection ovf:id="${os.cim}">
      <Info>The kind of installed guest operating system</Info>
      <Description>${os.vbox}</Description>
      <vbox:OSType ovf:required="false">${os.vbox}</vbox:OSType>
    </OperatingSystemSection>
    <VirtualHardwareSection>
      <Info>Virtual hardware requirements for a virtual machine</Info>
      <System>
        <vssd:ElementName>Virtual Hardware Family</vssd:ElementName>
        <vssd:InstanceID>0</vssd:InstanceID>
        <vssd:VirtualSystemIdentifier>${name}</vssd:VirtualSystemIdentifier>
        <vssd:VirtualSystemType>virtualbox-2.2</vssd:VirtualSystemType>
      </System>
${[...items, ...extra, ...hints].join('\n')}
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>
`;
  return { xml, warnings };
}

export interface OvaExportOptions {
  onProgress?: ProgressFn;
}

export interface OvaExportResult {
  file: string;
  bytes: number;
  /** The OVA's entries in order: descriptor, disks, manifest. */
  entries: string[];
  warnings: string[];
}

/** Exports a stopped VM as an OVA (see the file comment); the file appears complete or not at all. */
export async function exportOva(core: SnapshotCore, ref: string, file: string, opts: OvaExportOptions = {}): Promise<OvaExportResult> {
  const progress = opts.onProgress ?? (() => {});
  const entry = await core.usable(ref);
  const config = entry.config;
  const out = path.resolve(file);
  if (path.extname(out).toLowerCase() !== OVA_EXTENSION) throw new VmdeskError(ErrorCode.invalid, `${out}: an OVA export must end in .ova`);
  if (existsSync(out)) throw new VmdeskError(ErrorCode.exists, `${out} already exists`);
  if (!existsSync(path.dirname(out))) throw new VmdeskError(ErrorCode.invalid, `folder ${path.dirname(out)} does not exist`);

  // No VM lock: the daemon runs one job per VM, so the VM cannot start while this export reads its disks.
  const state = (await core.get(entry.id)).state;
  if (state !== 'stopped' && state !== 'crashed') throw new VmdeskError(ErrorCode.state, `"${config.name}" is ${state}; shut it down before exporting (its disks are changing)`);
  const warnings: string[] = [];
  const disks = config.disks.filter((d) => !(d.readOnly && !d.owned));
  for (const d of config.disks.filter((x) => x.readOnly && !x.owned)) warnings.push(`the shared read-only disk ${d.path} is not included`);
  const base = config.name;
  const outDisks: (OvfDiskOut & { src: string; id: string })[] = [];
  for (const [i, d] of disks.entries()) {
    const src = await vmDiskSource(entry.dir, d, { what: `disk ${d.id} of "${config.name}"`, vmsDir: core.library.vmsDir });
    const info = await img.imgInfo(src);
    outDisks.push({ href: `${base}-disk${String(i + 1).padStart(3, '0')}.vmdk`, capacityBytes: info.virtualSize, bus: d.bus ?? 'virtio', src, id: d.id });
  }
  const ovf = buildOvf(config, outDisks);
  warnings.push(...ovf.warnings);

  const tmpDir = await fs.mkdtemp(path.join(path.dirname(out), '.vmdesk-ova-'));
  const partial = `${out}.partial`;
  let tar: TarWriter | undefined;
  try {
    tar = await TarWriter.create(partial);
    const sums: [string, string][] = [];
    const entries: string[] = [];
    const add = async (name: string, data: Parameters<TarWriter['add']>[1], onBytes?: (done: number, total: number) => void) => {
      const r = await tar!.add(name, data, onBytes);
      sums.push([name, r.sha256]);
      entries.push(name);
    };
    // The descriptor comes first: importers read it before deciding what to do with the rest.
    await add(`${base}.ovf`, Buffer.from(ovf.xml, 'utf8'));
    for (const [i, d] of outDisks.entries()) {
      const share = (x: number) => progress(`exporting disk ${d.id}`, (i + x) / outDisks.length);
      const tmp = path.join(tmpDir, `disk${i}.vmdk`);
      await img.convert(d.src, tmp, { dstFormat: 'vmdk', options: ['subformat=streamOptimized'], onProgress: (x) => share(0.9 * x) });
      const { size } = await fs.stat(tmp);
      await add(d.href, { size, stream: createReadStream(tmp, { highWaterMark: 1024 * 1024 }) }, (done) => share(0.9 + (0.1 * done) / Math.max(1, size)));
      await fs.rm(tmp, { force: true });
    }
    // The manifest comes last: it covers everything before it.
    await add(`${base}.mf`, Buffer.from(sums.map(([n, h]) => `SHA256(${n})= ${h}\n`).join(''), 'utf8'));
    await tar.close();
    tar = undefined;
    await fs.rename(partial, out);
    await fsyncDir(path.dirname(out));
    progress('done', 1);
    return { file: out, bytes: (await fs.stat(out)).size, entries, warnings };
  } catch (e) {
    await tar?.abort();
    await fs.rm(partial, { force: true });
    throw e;
  } finally {
    await fs.rm(tmpDir, { recursive: true, force: true });
  }
}
