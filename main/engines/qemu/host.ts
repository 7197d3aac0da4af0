// Finds the QEMU binaries on this host and learns what they support (version, -sandbox), once per binary.
import { execFile } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import { promisify } from 'node:util';
import { ErrorCode, VmdeskError } from '../../api/errors.js';

const run = promisify(execFile);

export const QEMU_MISSING_MESSAGE =
  'QEMU is not installed (qemu-system-x86_64 not found on PATH); install it with: sudo apt install qemu-system-x86 qemu-utils';

export interface QemuCapabilities {
  path: string;
  version: string;
  /** The binary accepts -sandbox (built with seccomp). */
  sandbox: boolean;
  /** Accelerators compiled into the binary (-accel help). */
  accelerators: string[];
}

export { findOnPath, qemuSystemPath, qemuImgPath } from '../../platform/host-tools.js';
import { qemuSystemPath } from '../../platform/host-tools.js';
import { firmwareCandidates, type FirmwarePaths } from '../../platform/resources.js';

export function requireQemuSystem(): string {
  const path = qemuSystemPath();
  if (!path) {
    const override = process.env.VMDESK_QEMU;
    throw new VmdeskError(
      ErrorCode.host,
      override ? `QEMU binary from VMDESK_QEMU (${override}) not found or not executable` : QEMU_MISSING_MESSAGE,
    );
  }
  return path;
}

/** -sandbox is listed in -help only when QEMU was built with seccomp. */
export function parseSandboxSupport(helpText: string): boolean {
  return /^-sandbox\s/m.test(helpText);
}

export function parseVersion(versionText: string): string {
  return /version\s+(\d+\.\d+(?:\.\d+)?)/i.exec(versionText)?.[1] ?? 'unknown';
}

export function parseAccelerators(text: string): string[] {
  return text
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => /^[a-z]+$/.test(l));
}

const capabilityCache = new Map<string, Promise<QemuCapabilities>>();

async function probe(path: string): Promise<QemuCapabilities> {
  const opts = { timeout: 15_000, env: { ...process.env, LC_ALL: 'C' } };
  const [version, help, accel] = await Promise.all([
    run(path, ['-version'], opts),
    run(path, ['-help'], opts),
    run(path, ['-accel', 'help'], opts).catch(() => ({ stdout: '' })),
  ]);
  return {
    path,
    version: parseVersion(version.stdout),
    sandbox: parseSandboxSupport(help.stdout),
    accelerators: parseAccelerators(accel.stdout),
  };
}

/** Capabilities of the qemu-system binary, probed once per path and cached. Throws EHOST when missing. */
export function qemuCapabilities(path = requireQemuSystem()): Promise<QemuCapabilities> {
  let cached = capabilityCache.get(path);
  if (!cached) {
    cached = probe(path).catch((e: unknown) => {
      capabilityCache.delete(path);
      throw new VmdeskError(ErrorCode.host, `QEMU at ${path} did not run: ${(e as Error).message}`);
    });
    capabilityCache.set(path, cached);
  }
  return cached;
}

/** For host info screens: never throws. */
export async function qemuStatus(): Promise<{ found: boolean; path?: string; version?: string; reason?: string }> {
  const path = qemuSystemPath();
  if (!path) return { found: false, reason: QEMU_MISSING_MESSAGE };
  try {
    const caps = await qemuCapabilities(path);
    return { found: true, path, version: caps.version };
  } catch (e) {
    return { found: false, path, reason: (e as Error).message };
  }
}

/** UEFI firmware of the host (Debian's ovmf package and the usual places elsewhere): resources.ts lists where. */
export type { FirmwarePaths } from '../../platform/resources.js';

export function findUefiFirmware(): FirmwarePaths | undefined {
  return firmwareCandidates(qemuSystemPath()).find((c) => isReadable(c.code) && isReadable(c.varsTemplate));
}

function isReadable(path: string): boolean {
  try {
    accessSync(path, constants.R_OK);
    return true;
  } catch {
    return false;
  }
}
