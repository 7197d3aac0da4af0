// Volumes in a host's storage pool: the VM's own disks, and the boot files and CD images VMDesk uploads from
// this machine. Copies go through libvirt's streams (vol-upload/vol-download), so they work the same for a
// host on this machine and one at the end of an ssh connection; progress is counted in bytes.
import { createReadStream, promises as fs } from 'node:fs';
import { Transform } from 'node:stream';
import path from 'node:path';
import { ErrorCode, VmdeskError } from '../../api/errors.js';
import { currentCancelSignal } from '../../platform/cancel.js';
import type { EngineContext, Progress } from '../engine.js';
import type { LibvirtConnection } from './connection.js';
import { fileVolumeName } from './domain-xml.js';

/** Names of volumes in the pool (bounded: a pool listing past this is refused). */
const VOLUMES_MAX = 100_000;

/** The pool is there and active (started where it was only defined); EHOST with the fix when it is missing. */
export async function ensurePool(conn: LibvirtConnection, pool: string): Promise<void> {
  let info: string;
  try {
    info = await conn.query(['pool-info', pool]);
  } catch (e) {
    if ((e as VmdeskError).code !== ErrorCode.notFound) throw e;
    throw new VmdeskError(
      ErrorCode.host,
      `${conn.label} has no storage pool "${pool}" for VMDesk's disks; create one there (virsh pool-define-as ${pool} dir --target DIR && virsh pool-build ${pool} && virsh pool-start ${pool} && virsh pool-autostart ${pool}) or add the host again with --pool NAME`,
    );
  }
  if (!/^State:\s+running/m.test(info)) await conn.query(['pool-start', pool], { what: `starting storage pool "${pool}"` });
}

export async function listVolumes(conn: LibvirtConnection, pool: string): Promise<string[]> {
  const out = await conn.query(['vol-list', '--pool', pool]);
  const names: string[] = [];
  for (const line of out.split('\n')) {
    const m = /^\s*(\S+)\s+(\/\S.*)$/.exec(line);
    if (m && m[1] !== 'Name') names.push(m[1]!);
    if (names.length > VOLUMES_MAX) throw new VmdeskError(ErrorCode.engine, `storage pool "${pool}" on ${conn.label} lists more than ${VOLUMES_MAX} volumes`);
  }
  return names;
}

export async function volumeInfo(conn: LibvirtConnection, pool: string, name: string): Promise<{ capacity: number; allocation: number } | undefined> {
  try {
    const out = await conn.query(['vol-info', '--pool', pool, name, '--bytes']);
    const cap = /^Capacity:\s+(\d+) bytes/m.exec(out);
    const alloc = /^Allocation:\s+(\d+) bytes/m.exec(out);
    return { capacity: Number(cap?.[1] ?? 0), allocation: Number(alloc?.[1] ?? 0) };
  } catch (e) {
    if ((e as VmdeskError).code === ErrorCode.notFound) return undefined;
    throw e;
  }
}

export async function volumePath(conn: LibvirtConnection, pool: string, name: string): Promise<string> {
  const p = (await conn.query(['vol-path', '--pool', pool, name])).trim();
  if (!p.startsWith('/') || p.includes('\n') || p.length > 4096) throw new VmdeskError(ErrorCode.engine, `${conn.label} gave no usable path for volume ${name} (${JSON.stringify(p.slice(0, 200))})`);
  return p;
}

/** A new volume; EEXIST when the name is taken. */
export async function createVolume(conn: LibvirtConnection, pool: string, name: string, bytes: number, format: 'qcow2' | 'raw'): Promise<void> {
  await conn.query(['vol-create-as', '--pool', pool, name, String(bytes), '--format', format], { what: `creating volume ${name}` });
}

/** Deletes a volume; one that is already gone is fine. */
export async function deleteVolume(conn: LibvirtConnection, pool: string, name: string): Promise<void> {
  try {
    await conn.query(['vol-delete', '--pool', pool, name]);
  } catch (e) {
    if ((e as VmdeskError).code !== ErrorCode.notFound) throw e;
  }
}

/** Counts bytes on their way through, for progress. */
function counter(total: number, phase: string, progress: Progress): Transform {
  let done = 0;
  let last = 0;
  return new Transform({
    transform(chunk: Buffer, _enc, cb) {
      done += chunk.length;
      const now = Date.now();
      if (now - last > 250) {
        last = now;
        progress(phase, total > 0 ? Math.min(1, done / total) : undefined);
      }
      cb(null, chunk);
    },
  });
}

/**
 * Makes volume `name` (raw, exactly the file's size) and streams a local file into it: its bytes arrive
 * unchanged (a qcow2 file stays qcow2). Cancellable (job.cancel); a volume left half-written is deleted.
 */
