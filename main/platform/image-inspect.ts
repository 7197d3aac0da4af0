// Reads a disk image's own headers to learn its format and what it would make QEMU open besides itself
// (backing files, external data files, VMDK extents, parent disks). Pure byte reading, bounded: nothing here
// runs qemu-img, follows a reference or reads more than a few hundred KiB, however hostile the file.
// Modelled on OpenStack's format inspector: the format is decided from the bytes, never guessed by QEMU.
import { promises as fs } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';

/** Formats VMDesk recognises. `vpc` is QEMU's name for VHD; `iso` is an ISO 9660 image (raw to QEMU). */
export type InspectedFormat = 'raw' | 'qcow2' | 'vmdk' | 'vdi' | 'vhdx' | 'vpc' | 'iso';

/** Formats QEMU knows but VMDesk refuses outright (most carry references to other files or are obsolete). */
export type ForeignFormat = 'qcow' | 'qed' | 'vmdk-descriptor' | 'vmdk-cowd' | 'luks' | 'parallels' | 'bochs' | 'cloop' | 'dmg';

/** A file, or a byte range inside one (a disk inside an OVA, read in place). */
export interface ImageRange {
  path: string;
  offset?: number;
  length?: number;
}

export interface Inspection {
  /** What the bytes are, or a foreign format VMDesk refuses. */
  format: InspectedFormat | ForeignFormat;
  /** Size the guest sees, in bytes (0 when unknown: a foreign format). */
  virtualSize: number;
  /** Bytes of the file (or range) itself. */
  fileSize: number;
  /** vmdk createType, vpc/vdi fixed|dynamic|differencing, qcow2 version. */
  subformat?: string;
  /** References to other files or devices: any one makes the image unsafe to open. */
  references: string[];
  /** Other reasons the image cannot be used safely (corrupt flag, encryption, unknown features). */
  problems: string[];
}

/** Headers live in the first 64 KiB for every format but VHDX (whose region tables sit at 192/256 KiB). */
const HEAD_BYTES = 64 * 1024;
/** An embedded VMDK descriptor or a VHDX metadata table larger than this is not something VMware or Hyper-V make. */
const MAX_TEXT_BYTES = 64 * 1024;

class Reader {
  constructor(
    private readonly fh: FileHandle,
    private readonly base: number,
    readonly size: number,
  ) {}

  /** Up to `len` bytes at `at` within the range (fewer at its end; never outside it). */
  async read(at: number, len: number): Promise<Buffer> {
    if (!Number.isSafeInteger(at) || at < 0 || at >= this.size || len <= 0) return Buffer.alloc(0);
    const n = Math.min(len, this.size - at, 1024 * 1024);
    const buf = Buffer.alloc(n);
    const { bytesRead } = await this.fh.read(buf, 0, n, this.base + at);
    return buf.subarray(0, bytesRead);
  }
}

function u64be(b: Buffer, at: number): number {
  if (b.length < at + 8) return 0;
  const v = b.readBigUInt64BE(at);
  return v > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(v);
}

function u64le(b: Buffer, at: number): number {
  if (b.length < at + 8) return 0;
  const v = b.readBigUInt64LE(at);
  return v > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(v);
}

function u32be(b: Buffer, at: number): number {
  return b.length >= at + 4 ? b.readUInt32BE(at) : 0;
}

function u32le(b: Buffer, at: number): number {
  return b.length >= at + 4 ? b.readUInt32LE(at) : 0;
}

function ascii(b: Buffer, at: number, len: number): string {
  return b.subarray(at, at + len).toString('latin1');
}

/** Printable, bounded rendering of a name found inside an image, for error messages. */
function shown(s: string): string {
  const clean = s.replace(/[^\x20-\x7e]/g, '?');
  return clean.length > 120 ? `${clean.slice(0, 117)}...` : clean;
}

// ---- qcow2 ---------------------------------------------------------------------------------------------

const QCOW2_EXT_END = 0;
const QCOW2_EXT_BACKING_FORMAT = 0xe2792aca;
const QCOW2_EXT_DATA_FILE = 0x44415441;
const QCOW2_EXT_CRYPTO = 0x0537be77;
/** Incompatible feature bits QEMU 7.2 knows: dirty, corrupt, external data file, compression type, extended L2. */
const QCOW2_KNOWN_INCOMPATIBLE = 0b11111n;

