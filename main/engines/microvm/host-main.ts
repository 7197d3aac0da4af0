// Entry point of the detached micro-VM host process: `node host-main.js <runtimeDir>/microvm-launch.json`.
import { hostMain } from './host.js';

const launch = process.argv[2];
if (!launch) {
  process.stderr.write('usage: host-main <launch.json>\n');
  process.exit(2);
}
await hostMain(launch);
