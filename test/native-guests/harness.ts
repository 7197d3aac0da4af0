// Test helpers for the native micro-VMM: builds the addon when missing, says why KVM tests must skip,
// and runs a test guest to completion collecting its serial output and exit record.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, rmdirSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { accessSync, constants } from 'node:fs';
import type { NativeAddon, NativeExit, NativeVm, NativeVmOptions } from '../../main/engines/microvm/native.js';
import { ensureTestGuest as ensureGuestJs, writeBrokenGuest as writeBrokenJs, guestDir as guestDirJs } from './build.mjs';

const here = dirname(fileURLToPath(import.meta.url));
export const repoRoot = join(here, '..', '..');
export const addonFile = join(repoRoot, 'native', 'build', 'Release', 'vmdesk_native.node');
/** The per-VM executable the micro-VM engine runs (Linux only), built by native/build.mjs with the addon. */
export const microvmExeFile = join(repoRoot, 'native', 'build', 'Release', 'vmdesk-microvm');

function nativeBuilt(): boolean {
  return existsSync(addonFile) && (process.platform !== 'linux' || existsSync(microvmExeFile));
}

export const ensureTestGuest: () => string = ensureGuestJs;
export const writeBrokenGuest: (kind: 'bad-magic' | 'old-protocol' | 'no-64bit' | 'truncated' | 'tiny' | 'huge') => string = writeBrokenJs;
export const guestDir: string = guestDirJs;

/** Builds native/ once across parallel test workers (a mkdir lock), unless it is already built. */
export function ensureAddonBuilt(): string | undefined {
  if (nativeBuilt()) return undefined;
  const lock = join(repoRoot, 'native', '.build-lock');
  for (let i = 0; i < 600; i++) {
    try {
      mkdirSync(lock);
      break;
    } catch {
      if (nativeBuilt()) return undefined;
      // A lock older than 5 minutes belongs to a dead build.
      try { if (Date.now() - statSync(lock).mtimeMs > 300_000) rmdirSync(lock); } catch { /* gone */ }
      spawnSync('sleep', ['0.5']);
    }
  }
  try {
    if (nativeBuilt()) return undefined;
    const r = spawnSync(process.execPath, [join(repoRoot, 'native', 'build.mjs'), '--quiet'], { encoding: 'utf8', env: { ...process.env, VMDESK_NATIVE_BUILD_LOCKED: '1' } });
    if (r.status !== 0) return `native addon build failed: ${(r.stderr || r.stdout).slice(-2000)}`;
    return undefined;
  } finally {
    try { rmdirSync(lock); } catch { /* ignore */ }
  }
}

/** Why KVM-backed tests cannot run here, or undefined when they can. Printed by the suites that skip. */
export function kvmSkipReason(): string | undefined {
  if (process.platform !== 'linux') return `KVM tests need Linux (this is ${process.platform})`;
  if (!existsSync('/dev/kvm')) return '/dev/kvm does not exist on this machine';
  try {
    accessSync('/dev/kvm', constants.R_OK | constants.W_OK);
  } catch {
    return 'no permission to open /dev/kvm (add the user to the kvm group)';
  }
  const buildError = ensureAddonBuilt();
  if (buildError) return buildError;
  return undefined;
}

export async function addon(): Promise<NativeAddon> {
  const { loadNative } = await import('../../main/engines/microvm/native.js');
  return loadNative();
}

export interface GuestRun {
  out: string;
  exit: NativeExit;
  vm: NativeVm;
}

/**
 * Boots a VM and resolves when it exits (or rejects after timeoutMs, killing it). onOutput sees the serial
 * output so far and the VM, to type input, pause or snapshot at the right moment.
 */
export async function runGuest(
  opts: Omit<NativeVmOptions, 'onSerial' | 'onExit'>,
  onOutput?: (out: string, vm: NativeVm) => void,
  timeoutMs = 30_000,
  onStarted?: (vm: NativeVm) => void,
): Promise<GuestRun> {
  const native = await addon();
  return new Promise<GuestRun>((resolve, reject) => {
    let out = '';
    let vm: NativeVm | undefined = undefined;
    const timer = setTimeout(() => {
      vm?.stop('killed', 'test timeout');
      reject(new Error(`guest did not exit within ${timeoutMs} ms; serial output:\n${out}`));
    }, timeoutMs);
    vm = new native.Vm({
      ...opts,
      onSerial: (b) => {
        out += b.toString('latin1');
        if (vm) onOutput?.(out, vm);
      },
      onExit: (exit) => {
        clearTimeout(timer);
        vm!.close();
        resolve({ out, exit, vm: vm! });
      },
    });
    vm.start();
    onStarted?.(vm);
  });
}

export const testGuestDir = guestDir;