async function inspectQcow(r: Reader, head: Buffer): Promise<Inspection> {
  const version = u32be(head, 4);
  const out: Inspection = { format: 'qcow2', virtualSize: u64be(head, 24), fileSize: r.size, subformat: `v${version}`, references: [], problems: [] };
  if (version === 1) return { ...out, format: 'qcow', virtualSize: 0, problems: ['qcow version 1 is obsolete and may refer to a backing file'] };
  if (version !== 2 && version !== 3) {
    out.problems.push(`unknown qcow2 version ${version}`);
    return out;
  }
  const backingOffset = u64be(head, 8);
  const backingSize = u32be(head, 16);
  if (backingOffset !== 0) {
    const name = (await r.read(backingOffset, Math.min(backingSize, 1023))).toString('utf8');
    out.references.push(`backing file "${shown(name)}"`);
  }
  if (u32be(head, 32) !== 0) out.problems.push('it is encrypted');
  let extAt = 72;
  if (version === 3) {
    const incompatible = head.length >= 80 ? head.readBigUInt64BE(72) : 0n;
    if (incompatible & 0b10n) out.problems.push('it is marked corrupt (repair it with qemu-img check -r all)');
    if (incompatible & 0b100n) out.references.push('an external data file');
    if (incompatible & ~QCOW2_KNOWN_INCOMPATIBLE) out.problems.push(`it uses unknown incompatible features (0x${incompatible.toString(16)})`);
    extAt = u32be(head, 100);
    if (extAt < 104 || extAt > 4096) {
      out.problems.push(`its header length ${extAt} is invalid`);
      return out;
    }
  }
  // Header extensions: a type/length list ending with type 0, all inside the first cluster.
  const exts = await r.read(0, 64 * 1024);
  for (let n = 0; n < 1024 && extAt + 8 <= exts.length; n++) {
    const type = u32be(exts, extAt);
    const len = u32be(exts, extAt + 4);
    if (type === QCOW2_EXT_END) break;
    if (extAt + 8 + len > exts.length) {
      out.problems.push('its header extensions run past the first 64 KiB');
      break;
    }
    if (type === QCOW2_EXT_DATA_FILE) out.references.push(`external data file "${shown(ascii(exts, extAt + 8, len))}"`);
    else if (type === QCOW2_EXT_CRYPTO) out.problems.push('it is encrypted (LUKS)');
    else if (type === QCOW2_EXT_BACKING_FORMAT && backingOffset === 0) out.problems.push('it names a backing format without a backing file');
    extAt += 8 + Math.ceil(len / 8) * 8;
  }
  return out;
}

// ---- vmdk ----------------------------------------------------------------------------------------------

interface VmdkDescriptor {
  createType?: string;
  parentCid?: string;
  parentHint?: string;
  extents: { access: string; sectors: number; type: string; file?: string }[];
}

export function parseVmdkDescriptor(text: string): VmdkDescriptor {
  const d: VmdkDescriptor = { extents: [] };
  for (const raw of text.split(/\r?\n/).slice(0, 4096)) {
    const line = raw.trim();
    if (!line || line.startsWith('#')) continue;
    const kv = /^([A-Za-z][A-Za-z0-9_.]*)\s*=\s*"?([^"]*)"?$/.exec(line);
    if (kv) {
      const key = kv[1]!.toLowerCase();
      if (key === 'createtype') d.createType = kv[2];
      else if (key === 'parentcid') d.parentCid = kv[2]!.toLowerCase();
      else if (key === 'parentfilenamehint') d.parentHint = kv[2];
      continue;
    }
    const ext = /^(RW|RDONLY|NOACCESS)\s+(\d+)\s+(\w+)(?:\s+"([^"]*)")?/.exec(line);
    if (ext) d.extents.push({ access: ext[1]!, sectors: Number(ext[2]), type: ext[3]!.toUpperCase(), file: ext[4] });
  }
  return d;
}

async function inspectVmdkSparse(r: Reader, head: Buffer): Promise<Inspection> {
  const capacity = u64le(head, 12);
  const out: Inspection = { format: 'vmdk', virtualSize: capacity * 512, fileSize: r.size, references: [], problems: [] };
  if (capacity > Number.MAX_SAFE_INTEGER / 512) out.virtualSize = Number.MAX_SAFE_INTEGER;
  const descOffset = u64le(head, 28) * 512;
  const descSize = Math.min(u64le(head, 36) * 512, MAX_TEXT_BYTES);
  if (descOffset === 0 || descSize === 0) {
    out.subformat = 'monolithicSparse';
    return out;
  }
  const text = (await r.read(descOffset, descSize)).toString('latin1').replace(/\0.*$/s, '');
  const d = parseVmdkDescriptor(text);
  out.subformat = d.createType ?? 'monolithicSparse';
  if (!['monolithicSparse', 'streamOptimized'].includes(out.subformat)) out.problems.push(`its type "${shown(out.subformat)}" spans several files`);
  if (d.parentHint) out.references.push(`parent disk "${shown(d.parentHint)}"`);
  else if (d.parentCid && d.parentCid !== 'ffffffff') out.references.push('a parent disk');
  if (d.extents.length > 1 || d.extents.some((e) => e.type !== 'SPARSE')) {
    for (const e of d.extents) out.references.push(`extent "${shown(e.file ?? '?')}" (${e.type})`);
  }
  return out;
}

