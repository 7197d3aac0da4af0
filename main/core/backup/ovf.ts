// Imports OVF/OVA appliances (CPUs, memory, disks, NICs; VMDK converted to qcow2) and bare disk images as new VMs.
import { promises as fs, existsSync } from 'node:fs';
import path from 'node:path';
import { LIMITS, type Disk, type NetAdapter, type VmConfig, type VmInfo } from '../../api/schema.js';
import { VmdeskError, ErrorCode } from '../../api/errors.js';
import * as img from '../snapshots/qemu-img.js';
import type { ProgressFn, SnapshotCore } from '../snapshots/manager.js';
import { checkNewVmName, createVmBundle } from '../snapshots/clone.js';
import { hashEntry, readEntry, readTarIndex, type TarEntry } from './tar.js';
import { VM_SCHEMA_VERSION } from '../../api/schema.js';

// ---- a minimal XML reader: enough for OVF descriptors (elements, attributes, text; no DTDs) -------------

export interface XmlNode {
  /** Local name without namespace prefix (rasd:ResourceType -> ResourceType). */
  name: string;
  attrs: Record<string, string>;
  children: XmlNode[];
  text: string;
}

function local(n: string): string {
  const i = n.indexOf(':');
  return i < 0 ? n : n.slice(i + 1);
}

