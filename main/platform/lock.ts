// Cross-process locks that the kernel releases: flock(2) on a lock file (through the native addon), so a
// process that dies, however it dies, holds nothing; no stale-lock guessing, no takeover races. Where the
// addon is not built, a portable fallback uses generation files created with O_EXCL (see PortableLock).
import { promises as fs, constants, readFileSync } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { VmdeskError, ErrorCode } from '../api/errors.js';
import { loadAddon } from './native-addon.js';
import { processRunning, processStartTime } from './process.js';

export { processStartTime };
import { fromOsError } from './os-errors.js';

const LOCK_NAME = '.lock';
const POLL_MS = 25;

interface FlockApi {
  flockFile(fd: number, exclusive: boolean, wait: boolean): boolean;
  funlockFile(fd: number): void;
}

function nativeFlock(): FlockApi | undefined {
  if (process.env.VMDESK_LOCKS === 'portable') return undefined;
  const m = loadAddon().module as Partial<FlockApi> | undefined;
  return m && typeof m.flockFile === 'function' && typeof m.funlockFile === 'function' ? (m as FlockApi) : undefined;
}

/** Which implementation this process uses (shown by `vmdesk daemon status` and tests). */
export function lockImplementation(): 'flock' | 'portable' {
  return nativeFlock() ? 'flock' : 'portable';
}

const SELF = { pid: process.pid, start: processStartTime(process.pid) ?? '' };

interface Owner {
  pid: number;
  start: string;
}

function parseOwner(text: string): Owner | undefined {
  const m = /^(\d+) (\S*)\n/.exec(text);
  return m ? { pid: Number(m[1]), start: m[2]! } : undefined;
}

function ownerAlive(o: Owner): boolean {
  // A zombie (killed, not yet reaped by a slow parent) holds nothing.
  return processRunning(o.pid, o.start || undefined);
}