async function inspectVmdkDescriptor(r: Reader, head: Buffer): Promise<Inspection> {
  const text = (await r.read(0, MAX_TEXT_BYTES)).toString('latin1');
  const d = parseVmdkDescriptor(text);
  const out: Inspection = { format: 'vmdk-descriptor', virtualSize: d.extents.reduce((a, e) => a + e.sectors * 512, 0), fileSize: r.size, subformat: d.createType, references: [], problems: [] };
  for (const e of d.extents) out.references.push(`extent "${shown(e.file ?? '?')}" (${e.type})`);
  if (d.parentHint) out.references.push(`parent disk "${shown(d.parentHint)}"`);
  if (!out.references.length) out.references.push('other files (a VMDK descriptor holds no data of its own)');
  void head;
  return out;
}

// ---- vdi -----------------------------------------------------------------------------------------------

const VDI_SIGNATURE = 0xbeda107f;

function inspectVdi(r: Reader, head: Buffer): Inspection {
  const type = u32le(head, 0x4c);
  const out: Inspection = { format: 'vdi', virtualSize: u64le(head, 0x170), fileSize: r.size, references: [], problems: [] };
  out.subformat = type === 1 ? 'dynamic' : type === 2 ? 'fixed' : type === 4 ? 'differencing' : `type ${type}`;
  if (type === 4) out.references.push('a parent disk (VirtualBox differencing image)');
  else if (type !== 1 && type !== 2) out.problems.push(`VDI image type ${type} is not supported`);
  return out;
}

// ---- vhdx ----------------------------------------------------------------------------------------------

/** GUID text as stored on disk (first three fields little-endian). */
function guidBytes(g: string): Buffer {
  const h = g.replace(/-/g, '');
  const b = Buffer.from(h, 'hex');
  return Buffer.concat([Buffer.from(b.subarray(0, 4)).reverse(), Buffer.from(b.subarray(4, 6)).reverse(), Buffer.from(b.subarray(6, 8)).reverse(), b.subarray(8)]);
}

const VHDX_METADATA_REGION = guidBytes('8B7CA206-4790-4B9A-B8FE-575F050F886E');
const VHDX_FILE_PARAMETERS = guidBytes('CAA16737-FA36-4D43-B3B6-33F0AA44E76B');
const VHDX_VIRTUAL_DISK_SIZE = guidBytes('2FA54224-CD1B-4876-B211-5DBED83BF4B8');
const VHDX_PARENT_LOCATOR = guidBytes('A8D35F2D-B30B-454D-ABF7-D3D84834AB0C');

async function inspectVhdx(r: Reader): Promise<Inspection> {
  const out: Inspection = { format: 'vhdx', virtualSize: 0, fileSize: r.size, references: [], problems: [] };
  let metadata: { offset: number; length: number } | undefined;
  for (const at of [192 * 1024, 256 * 1024]) {
    const t = await r.read(at, 64 * 1024);
    if (ascii(t, 0, 4) !== 'regi') continue;
    const count = Math.min(u32le(t, 8), 2047);
    for (let i = 0; i < count; i++) {
      const e = 16 + i * 32;
      if (e + 32 > t.length) break;
      if (t.subarray(e, e + 16).equals(VHDX_METADATA_REGION)) metadata = { offset: u64le(t, e + 16), length: u32le(t, e + 24) };
    }
    if (metadata) break;
  }
  if (!metadata) {
    out.problems.push('its region table is missing or damaged');
    return out;
  }
  const m = await r.read(metadata.offset, Math.min(metadata.length, MAX_TEXT_BYTES));
  if (ascii(m, 0, 8) !== 'metadata') {
    out.problems.push('its metadata region is damaged');
    return out;
  }
  const count = Math.min(m.readUInt16LE(10), 2047);
  for (let i = 0; i < count; i++) {
    const e = 32 + i * 32;
    if (e + 32 > m.length) break;
    const id = m.subarray(e, e + 16);
    // Item offsets are relative to the region (the values usually sit 64 KiB in, after the table).
    const off = u32le(m, e + 16);
    if (off >= metadata.length) continue;
    if (id.equals(VHDX_VIRTUAL_DISK_SIZE)) out.virtualSize = u64le(await r.read(metadata.offset + off, 8), 0);
    else if (id.equals(VHDX_FILE_PARAMETERS)) {
      if (u32le(await r.read(metadata.offset + off, 8), 4) & 0b10) out.references.push('a parent disk (VHDX differencing image)');
    } else if (id.equals(VHDX_PARENT_LOCATOR)) out.references.push('a parent locator');
  }
  if (!out.virtualSize) out.problems.push('its virtual disk size is missing');
  return out;
}