export async function uploadFile(conn: LibvirtConnection, pool: string, name: string, file: string, phase: string, progress: Progress): Promise<void> {
  const size = (await fs.stat(file)).size;
  if (size <= 0) throw new VmdeskError(ErrorCode.invalid, `${file} is empty; nothing to copy to ${conn.label}`);
  await createVolume(conn, pool, name, size, 'raw');
  try {
    const input = createReadStream(file).pipe(counter(size, phase, progress));
    await conn.once(['vol-upload', '--pool', pool, name, '/dev/stdin'], { input, signal: currentCancelSignal(), what: `copying ${path.basename(file)} to ${conn.label}` });
    progress(phase, 1);
  } catch (e) {
    await deleteVolume(conn, pool, name).catch(() => undefined);
    throw e;
  }
}

/** Copies a volume into a new local file (its size polled for progress); the file is removed on failure. */
export async function downloadVolume(conn: LibvirtConnection, pool: string, name: string, file: string, phase: string, progress: Progress): Promise<void> {
  const info = await volumeInfo(conn, pool, name);
  if (!info) throw new VmdeskError(ErrorCode.notFound, `volume ${name} is missing from pool "${pool}" on ${conn.label}`);
  const total = info.allocation || info.capacity;
  const poll = setInterval(() => {
    void fs.stat(file).then(
      (st) => progress(phase, total > 0 ? Math.min(1, st.size / total) : undefined),
      () => undefined,
    );
  }, 500);
  try {
    // Into a file, not stdout: virsh prints its own newline on stdout after the data.
    await conn.once(['vol-download', '--pool', pool, name, file], { signal: currentCancelSignal(), what: `copying ${name} from ${conn.label}` });
    progress(phase, 1);
  } catch (e) {
    await fs.rm(file, { force: true });
    throw e;
  } finally {
    clearInterval(poll);
  }
}

/** What VMDesk last uploaded for a boot file or CD: the source's identity, so an unchanged file is not copied again. */
interface UploadRecord {
  uri: string;
  pool: string;
  source: string;
  size: number;
  mtimeMs: number;
  ino: number;
}

function recordFile(ctx: EngineContext): string {
  return path.join(ctx.bundleDir, 'libvirt-uploads.json');
}

async function readRecords(ctx: EngineContext): Promise<Record<string, UploadRecord>> {
  try {
    const text = await fs.readFile(recordFile(ctx), 'utf8');
    if (text.length > 64 * 1024) return {};
    const v = JSON.parse(text) as unknown;
    return v && typeof v === 'object' ? (v as Record<string, UploadRecord>) : {};
  } catch {
    return {};
  }
}

/**
 * The kernel, initrd and CD image of a VM on its host: uploaded from this machine when new or changed since
 * the last upload (size, mtime, inode), as volumes in the pool. Returns their paths on the host.
 */
export async function syncBootFiles(conn: LibvirtConnection, ctx: EngineContext, pool: string, progress: Progress): Promise<{ kernel?: string; initrd?: string; cdrom?: string }> {
  const c = ctx.config;
  const want: { what: 'kernel' | 'initrd' | 'cdrom'; file: string }[] = [];
  if (c.directKernel) {
    want.push({ what: 'kernel', file: c.directKernel.kernel });
    if (c.directKernel.initrd) want.push({ what: 'initrd', file: c.directKernel.initrd });
  }
  if (c.cdrom) want.push({ what: 'cdrom', file: c.cdrom });
  const records = await readRecords(ctx);
  const out: { kernel?: string; initrd?: string; cdrom?: string } = {};
  let changed = false;
  for (const w of want) {
    const vol = fileVolumeName(c.id, w.what);
    const st = await fs.stat(w.file).catch(() => null);
    if (!st?.isFile()) throw new VmdeskError(ErrorCode.invalid, `the ${w.what === 'cdrom' ? 'CD image' : w.what} ${w.file} is not a readable file on this machine (VMDesk copies it to ${conn.label})`);
    const rec = records[vol];
    const same = rec && rec.uri === conn.host.uri && rec.pool === pool && rec.source === w.file && rec.size === st.size && rec.mtimeMs === st.mtimeMs && rec.ino === st.ino;
    const info = same ? await volumeInfo(conn, pool, vol) : undefined;
    if (!same || !info || info.capacity !== st.size) {
      await deleteVolume(conn, pool, vol);
      await uploadFile(conn, pool, vol, w.file, `copying the ${w.what === 'cdrom' ? 'CD image' : w.what} to ${conn.host.name}`, progress);
      records[vol] = { uri: conn.host.uri, pool, source: w.file, size: st.size, mtimeMs: st.mtimeMs, ino: st.ino };
      changed = true;
    }
    out[w.what] = await volumePath(conn, pool, vol);
  }
  if (changed) {
    const { writeJsonAtomic } = await import('../../platform/atomic.js');
    await writeJsonAtomic(recordFile(ctx), records);
  }
  return out;
}

/** Forgets what was uploaded (the volumes are gone, or the VM moved). */
export async function forgetUploads(ctx: EngineContext): Promise<void> {
  await fs.rm(recordFile(ctx), { force: true });
}
