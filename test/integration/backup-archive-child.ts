// Child process for backup-archive-crash.test.ts: exports or clones a VM through its own core, to be
// SIGKILLed half-way (a crash: no finally blocks, no cleanup).
import { Core } from '../../main/core/core.js';
import { exportVm } from '../../main/core/backup/archive.js';
import { cloneVm } from '../../main/core/snapshots/clone.js';
import { SnapshotManager } from '../../main/core/snapshots/manager.js';

async function main(): Promise<void> {
  const [home, verb, vm, target] = process.argv.slice(2);
  const core = new Core({ home: home! });
  await core.boot();
  process.stdout.write('ready\n');
  if (verb === 'export') await exportVm(core, vm!, target!);
  else await cloneVm(core, new SnapshotManager(core), vm!, { name: target!, mode: 'linked' });
  process.stdout.write('done\n');
  await core.shutdown();
}

main().then(
  () => process.exit(0),
  (e: unknown) => {
    process.stdout.write(`error: ${(e as Error).message}\n`);
    process.exit(1);
  },
);