// ---- vpc (VHD) -----------------------------------------------------------------------------------------

function vhdFooter(f: Buffer): { type: number; size: number } | undefined {
  if (ascii(f, 0, 8) !== 'conectix') return undefined;
  return { type: u32be(f, 60), size: u64be(f, 48) };
}

function inspectVhd(r: Reader, footer: { type: number; size: number }): Inspection {
  const out: Inspection = { format: 'vpc', virtualSize: footer.size, fileSize: r.size, references: [], problems: [] };
  out.subformat = footer.type === 2 ? 'fixed' : footer.type === 3 ? 'dynamic' : footer.type === 4 ? 'differencing' : `type ${footer.type}`;
  if (footer.type === 4) out.references.push('a parent disk (VHD differencing image)');
  else if (footer.type !== 2 && footer.type !== 3) out.problems.push(`VHD disk type ${footer.type} is not supported`);
  return out;
}

// ---- entry point ---------------------------------------------------------------------------------------

/** Inspects an open range; see inspectImage. */
async function inspectReader(r: Reader): Promise<Inspection> {
  const head = await r.read(0, HEAD_BYTES);
  const foreign = (format: ForeignFormat, why: string): Inspection => ({ format, virtualSize: 0, fileSize: r.size, references: [], problems: [why] });
  const magic4 = ascii(head, 0, 4);
  if (magic4 === 'QFI\xfb') return inspectQcow(r, head);
  if (magic4 === 'KDMV') return inspectVmdkSparse(r, head);
  if (magic4 === 'COWD') return foreign('vmdk-cowd', 'ESX "COWD" sparse VMDKs are not supported');
  if (magic4 === 'QED\0') return foreign('qed', 'QED images are not supported');
  if (magic4 === 'LUKS') return foreign('luks', 'LUKS-encrypted images are not supported');
  if (ascii(head, 0, 8) === 'vhdxfile') return inspectVhdx(r);
  if (u32le(head, 0x40) === VDI_SIGNATURE) return inspectVdi(r, head);
  if (/^# Disk DescriptorFile/i.test(ascii(head, 0, 64).trimStart())) return inspectVmdkDescriptor(r, head);
  if (ascii(head, 0, 16) === 'WithoutFreeSpace' || ascii(head, 0, 16) === 'WithouFreSpacExt') return foreign('parallels', 'Parallels images are not supported');
  if (ascii(head, 0, 32).startsWith('Bochs Virtual HD Image')) return foreign('bochs', 'Bochs images are not supported');
  if (ascii(head, 0, 128).includes('#!/bin/sh') && ascii(head, 0, 256).includes('cloop')) return foreign('cloop', 'cloop images are not supported');
  const start = vhdFooter(head);
  if (start) return inspectVhd(r, start);
  const tail = r.size >= 512 ? await r.read(r.size - 512, 512) : Buffer.alloc(0);
  const end = vhdFooter(tail);
  if (end) return inspectVhd(r, end);
  if (ascii(tail, 0, 4) === 'koly') return foreign('dmg', 'Apple DMG images are not supported');
  const cd = await r.read(0x8001, 5);
  const format: InspectedFormat = cd.toString('latin1') === 'CD001' ? 'iso' : 'raw';
  return { format, virtualSize: r.size, fileSize: r.size, references: [], problems: [] };
}

/**
 * What an image file (or a byte range inside one) is, from its own bytes. Throws only for I/O errors
 * (the file cannot be opened or read); a hostile or damaged header comes back as `problems`/`references`.
 */
export async function inspectImage(src: ImageRange): Promise<Inspection> {
  const fh = await fs.open(src.path, 'r');
  try {
    const st = await fh.stat();
    const offset = src.offset ?? 0;
    const length = src.length ?? Math.max(0, st.size - offset);
    if (offset < 0 || length < 0 || offset + length > st.size) throw Object.assign(new Error(`byte range ${offset}+${length} lies outside ${src.path}`), { code: 'ERANGE' });
    return await inspectReader(new Reader(fh, offset, length));
  } finally {
    await fh.close();
  }
}
