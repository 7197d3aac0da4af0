// Reading a VM's files for clones, exports and disk conversion, and naming the files those write while
// they run. Every read states the format and switches backing files off (an attached file passes the image
// gate, a linked clone reads only its recorded base); every partial file carries its writer's pid and start
// time, so what a crash leaves can be told apart from work in progress and swept.
import path from 'node:path';
import type { Disk } from '../../api/schema.js';
import { VmdeskError, ErrorCode } from '../../api/errors.js';
import { containedPath, isInside } from '../../platform/contain.js';
import { inspectImage } from '../../platform/image-inspect.js';
import { processStartTime } from '../../platform/lock.js';
import { pidAlive } from '../../platform/process.js';
import { admitImage, blockSpec, qemuImgSource } from '../images/gate.js';
import { uefiVarsFile } from './vm.js';

function refuse(message: string, details: string[] = []): VmdeskError {
  return new VmdeskError(ErrorCode.invalid, message, details);
}

// ---- files being written: named after their writer, so a crash leaves nothing that lives forever ------

const SELF_START = processStartTime(process.pid) ?? '';
const PARTIAL = /\.partial-(\d{1,10})-(\d*)$/;

/** "<pid>-<start time>" of this process: put into the names of files it is still writing. */
export function writerTag(): string {
  return `${process.pid}-${SELF_START}`;
}

/** Where to write `file` before renaming it into place: the writer's pid and start time are in the name. */
export function partialPath(file: string): string {
  return `${file}.partial-${writerTag()}`;
}

/** True for a partialPath() name whose writer has died (a reused pid is told apart by its start time). */
export function isStalePartial(name: string): boolean {
  const m = PARTIAL.exec(name);
  if (!m) return false;
  return !writerAlive(Number(m[1]), m[2]!);
}

export function writerAlive(pid: number, start: string): boolean {
  if (!pidAlive(pid)) return false;
  const now = processStartTime(pid);
  return !start || now === undefined || now === start;
}

// ---- reading a VM's disks ---------------------------------------------------------------------------

/**
 * The qemu-img source for one of a VM's disks, as a `json:` spec that names the format and switches
 * backing files off, so qemu-img never probes a format nor opens a file an image names:
 * - an attached (unowned) file is not VMDesk's: it passes the image gate with its stated format first;
 * - an owned disk must be a relative path inside the bundle (containedPath) and passes the gate too (an
 *   older VMDesk imported images without it);
 * - a linked clone's overlay reads through the base recorded in its Disk (`base`), never through the
 *   backing file its own header names; the base itself passes the gate and must lie in the library.
 */
export async function vmDiskSource(bundleDir: string, d: Disk, opts: { what: string; vmsDir?: string }): Promise<string> {
  if (!d.owned) {
    if (!path.isAbsolute(d.path)) throw refuse(`${opts.what} is attached by the relative path "${d.path}"; attached disks are named by absolute paths`);
    return qemuImgSource(await admitImage({ path: d.path }, { what: opts.what, stated: d.format }));
  }
  const file = await containedPath(bundleDir, d.path);
  if (!d.base) return qemuImgSource(await admitImage({ path: file }, { what: opts.what, stated: d.format, within: bundleDir }));
  if (d.format !== 'qcow2') throw refuse(`${opts.what} has a base image but is ${d.format}; only qcow2 overlays have one`);
  if (opts.vmsDir && !isInside(opts.vmsDir, d.base)) throw refuse(`the base image of ${opts.what} (${d.base}) lies outside the VM library; refused`);
  const insp = await inspectImage({ path: file }).catch((e: Error) => {
    throw refuse(`${opts.what} cannot be read: ${e.message}`);
  });
  // The overlay's header names its base (qemu-img create -b wrote it): that reference is replaced by the
  // recorded base below. Any other reference (an external data file) is refused like anywhere else.
  const other = insp.references.filter((r) => !r.startsWith('backing file'));
  if (insp.format !== 'qcow2' || other.length || insp.problems.length) {
    throw refuse(`${opts.what} cannot be used: ${insp.format !== 'qcow2' ? `it is ${insp.format}, not qcow2` : [...other, ...insp.problems].join('; ')}`, [...other, ...insp.problems]);
  }
  const base = await admitImage({ path: d.base }, { what: `the base image of ${opts.what}`, stated: 'qcow2', allow: ['qcow2'] });
  return `json:${JSON.stringify({ ...blockSpec({ path: file, format: 'qcow2' }), backing: blockSpec(base) })}`;
}

/** The UEFI variable store as a Disk, so it is read through vmDiskSource like any other owned file. */
export function uefiVarsDisk(): Disk {
  return { id: 'uefi-vars', path: path.basename(uefiVarsFile('/')), format: 'qcow2', owned: true, readOnly: false };
}
