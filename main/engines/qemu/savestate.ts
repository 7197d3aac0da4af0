// Save state for QEMU (VirtualBox's "Save the machine state"): the guest's RAM and device state go to a file in
// the bundle, QEMU quits, and the next start resumes exactly there.
//
// How the bytes travel: QEMU 7.2 has no file: migration URI, "exec:" would run a shell (VMDesk never does), and
// fd: migration needs an fd passed over the QMP socket (SCM_RIGHTS), which Node's sockets cannot send. So QEMU
// migrates over a unix socket in the VM's private runtime dir: the daemon listens, QEMU connects (`migrate
// unix:PATH`), and the daemon writes the stream into saved-state/state.partial with a size bound, renaming it
// into place only once QEMU reports the migration completed. Resuming is the mirror: QEMU starts with
// `-incoming defer -S`, `migrate-incoming unix:PATH` makes it listen, and the daemon streams the file in. The
// guest is paused first, so the stream is one consistent pass.
//
// A saved state is untrusted input when read back (a bundle can be copied from anywhere): the folder and file
// must be ours, real files (no symlinks), the size what the metadata says and within a bound from the VM's
// memory, the stream must start with QEMU's migration magic, and it must have been saved by this QEMU version
// with the same hardware (a digest of the command line without the parts that do not shape the machine).
import { createHash } from 'node:crypto';
import { constants, createReadStream, createWriteStream, promises as fs, lstatSync, readFileSync, type Stats } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import path from 'node:path';
import { Transform, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { ErrorCode, VmdeskError } from '../../api/errors.js';
import type { EngineContext, Progress, SavedStateInfo } from '../engine.js';
import { SAVED_STATE_DIR } from '../engine.js';
import { connectUnixSocket } from '../../platform/process.js';
import { writeFileAtomic } from '../../platform/atomic.js';

const MiB = 1024 * 1024;
const META_VERSION = 1;
/** QEMU's migration stream starts with "QEVM" and version 3. */
const MIGRATION_MAGIC = Buffer.from([0x51, 0x45, 0x56, 0x4d, 0x00, 0x00, 0x00, 0x03]);
const META_MAX_BYTES = 64 * 1024;

export interface SavedStateFiles {
  dir: string;
  state: string;
  partial: string;
  meta: string;
}

export function savedStateFiles(bundleDir: string): SavedStateFiles {
  const dir = path.join(bundleDir, SAVED_STATE_DIR);
  return { dir, state: path.join(dir, 'state.qemu'), partial: path.join(dir, 'state.partial'), meta: path.join(dir, 'state.json') };
}

export function migrationSocket(runtimeDir: string): string {
  return path.join(runtimeDir, 'migrate.sock');
}

export interface SavedStateMeta {
  version: number;
  vmId: string;
  savedAt: string;
  bytes: number;
  memoryMiB: number;
  /** hardwareDigest of the command line it ran with (absent: saved by a QEMU adopted from an older daemon). */
  hardware?: string;
  /** QEMU's version (major.minor.micro) that wrote it. */
  qemuVersion?: string;
}

/** The most a saved state of this much memory may take: RAM plus device state, video memory and firmware. */
export function stateBound(memoryMiB: number): number {
  return memoryMiB * MiB + 512 * MiB;
}

/**
 * A digest of what shapes the machine on QEMU's command line. Left out: the name (renaming a saved VM is
 * fine), log options, the sandbox, start-paused and -incoming, the RTC's base (OS type), the user network's host forwards (host side
 * only), the sound card's host backend and passed-through USB devices.
 */
export function hardwareDigest(args: readonly string[]): string {
  const kept: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === '-S') continue;
    // -rtc base=localtime follows the OS type, a setting a saved VM may change: the clock is the guest's state.
    if (['-name', '-msg', '-sandbox', '-incoming', '-rtc'].includes(a)) {
      i++;
      continue;
    }
    // The host's sound backend is this run's choice (the card is the same), and passed-through host devices
    // come and go while the guest runs (usb add/remove): neither shapes the saved machine.
    if (a === '-audiodev') {
      kept.push(a, `id=${/(?:^|,)id=([^,]*)/.exec(args[i + 1] ?? '')?.[1] ?? ''}`);
      i++;
      continue;
    }
    if (a === '-device' && args[i + 1]?.startsWith('usb-host,')) {
      i++;
      continue;
    }
    if (a === '-netdev' && args[i + 1]?.startsWith('user,')) {
      kept.push(a, args[i + 1]!.split(',').filter((p) => !p.startsWith('hostfwd=')).join(','));
      i++;
      continue;
    }
    kept.push(a);
  }
  return createHash('sha256').update(kept.join('\0')).digest('hex');
}

