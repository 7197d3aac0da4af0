// Process entry of vmdeskd: `node dist/main/daemon/main.js --home DIR [--idle-ms N]`. Started on demand by
// any client (main/client/daemon-client.ts) or by `vmdesk daemon run` in the foreground for debugging.
import { fromOsError } from '../platform/os-errors.js';
import { makeFilesPrivate } from '../platform/paths.js';
import { startDaemon } from './daemon.js';

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

const home = arg('--home');
if (!home) {
  process.stderr.write('usage: vmdeskd --home DIR [--idle-ms N]\n');
  process.exit(2);
}
const idle = arg('--idle-ms');
const log = (line: string) => process.stderr.write(`${new Date().toISOString()} vmdeskd[${process.pid}]: ${line}\n`);

makeFilesPrivate();
try {
  const d = await startDaemon({ home, idleExitMs: idle !== undefined ? Number(idle) : undefined, log });
  for (const sig of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) {
    process.on(sig, () => {
      log(`${sig}: stopping (running guests keep running)`);
      void d.close();
    });
  }
  await d.closed;
  log('stopped');
  process.exit(0);
} catch (e) {
  const err = fromOsError(e);
  log(`cannot start: ${err.message}`);
  // Exit code 5 (EBUSY) tells a racing spawner that another daemon won; it connects to that one.
  process.exit(err.code === 'EBUSY' ? 5 : 1);
}