function decode(s: string): string {
  return s.replace(/&(lt|gt|amp|quot|apos|#\d+|#x[0-9a-fA-F]+);/g, (_, e: string) =>
    e === 'lt' ? '<' : e === 'gt' ? '>' : e === 'amp' ? '&' : e === 'quot' ? '"' : e === 'apos' ? "'" : String.fromCodePoint(e[1] === 'x' ? parseInt(e.slice(2), 16) : parseInt(e.slice(1), 10)),
  );
}

export function parseXml(text: string): XmlNode {
  const root: XmlNode = { name: '#root', attrs: {}, children: [], text: '' };
  const stack: XmlNode[] = [root];
  const re = /<!--[\s\S]*?-->|<\?[\s\S]*?\?>|<!\[CDATA\[([\s\S]*?)\]\]>|<!DOCTYPE[^>]*>|<\/\s*([^\s>]+)\s*>|<([^\s/>]+)((?:\s+[^\s=>]+\s*=\s*(?:"[^"]*"|'[^']*'))*)\s*(\/?)>|([^<]+)/g;
  let m: RegExpExecArray | null;
  while ((m = re.exec(text))) {
    const top = stack[stack.length - 1]!;
    if (m[1] !== undefined) top.text += m[1];
    else if (m[2]) {
      if (stack.length > 1) stack.pop();
    } else if (m[3]) {
      const attrs: Record<string, string> = {};
      for (const a of (m[4] ?? '').matchAll(/([^\s=]+)\s*=\s*(?:"([^"]*)"|'([^']*)')/g)) attrs[local(a[1]!)] = decode(a[2] ?? a[3] ?? '');
      const node: XmlNode = { name: local(m[3]), attrs, children: [], text: '' };
      top.children.push(node);
      if (!m[5]) stack.push(node);
    } else if (m[6]) top.text += decode(m[6]);
  }
  return root;
}

function find(n: XmlNode, name: string): XmlNode | undefined {
  for (const c of n.children) {
    if (c.name === name) return c;
    const d = find(c, name);
    if (d) return d;
  }
  return undefined;
}

function findAll(n: XmlNode, name: string, out: XmlNode[] = []): XmlNode[] {
  for (const c of n.children) {
    if (c.name === name) out.push(c);
    findAll(c, name, out);
  }
  return out;
}

function childText(n: XmlNode, name: string): string | undefined {
  return n.children.find((c) => c.name === name)?.text.trim();
}

// ---- OVF descriptor -----------------------------------------------------------------------------------

export interface OvfDisk {
  diskId: string;
  /** The file inside the OVA / next to the OVF. */
  href: string;
  capacityBytes?: number;
}

export interface OvfAppliance {
  name: string;
  cpus: number;
  memoryMiB: number;
  disks: OvfDisk[];
  nics: number;
  osType: VmConfig['osType'];
  firmware: VmConfig['firmware'];
  warnings: string[];
}

/** Units like "byte * 2^20", "MegaBytes", "GB" -> multiplier in bytes. */
export function allocationUnits(u: string | undefined): number {
  if (!u) return 1024 * 1024;
  const s = u.replace(/\s+/g, '').toLowerCase();
  const pow = /^byte\*2\^(\d+)$/.exec(s);
  if (pow) return 2 ** Number(pow[1]);
  const table: Record<string, number> = { byte: 1, bytes: 1, kilobytes: 1024, kb: 1024, megabytes: 1024 ** 2, mb: 1024 ** 2, gigabytes: 1024 ** 3, gb: 1024 ** 3 };
  return table[s] ?? 1024 * 1024;
}

export function parseOvf(xml: string): OvfAppliance {
  const doc = parseXml(xml);
  const env = find(doc, 'Envelope');
  if (!env) throw new VmdeskError(ErrorCode.invalid, 'not an OVF descriptor (no Envelope element)');
  const vs = find(env, 'VirtualSystem');
  if (!vs) throw new VmdeskError(ErrorCode.invalid, 'the OVF has no VirtualSystem (multi-VM collections are not supported)');
  const warnings: string[] = [];
  const files = new Map(findAll(env, 'File').map((f) => [f.attrs.id ?? '', f.attrs.href ?? '']));
  const diskDefs = new Map(
    findAll(env, 'Disk').map((d) => {
      const cap = Number(d.attrs.capacity ?? NaN);
      const units = allocationUnits(d.attrs.capacityAllocationUnits ?? 'byte');
      return [d.attrs.diskId ?? '', { href: files.get(d.attrs.fileRef ?? '') ?? '', capacityBytes: Number.isFinite(cap) ? cap * units : undefined }] as const;
    }),
  );
  let cpus = 1;
  let memoryMiB = 512;
  let nics = 0;
  const disks: OvfDisk[] = [];
  let firmware: VmConfig['firmware'] = 'bios';
  for (const item of [...findAll(vs, 'Item'), ...findAll(vs, 'StorageItem'), ...findAll(vs, 'EthernetPortItem')]) {
    const type = Number(childText(item, 'ResourceType'));
    const qty = Number(childText(item, 'VirtualQuantity'));
    if (type === 3 && qty > 0) cpus = qty;
    else if (type === 4 && qty > 0) memoryMiB = Math.round((qty * allocationUnits(childText(item, 'AllocationUnits'))) / 1024 / 1024);
    else if (type === 10) nics++;
    else if (type === 17) {
      const res = childText(item, 'HostResource') ?? '';
      const id = res.replace(/^ovf:/, '').replace(/^\/disk\//, '').replace(/^\/file\//, '');
      const def = diskDefs.get(id);
      const href = def?.href || files.get(id);
      if (!href) warnings.push(`disk ${res} has no file; skipped`);
      else disks.push({ diskId: id, href, capacityBytes: def?.capacityBytes });
    }
  }
  for (const c of findAll(vs, 'Config')) if (c.attrs.key === 'firmware' && /efi/i.test(c.attrs.value ?? '')) firmware = 'uefi';
  const vbox = find(vs, 'Machine');
  if (vbox && find(vbox, 'Firmware')?.attrs.type?.toUpperCase().startsWith('EFI')) firmware = 'uefi';
  const osSection = find(vs, 'OperatingSystemSection');
  const osText = `${osSection?.attrs.osType ?? ''} ${osSection ? childText(osSection, 'Description') ?? '' : ''}`;
  const osType: VmConfig['osType'] = /win/i.test(osText) ? 'windows' : /bsd/i.test(osText) ? 'bsd' : /linux|ubuntu|debian|fedora|centos|rhel|suse|alpine|arch/i.test(osText) ? 'linux' : 'other';
  const rawName = childText(vs, 'Name') ?? vs.attrs.id ?? 'Imported VM';
  if (cpus > LIMITS.cpusMax) throw new VmdeskError(ErrorCode.invalid, `the OVF asks for ${cpus} CPUs (at most ${LIMITS.cpusMax})`);
  if (memoryMiB < LIMITS.memoryMinMiB || memoryMiB > LIMITS.memoryMaxMiB) throw new VmdeskError(ErrorCode.invalid, `the OVF asks for ${memoryMiB} MiB of memory, which is out of range`);
  if (disks.length > LIMITS.disksMax) throw new VmdeskError(ErrorCode.invalid, `the OVF has ${disks.length} disks (at most ${LIMITS.disksMax})`);
  if (nics > 4) warnings.push(`the OVF has ${nics} network adapters; VMDesk keeps 4`);
  return { name: sanitizeName(rawName), cpus, memoryMiB, disks, nics: Math.min(nics, 4), osType, firmware, warnings };
}

/** Turns an arbitrary appliance or file name into a valid VM name. */
export function sanitizeName(raw: string): string {
  let s = raw.replace(/[^A-Za-z0-9 ._+-]+/g, '-').replace(/\.{2,}/g, '.').trim().replace(/^[^A-Za-z0-9]+/, '');
  s = s.slice(0, LIMITS.nameMax).trim();
  return s || 'Imported VM';
}

// ---- import -------------------------------------------------------------------------------------------

export interface ApplianceImportOptions {
  name?: string;
  onProgress?: ProgressFn;
}

/** A disk source for qemu-img: a plain file, or a byte range inside an OVA (read in place, never extracted). */
type DiskSource = { kind: 'file'; file: string } | { kind: 'tar'; tar: string; entry: TarEntry };

/** With no format, qemu-img probes the carved range (to learn it); with one, it reads it as that format. */
function qemuSource(src: DiskSource, format?: string): string {
  if (src.kind === 'file') return src.file;
  // The raw driver's offset/size carve the VMDK out of the OVA, so nothing is copied before conversion.
  const carved = { driver: 'raw', offset: src.entry.offset, size: src.entry.size, file: { driver: 'file', filename: src.tar } };
  return `json:${JSON.stringify(format ? { driver: format, file: carved } : { file: carved })}`;
}

/** Reads `name.mf` lines like "SHA256(disk1.vmdk)= abc…" or "SHA1(...)= …". */
export function parseManifestFile(text: string): Map<string, { algo: 'sha256' | 'sha1'; hex: string }> {
  const out = new Map<string, { algo: 'sha256' | 'sha1'; hex: string }>();
  for (const line of text.split(/\r?\n/)) {
    const m = /^(SHA256|SHA1)\s*\(([^)]+)\)\s*=\s*([0-9a-fA-F]+)\s*$/.exec(line.trim());
    if (m) out.set(m[2]!, { algo: m[1]!.toLowerCase() as 'sha256' | 'sha1', hex: m[3]!.toLowerCase() });
  }
  return out;
}

export async function importAppliance(core: SnapshotCore, file: string, opts: ApplianceImportOptions = {}): Promise<{ info: VmInfo; warnings: string[] }> {
  const progress = opts.onProgress ?? (() => {});
  const src = path.resolve(file);
  if (!existsSync(src)) throw new VmdeskError(ErrorCode.invalid, `${src} does not exist`);
  let ovfText: string;
  let locate: (href: string) => Promise<DiskSource>;
  let checkMf: () => Promise<void> = async () => {};
  if (/\.ova$/i.test(src)) {
    const entries = await readTarIndex(src);
    const byName = new Map(entries.map((e) => [e.name.replace(/^\.\//, ''), e]));
    const ovfEntry = entries.find((e) => /\.ovf$/i.test(e.name));
    if (!ovfEntry) throw new VmdeskError(ErrorCode.invalid, `${src} has no .ovf descriptor`);
    ovfText = (await readEntry(src, ovfEntry, 16 * 1024 * 1024)).toString('utf8');
    locate = async (href) => {
      const e = byName.get(href);
      if (!e) throw new VmdeskError(ErrorCode.invalid, `the OVA lacks ${href}`);
      return { kind: 'tar', tar: src, entry: e };
    };
    const mfEntry = entries.find((e) => /\.mf$/i.test(e.name));
    if (mfEntry) {
      checkMf = async () => {
        const sums = parseManifestFile((await readEntry(src, mfEntry)).toString('utf8'));
        const total = [...sums.keys()].reduce((a, n) => a + (byName.get(n)?.size ?? 0), 0) || 1;
        let done = 0;
        for (const [name, want] of sums) {
          const e = byName.get(name);
          if (!e) throw new VmdeskError(ErrorCode.invalid, `the OVA manifest lists ${name}, which is missing`);
          const got = await hashEntry(src, e, want.algo, (d) => progress('verifying checksums', (0.3 * (done + d)) / total));
          if (got !== want.hex) throw new VmdeskError(ErrorCode.invalid, `the OVA is damaged: checksum of ${name} does not match its manifest`);
          done += e.size;
        }
      };
    }
  } else if (/\.ovf$/i.test(src)) {
    ovfText = await fs.readFile(src, 'utf8');
    const dir = path.dirname(src);
    locate = async (href) => {
      const p = path.resolve(dir, href);
      if (path.dirname(p) !== dir && !p.startsWith(dir + path.sep)) throw new VmdeskError(ErrorCode.invalid, `the OVF refers to ${href}, outside its folder`);
      if (!existsSync(p)) throw new VmdeskError(ErrorCode.invalid, `the OVF's disk ${href} does not exist next to it`);
      return { kind: 'file', file: p };
    };
  } else {
    throw new VmdeskError(ErrorCode.invalid, `${src}: expected an .ova or .ovf file`);
  }

  const app = parseOvf(ovfText);
  const name = await checkNewVmName(core, opts.name ?? app.name);
  const sources: { d: OvfDisk; src: DiskSource; format: string }[] = [];
  for (const d of app.disks) {
    const s = await locate(d.href);
    // Detect the format from content (never trust the extension); only image formats qemu-img reads are allowed.
    const probe = qemuSource(s);
    const info = await img.imgInfo(probe).catch((e: Error) => {
      throw new VmdeskError(ErrorCode.invalid, `disk ${d.href} cannot be read: ${e.message}`);
    });
    const format = s.kind === 'tar' ? detectInnerFormat(info.format, d.href) : info.format;
    if (!['vmdk', 'qcow2', 'vdi', 'vhdx', 'raw', 'vpc'].includes(format)) throw new VmdeskError(ErrorCode.invalid, `disk ${d.href} has unsupported format ${format}`);
    sources.push({ d, src: s, format });
  }
  await checkMf();

  const info = await createVmBundle(core, name, async (staging, id) => {
    await fs.mkdir(path.join(staging, 'disks'), { recursive: true });
    const disks: Disk[] = [];
    for (const [i, s] of sources.entries()) {
      const diskId = `disk${i}`;
      const rel = `disks/${diskId}.qcow2`;
      await img.convert(qemuSource(s.src, s.format), path.join(staging, rel), {
        srcFormat: s.src.kind === 'file' ? s.format : undefined,
        dstFormat: 'qcow2',
        onProgress: (f) => progress(`converting disk ${s.d.href}`, 0.3 + (0.7 * (i + f)) / sources.length),
      });
      disks.push({ id: diskId, path: rel, format: 'qcow2', owned: true, readOnly: false });
    }
    const network: NetAdapter[] = Array.from({ length: Math.max(app.nics, 0) }, () => ({ mode: 'nat' as const, forwards: [] }));
    return newConfig(id, name, { cpus: app.cpus, memoryMiB: app.memoryMiB, osType: app.osType, firmware: app.firmware, disks, network: network.length ? network : [{ mode: 'none', forwards: [] }] });
  });
  progress('done', 1);
  return { info, warnings: app.warnings };
}

/** Inside an OVA the probe sees the carved range; qemu-img reports the real format (vmdk) or raw for unknown data. */
function detectInnerFormat(probed: string, href: string): string {
  if (probed !== 'raw') return probed;
  if (/\.vmdk$/i.test(href)) throw new VmdeskError(ErrorCode.invalid, `${href} is named .vmdk but is not a VMDK image`);
  return 'raw';
}

function newConfig(id: string, name: string, p: Pick<VmConfig, 'cpus' | 'memoryMiB' | 'osType' | 'firmware' | 'disks' | 'network'>): VmConfig {
  const now = new Date().toISOString();
  return { schemaVersion: VM_SCHEMA_VERSION, id, name, engine: 'qemu', accel: 'auto', ...p, createdAt: now, modifiedAt: now };
}

export interface DiskImportOptions {
  name?: string;
  cpus?: number;
  memoryMiB?: number;
  onProgress?: ProgressFn;
}

const DISK_EXTENSIONS: Record<string, string | undefined> = { '.vdi': 'vdi', '.vmdk': 'vmdk', '.vhdx': 'vhdx', '.vhd': 'vpc', '.qcow2': 'qcow2', '.img': undefined, '.raw': 'raw' };

/** A bare disk image (.vdi, .vmdk, .vhdx, .vhd, .qcow2, .img/.raw) becomes a new stopped VM with a qcow2 copy of it. */
export async function importDiskImage(core: SnapshotCore, file: string, opts: DiskImportOptions = {}): Promise<VmInfo> {
  const src = path.resolve(file);
  if (!existsSync(src)) throw new VmdeskError(ErrorCode.invalid, `${src} does not exist`);
  const ext = path.extname(src).toLowerCase();
  if (!(ext in DISK_EXTENSIONS)) throw new VmdeskError(ErrorCode.invalid, `${src}: unknown disk image type (expected .vdi, .vmdk, .vhdx, .vhd, .qcow2, .img or .raw)`);
  const info = await img.imgInfo(src);
  const expected = DISK_EXTENSIONS[ext];
  // A .img is whatever qemu-img finds; other extensions must agree with the content.
  if (expected && info.format !== expected) throw new VmdeskError(ErrorCode.invalid, `${src} is named ${ext} but qemu-img reads it as ${info.format}`);
  const name = await checkNewVmName(core, opts.name ?? sanitizeName(path.basename(src, ext)));
  const cpus = opts.cpus ?? 1;
  const memoryMiB = opts.memoryMiB ?? 1024;
  return createVmBundle(core, name, async (staging, id) => {
    await fs.mkdir(path.join(staging, 'disks'), { recursive: true });
    await img.convert(src, path.join(staging, 'disks', 'disk0.qcow2'), { srcFormat: info.format, dstFormat: 'qcow2', onProgress: (f) => opts.onProgress?.('converting disk', f) });
    return newConfig(id, name, { cpus, memoryMiB, osType: 'other', firmware: 'bios', disks: [{ id: 'disk0', path: 'disks/disk0.qcow2', format: 'qcow2', owned: true, readOnly: false }], network: [{ mode: 'nat', forwards: [] }] });
  });
}

/** Picks the importer from the file name: .vmdesk archive, .ova/.ovf appliance, or a bare disk image. */
export function importKind(file: string): 'archive' | 'appliance' | 'disk' {
  const ext = path.extname(file).toLowerCase();
  if (ext === '.vmdesk' || ext === '.tar') return 'archive';
  if (ext === '.ova' || ext === '.ovf') return 'appliance';
  return 'disk';
}