function ownedByUs(st: Stats): boolean {
  return typeof process.getuid !== 'function' || st.uid === process.getuid();
}

/** The metadata, read with bounds; undefined when absent or not ours. */
function readMeta(ctx: EngineContext): SavedStateMeta | undefined {
  const f = savedStateFiles(ctx.bundleDir);
  try {
    const dst = lstatSync(f.dir);
    if (!dst.isDirectory() || !ownedByUs(dst)) return undefined;
    const st = lstatSync(f.meta);
    if (!st.isFile() || st.size > META_MAX_BYTES || !ownedByUs(st)) return undefined;
    const m = JSON.parse(readFileSync(f.meta, 'utf8')) as SavedStateMeta;
    if (m.version !== META_VERSION || m.vmId !== ctx.config.id || !Number.isSafeInteger(m.bytes) || m.bytes <= 0 || typeof m.savedAt !== 'string') return undefined;
    return m;
  } catch {
    return undefined;
  }
}

/** What is saved (complete: metadata and state file), cheaply; undefined when nothing is. */
export function describeSavedState(ctx: EngineContext): SavedStateInfo | undefined {
  const m = readMeta(ctx);
  if (!m) return undefined;
  try {
    const st = lstatSync(savedStateFiles(ctx.bundleDir).state);
    if (!st.isFile()) return undefined;
  } catch {
    return undefined;
  }
  return { at: m.savedAt, bytes: m.bytes };
}

/** Deletes the saved state and whatever an interrupted save left (only VMDesk's own file names). */
export async function discardSavedState(ctx: EngineContext): Promise<void> {
  const f = savedStateFiles(ctx.bundleDir);
  const st = await fs.lstat(f.dir).catch(() => null);
  if (!st) return;
  if (!st.isDirectory()) {
    // Something else under our name: a planted symlink is removed, never followed.
    await fs.rm(f.dir, { force: true });
    return;
  }
  // The metadata goes first: a crash half-way leaves no "saved" VM with its state file gone.
  for (const p of [f.meta, f.state, f.partial]) await fs.rm(p, { force: true });
  await fs.rmdir(f.dir).catch(() => undefined);
}

/**
 * Checks a saved state before QEMU is given it; resolves with the file and its size, or refuses with what
 * to do. `hardware` is the digest of the command line the resume would run with.
 */
