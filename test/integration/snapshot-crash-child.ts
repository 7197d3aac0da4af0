// Child process for snapshot-crash.test.ts: a daemon of its own (its core adopts the running guest) that takes
// one snapshot, to be SIGKILLed mid-way.
import { Core } from '../../main/core/core.js';
import { SnapshotManager } from '../../main/core/snapshots/manager.js';

async function main(): Promise<void> {
  const [home, vm, name] = process.argv.slice(2);
  const core = new Core({ home: home! });
  await core.boot();
  process.stdout.write('ready\n');
  await new SnapshotManager(core).take(vm!, { name: name! });
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
