// The one gate every image passes before VMDesk uses it: bare disk imports, OVA/OVF disks, .vmdesk archive
// disks, --attach / disk attach, ISOs and clone sources. The format is decided here from the image's own bytes
// and the format the user (or the file's name) states; QEMU and qemu-img are then always told that format,
// with backing files switched off, so nothing they open can reach another file on the host.
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { LIMITS } from '../../api/schema.js';
import { ErrorCode, VmdeskError } from '../../api/errors.js';
import { inspectImage, type ImageRange, type Inspection } from '../../platform/image-inspect.js';

export type DiskImageFormat = 'qcow2' | 'raw' | 'vmdk' | 'vdi' | 'vhdx' | 'vpc';
export const DISK_IMAGE_FORMATS: readonly DiskImageFormat[] = ['qcow2', 'raw', 'vmdk', 'vdi', 'vhdx', 'vpc'];

/** Formats QEMU would recognise from the first bytes: a file called raw must not look like one of them. */
const HEADER_FORMATS = new Set(['qcow2', 'qcow', 'qed', 'vmdk', 'vmdk-descriptor', 'vmdk-cowd', 'vdi', 'vhdx', 'luks', 'parallels', 'bochs', 'cloop', 'dmg']);

export interface AdmitOptions {
  /** Names the image in messages: "disk image /x/y.img", "OVF disk disk1.vmdk". */
  what: string;
  /** A disk (any allowed format) or a CD-ROM (raw bytes or an ISO 9660 image). */
  purpose?: 'disk' | 'cdrom';
  /** The format the user stated, or that the file's name implies (see formatFromName). */
  stated?: DiskImageFormat;
  /** Formats acceptable here; all disk formats by default. */
  allow?: readonly DiskImageFormat[];
  /** The image's real path (symlinks resolved) must lie inside this folder (files named by an appliance). */
  within?: string;
  maxVirtualBytes?: number;
}

export interface AdmittedImage extends ImageRange {
  /** The format to hand QEMU: never probed again. CD-ROMs are always raw. */
  format: DiskImageFormat;
  virtualSize: number;
  subformat?: string;
  inspection: Inspection;
}

/** The format a file name states (.qcow2, .vhd, …); undefined where the name says nothing (.img, none). */
export function formatFromName(file: string): DiskImageFormat | undefined {
  const ext = path.extname(file).toLowerCase();
  return ({ '.qcow2': 'qcow2', '.raw': 'raw', '.vmdk': 'vmdk', '.vdi': 'vdi', '.vhdx': 'vhdx', '.vhd': 'vpc' } as Record<string, DiskImageFormat | undefined>)[ext];
}

function refuse(message: string, details: string[] = []): VmdeskError {
  return new VmdeskError(ErrorCode.invalid, message, details);
}

/** The path must be a regular, readable file (inside `within` once symlinks are resolved, when given). */
async function checkFile(src: ImageRange, opts: AdmitOptions): Promise<void> {
  let real: string;
  try {
    real = await fs.realpath(src.path);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw refuse(code === 'ENOENT' ? `${opts.what} does not exist` : code === 'EACCES' ? `${opts.what} is not readable (permission denied)` : `${opts.what} cannot be opened (${code ?? (e as Error).message})`);
  }
  if (opts.within) {
    const root = await fs.realpath(opts.within);
    if (real !== root && !real.startsWith(root + path.sep)) throw refuse(`${opts.what} lies outside ${root} (through a symbolic link or "..") and is refused`);
  }
  const st = await fs.stat(real);
  if (!st.isFile()) throw refuse(`${opts.what} is not a regular file`);
}

/**
 * Decides what an image is and whether VMDesk may use it; throws EINVAL with the reason otherwise.
 * Refused: backing files, external data files, VMDK extents and parent disks, differencing images,
 * encryption, corrupt or unknown headers, a format that contradicts the stated one, sizes past the limit.
 */
export async function admitImage(src: ImageRange, opts: AdmitOptions): Promise<AdmittedImage> {
  await checkFile(src, opts);
  let insp: Inspection;
  try {
    insp = await inspectImage(src);
  } catch (e) {
    throw refuse(`${opts.what} cannot be read: ${(e as Error).message}`);
  }
  const purpose = opts.purpose ?? 'disk';
  if (insp.references.length) {
    throw refuse(`${opts.what} refers to other files (${insp.references.join('; ')}); VMDesk does not open files an image names. Flatten it first (qemu-img convert -O qcow2 SRC DST) from a copy you trust`, insp.references);
  }
  if (insp.problems.length) throw refuse(`${opts.what} cannot be used: ${insp.problems.join('; ')}`, insp.problems);

  let format: DiskImageFormat;
  if (purpose === 'cdrom') {
    if (insp.format !== 'raw' && insp.format !== 'iso') throw refuse(`${opts.what} is a ${insp.format} disk image, not a CD/DVD image (ISO)`);
    format = 'raw';
  } else {
    const seen: DiskImageFormat = insp.format === 'iso' ? 'raw' : (insp.format as DiskImageFormat);
    if (opts.stated && opts.stated !== seen) {
      // A raw image that merely ends in a VHD footer is still raw to QEMU (it looks only at the start).
      const rawWithFooter = opts.stated === 'raw' && seen === 'vpc' && insp.subformat === 'fixed' && !HEADER_FORMATS.has(insp.format);
      if (!rawWithFooter) {
        const said = opts.stated === 'vpc' ? 'VHD' : opts.stated;
        throw refuse(
          opts.stated === 'raw' && HEADER_FORMATS.has(insp.format)
            ? `${opts.what} is called raw but starts with a ${insp.format} header; VMDesk will not guess which it is. Rename it to its real extension or state its format`
            : `${opts.what} is called ${said} but its contents are ${seen === 'vpc' ? 'VHD' : seen}`,
        );
      }
    }
    format = opts.stated ?? seen;
  }
  const allow = opts.allow ?? DISK_IMAGE_FORMATS;
  if (!allow.includes(format)) throw refuse(`${opts.what} is ${format === 'vpc' ? 'VHD' : format}, which is not accepted here (accepted: ${allow.join(', ')})`);
  const max = opts.maxVirtualBytes ?? LIMITS.diskMaxBytes;
  if (insp.virtualSize > max) throw refuse(`${opts.what} has a virtual size of ${insp.virtualSize} bytes, more than the limit of ${max} bytes`);
  if (purpose === 'disk' && insp.virtualSize <= 0) throw refuse(`${opts.what} is empty`);
  return { path: src.path, offset: src.offset, length: src.length, format, virtualSize: insp.virtualSize, subformat: insp.subformat, inspection: insp };
}

/**
 * A qemu-img/QEMU block specification that pins the format, carves the byte range and switches backing
 * files off: `json:{"driver":"qcow2","backing":null,"file":{…}}`. Use it for every read of an admitted image.
 */
export function blockSpec(img: Pick<AdmittedImage, 'path' | 'offset' | 'length' | 'format'>): Record<string, unknown> {
  let file: Record<string, unknown> = { driver: 'file', filename: img.path };
  if (img.offset !== undefined || img.length !== undefined) file = { driver: 'raw', offset: img.offset ?? 0, ...(img.length !== undefined ? { size: img.length } : {}), file };
  return { driver: img.format, backing: null, file };
}

export function qemuImgSource(img: Pick<AdmittedImage, 'path' | 'offset' | 'length' | 'format'>): string {
  return `json:${JSON.stringify(blockSpec(img))}`;
}