export async function checkSavedState(ctx: EngineContext, expect: { hardware: string; qemuVersion?: string }): Promise<{ file: string; bytes: number }> {
  const name = ctx.config.name;
  const discard = `discard it to boot afresh (vmdesk discard-state "${name}")`;
  const m = readMeta(ctx);
  if (!m) throw new VmdeskError(ErrorCode.broken, `the saved state of "${name}" is unreadable or incomplete; ${discard}`);
  const f = savedStateFiles(ctx.bundleDir);
  const st = await fs.lstat(f.state).catch(() => null);
  if (!st || !st.isFile()) throw new VmdeskError(ErrorCode.broken, `the saved state file of "${name}" is missing or not a regular file (a symlink is not followed); ${discard}`);
  if (!ownedByUs(st)) throw new VmdeskError(ErrorCode.permission, `the saved state file of "${name}" belongs to another user; ${discard}`);
  if (st.size !== m.bytes) throw new VmdeskError(ErrorCode.broken, `the saved state file of "${name}" has ${st.size} bytes, ${m.bytes} were saved: it was cut short or changed; ${discard}`);
  const bound = stateBound(ctx.config.memoryMiB);
  if (st.size > bound) throw new VmdeskError(ErrorCode.broken, `the saved state file of "${name}" (${st.size} bytes) is larger than ${ctx.config.memoryMiB} MiB of memory can make; ${discard}`);
  if (m.memoryMiB !== ctx.config.memoryMiB) throw new VmdeskError(ErrorCode.state, `"${name}" was saved with ${m.memoryMiB} MiB of memory and now has ${ctx.config.memoryMiB} MiB; set it back, or ${discard}`);
  if (m.qemuVersion && expect.qemuVersion && m.qemuVersion !== expect.qemuVersion) {
    throw new VmdeskError(ErrorCode.state, `"${name}" was saved by QEMU ${m.qemuVersion} and this is QEMU ${expect.qemuVersion}, which cannot be relied on to load it; start it with QEMU ${m.qemuVersion}, or ${discard}`);
  }
  if (m.hardware && m.hardware !== expect.hardware) {
    throw new VmdeskError(ErrorCode.state, `the hardware of "${name}" (devices, disks, firmware or VMDesk's own device layout) changed since its state was saved, so that state cannot be loaded; change it back, or ${discard}`);
  }
  const fh = await fs.open(f.state, constants.O_RDONLY | constants.O_NOFOLLOW);
  try {
    const head = Buffer.alloc(MIGRATION_MAGIC.length);
    await fh.read(head, 0, head.length, 0);
    if (!head.equals(MIGRATION_MAGIC)) throw new VmdeskError(ErrorCode.broken, `the saved state file of "${name}" is not a QEMU state; ${discard}`);
  } finally {
    await fh.close();
  }
  return { file: f.state, bytes: st.size };
}

/** The QEMU a save or resume talks to: raw QMP and its run state. */
export interface MigratingQemu {
  command<T = unknown>(execute: string, args?: Record<string, unknown>, timeoutMs?: number): Promise<T>;
  readonly state: string;
  pause(): Promise<void>;
  resume(): Promise<void>;
}

interface MigrateStatus {
  status: string;
  'error-desc'?: string;
  ram?: { transferred: number; total: number; remaining: number };
}

/** Counts the bytes going through and stops the stream past a bound. */
class Bounded extends Transform {
  bytes = 0;
  constructor(
    private readonly max: number,
    private readonly onBytes?: (n: number) => void,
  ) {
    super();
  }
  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.bytes += chunk.length;
    if (this.bytes > this.max) return cb(new VmdeskError(ErrorCode.engine, `the saved state grew past ${this.max} bytes, more than the VM's memory can make; it was not kept`));
    this.onBytes?.(this.bytes);
    cb(null, chunk);
  }
}

async function waitMigration(q: MigratingQemu, what: string, onProgress?: (s: MigrateStatus) => void, timeoutMs = 60 * 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const s = await q.command<MigrateStatus>('query-migrate', undefined, 10_000);
    onProgress?.(s);
    if (s.status === 'completed') return;
    if (s.status === 'failed' || s.status === 'cancelled') throw new VmdeskError(ErrorCode.engine, `QEMU could not ${what}: ${s['error-desc'] ?? s.status}`);
    if (Date.now() > deadline) {
      await q.command('migrate_cancel').catch(() => undefined);
      throw new VmdeskError(ErrorCode.timeout, `QEMU did not ${what} within ${Math.round(timeoutMs / 60_000)} minutes`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

function listen(socketPath: string): Promise<Server> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(socketPath, () => {
      server.off('error', reject);
      resolve(server);
    });
  });
}

/**
 * Pauses the guest and writes its state into the bundle. Resolves once the state file and its metadata are
 * in place (QEMU then only has to quit); on failure the partial file is removed and a guest that was running
 * runs on.
 */
