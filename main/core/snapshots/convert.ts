// The fix offered for a disk that cannot hold snapshots: convert it, while the VM is stopped, to the format
// its engine makes (a new file, then the settings switch to it, then the VM's own old file goes).
import { promises as fs, existsSync } from 'node:fs';
import path from 'node:path';
import type { VmConfig, VmInfo } from '../../api/schema.js';
import { VmdeskError, ErrorCode } from '../../api/errors.js';
import { fsyncDir, fsyncFile } from '../../platform/atomic.js';
import * as img from '../../platform/qemu-img.js';
import { vmDiskSource } from './sources.js';
import { diskFile, type ProgressFn, type SnapVm } from './vm.js';

export async function convertVmDisk(vm: SnapVm, diskId: string, onProgress?: ProgressFn): Promise<VmInfo> {
  const { core, entry, eng } = vm;
  const { name } = entry.config;
  if (vm.info.state !== 'stopped' && vm.info.state !== 'crashed') throw new VmdeskError(ErrorCode.state, `shut "${name}" down before converting its disk`);
  const d = entry.config.disks.find((x) => x.id === diskId);
  if (!d) throw new VmdeskError(ErrorCode.notFound, `no disk "${diskId}" (disks: ${entry.config.disks.map((x) => x.id).join(', ') || 'none'})`);
  const fmt = eng.capabilities.nativeDiskFormat;
  if (d.format === fmt) throw new VmdeskError(ErrorCode.invalid, `disk ${diskId} is already ${fmt}`);
  const src = diskFile(entry.dir, d);
  await fs.mkdir(path.join(entry.dir, 'disks'), { recursive: true });
  const ext = fmt === 'raw' ? 'img' : fmt;
  let rel = `disks/${d.id}.${ext}`;
  for (let i = 1; existsSync(path.join(entry.dir, rel)); i++) rel = `disks/${d.id}-${i}.${ext}`;
  const dst = path.join(entry.dir, rel);
  try {
    // Read with its format stated and backing files off (an attached disk passes the image gate first).
    const source = await vmDiskSource(entry.dir, d, { what: `disk ${d.id} of "${name}"`, vmsDir: core.library.vmsDir });
    await img.convert(source, dst, { dstFormat: fmt, onProgress: (f) => onProgress?.(`converting disk ${d.id}`, f) });
    // On the disk before the VM's record names it and the old file goes.
    await fsyncFile(dst);
    await fsyncDir(path.dirname(dst));
  } catch (e) {
    await fs.rm(dst, { force: true });
    throw e;
  }
  const next: VmConfig = { ...entry.config, disks: entry.config.disks.map((x) => (x.id === d.id ? { ...x, path: rel, format: fmt, owned: true } : x)) };
  // Through the core: the index (and every client) sees the new disk at once.
  const info = await core.saveConfig(entry.id, next);
  // Only the VM's own file is removed; an attached image belongs to the user and stays.
  if (d.owned) await fs.rm(src, { force: true });
  return info;
}
