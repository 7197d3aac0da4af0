// Where VMDesk keeps its library (per platform convention) and its per-user runtime files.
import os from 'node:os';
import path from 'node:path';
import { mkdirSync, chmodSync, statSync } from 'node:fs';

export function defaultHome(env: NodeJS.ProcessEnv = process.env, platform = process.platform): string {
  if (env.VMDESK_HOME) return path.resolve(env.VMDESK_HOME);
  if (platform === 'darwin') return path.join(os.homedir(), 'Library', 'Application Support', 'VMDesk');
  const data = env.XDG_DATA_HOME && path.isAbsolute(env.XDG_DATA_HOME) ? env.XDG_DATA_HOME : path.join(os.homedir(), '.local', 'share');
  return path.join(data, 'vmdesk');
}

/**
 * Root of per-VM runtime dirs (sockets, pid files). Unix socket paths must stay under ~100 bytes, so this is
 * short: $XDG_RUNTIME_DIR/vmdesk or /tmp/vmdesk-UID, plus a hash of the home so two libraries never clash.
 */
export function runtimeRoot(home: string, env: NodeJS.ProcessEnv = process.env): string {
  const uid = typeof process.getuid === 'function' ? process.getuid() : 0;
  const base = env.XDG_RUNTIME_DIR && env.XDG_RUNTIME_DIR.length < 40 ? path.join(env.XDG_RUNTIME_DIR, 'vmdesk') : `/tmp/vmdesk-${uid}`;
  return path.join(base, shortHash(path.resolve(home)));
}

export function ensurePrivateDir(dir: string): string {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  // mkdir's mode is filtered by umask and ignored for existing dirs: enforce it.
  if ((statSync(dir).mode & 0o777) !== 0o700) chmodSync(dir, 0o700);
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
