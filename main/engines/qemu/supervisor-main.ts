// Process entry of a VM supervisor: `node supervisor-main.js <runtimeDir>/launch.json`.
// QEMU is spawned before the supervisor's own modules load, so the guest starts as early as possible.
import { readFileSync } from 'node:fs';
import type { LaunchSpec } from './control.js';
import { launchQemu } from './qemu-launch.js';

const specPath = process.argv[2];
if (!specPath) {
  process.stderr.write('usage: supervisor-main <launch.json>\n');
  process.exit(2);
}
const spec = JSON.parse(readFileSync(specPath, 'utf8')) as LaunchSpec;
const launched = launchQemu(spec);
import('./supervisor.js')
  .then(({ runSupervisor }) => runSupervisor(spec, launched))
  .catch((e: unknown) => {
    process.stderr.write(`${new Date().toISOString()} supervisor failed: ${(e as Error).stack ?? String(e)}\n`);
    launched.child.kill('SIGKILL');
    process.exit(1);
  });
