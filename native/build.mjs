// Builds the addon with node-gyp, pointing it at the running Node's own headers when they are installed
// (offline machines cannot download them, and distro Node ships them under <prefix>/include/node).
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const prefix = resolve(dirname(process.execPath), '..');
const args = ['rebuild', '--directory', here];
if (existsSync(join(prefix, 'include/node/common.gypi'))) args.push(`--nodedir=${prefix}`);
const gyp = join(here, '..', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js');
const r = spawnSync(process.execPath, [gyp, ...args], { stdio: process.argv.includes('--quiet') ? 'pipe' : 'inherit' });
if (r.status !== 0) {
  if (r.stderr) process.stderr.write(r.stderr);
  process.exit(r.status ?? 1);
}
