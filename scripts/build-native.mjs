// npm install hook: builds the native KVM addon when a compiler is present; the app runs without it
// (QEMU engine only, and accel "auto" decides without the KVM self-test).
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';

if (!existsSync('native/binding.gyp') || process.env.VMDESK_SKIP_NATIVE) process.exit(0);
const r = spawnSync(process.execPath, ['native/build.mjs', '--quiet'], { stdio: ['ignore', 'inherit', 'inherit'] });
if (r.status !== 0) console.warn('vmdesk: native addon not built; the micro-VM engine and the KVM self-test are unavailable (npm run build:native shows why)');
