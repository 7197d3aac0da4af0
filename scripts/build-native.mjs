// Builds the native KVM addon when a compiler is present; the app runs without it (QEMU engine only).
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
if (!existsSync('native/binding.gyp')) process.exit(0);
const r = spawnSync('npx', ['--no-install', 'node-gyp', 'rebuild', '--directory', 'native'], { stdio: 'inherit' });
if (r.status !== 0) console.warn('vmdesk: native addon not built; the micro-VM engine and KVM self-test are unavailable');
