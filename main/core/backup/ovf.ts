// Imports OVF/OVA appliances (CPUs, memory, disks on their controllers, NIC models; disks converted to qcow2)
// and bare disk images as new VMs. Appliances come from anywhere: the descriptor is parsed by a bounded,
// DTD-free XML reader, the manifest must cover every file, and every disk passes the image gate (format from
// its bytes, no backing files, extents or parents) and is read only through the gate's pinned json: source.
import { createReadStream, createWriteStream, promises as fs } from 'node:fs';
import path from 'node:path';
import { createHash } from 'node:crypto';
import { Transform, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import { z } from 'zod';
import { LIMITS, VM_SCHEMA_VERSION, VmConfig, type Disk, type DiskBus, type NetAdapter, type NicModel, type VmInfo } from '../../api/schema.js';
import { VmdeskError, ErrorCode } from '../../api/errors.js';
import * as img from '../../platform/qemu-img.js';
import type { EngineModule } from '../../engines/engine.js';
import { engine as engineModule } from '../../engines/registry.js';
import type { ProgressFn, SnapshotCore } from '../services.js';
import { admitImage, formatFromName, qemuImgSource, DISK_IMAGE_FORMATS, type AdmittedImage, type DiskImageFormat } from '../images/gate.js';
import { checkResources, hostCapacity, parseOrThrow } from '../validate.js';
import { entryStream, hashEntry, indexByName, readEntry, readTarIndex, type HashAlgo, type TarEntry } from './tar.js';
import { childText, find, findAll, parseXml, type XmlNode } from './ovf-xml.js';

export { parseXml, type XmlNode } from './ovf-xml.js';

/** An OVF descriptor larger than this is refused before it is read (real ones are a few KB). */
export const OVF_MAX_BYTES = 16 * 1024 * 1024;
/** A manifest: one line per file of the appliance. */
export const MANIFEST_MAX_BYTES = 1024 * 1024;

function refuse(message: string, details: string[] = []): VmdeskError {
  return new VmdeskError(ErrorCode.invalid, message, details);
}

/** Printable, bounded rendering of a string taken from an appliance, for messages. */
function shown(s: string): string {
  const clean = s.replace(/[^\x20-\x7e]/g, '?');
  return clean.length > 80 ? `${clean.slice(0, 77)}...` : clean;
}

// ---- OVF descriptor -----------------------------------------------------------------------------------

export interface OvfDisk {
  diskId: string;
  /** The file inside the OVA / next to the OVF; absent for a blank disk (created empty, capacityBytes big). */
  href?: string;
  capacityBytes?: number;
  /** The Disk's ovf:format, a URL naming the image format (vmdk streamOptimized, VHD, …). */
  formatUrl?: string;
  /** The file is gzip-compressed (File ovf:compression="gzip"). */
  gzip?: boolean;
  /** The controller it hangs on, translated; absent: VMDesk's default (virtio). */
  bus?: DiskBus;
}

export interface OvfNic {
  /** Absent: VMDesk's default (virtio-net). */
  model?: NicModel;
  /** rasd:ResourceSubType as written (E1000, PCNet32, VmxNet3, virtio…). */
  subtype?: string;
}

export interface OvfAppliance {
  name: string;
  cpus: number;
  memoryMiB: number;
  disks: OvfDisk[];
  nics: number;
  adapters: OvfNic[];
  /** CD/DVD drives: kept as notes (an appliance carries no ISO VMDesk would attach). */
  cdroms: { bus?: DiskBus }[];
  osType: VmConfig['osType'];
  firmware: VmConfig['firmware'];
  /** Windows 11 devices the appliance has (VMware's vTPM item and Secure Boot key, VirtualBox's TPM, VMDesk's hints). */
  tpm?: boolean;
  secureBoot?: boolean;
  warnings: string[];
}

/** Units like "byte * 2^20", "MegaBytes", "GB" -> multiplier in bytes. */
export function allocationUnits(u: string | undefined): number {
  if (!u) return 1024 * 1024;
  const s = u.replace(/\s+/g, '').toLowerCase();
  const pow = /^byte\*2\^(\d{1,2})$/.exec(s);
  if (pow && Number(pow[1]) <= 60) return 2 ** Number(pow[1]);
  const table: Record<string, number> = { byte: 1, bytes: 1, kilobytes: 1024, kb: 1024, megabytes: 1024 ** 2, mb: 1024 ** 2, gigabytes: 1024 ** 3, gb: 1024 ** 3, terabytes: 1024 ** 4, tb: 1024 ** 4 };
  return table[s] ?? 1024 * 1024;
}

/** A whole number written in the descriptor, or undefined (empty, "${property}", 1e9, -1, …). */
function whole(s: string | undefined): number | undefined {
  if (s === undefined || !/^\s*\d{1,15}\s*$/.test(s)) return undefined;
  return Number(s);
}

/** The disk id a HostResource names: "ovf:/disk/vmdisk1", "ovf://disk/x", "/disk/x", "ovf:/file/file1". */
function hostResourceId(res: string): { kind: 'disk' | 'file'; id: string } | undefined {
  const m = /^(?:ovf:)?\/\/?(disk|file)\/(.+)$/.exec(res.trim());
  return m ? { kind: m[1] as 'disk' | 'file', id: m[2]! } : undefined;
}

/** What VMDesk gives the guest for a storage controller, chosen so its OS finds a driver it already has. */
function controllerBus(type: number, subtype: string, what: string, warnings: string[]): DiskBus | undefined {
  const sub = subtype.toLowerCase();
  if (type === 5) return 'ide';
  if (type === 6) {
    if (sub === 'virtualscsi' || sub === 'pvscsi') {
      warnings.push(`${what} is a VMware paravirtual SCSI controller, which VMDesk does not emulate; its disks are attached as virtio (the guest needs virtio drivers)`);
      return 'virtio';
    }
    if (sub === 'virtioscsi' || sub === 'virtio-scsi') return 'scsi';
    warnings.push(`${what} is a ${subtype || 'SCSI'} controller; VMDesk's SCSI controller is virtio-scsi, so the guest needs virtio-scsi drivers (Linux has them, Windows needs vioscsi)`);
    return 'scsi';
  }
  if (type === 20) {
    if (sub === '' || sub === 'ahci' || sub === 'vmware.sata.ahci') return 'sata';
    if (sub === 'virtioscsi' || sub === 'virtio-scsi') return 'scsi';
    if (sub === 'virtio' || sub === 'virtio-blk') return 'virtio';
    if (sub === 'nvme' || sub === 'vmware.nvme.controller') {
      warnings.push(`${what} is an NVMe controller, which VMDesk does not emulate; its disks are attached to SATA (AHCI), which every current OS drives`);
      return 'sata';
    }
    warnings.push(`${what} is an unknown storage controller ("${shown(subtype)}"); its disks are attached to SATA (AHCI)`);
    return 'sata';
  }
  return undefined;
}

/** The NIC model for a rasd:ResourceSubType; PCnet and VMXNET have no QEMU twin here and stay virtio-net. */
function nicModel(subtype: string, what: string, warnings: string[]): NicModel | undefined {
  const sub = subtype.toLowerCase();
  if (!sub) return undefined;
  if (sub === 'e1000') return 'e1000';
  if (sub === 'e1000e') return 'e1000e';
  if (sub === 'virtio' || sub === 'virtio-net') return 'virtio-net';
  if (sub === 'rtl8139') return 'rtl8139';
  if (sub.startsWith('pcnet') || sub.startsWith('am79c97')) {
    warnings.push(`${what} is an AMD PCnet, which VMDesk does not emulate; it becomes virtio-net (the guest needs virtio drivers)`);
    return undefined;
  }
  if (sub.startsWith('vmxnet')) {
    warnings.push(`${what} is a VMware ${subtype}, which VMDesk does not emulate; it becomes virtio-net (the guest needs virtio drivers)`);
    return undefined;
  }
  warnings.push(`${what} has the unknown type "${shown(subtype)}"; it becomes virtio-net`);
  return undefined;
}

/** CIM_OperatingSystem ids (OVF's OperatingSystemSection ovf:id) by family, for descriptors without names. */
function osFromCimId(id: number | undefined): VmConfig['osType'] {
  if (id === undefined) return 'other';
  if ([15, 16, 17, 18, 19, 58, 63, 67, 69, 70, 71, 72, 73, 74, 75, 76, 77, 103, 105, 111, 112, 113, 114, 115, 116, 117, 118, 119, 120].includes(id)) return 'windows';
  if (id === 36 || (id >= 79 && id <= 101 && ![81, 86, 88].includes(id)) || (id >= 106 && id <= 109)) return 'linux';
  if ([41, 42, 43, 65, 78].includes(id)) return 'bsd';
  return 'other';
}

/** VMDesk's own hint in its OVAs: the exact disk bus where the OVF can only say something close. */
const VMDESK_BUS_KEY = /^vmdesk\.disk\.(.+)\.bus$/;

interface HwItem {
  type: number;
  subtype: string;
  instanceId: string;
  parent: string;
  host: string;
  quantity?: number;
  units?: string;
}

function hwItem(n: XmlNode): HwItem {
  return {
    type: whole(childText(n, 'ResourceType')) ?? 0,
    subtype: childText(n, 'ResourceSubType') ?? '',
    instanceId: childText(n, 'InstanceID') ?? childText(n, 'InstanceId') ?? '',
    parent: childText(n, 'Parent') ?? '',
    host: childText(n, 'HostResource') ?? '',
    quantity: whole(childText(n, 'VirtualQuantity')),
    units: childText(n, 'AllocationUnits'),
  };
}

export function parseOvf(xml: string): OvfAppliance {
  const doc = parseXml(xml);
  const env = doc.children.find((c) => c.name === 'Envelope');
  if (!env) throw refuse('not an OVF descriptor (no Envelope element)');
  const systems = findAll(env, 'VirtualSystem');
  if (systems.length > 1) throw refuse(`the OVF describes ${systems.length} virtual machines; VMDesk imports appliances with one`);
  const vs = systems[0];
  if (!vs) throw refuse('the OVF has no VirtualSystem (multi-VM collections are not supported)');
  const warnings: string[] = [];

  const files = new Map<string, { href: string; gzip: boolean }>();
  for (const f of findAll(env, 'File')) {
    const id = f.attrs.id ?? '';
    const href = (f.attrs.href ?? '').replace(/^(\.\/)+/, '');
    if (!id || !href) throw refuse('the OVF has a File reference without an id or href');
    if (files.has(id)) throw refuse(`the OVF defines the file id "${shown(id)}" twice`);
    if (/^[a-z][a-z0-9+.-]*:/i.test(href)) throw refuse(`the OVF refers to "${shown(href)}", which is not a file of the appliance (remote references are not fetched)`);
    if (f.attrs.chunkSize) throw refuse(`the OVF splits ${shown(href)} into chunks, which VMDesk does not read`);
    const compression = (f.attrs.compression ?? '').toLowerCase();
    if (compression && compression !== 'gzip' && compression !== 'identity') throw refuse(`${shown(href)} uses the compression "${shown(compression)}"; VMDesk reads gzip only`);
    if (/\.gz$/i.test(href) && compression !== 'gzip') throw refuse(`${shown(href)} looks gzip-compressed but the OVF does not say ovf:compression="gzip"`);
    files.set(id, { href, gzip: compression === 'gzip' });
  }

  const diskDefs = new Map<string, { fileRef?: string; capacityBytes?: number; formatUrl?: string }>();
  for (const d of findAll(env, 'Disk')) {
    const id = d.attrs.diskId ?? '';
    if (!id) throw refuse('the OVF has a Disk without a diskId');
    if (diskDefs.has(id)) throw refuse(`the OVF defines the disk "${shown(id)}" twice`);
    const cap = whole(d.attrs.capacity);
    let capacityBytes: number | undefined;
    if (cap !== undefined) {
      capacityBytes = cap * allocationUnits(d.attrs.capacityAllocationUnits ?? 'byte');
      if (!Number.isSafeInteger(capacityBytes) || capacityBytes > LIMITS.diskMaxBytes) throw refuse(`the OVF's disk "${shown(id)}" declares a capacity past the limit of ${LIMITS.diskMaxBytes} bytes`);
    } else if (d.attrs.capacity) warnings.push(`the capacity of disk "${shown(id)}" ("${shown(d.attrs.capacity)}") is not a number; it is taken from the image`);
    diskDefs.set(id, { fileRef: d.attrs.fileRef || undefined, capacityBytes, formatUrl: d.attrs.format });
  }

  const configs = new Map<string, string>();
  for (const c of findAll(vs, 'Config')) if (c.attrs.key !== undefined) configs.set(c.attrs.key, c.attrs.value ?? '');

  let cpus = 1;
  let memoryMiB = 512;
  const items = [...findAll(vs, 'Item'), ...findAll(vs, 'StorageItem'), ...findAll(vs, 'EthernetPortItem')].map(hwItem);
  const controllers = new Map<string, DiskBus | undefined>();
  const adapters: OvfNic[] = [];
  for (const it of items) {
    if (it.type === 3 && it.quantity && it.quantity > 0) cpus = it.quantity;
    else if (it.type === 4 && it.quantity && it.quantity > 0) memoryMiB = Math.round((it.quantity * allocationUnits(it.units)) / 1024 / 1024);
    else if (it.type === 5 || it.type === 6 || it.type === 20) {
      const what = `controller ${shown(it.instanceId || '?')}`;
      controllers.set(it.instanceId, controllerBus(it.type, it.subtype, what, warnings));
    } else if (it.type === 10) {
      const what = `network adapter ${adapters.length + 1}`;
      adapters.push({ model: nicModel(it.subtype, what, warnings), ...(it.subtype ? { subtype: it.subtype } : {}) });
    }
  }

  // Disks and CD drives second: a disk may come before its controller in the descriptor.
  const disks: OvfDisk[] = [];
  const cdroms: { bus?: DiskBus }[] = [];
  const attached = new Set<string>();
  for (const it of items) {
    if (it.type !== 17 && it.type !== 15 && it.type !== 16) continue;
    let bus: DiskBus | undefined;
    if (it.parent) {
      if (!controllers.has(it.parent)) warnings.push(`a ${it.type === 17 ? 'disk' : 'CD/DVD drive'} names the controller "${shown(it.parent)}", which the OVF does not define; VMDesk's default is used`);
      bus = controllers.get(it.parent);
    }
    const ref = hostResourceId(it.host);
    if (it.type !== 17) {
      cdroms.push(bus ? { bus } : {});
      const image = ref?.kind === 'file' ? files.get(ref.id)?.href : ref ? files.get(diskDefs.get(ref.id)?.fileRef ?? '')?.href : undefined;
      warnings.push(
        image
          ? `the appliance's CD/DVD image ${shown(image)} is not imported; attach an ISO with "vmdesk set NAME --iso FILE"`
          : `the appliance has a CD/DVD drive${bus ? ` on ${bus.toUpperCase()}` : ''}; an appliance carries no ISO: attach one with "vmdesk set NAME --iso FILE"`,
      );
      continue;
    }
    if (!ref) {
      warnings.push(`a disk refers to "${shown(it.host)}", which is not a disk of the OVF; skipped`);
      continue;
    }
    if (attached.has(ref.id)) throw refuse(`the OVF attaches the disk "${shown(ref.id)}" twice`);
    attached.add(ref.id);
    const def = ref.kind === 'disk' ? diskDefs.get(ref.id) : { fileRef: ref.id };
    const file = def?.fileRef ? files.get(def.fileRef) : undefined;
    const hint = configs.get(`vmdesk.disk.${ref.id}.bus`);
    if (hint && ['virtio', 'sata', 'ide', 'scsi'].includes(hint)) bus = hint as DiskBus;
    if (!def || (def.fileRef && !file)) {
      warnings.push(`disk ${shown(it.host)} has no file; skipped`);
      continue;
    }
    if (!file) {
      // A Disk with no file is a blank disk of the declared capacity (OVF 1.0, section 9.1).
      if (!def.capacityBytes || def.capacityBytes < LIMITS.diskMinBytes) {
        warnings.push(`blank disk ${shown(ref.id)} has no usable capacity; skipped`);
        continue;
      }
      disks.push({ diskId: ref.id, capacityBytes: def.capacityBytes, ...(bus ? { bus } : {}) });
      continue;
    }
    disks.push({ diskId: ref.id, href: file.href, capacityBytes: def.capacityBytes, ...(def.formatUrl ? { formatUrl: def.formatUrl } : {}), ...(file.gzip ? { gzip: true } : {}), ...(bus ? { bus } : {}) });
  }
  for (const key of configs.keys()) {
    const m = VMDESK_BUS_KEY.exec(key);
    if (m && !attached.has(m[1]!)) warnings.push(`the OVF sets a bus for disk "${shown(m[1]!)}", which it does not attach`);
  }

  let firmware: VmConfig['firmware'] = 'bios';
  if (/efi/i.test(configs.get('firmware') ?? '')) firmware = 'uefi';
  const vbox = find(vs, 'Machine');
  if (vbox && find(vbox, 'Firmware')?.attrs.type?.toUpperCase().startsWith('EFI')) firmware = 'uefi';
  // TPM 2.0 and Secure Boot: a Windows 11 appliance does not boot without what it was installed with.
  const tpm =
    items.some((it) => /^vmware\.vtpm$/i.test(it.subtype.trim())) ||
    /^2(\.0)?$/.test(configs.get('vmdesk.tpm') ?? '') ||
    (!!vbox && /^v2_0$/i.test(find(vbox, 'TrustedPlatformModule')?.attrs.type ?? ''));
  const secureBoot = firmware === 'uefi' && (/^true$/i.test(configs.get('uefi.secureBoot.enabled') ?? '') || /^true$/i.test(configs.get('vmdesk.secureBoot') ?? ''));
  const osSection = find(vs, 'OperatingSystemSection');
  const osText = `${osSection?.attrs.osType ?? ''} ${osSection ? `${childText(osSection, 'Description') ?? ''} ${childText(osSection, 'OSType') ?? ''}` : ''}`;
  const osType: VmConfig['osType'] = /win/i.test(osText)
    ? 'windows'
    : /bsd/i.test(osText)
      ? 'bsd'
      : /linux|ubuntu|debian|fedora|centos|rhel|suse|alpine|arch|oracle|mandriva|turbo/i.test(osText)
        ? 'linux'
        : osFromCimId(whole(osSection?.attrs.id));
  const rawName = childText(vs, 'Name') || vs.attrs.id || 'Imported VM';
  if (cpus > LIMITS.cpusMax) throw refuse(`the OVF asks for ${cpus} CPUs (at most ${LIMITS.cpusMax})`);
  if (!Number.isSafeInteger(memoryMiB) || memoryMiB < LIMITS.memoryMinMiB || memoryMiB > LIMITS.memoryMaxMiB) throw refuse(`the OVF asks for ${memoryMiB} MiB of memory, which is out of range`);
  if (disks.length > LIMITS.disksMax) throw refuse(`the OVF has ${disks.length} disks (at most ${LIMITS.disksMax})`);
  if (adapters.length > 4) warnings.push(`the OVF has ${adapters.length} network adapters; VMDesk keeps 4`);
  const kept = adapters.slice(0, 4);
  return { name: sanitizeName(rawName), cpus, memoryMiB, disks, nics: kept.length, adapters: kept, cdroms, osType, firmware, ...(tpm ? { tpm } : {}), ...(secureBoot ? { secureBoot } : {}), warnings };
}

/** Turns an arbitrary appliance or file name into a valid VM name. */
export function sanitizeName(raw: string): string {
  let s = raw.replace(/[^A-Za-z0-9 ._+-]+/g, '-').replace(/\.{2,}/g, '.').trim().replace(/^[^A-Za-z0-9]+/, '');
  s = s.slice(0, LIMITS.nameMax).trim();
  return s || 'Imported VM';
}

/** Descriptor bytes to text: UTF-8 (a BOM is dropped), or UTF-16 when a BOM says so; invalid UTF-8 is refused. */
export function decodeDescriptor(b: Buffer, what: string): string {
  if (b.length > OVF_MAX_BYTES) throw refuse(`${what} is too large (${b.length} bytes; at most ${OVF_MAX_BYTES})`);
  try {
    if (b[0] === 0xff && b[1] === 0xfe) return new TextDecoder('utf-16le', { fatal: true }).decode(b.subarray(2));
    if (b[0] === 0xfe && b[1] === 0xff) return new TextDecoder('utf-16be', { fatal: true }).decode(b.subarray(2));
    return new TextDecoder('utf-8', { fatal: true }).decode(b);
  } catch {
    throw refuse(`${what} is not valid UTF-8 text`);
  }
}

// ---- manifests (.mf) ----------------------------------------------------------------------------------

export interface ManifestEntry {
  algo: HashAlgo;
  hex: string;
}

const HEX_LENGTH: Record<HashAlgo, number> = { sha1: 40, sha256: 64, sha512: 128 };

/** A name from a manifest or a descriptor: a plain relative path inside the appliance. */
function plainName(name: string): boolean {
  if (!name || name.length > 1024 || /[\u0000-\u001f\u007f\\]/.test(name) || name.startsWith('/')) return false;
  return name.split('/').every((p) => p !== '' && p !== '.' && p !== '..');
}

/**
 * Reads a manifest: "SHA256(disk1.vmdk)= abc…" (VMware, VirtualBox) or "SHA1 (disk1.vmdk) = abc…" (OpenSSL
 * style), SHA1/SHA256/SHA512. Every non-empty line must be one of these, with a digest of the right length.
 */
export function parseManifestFile(text: string): Map<string, ManifestEntry> {
  const out = new Map<string, ManifestEntry>();
  const lines = text.split(/\r?\n/);
  for (const [i, raw] of lines.entries()) {
    const line = raw.trim();
    if (!line) continue;
    if (line.length > 4096) throw refuse(`line ${i + 1} of the manifest is too long`);
    const m = /^(SHA1|SHA256|SHA512)[ \t]*\((.+)\)[ \t]*=[ \t]*([0-9A-Fa-f]+)$/.exec(line);
    if (!m) throw refuse(`line ${i + 1} of the manifest is not "SHA256(file)= digest": "${shown(line)}"`);
    const algo = m[1]!.toLowerCase() as HashAlgo;
    const name = m[2]!.replace(/^(\.\/)+/, '');
    if (m[3]!.length !== HEX_LENGTH[algo]) throw refuse(`line ${i + 1} of the manifest has a ${algo.toUpperCase()} digest of the wrong length`);
    if (!plainName(name)) throw refuse(`line ${i + 1} of the manifest names "${shown(name)}", which is not a file of the appliance`);
    if (out.has(name)) throw refuse(`the manifest lists ${shown(name)} twice`);
    out.set(name, { algo, hex: m[3]!.toLowerCase() });
  }
  return out;
}

// ---- appliance packages: an OVA (one tar) or a folder with an .ovf --------------------------------------

/** Where one file of the appliance is: a byte range of the OVA, or a file in the folder (symlinks resolved). */
interface PackageFile {
  name: string;
  /** For the gate: the OVA with the member's range, or the resolved file. */
  range: { path: string; offset?: number; length?: number };
  size: number;
  stream(): Readable;
  hash(algo: HashAlgo, onBytes?: (done: number) => void): Promise<string>;
}

interface AppliancePackage {
  what: string;
  ovfName: string;
  ovfText: string;
  /** The manifest, when the appliance has one. */
  manifest?: { name: string; sums: Map<string, ManifestEntry> };
  /** The folder files must stay inside (OVF folder imports). */
  within?: string;
  file(name: string): Promise<PackageFile>;
  warnings: string[];
}

async function openOva(src: string): Promise<AppliancePackage> {
  const entries = await readTarIndex(src);
  const byName = indexByName(entries);
  const ovfs = entries.filter((e) => /\.ovf$/i.test(e.name));
  if (!ovfs.length) throw refuse(`${src} has no .ovf descriptor`);
  if (ovfs.length > 1) throw refuse(`${src} holds ${ovfs.length} .ovf descriptors (${ovfs.map((e) => shown(e.name)).join(', ')}); an OVA carries exactly one`);
  const mfs = entries.filter((e) => /\.mf$/i.test(e.name));
  if (mfs.length > 1) throw refuse(`${src} holds ${mfs.length} manifests (${mfs.map((e) => shown(e.name)).join(', ')}); an OVA carries at most one`);
  const ovf = ovfs[0]!;
  const warnings: string[] = [];
  if (entries[0] !== ovf) warnings.push(`the descriptor ${shown(ovf.name)} is not the first file of the OVA, as the OVF standard asks`);
  if (entries.some((e) => /\.cert$/i.test(e.name))) warnings.push('the OVA is signed (.cert); VMDesk checks its manifest but not the signature');
  const ovfText = decodeDescriptor(await readEntry(src, ovf, OVF_MAX_BYTES), `the descriptor ${shown(ovf.name)}`);
  const mf = mfs[0];
  const manifest = mf ? { name: mf.name, sums: parseManifestFile(decodeDescriptor(await readEntry(src, mf, MANIFEST_MAX_BYTES), `the manifest ${shown(mf.name)}`)) } : undefined;
  const member = (e: TarEntry): PackageFile => ({
    name: e.name,
    range: { path: src, offset: e.offset, length: e.size },
    size: e.size,
    stream: () => entryStream(src, e),
    hash: (algo, onBytes) => hashEntry(src, e, algo, onBytes),
  });
  return {
    what: src,
    ovfName: ovf.name,
    ovfText,
    manifest,
    warnings,
    file: async (name) => {
      const e = byName.get(name.replace(/^(\.\/)+/, ''));
      if (!e) throw refuse(`the OVA lacks ${shown(name)}`);
      return member(e);
    },
  };
}

async function hashFile(file: string, algo: HashAlgo, onBytes?: (done: number) => void): Promise<string> {
  const h = createHash(algo);
  let done = 0;
  for await (const c of createReadStream(file, { highWaterMark: 1024 * 1024 })) {
    h.update(c as Buffer);
    done += (c as Buffer).length;
    onBytes?.(done);
  }
  return h.digest('hex');
}

/** A file named by the appliance: a plain relative name whose real path (symlinks resolved) stays in `dir`. */
async function fileInside(dir: string, name: string): Promise<{ real: string; size: number }> {
  if (!plainName(name)) throw refuse(`the OVF refers to "${shown(name)}", which is not a file in its folder`);
  const root = await fs.realpath(dir);
  let real: string;
  try {
    real = await fs.realpath(path.join(root, name));
  } catch {
    throw refuse(`the OVF's file ${shown(name)} does not exist next to it`);
  }
  if (!real.startsWith(root + path.sep)) throw refuse(`the OVF's file ${shown(name)} lies outside ${root} (through a symbolic link) and is refused`);
  const st = await fs.stat(real);
  if (!st.isFile()) throw refuse(`the OVF's file ${shown(name)} is not a regular file`);
  return { real, size: st.size };
}

async function openOvfFolder(src: string): Promise<AppliancePackage> {
  const dir = path.dirname(src);
  let st;
  try {
    st = await fs.stat(src);
  } catch {
    throw refuse(`${src} does not exist`);
  }
  if (!st.isFile()) throw refuse(`${src} is not a regular file`);
  if (st.size > OVF_MAX_BYTES) throw refuse(`${src} is too large (${st.size} bytes; at most ${OVF_MAX_BYTES})`);
  const ovfBytes = await fs.readFile(src);
  const ovfText = decodeDescriptor(ovfBytes, src);
  const ovfName = path.basename(src);
  // The manifest of a folder appliance is the .mf with the descriptor's base name (OVF 1.0, section 5.1).
  const mfName = `${path.basename(src, path.extname(src))}.mf`;
  let manifest: AppliancePackage['manifest'];
  const mfPath = path.join(dir, mfName);
  if (await fs.lstat(mfPath).then(() => true, () => false)) {
    const { real, size } = await fileInside(dir, mfName);
    if (size > MANIFEST_MAX_BYTES) throw refuse(`the manifest ${mfName} is too large`);
    manifest = { name: mfName, sums: parseManifestFile(decodeDescriptor(await fs.readFile(real), `the manifest ${mfName}`)) };
  }
  return {
    what: src,
    ovfName,
    ovfText,
    manifest,
    within: dir,
    warnings: [],
    file: async (name) => {
      // The descriptor itself is hashed from what was read above, not from a second look at the folder.
      if (name === ovfName) return { name, range: { path: src }, size: ovfBytes.length, stream: () => createReadStream(src), hash: async (algo) => createHash(algo).update(ovfBytes).digest('hex') };
      const { real, size } = await fileInside(dir, name);
      return { name, range: { path: real }, size, stream: () => createReadStream(real, { highWaterMark: 1024 * 1024 }), hash: (algo, onBytes) => hashFile(real, algo, onBytes) };
    },
  };
}

/**
 * Checks the manifest: the descriptor and every disk file must be listed, every listed file must exist, and
 * every digest must match. An appliance without a manifest is accepted (many are made without one).
 */
async function verifyManifest(pkg: AppliancePackage, required: string[], progress: (fraction: number) => void): Promise<void> {
  if (!pkg.manifest) return;
  const { name: mfName, sums } = pkg.manifest;
  for (const r of required) if (!sums.has(r)) throw refuse(`the manifest ${shown(mfName)} does not list ${shown(r)}; every file of the appliance must be in it`);
  const files: { f: PackageFile; want: ManifestEntry }[] = [];
  for (const [name, want] of sums) {
    const f = await pkg.file(name).catch((e: unknown) => {
      if (e instanceof VmdeskError) throw refuse(`the manifest ${shown(mfName)} lists ${shown(name)}, which is missing`);
      throw e;
    });
    files.push({ f, want });
  }
  const total = files.reduce((a, x) => a + x.f.size, 0) || 1;
  let done = 0;
  for (const { f, want } of files) {
    const got = await f.hash(want.algo, (d) => progress((done + d) / total));
    if (got !== want.hex) throw refuse(`the appliance is damaged: checksum of ${shown(f.name)} does not match its manifest`);
    done += f.size;
  }
}

// ---- import -------------------------------------------------------------------------------------------

/** CPUs and memory given on the command line or over RPC: the same bounds as when creating a VM. */
const HardwareChoice = z.object({
  cpus: z.number().int().min(1, 'at least 1 CPU').max(LIMITS.cpusMax, `at most ${LIMITS.cpusMax} CPUs`).optional(),
  memoryMiB: z.number().int().min(LIMITS.memoryMinMiB, `at least ${LIMITS.memoryMinMiB} MiB`).max(LIMITS.memoryMaxMiB, 'memory size is absurd').optional(),
});

/**
 * The imported VM's CPUs and memory: what the user asked for (checked like `create`: errors past the host),
 * else what the image or appliance asks for, cut to the host with a warning (it may come from a bigger machine).
 */
function chooseHardware(wanted: { cpus: number; memoryMiB: number }, opts: { cpus?: number; memoryMiB?: number }): { cpus: number; memoryMiB: number; warnings: string[] } {
  const o = parseOrThrow(HardwareChoice, { cpus: opts.cpus, memoryMiB: opts.memoryMiB }, 'invalid VM settings');
  const host = hostCapacity();
  const warnings: string[] = [];
  let cpus = o.cpus ?? wanted.cpus;
  let memoryMiB = o.memoryMiB ?? wanted.memoryMiB;
  if (o.cpus === undefined && cpus > host.cpus) {
    warnings.push(`the appliance asks for ${cpus} CPUs; this host has ${host.cpus}, so the VM gets ${host.cpus} (change it with vmdesk set)`);
    cpus = host.cpus;
  }
  if (o.memoryMiB === undefined && memoryMiB > host.memoryMiB) {
    const half = Math.max(LIMITS.memoryMinMiB, Math.floor(host.memoryMiB / 2));
    warnings.push(`the appliance asks for ${memoryMiB} MiB of memory; this host has ${host.memoryMiB} MiB, so the VM gets ${half} MiB (change it with vmdesk set)`);
    memoryMiB = half;
  }
  warnings.push(...checkResources({ cpus, memoryMiB }, host));
  return { cpus, memoryMiB, warnings };
}

/** The format an OVF Disk's ovf:format URL names (VMware's vmdk.html, Microsoft's VHD link, …). */
function formatFromUrl(url: string | undefined): DiskImageFormat | undefined {
  if (!url) return undefined;
  if (/vmdk/i.test(url)) return 'vmdk';
  if (/vhdx/i.test(url)) return 'vhdx';
  if (/vhd|LinkId=137171/i.test(url)) return 'vpc';
  if (/qcow/i.test(url)) return 'qcow2';
  if (/vdi/i.test(url)) return 'vdi';
  return undefined;
}

function statedFormat(d: OvfDisk & { href: string }): DiskImageFormat | undefined {
  const byName = formatFromName(d.gzip ? d.href.replace(/\.gz$/i, '') : d.href);
  const byUrl = formatFromUrl(d.formatUrl);
  if (byName && byUrl && byName !== byUrl) throw refuse(`the OVF says disk ${shown(d.href)} is ${byUrl === 'vpc' ? 'VHD' : byUrl} but its name says ${byName === 'vpc' ? 'VHD' : byName}`);
  return byName ?? byUrl;
}

/**
 * The most a compressed disk may decompress to: its declared capacity plus what a sparse or streamOptimized
 * image adds in metadata (well under 1/8 of it), and never more than leaves the host's disk with room.
 */
async function gunzipLimit(capacityBytes: number, dir: string): Promise<number> {
  const fromCapacity = capacityBytes + Math.ceil(capacityBytes / 8) + 16 * 1024 * 1024;
  const s = await fs.statfs(dir);
  const free = s.bavail * s.bsize;
  return Math.max(0, Math.min(fromCapacity, free - Math.max(1024 ** 3, Math.floor(free / 20))));
}

/** Decompresses a gzip stream into `dst`, stopping (and failing) as soon as more than `limit` bytes come out. */
async function gunzipBounded(src: Readable, dst: string, limit: number, what: string, onBytes: (done: number) => void): Promise<void> {
  let out = 0;
  const guard = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      out += chunk.length;
      if (out > limit) cb(refuse(`${what} decompresses to more than ${limit} bytes (more than its declared capacity allows, or than the free space); refused as a possible gzip bomb`));
      else {
        onBytes(out);
        cb(null, chunk);
      }
    },
  });
  try {
    await pipeline(src, createGunzip(), guard, createWriteStream(dst, { flags: 'wx', mode: 0o600 }));
  } catch (e) {
    if (e instanceof VmdeskError) throw e;
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOSPC') throw new VmdeskError(ErrorCode.host, `no space left while decompressing ${what}`);
    throw refuse(`${what} is not valid gzip data (${(e as Error).message})`);
  }
}

