// A cross-process lock per VM bundle (and one for the library), so two processes never mutate one VM.
import { promises as fs, constants } from 'node:fs';
import path from 'node:path';
import { VmdeskError, ErrorCode } from '../api/errors.js';
import { pidAlive } from './process.js';

const LOCK_NAME = '.lock';

/**
 * Takes the lock file in `dir` (O_EXCL create holding our pid). A lock whose owner died is stale and is
 * taken over; a live owner makes us wait up to waitMs, then fail with EBUSY.
 */
export async function acquireLock(dir: string, what: string, waitMs = 3000): Promise<() => Promise<void>> {
  const file = path.join(dir, LOCK_NAME);
  const deadline = Date.now() + waitMs;
  for (;;) {
    try {
      const fh = await fs.open(file, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o600);
      await fh.writeFile(`${process.pid}\n`);
      await fh.close();
      let released = false;
      return async () => {
        if (released) return;
        released = true;
        await fs.rm(file, { force: true });
      };
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
    const owner = Number.parseInt(await fs.readFile(file, 'utf8').catch(() => ''), 10);
    if (Number.isFinite(owner) && owner > 0 && !pidAlive(owner)) {
      // Stale: rename first so that two processes racing to take it over cannot both win.
      const stale = `${file}.stale.${process.pid}`;
      await fs.rename(file, stale).then(() => fs.rm(stale, { force: true }), () => {});
      continue;
    }
    if (Date.now() > deadline) {
      throw new VmdeskError(ErrorCode.busy, `${what} is locked by another VMDesk process${Number.isFinite(owner) ? ` (pid ${owner})` : ''}; try again when it has finished`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

export async function withLock<T>(dir: string, what: string, fn: () => Promise<T>, waitMs?: number): Promise<T> {
  const release = await acquireLock(dir, what, waitMs);
  try {
    return await fn();
  } finally {
    await release();
  }
}
