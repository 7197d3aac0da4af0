// Process entry of a VM supervisor: `node supervisor-main.js <runtimeDir>/launch.json` (kept tiny for fast start).
import { runSupervisor } from './supervisor.js';

const specPath = process.argv[2];
if (!specPath) {
  process.stderr.write('usage: supervisor-main <launch.json>\n');
  process.exit(2);
}
runSupervisor(specPath).catch((e: unknown) => {
  process.stderr.write(`${new Date().toISOString()} supervisor failed: ${(e as Error).stack ?? String(e)}\n`);
  process.exit(1);
});
