// Where VMDesk keeps its library (per platform convention) and its per-user runtime files.
import os from 'node:os';
import path from 'node:path';
import { ErrorCode, VmdeskError } from '../api/errors.js';
import { mkdirSync, chmodSync, lstatSync } from 'node:fs';

export function defaultHome(env: NodeJS.ProcessEnv = process.env, platform = process.platform): string {
  if (env.VMDESK_HOME) return path.resolve(env.VMDESK_HOME);
  if (platform === 'darwin') return path.join(os.homedir(), 'Library', 'Application Support', 'VMDesk');
  const data = env.XDG_DATA_HOME && path.isAbsolute(env.XDG_DATA_HOME) ? env.XDG_DATA_HOME : path.join(os.homedir(), '.local', 'share');
  return path.join(data, 'vmdesk');
}

/** The user's umask as it was before VMDesk made its own files private (exports keep the user's choice). */
export const userUmask = process.umask();

/**
 * Everything VMDesk writes into its library, and every file qemu-img and QEMU make for it, is private to
 * the user (files 0600, directories 0700): a VM's disks are the user's data. Called once by each entry point.
 */
export function makeFilesPrivate(): void {
  process.umask(0o077);
}

function uid(): number {
  return typeof process.getuid === 'function' ? process.getuid() : 0;
}

/**
 * Root of per-VM runtime dirs (sockets, pid files). Unix socket paths must stay under ~100 bytes, so this is
 * short: $XDG_RUNTIME_DIR/vmdesk (per-user by design), else /tmp/vmdesk-UID, plus a hash of the home so two
 * libraries never clash. In the shared /tmp another local user may have taken the name first: then the next
 * candidate (-UID.1, -UID.2 …) that is ours is used, the same one by every VMDesk process.
 */
export function runtimeRoot(home: string, env: NodeJS.ProcessEnv = process.env): string {
  const hash = shortHash(path.resolve(home));
  if (env.XDG_RUNTIME_DIR && path.isAbsolute(env.XDG_RUNTIME_DIR) && env.XDG_RUNTIME_DIR.length < 40) return path.join(env.XDG_RUNTIME_DIR, 'vmdesk', hash);
  const tmp = env.VMDESK_TMPDIR && path.isAbsolute(env.VMDESK_TMPDIR) ? env.VMDESK_TMPDIR : '/tmp';
  for (let n = 0; n < 10; n++) {
    const base = path.join(tmp, `vmdesk-${uid()}${n ? `.${n}` : ''}`);
    if (usablePrivateDir(base)) return path.join(base, hash);
  }
  throw new VmdeskError(ErrorCode.host, `no usable runtime directory in ${tmp}: vmdesk-${uid()} and its alternatives belong to other users; set XDG_RUNTIME_DIR`);
}

/** True when dir is absent (we can make it) or is a real directory owned by us. */
function usablePrivateDir(dir: string): boolean {
  try {
    const st = lstatSync(dir);
    return st.isDirectory() && !st.isSymbolicLink() && st.uid === uid();
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'ENOENT';
  }
}

/**
 * Makes (or checks) a directory only this user can enter: it must be a real directory, not a symbolic
 * link, owned by us; its mode is forced to 0700. Anything else is refused with EHOST rather than trusted.
 */
export function ensurePrivateDir(dir: string): string {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const st = lstatSync(dir);
  if (!st.isDirectory() || st.isSymbolicLink()) throw new VmdeskError(ErrorCode.host, `${dir} should be a private directory but is a ${st.isSymbolicLink() ? 'symbolic link' : 'file'}; remove it`);
  if (st.uid !== uid()) throw new VmdeskError(ErrorCode.host, `${dir} belongs to another user (uid ${st.uid}); remove it or set XDG_RUNTIME_DIR`);
  // mkdir's mode is filtered by umask and ignored for existing dirs: enforce it.
  if ((st.mode & 0o777) !== 0o700) chmodSync(dir, 0o700);
  return dir;
}

export function shortHash(s: string): string {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h.toString(36);
}

/** The daemon's socket for a library: in the private runtime root, one per home. */
export function daemonSocketPath(home: string): string {
  return path.join(runtimeRoot(path.resolve(home)), 'daemon.sock');
}
