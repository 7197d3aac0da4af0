// Builds the addon and vmdesk-microvm with node-gyp, pointing it at the running Node's own headers when they
// are installed (offline machines cannot download them, and distro Node ships them under <prefix>/include/node).
//
// configure + build rather than rebuild: a rebuild deletes build/ first, which pulls the addon out from under
// tests and daemons using it for the half minute the compile takes; make replaces outputs only once linked.
// Builds are serialized with a lock directory (native/.build-lock, the one the test harness takes; it sets
// VMDESK_NATIVE_BUILD_LOCKED when it already holds it).
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, rmdirSync, statSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const prefix = resolve(dirname(process.execPath), '..');
const quiet = process.argv.includes('--quiet');
const nodedir = existsSync(join(prefix, 'include/node/common.gypi')) ? [`--nodedir=${prefix}`] : [];
const gyp = join(here, '..', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js');
const lock = join(here, '.build-lock');

function takeLock() {
  if (process.env.VMDESK_NATIVE_BUILD_LOCKED) return false;
  for (let i = 0; i < 1200; i++) {
    try {
      mkdirSync(lock);
      return true;
    } catch {
      // A lock older than 5 minutes belongs to a build that died.
      try {
        if (Date.now() - statSync(lock).mtimeMs > 300_000) rmdirSync(lock);
      } catch {
        // released meanwhile
      }
      spawnSync('sleep', ['0.5']);
    }
  }
  throw new Error(`${lock} is held by another build for 10 minutes; remove it if no build runs`);
}

function gypRun(args) {
  const r = spawnSync(process.execPath, [gyp, ...args, '--directory', here, ...nodedir], { stdio: quiet ? 'pipe' : 'inherit' });
  if (r.status !== 0) {
    if (r.stdout) process.stderr.write(r.stdout);
    if (r.stderr) process.stderr.write(r.stderr);
    return r.status ?? 1;
  }
  return 0;
}

const locked = takeLock();
let status;
try {
  status = gypRun(['configure']);
  if (status === 0) status = gypRun(['build']);
} finally {
  if (locked) rmdirSync(lock);
}
process.exit(status);