function busy(what: string, owner: Owner | undefined): VmdeskError {
  return new VmdeskError(ErrorCode.busy, `${what} is locked by another VMDesk process${owner ? ` (pid ${owner.pid})` : ''}; try again when it has finished`);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** flock on dir/.lock. The file is never deleted (deleting a flocked file would let two holders in). */
async function acquireFlock(api: FlockApi, dir: string, what: string, waitMs: number): Promise<() => Promise<void>> {
  const file = path.join(dir, LOCK_NAME);
  const deadline = Date.now() + waitMs;
  for (;;) {
    let fh: FileHandle;
    try {
      fh = await fs.open(file, constants.O_RDWR | constants.O_CREAT | constants.O_NOFOLLOW, 0o600);
    } catch (e) {
      throw osError(e, `cannot lock ${what}`);
    }
    if (api.flockFile(fh.fd, true, false)) {
      // The file may have been renamed away (a bundle being deleted) between our open and our lock.
      const [held, now] = await Promise.all([fh.stat(), fs.stat(file).catch(() => null)]);
      if (now && now.ino === held.ino && now.dev === held.dev) {
        // Who holds it is for messages only: a full disk must not make the lock fail or look stale.
        await fh.truncate(0).then(() => fh.write(`${SELF.pid} ${SELF.start}\n`, 0)).catch(() => undefined);
        let released = false;
        return async () => {
          if (released) return;
          released = true;
          await fh.truncate(0).catch(() => undefined);
          api.funlockFile(fh.fd);
          await fh.close();
        };
      }
      api.funlockFile(fh.fd);
      await fh.close();
      if (!now) throw new VmdeskError(ErrorCode.notFound, `${what} no longer exists`);
      continue;
    }
    const owner = parseOwner(await fh.readFile('utf8').catch(() => ''));
    await fh.close();
    if (Date.now() > deadline) throw busy(what, owner);
    await sleep(POLL_MS);
  }
}

/**
 * Portable lock: generation files dir/.lock.<n>, each created with O_EXCL and holding "pid start".
 * The highest generation is the lock. Its owner dead (or the file empty past a grace period, a creator that
 * died before writing) lets exactly one process create generation n+1: O_EXCL decides, so a takeover can
 * never be won twice; a process that created a generation below the newest one backs off. Release marks
 * the file free; the next holder removes older generations.
 */
const EMPTY_GRACE_MS = 2000;
const GEN = /^\.lock\.(\d{1,15})$/;

/**
 * Tests widen the window between judging a lock free and taking it (VMDESK_LOCK_TAKEOVER_DELAY_MS, a random
 * delay up to that many ms), so interleavings that a busy machine produces rarely happen on every run.
 */
async function takeoverDelay(): Promise<void> {
  const max = Number(process.env.VMDESK_LOCK_TAKEOVER_DELAY_MS ?? 0);
  if (max > 0) await sleep(Math.random() * max);
}

async function generations(dir: string): Promise<number[]> {
  const names = await fs.readdir(dir).catch((e: NodeJS.ErrnoException) => {
    if (e.code === 'ENOENT') return [] as string[];
    throw e;
  });
  return names.map((n) => GEN.exec(n)).filter((m): m is RegExpExecArray => !!m).map((m) => Number(m[1])).sort((a, b) => a - b);
}

async function acquirePortable(dir: string, what: string, waitMs: number): Promise<() => Promise<void>> {
  const deadline = Date.now() + waitMs;
  const nonce = randomBytes(6).toString('hex');
  for (;;) {
    const gens = await generations(dir);
    const top = gens.at(-1) ?? 0;
    let free = top === 0;
    let owner: Owner | undefined;
    if (!free) {
      const file = path.join(dir, `.lock.${top}`);
      const text = await fs.readFile(file, 'utf8').catch(() => null);
      if (text === null) continue; // removed meanwhile: look again
      owner = parseOwner(text);
      if (text.startsWith('free')) free = true;
      else if (owner) free = !ownerAlive(owner);
      else {
        const st = await fs.stat(file).catch(() => null);
        free = !st || Date.now() - st.mtimeMs > EMPTY_GRACE_MS;
      }
    }
    if (free) {
      await takeoverDelay();
      const mine = path.join(dir, `.lock.${top + 1}`);
      let fh: FileHandle | undefined;
      try {
        fh = await fs.open(mine, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o600);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw osError(e, `cannot lock ${what}`);
      }
      if (fh) {
        try {
          await fh.writeFile(`${SELF.pid} ${SELF.start}\n${nonce}\n`);
          await fh.sync();
        } catch (e) {
          // Unwritten, our generation would look abandoned after the grace period: give it back instead.
          await fh.close().catch(() => undefined);
          await fs.rm(mine, { force: true });
          throw osError(e, `cannot lock ${what}`);
        }
        await fh.close();
        const newest = (await generations(dir)).at(-1) ?? 0;
        if (newest === top + 1) {
          for (const g of await generations(dir)) if (g <= top) await fs.rm(path.join(dir, `.lock.${g}`), { force: true });
          let released = false;
          return async () => {
            if (released) return;
            released = true;
            const text = await fs.readFile(mine, 'utf8').catch(() => '');
            if (text.includes(nonce)) await fs.writeFile(mine, 'free\n').catch(() => undefined);
          };
        }
        // A newer generation exists: ours came from a stale view. Withdraw it.
        await fs.rm(mine, { force: true });
      }
      continue;
    }
    if (Date.now() > deadline) throw busy(what, owner);
    await sleep(POLL_MS);
  }
}

/**
 * Takes the lock of `dir`; a live holder makes us wait up to waitMs, then fail with EBUSY naming it.
 * Resolves with the release function.
 */
export async function acquireLock(dir: string, what: string, waitMs = 3000): Promise<() => Promise<void>> {
  const api = nativeFlock();
  return api ? acquireFlock(api, dir, what, waitMs) : acquirePortable(dir, what, waitMs);
}

export async function withLock<T>(dir: string, what: string, fn: () => Promise<T>, waitMs?: number): Promise<T> {
  const release = await acquireLock(dir, what, waitMs);
  try {
    return await fn();
  } finally {
    await release();
  }
}

function osError(e: unknown, what: string): Error {
  return fromOsError(e, what);
}