export async function writeSavedState(q: MigratingQemu, ctx: EngineContext, meta: { hardware?: string; qemuVersion?: string }, progress: Progress): Promise<SavedStateInfo> {
  const f = savedStateFiles(ctx.bundleDir);
  await fs.mkdir(f.dir, { recursive: true, mode: 0o700 });
  const dst = await fs.lstat(f.dir);
  if (!dst.isDirectory() || !ownedByUs(dst)) throw new VmdeskError(ErrorCode.broken, `${f.dir} is not a folder of ours; VMDesk keeps the saved state there`);
  // A state already there (the guest was resumed from it and is running now) is stale; so is a partial one.
  await discardSavedState(ctx);
  await fs.mkdir(f.dir, { recursive: true, mode: 0o700 });
  const sock = migrationSocket(ctx.runtimeDir);
  await fs.rm(sock, { force: true });
  const wasRunning = q.state === 'running';
  const bound = stateBound(ctx.config.memoryMiB);
  const fh = await fs.open(f.partial, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
  let server: Server | undefined;
  let stream: Promise<number> | undefined;
  let conn: Socket | undefined;
  try {
    progress('pausing the guest', 0);
    if (wasRunning) await q.pause();
    server = await listen(sock);
    stream = new Promise<number>((resolve, reject) => {
      server!.once('connection', (c: Socket) => {
        conn = c;
        // One connection only: the server stops accepting once QEMU is in.
        server!.close();
        const counter = new Bounded(bound);
        pipeline(c, counter, createWriteStream('', { fd: fh.fd, autoClose: false })).then(() => resolve(counter.bytes), reject);
      });
    });
    stream.catch(() => undefined);
    // Local disk, guest paused: no reason to hold QEMU to its default 128 MiB/s.
    await q.command('migrate-set-parameters', { 'max-bandwidth': 64 * 1024 * MiB }, 10_000);
    await q.command('migrate', { uri: `unix:${sock}` }, 30_000);
    await waitMigration(q, 'save the guest\'s state', (s) => {
      if (s.ram && s.ram.total > 0) progress('saving memory and device state', Math.min(0.99, s.ram.transferred / s.ram.total));
    });
    const bytes = await Promise.race([stream, new Promise<number>((_, rej) => setTimeout(() => rej(new VmdeskError(ErrorCode.timeout, 'QEMU did not close the state stream after saving')), 30_000))]);
    await fh.sync();
    await fh.close();
    await fs.rename(f.partial, f.state);
    const savedAt = new Date().toISOString();
    const m: SavedStateMeta = { version: META_VERSION, vmId: ctx.config.id, savedAt, bytes, memoryMiB: ctx.config.memoryMiB, ...(meta.hardware ? { hardware: meta.hardware } : {}), ...(meta.qemuVersion ? { qemuVersion: meta.qemuVersion } : {}) };
    // Written last: a state without its metadata is an interrupted save, never resumed from.
    await writeFileAtomic(f.meta, JSON.stringify(m, null, 2) + '\n');
    progress('saved', 1);
    return { at: savedAt, bytes };
  } catch (e) {
    conn?.destroy();
    await q.command('migrate_cancel').catch(() => undefined);
    await fh.close().catch(() => undefined);
    await fs.rm(f.partial, { force: true });
    await fs.rm(f.meta, { force: true });
    await fs.rm(f.state, { force: true });
    if (wasRunning) await q.resume().catch(() => undefined);
    throw e;
  } finally {
    server?.close();
    await fs.rm(sock, { force: true });
  }
}

/** Streams a checked saved state into a QEMU started with -incoming defer; resolves once QEMU has loaded it. */
export async function loadSavedState(q: MigratingQemu, ctx: EngineContext, saved: { file: string; bytes: number }, progress?: Progress): Promise<void> {
  const sock = migrationSocket(ctx.runtimeDir);
  await fs.rm(sock, { force: true });
  await q.command('migrate-incoming', { uri: `unix:${sock}` }, 30_000);
  let conn: Socket | undefined;
  for (let i = 0; ; i++) {
    try {
      conn = await connectUnixSocket(sock);
      break;
    } catch (e) {
      if (i > 200) throw new VmdeskError(ErrorCode.engine, `QEMU did not listen for the saved state: ${(e as Error).message}`);
      await new Promise((r) => setTimeout(r, 15));
    }
  }
  const fh = await fs.open(saved.file, constants.O_RDONLY | constants.O_NOFOLLOW);
  const counter = new Bounded(saved.bytes, (n) => progress?.('loading the saved state', n / saved.bytes));
  const sent = pipeline(createReadStream('', { fd: fh.fd, autoClose: false }), counter, conn);
  try {
    await Promise.all([sent, waitMigration(q, 'load the saved state')]);
  } catch (e) {
    conn.destroy();
    throw e;
  } finally {
    await fh.close().catch(() => undefined);
    await fs.rm(sock, { force: true });
  }
}
