// Builds hostile .vmdesk archives for the backup-archive suites: valid tar, checksums recomputed (as anyone
// forging an archive would), contents chosen by the test. Also small qcow2 helpers around qemu-img/qemu-io.
import { execFileSync } from 'node:child_process';
import { createHash, randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { Readable } from 'node:stream';
import { createGzip } from 'node:zlib';
import { TarWriter } from '../../main/core/backup/tar.js';

export const MiB = 1024 * 1024;

export interface ArchiveEntry {
  name: string;
  data: Buffer;
  role: 'config' | 'tree' | 'thumbnail' | 'disk' | 'uefi-vars';
  diskId?: string;
  gzip?: boolean;
}

/** Writes a tar with the entries and a manifest whose sizes and sha256 sums match them. */
export async function buildArchive(file: string, entries: ArchiveEntry[], opts: { includesSnapshots?: boolean } = {}): Promise<void> {
  const w = await TarWriter.create(file);
  const files: Record<string, unknown>[] = [];
  for (const e of entries) {
    const r = await w.add(e.name, e.data);
    files.push({ name: e.name, size: r.size, sha256: r.sha256, role: e.role, ...(e.diskId !== undefined ? { diskId: e.diskId } : {}), ...(e.gzip ? { gzip: true } : {}) });
  }
  const manifest = { format: 'vmdesk-export', version: 1, createdAt: new Date().toISOString(), vm: { id: randomUUID(), name: 'forged' }, includesSnapshots: !!opts.includesSnapshots, files };
  await w.add('manifest.json', Buffer.from(JSON.stringify(manifest, null, 2)));
  await w.close();
}

/** A vm.json as an export writes it; `over` replaces any field (disks, cdrom, directKernel, ...). */
export function vmJson(over: Record<string, unknown> = {}): Buffer {
  const now = new Date().toISOString();
  return Buffer.from(
    JSON.stringify({
      schemaVersion: 1,
      id: randomUUID(),
      name: 'forged',
      osType: 'linux',
      engine: 'qemu',
      accel: 'tcg',
      firmware: 'bios',
      cpus: 1,
      memoryMiB: 16,
      disks: [{ id: 'disk0', path: 'disks/disk0.qcow2', format: 'qcow2', owned: true, readOnly: false }],
      network: [{ mode: 'none', forwards: [] }],
      createdAt: now,
      modifiedAt: now,
      ...over,
    }),
  );
}

export function qemuImg(...args: string[]): string {
  return execFileSync('qemu-img', args, { encoding: 'utf8' });
}

/** qemu-io on one image with its format stated; returns its output. */
export function qemuIo(file: string, ...commands: string[]): string {
  return execFileSync('qemu-io', ['-f', 'qcow2', ...commands.flatMap((c) => ['-c', c]), file], { encoding: 'utf8' });
}

/** A small qcow2 made by qemu-img (extra `create` options such as -b/-F or -o data_file=...). */
export function makeQcow2(file: string, size = '1M', ...extra: string[]): Buffer {
  qemuImg('create', '-f', 'qcow2', ...extra, file, size);
  return readFileSync(file);
}

/** gzip of `head` followed by `zeros` zero bytes, streamed (nothing of that size is held in memory). */
export async function gzipBomb(head: Buffer, zeros: number): Promise<Buffer> {
  const chunk = Buffer.alloc(MiB);
  async function* source(): AsyncGenerator<Buffer> {
    yield head;
    for (let left = zeros; left > 0; left -= chunk.length) yield left >= chunk.length ? chunk : chunk.subarray(0, left);
  }
  const out: Buffer[] = [];
  for await (const c of Readable.from(source()).pipe(createGzip({ level: 9 }))) out.push(c as Buffer);
  return Buffer.concat(out);
}

export function sha256(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}
