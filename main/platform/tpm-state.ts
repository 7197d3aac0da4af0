// The bundle's TPM 2.0 state: a part of the VM bundle's format (the tpm/ folder that swtpm's dir backend
// keeps), shared by the QEMU engine, which runs swtpm on it, and by the core, which clones and archives it.
import { existsSync, lstatSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { ErrorCode, VmdeskError } from '../api/errors.js';
import { writeFileAtomicSync } from './atomic.js';

/** The bundle's TPM state folder (swtpm's dir backend). */
export const TPM_STATE_DIR = 'tpm';
/** What swtpm's dir backend keeps for a TPM 2.0: permanent state, and the volatile/saved state it may write. */
export const TPM_STATE_FILES = ['tpm2-00.permall', 'tpm2-00.volatilestate', 'tpm2-00.savestate'] as const;
/** A TPM 2.0's permanent state is tens of KiB; a file past this is not one. */
export const TPM_STATE_FILE_MAX = 4 * 1024 * 1024;

export function tpmStateDir(bundleDir: string): string {
  return join(bundleDir, TPM_STATE_DIR);
}

/**
 * The bundle's tpm/ folder, made if absent: a real directory of ours (a symlink planted in a bundle must not
 * point swtpm's writes elsewhere).
 */
export function ensureTpmStateDir(bundleDir: string): string {
  const dir = tpmStateDir(bundleDir);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const st = lstatSync(dir);
  if (!st.isDirectory() || st.isSymbolicLink()) throw new VmdeskError(ErrorCode.broken, `${dir} is not a folder; VMDesk keeps the VM's TPM state there`);
  if (typeof process.getuid === 'function' && st.uid !== process.getuid()) throw new VmdeskError(ErrorCode.permission, `${dir} belongs to another user; VMDesk keeps the VM's TPM state there`);
  return dir;
}

// ---- snapshots -----------------------------------------------------------------------------------------
// A live snapshot carries the TPM's state in its vmstate (QEMU's tpm-emulator fetches it from swtpm); a disk
// snapshot of a stopped VM gets a copy of the state files here, put back when it is restored.

function tpmSnapshotDir(bundleDir: string, snapshotId: string): string {
  if (!/^[A-Za-z0-9._-]{1,128}$/.test(snapshotId) || snapshotId.startsWith('.')) throw new VmdeskError(ErrorCode.invalid, `snapshot id ${JSON.stringify(snapshotId.slice(0, 40))} cannot name a folder`);
  return join(tpmStateDir(bundleDir), 'snapshots', snapshotId);
}

/** The state files a folder holds: regular files of ours only (a planted symlink is not followed), within the size bound. */
function stateFiles(from: string): (typeof TPM_STATE_FILES)[number][] {
  return TPM_STATE_FILES.filter((f) => {
    try {
      const st = lstatSync(join(from, f));
      return st.isFile() && st.size <= TPM_STATE_FILE_MAX;
    } catch {
      return false;
    }
  });
}

/**
 * Copies the state files, each written whole and synced before it takes its name (a crash leaves the old file
 * or the new one, never none: a TPM's state lost is a BitLocker recovery key asked for). With `exact`, files
 * the source lacks are removed afterwards, so `to` ends as a copy of `from`.
 */
function copyStateFiles(from: string, to: string, exact = false): number {
  const files = stateFiles(from);
  if (files.length) mkdirSync(to, { recursive: true, mode: 0o700 });
  for (const f of files) writeFileAtomicSync(join(to, f), readFileSync(join(from, f)), 0o600);
  if (exact) for (const f of TPM_STATE_FILES) if (!files.includes(f)) rmSync(join(to, f), { force: true });
  return files.length;
}

/** Copies the TPM's state files next to a disk snapshot (nothing when the VM has no TPM state). */
export function snapshotTpmState(bundleDir: string, snapshotId: string): void {
  const state = tpmStateDir(bundleDir);
  if (!existsSync(join(state, TPM_STATE_FILES[0]))) return;
  const dir = tpmSnapshotDir(bundleDir, snapshotId);
  rmSync(dir, { recursive: true, force: true });
  copyStateFiles(state, dir);
}

/** Puts a disk snapshot's TPM state back (the VM is stopped: no swtpm holds it); a snapshot without one leaves the TPM as it is. */
export function restoreTpmState(bundleDir: string, snapshotId: string): void {
  const dir = tpmSnapshotDir(bundleDir, snapshotId);
  // Only a real permanent state counts (a symlink or an oversized file in its place is not one): anything less
  // must not replace, let alone wipe, the TPM the VM has.
  if (!stateFiles(dir).includes(TPM_STATE_FILES[0])) return;
  copyStateFiles(dir, ensureTpmStateDir(bundleDir), true);
}

export function deleteTpmSnapshot(bundleDir: string, snapshotId: string): void {
  rmSync(tpmSnapshotDir(bundleDir, snapshotId), { recursive: true, force: true });
}

/**
 * A clone's TPM: the state a disk snapshot kept when cloned from one, else the current state (a BitLocker
 * or measured-boot guest needs the TPM its disks were sealed with). Nothing when the source has none.
 */
export function cloneTpmState(srcBundle: string, dstBundle: string, snapshotId?: string): void {
  const snapCopy = snapshotId ? tpmSnapshotDir(srcBundle, snapshotId) : undefined;
  const from = snapCopy && stateFiles(snapCopy).includes(TPM_STATE_FILES[0]) ? snapCopy : tpmStateDir(srcBundle);
  if (!stateFiles(from).includes(TPM_STATE_FILES[0])) return;
  copyStateFiles(from, ensureTpmStateDir(dstBundle));
}