type DiskPlan =
  | { d: OvfDisk; kind: 'blank'; bytes: number }
  | { d: OvfDisk & { href: string }; kind: 'image'; admitted: AdmittedImage }
  | { d: OvfDisk & { href: string; capacityBytes: number }; kind: 'gzip'; file: PackageFile; stated?: DiskImageFormat };

export interface ApplianceImportOptions {
  name?: string;
  /** Override the appliance's CPUs and memory (validated like `create`). */
  cpus?: number;
  memoryMiB?: number;
  onProgress?: ProgressFn;
}

export async function importAppliance(core: SnapshotCore, file: string, opts: ApplianceImportOptions = {}): Promise<{ info: VmInfo; warnings: string[] }> {
  const progress = opts.onProgress ?? (() => {});
  const src = path.resolve(file);
  let pkg: AppliancePackage;
  if (/\.ova$/i.test(src)) pkg = await openOva(src);
  else if (/\.ovf$/i.test(src)) pkg = await openOvfFolder(src);
  else throw refuse(`${src}: expected an .ova or .ovf file`);

  const app = parseOvf(pkg.ovfText);
  const hw = chooseHardware(app, opts);
  const warnings = [...pkg.warnings, ...app.warnings, ...hw.warnings];
  const name = await core.checkNewVmName(opts.name ?? app.name);
  const { kind, eng } = await importEngine();

  // Every disk is located and, unless compressed, admitted by the gate before anything is hashed or written.
  const plans: DiskPlan[] = [];
  for (const d of app.disks) {
    if (d.href === undefined) {
      plans.push({ d, kind: 'blank', bytes: d.capacityBytes! });
      continue;
    }
    const withHref = d as OvfDisk & { href: string };
    const f = await pkg.file(d.href);
    const stated = statedFormat(withHref);
    if (d.gzip) {
      if (!d.capacityBytes) throw refuse(`the compressed disk ${shown(d.href)} declares no capacity, so its decompressed size cannot be bounded`);
      plans.push({ d: { ...withHref, capacityBytes: d.capacityBytes }, kind: 'gzip', file: f, stated });
      continue;
    }
    const admitted = await admitImage(f.range, { what: `OVF disk ${shown(d.href)}`, stated, allow: DISK_IMAGE_FORMATS, within: pkg.within });
    plans.push({ d: withHref, kind: 'image', admitted });
  }
  const required = [pkg.ovfName, ...new Set(app.disks.flatMap((d) => (d.href ? [d.href] : [])))];
  await verifyManifest(pkg, required, (f) => progress('verifying checksums', 0.3 * f));

  const fmt = eng.capabilities.nativeDiskFormat;
  const info = await core.createVmBundle(name, async (staging, id) => {
    await fs.mkdir(path.join(staging, 'disks'), { recursive: true });
    const disks: Disk[] = [];
    for (const [i, p] of plans.entries()) {
      const diskId = `disk${i}`;
      const rel = `disks/${diskId}.${diskExt(fmt)}`;
      const dst = path.join(staging, rel);
      const label = p.d.href ?? `blank disk ${p.d.diskId}`;
      const share = (f: number) => progress(`converting disk ${label}`, 0.3 + (0.7 * (i + f)) / plans.length);
      if (p.kind === 'blank') {
        await eng.disks.create(dst, p.bytes);
      } else if (p.kind === 'gzip') {
        // Decompressed into the staging bundle (swept if anything fails), then admitted like any other disk.
        const tmp = path.join(staging, 'disks', `.${diskId}.unpacked`);
        const limit = await gunzipLimit(p.d.capacityBytes, staging);
        await gunzipBounded(p.file.stream(), tmp, limit, `the compressed disk ${shown(p.d.href)}`, (done) => share((0.5 * done) / Math.max(1, p.d.capacityBytes)));
        const admitted = await admitImage({ path: tmp }, { what: `OVF disk ${shown(p.d.href)}`, stated: p.stated });
        await img.convert(qemuImgSource(admitted), dst, { dstFormat: fmt, onProgress: (f) => share(0.5 + 0.5 * f) });
        await fs.rm(tmp, { force: true });
      } else {
        await img.convert(qemuImgSource(p.admitted), dst, { dstFormat: fmt, onProgress: share });
      }
      disks.push({ id: diskId, path: rel, format: fmt, owned: true, readOnly: false, ...(p.d.bus ? { bus: p.d.bus } : {}) });
    }
    const network: NetAdapter[] = app.adapters.map((a) => ({ mode: 'nat' as const, forwards: [], ...(a.model ? { model: a.model } : {}) }));
    const config = newConfig(id, name, kind, { cpus: hw.cpus, memoryMiB: hw.memoryMiB, osType: app.osType, firmware: app.firmware, disks, network: network.length ? network : [{ mode: 'none', forwards: [] }] });
    // A new, empty TPM (an appliance carries no TPM state) and Microsoft's keys, where the engine has them.
    const devices = eng.capabilities.devices;
    if (app.tpm && devices?.tpm) config.tpm = true;
    if (app.secureBoot && devices?.secureBoot) config.secureBoot = true;
    return config;
  });
  progress('done', 1);
  return { info, warnings };
}

