// Finding host programs (QEMU, qemu-img, passt) the way a shell would, with VMDESK_* overrides for tests.
import { accessSync, constants } from 'node:fs';
import { delimiter, dirname, join } from 'node:path';
import { ErrorCode, VmdeskError } from '../api/errors.js';

export function isExecutable(path: string): boolean {
  try {
    accessSync(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** Looks a program up on PATH like a shell would; undefined when absent. */
export function findOnPath(name: string, pathVar = process.env.PATH ?? ''): string | undefined {
  if (name.includes('/')) return isExecutable(name) ? name : undefined;
  for (const dir of pathVar.split(delimiter)) {
    if (!dir) continue;
    const candidate = join(dir, name);
    if (isExecutable(candidate)) return candidate;
  }
  // macOS Homebrew installs outside the default PATH of GUI apps.
  for (const dir of ['/opt/homebrew/bin', '/usr/local/bin']) {
    const candidate = join(dir, name);
    if (process.platform === 'darwin' && isExecutable(candidate)) return candidate;
  }
  return undefined;
}

/** The qemu-system binary to use: $VMDESK_QEMU when set (tests, custom builds), else PATH. */
export function qemuSystemPath(): string | undefined {
  const override = process.env.VMDESK_QEMU;
  if (override) return findOnPath(override);
  return findOnPath('qemu-system-x86_64');
}

/** qemu-img: $VMDESK_QEMU_IMG, else the one next to the chosen qemu-system binary, else PATH. */
export function qemuImgPath(): string {
  const override = process.env.VMDESK_QEMU_IMG;
  if (override) {
    const found = findOnPath(override);
    if (found) return found;
  }
  const system = qemuSystemPath();
  const sibling = system ? findOnPath(join(dirname(system), 'qemu-img')) : undefined;
  const found = sibling ?? findOnPath('qemu-img');
  if (!found) throw new VmdeskError(ErrorCode.host, 'qemu-img is not installed; install it with: sudo apt install qemu-utils');
  return found;
}

