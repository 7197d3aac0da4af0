// Secure Boot firmware: OVMF built with Secure Boot and SMM (the "secboot" code image), and a variable store
// template with Microsoft's keys enrolled (PK, KEK with Microsoft's KEK CA, db with the Windows and UEFI CAs),
// copied per VM. A VM's own store (uefi-vars.qcow2) keeps its snapshots inside, so when Secure Boot is turned
// on or off the store's contents are replaced in place (qemu-io writes the template over the active layer)
// rather than the file: its snapshots stay restorable.
import { execFile } from 'node:child_process';
import { accessSync, constants, promises as fs } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { ErrorCode, VmdeskError } from '../../api/errors.js';
import { findOnPath, qemuImgPath } from '../../platform/host-tools.js';
import { SECURE_BOOT_MISSING, secureBootFirmwareCandidates } from '../../platform/resources.js';
import { EFI_GLOBAL_VARIABLE, findVariable, parseUefiVarStore, secureBootKeys, type SecureBootKeys, type UefiVariable } from '../../platform/uefi-vars.js';

const run = promisify(execFile);

export interface SecureBootFirmware {
  /** OVMF with Secure Boot and SMM (needs -machine smm=on and a secure pflash). */
  code: string;
  /** A variable store with Microsoft's keys enrolled. */
  varsTemplate: string;
}

export { SECURE_BOOT_MISSING };

function readable(p: string): boolean {
  try {
    accessSync(p, constants.R_OK);
    return true;
  } catch {
    return false;
  }
}

export function findSecureBootFirmware(env: NodeJS.ProcessEnv = process.env): SecureBootFirmware | undefined {
  return secureBootFirmwareCandidates(env).find((c) => readable(c.code) && readable(c.varsTemplate));
}

/** The variables of a qcow2 store's active layer (read through a private raw copy). */
export async function readVarsStore(varsFile: string): Promise<UefiVariable[]> {
  const tmp = path.join(path.dirname(varsFile), `.uefi-vars-read-${process.pid}-${Date.now()}.raw`);
  try {
    await run(qemuImgPath(), ['convert', '-q', '-f', 'qcow2', '-O', 'raw', varsFile, tmp], { timeout: 30_000 });
    return parseUefiVarStore(await fs.readFile(tmp));
  } finally {
    await fs.rm(tmp, { force: true });
  }
}

/** The platform key a raw template enrolls, to tell VMDesk's own enrollment from keys a user put in. */
async function templatePk(template: string): Promise<Buffer | undefined> {
  const vars = parseUefiVarStore(await fs.readFile(template));
  return findVariable(vars, EFI_GLOBAL_VARIABLE, 'PK')?.data;
}

/** qemu-io next to qemu-img (the qemu-utils package has both). */
function qemuIoPath(): string {
  const img = qemuImgPath();
  const io = findOnPath(path.join(path.dirname(img), 'qemu-io')) ?? findOnPath('qemu-io');
  if (!io) throw new VmdeskError(ErrorCode.host, 'qemu-io is not installed (it comes with qemu-img); install it with: sudo apt install qemu-utils');
  return io;
}

/** Writes a template over the store's current contents; its internal snapshots keep theirs. */
async function overwriteStore(varsFile: string, template: string): Promise<void> {
  // qemu-io's command line splits on spaces: a template path is a system path; refuse anything else.
  if (/\s/.test(template)) throw new VmdeskError(ErrorCode.host, `firmware template path ${template} contains spaces`);
  const { size } = await fs.stat(template);
  if (size <= 0 || size > 16 * 1024 * 1024) throw new VmdeskError(ErrorCode.host, `${template} is not a UEFI variable store (${size} bytes)`);
  const info = JSON.parse((await run(qemuImgPath(), ['info', '--output=json', '-f', 'qcow2', varsFile])).stdout) as { 'virtual-size': number };
  if (info['virtual-size'] !== size) throw new VmdeskError(ErrorCode.host, `the VM's UEFI variable store is ${info['virtual-size']} bytes but ${template} is ${size}: they are for different firmware builds`);
  await run(qemuIoPath(), ['-f', 'qcow2', '-c', `write -s ${template} 0 ${size}`, varsFile], { timeout: 30_000 });
}

/**
 * Makes a VM's existing store agree with its Secure Boot setting: Microsoft's keys in when it is on (the
 * store was made without Secure Boot), out when it is off (OVMF enforces enrolled keys whatever code image
 * runs). Boot entries are rebuilt by the firmware at the next boot. Returns what changed, for a warning.
 */
export async function matchVarsToSecureBoot(varsFile: string, secureBoot: boolean, templates: { secure?: string; plain: string }): Promise<string | undefined> {
  let vars: UefiVariable[];
  try {
    vars = await readVarsStore(varsFile);
  } catch (e) {
    if (e instanceof VmdeskError) throw e;
    throw new VmdeskError(ErrorCode.broken, `the VM's UEFI variable store cannot be read: ${(e as Error).message}`);
  }
  const keys: SecureBootKeys = secureBootKeys(vars);
  if (secureBoot && !keys.enforced) {
    if (!templates.secure) throw new VmdeskError(ErrorCode.host, SECURE_BOOT_MISSING);
    await overwriteStore(varsFile, templates.secure);
    return "Secure Boot was turned on: the VM's UEFI variables now hold Microsoft's keys (boot entries are made again at the next boot)";
  }
  if (!secureBoot && keys.pk) {
    // Only the keys VMDesk enrolled go: a platform key the user enrolled is theirs to remove.
    const pk = findVariable(vars, EFI_GLOBAL_VARIABLE, 'PK')?.data;
    const ours = templates.secure ? await templatePk(templates.secure).catch(() => undefined) : undefined;
    if (!pk || !ours || !pk.equals(ours)) {
      return keys.enforced ? 'Secure Boot is off in the settings, but keys enrolled in the VM\'s firmware (not Microsoft\'s defaults) still enforce it; remove them in the firmware setup' : undefined;
    }
    await overwriteStore(varsFile, templates.plain);
    return "Secure Boot was turned off: the VM's UEFI variables were reset without keys (boot entries are made again at the next boot)";
  }
  return undefined;
}