/**
 * Imported VMs run on the engine `create` gives a VM by default (the schema's default), with disks in that
 * engine's own format.
 */
async function importEngine(): Promise<{ kind: string; eng: EngineModule }> {
  const kind = VmConfig.shape.engine.parse(undefined);
  return { kind, eng: await engineModule(kind) };
}

function diskExt(format: Disk['format']): string {
  return format === 'raw' ? 'img' : format;
}

function newConfig(id: string, name: string, engine: string, p: Pick<VmConfig, 'cpus' | 'memoryMiB' | 'osType' | 'firmware' | 'disks' | 'network'>): VmConfig {
  const now = new Date().toISOString();
  return { schemaVersion: VM_SCHEMA_VERSION, id, name, engine, accel: 'auto', ...p, createdAt: now, modifiedAt: now };
}

export interface DiskImportOptions {
  name?: string;
  cpus?: number;
  memoryMiB?: number;
  /** The image's format, when its name does not say (or says wrong); "vhd" is accepted for vpc. */
  format?: string;
  onProgress?: ProgressFn;
}

const DISK_EXTENSIONS = ['.vdi', '.vmdk', '.vhdx', '.vhd', '.qcow2', '.img', '.raw'];

/** A format named by the user: qemu's names, plus "vhd". */
export function parseDiskFormat(f: string): DiskImageFormat {
  const v = f.toLowerCase() === 'vhd' ? 'vpc' : f.toLowerCase();
  if (!(DISK_IMAGE_FORMATS as readonly string[]).includes(v)) throw refuse(`unknown disk format "${shown(f)}" (use ${DISK_IMAGE_FORMATS.join(', ')} or vhd)`);
  return v as DiskImageFormat;
}

