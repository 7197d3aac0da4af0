// Raw disk images, the only format the micro-VM opens: sparse files made with truncate, grown in place.
import { constants, promises as fs } from 'node:fs';
import { resolve } from 'node:path';
import { ErrorCode, VmdeskError } from '../../api/errors.js';
import { LIMITS, type DiskFormat } from '../../api/schema.js';
import type { DiskProvider } from '../engine.js';
import { nativeFlock } from './native.js';
import { activeMicrovms } from './runtime.js';

/** virtio-blk counts 512-byte sectors: a size is rounded up to whole sectors, as qemu-img does. */
function sectors(bytes: number): number {
  if (!Number.isSafeInteger(bytes) || bytes < LIMITS.diskMinBytes || bytes > LIMITS.diskMaxBytes) {
    throw new VmdeskError(ErrorCode.invalid, `disk size ${bytes} is outside ${LIMITS.diskMinBytes} bytes .. ${LIMITS.diskMaxBytes / 1024 ** 4} TiB`);
  }
  return Math.ceil(bytes / 512) * 512;
}

function rawOnly(format: DiskFormat, file: string): void {
  if (format !== 'raw') throw new VmdeskError(ErrorCode.invalid, `${file} is ${format}: the microvm engine uses raw images only (convert with qemu-img convert -O raw)`);
}

function fsError(e: unknown, what: string): VmdeskError {
  const err = e as NodeJS.ErrnoException;
  if (err.code === 'ENOENT') return new VmdeskError(ErrorCode.notFound, `${what}: no such file`);
  if (err.code === 'EEXIST') return new VmdeskError(ErrorCode.exists, `${what} already exists`);
  if (err.code === 'ENOSPC') return new VmdeskError(ErrorCode.noSpace, `${what}: no space left on the device`);
  if (err.code === 'EACCES' || err.code === 'EPERM' || err.code === 'EROFS') return new VmdeskError(ErrorCode.permission, `${what}: ${err.message}`);
  return new VmdeskError(ErrorCode.engine, `${what}: ${err.message}`);
}

export const microvmDisks: DiskProvider = {
  async create(file, bytes) {
    const size = sectors(bytes);
    let fh: fs.FileHandle;
    try {
      fh = await fs.open(file, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o600);
    } catch (e) {
      throw fsError(e, file);
    }
    try {
      await fh.truncate(size); // sparse: blocks are allocated as the guest writes
      await fh.sync();
    } catch (e) {
      await fh.close().catch(() => {});
      await fs.rm(file, { force: true });
      throw fsError(e, file);
    }
    await fh.close();
  },

  async resize(file, format, bytes) {
    rawOnly(format, file);
    const size = sectors(bytes);
    await this.checkFree(file, format);
    let current: number;
    try {
      current = (await fs.stat(file)).size;
    } catch (e) {
      throw fsError(e, file);
    }
    if (size < current) throw new VmdeskError(ErrorCode.invalid, `${file} is ${current} bytes: shrinking a disk is refused (it would cut off the guest's data)`);
    if (size === current) return;
    try {
      await fs.truncate(file, size);
    } catch (e) {
      throw fsError(e, file);
    }
  },

  async info(file, format) {
    rawOnly(format, file);
    try {
      const st = await fs.stat(file);
      return { virtualSize: st.size, actualSize: st.blocks * 512 };
    } catch (e) {
      throw fsError(e, file);
    }
  },

  /**
   * EBUSY when a running micro-VM has the file open. vmdesk-microvm holds flock(2) on its disks (exclusive for
   * writable ones), which this asks without blocking, so a guest of another daemon counts too; without the
   * addon, the guests this process runs are what it knows.
   */
  async checkFree(file, format) {
    rawOnly(format, file);
    const target = resolve(file);
    for (const rt of activeMicrovms) {
      if (rt.diskFiles.some((d) => resolve(d) === target)) throw new VmdeskError(ErrorCode.busy, `${file} is in use by the running micro-VM (pid ${rt.pid})`);
    }
    const flock = nativeFlock();
    if (!flock) return;
    let fh: fs.FileHandle;
    try {
      fh = await fs.open(file, 'r');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw fsError(e, file);
    }
    try {
      if (!flock.flockFile(fh.fd, true, false)) throw new VmdeskError(ErrorCode.busy, `${file} is in use by another process (a running micro-VM?)`);
      flock.funlockFile(fh.fd);
    } finally {
      await fh.close();
    }
  },
};
