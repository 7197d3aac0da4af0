// npm install hook: builds native/ (the KVM addon and, on Linux, vmdesk-microvm, the per-VM executable of the
// micro-VM engine) when a compiler is present; the app runs without them (QEMU engine only, and accel "auto"
// decides without the KVM self-test).
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';

if (!existsSync('native/binding.gyp') || process.env.VMDESK_SKIP_NATIVE) process.exit(0);
const r = spawnSync(process.execPath, ['native/build.mjs', '--quiet'], { stdio: ['ignore', 'inherit', 'inherit'] });
if (r.status !== 0) console.warn('vmdesk: native/ not built; the micro-VM engine (vmdesk-microvm) and the KVM self-test are unavailable (npm run build:native shows why)');