/**
 * A bare disk image (.vdi, .vmdk, .vhdx, .vhd, .qcow2, .img/.raw) becomes a new stopped VM with a qcow2 copy.
 * The extension (or `format`) states the format and the gate checks the bytes agree; a .img is what its bytes
 * are. A fixed VHD (footer only at the end) is read as VHD, which qemu-img's own probe would take for raw.
 */
export async function importDiskImage(core: SnapshotCore, file: string, opts: DiskImportOptions = {}): Promise<VmInfo> {
  const src = path.resolve(file);
  const ext = path.extname(src).toLowerCase();
  const stated = opts.format !== undefined ? parseDiskFormat(opts.format) : formatFromName(src);
  if (opts.format === undefined && !DISK_EXTENSIONS.includes(ext)) throw refuse(`${src}: unknown disk image type (expected .vdi, .vmdk, .vhdx, .vhd, .qcow2, .img or .raw, or give --format)`);
  const hw = chooseHardware({ cpus: 1, memoryMiB: 1024 }, opts);
  const admitted = await admitImage({ path: src }, { what: `disk image ${src}`, stated });
  const name = await core.checkNewVmName(opts.name ?? sanitizeName(path.basename(src, ext)));
  const { kind, eng } = await importEngine();
  const fmt = eng.capabilities.nativeDiskFormat;
  const rel = `disks/disk0.${diskExt(fmt)}`;
  const info = await core.createVmBundle(name, async (staging, id) => {
    await fs.mkdir(path.join(staging, 'disks'), { recursive: true });
    await img.convert(qemuImgSource(admitted), path.join(staging, rel), { dstFormat: fmt, onProgress: (f) => opts.onProgress?.('converting disk', f) });
    return newConfig(id, name, kind, { cpus: hw.cpus, memoryMiB: hw.memoryMiB, osType: 'other', firmware: 'bios', disks: [{ id: 'disk0', path: rel, format: fmt, owned: true, readOnly: false }], network: [{ mode: 'nat', forwards: [] }] });
  });
  return hw.warnings.length ? { ...info, warnings: [...info.warnings, ...hw.warnings] } : info;
}

/** Picks the importer from the file name: .vmdesk archive, .ova/.ovf appliance, or a bare disk image. */
export function importKind(file: string): 'archive' | 'appliance' | 'disk' {
  const ext = path.extname(file).toLowerCase();
  if (ext === '.vmdesk' || ext === '.tar') return 'archive';
  if (ext === '.ova' || ext === '.ovf') return 'appliance';
  return 'disk';
}
