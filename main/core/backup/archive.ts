// Export a VM to one .vmdesk archive (tar: config, compressed disks, snapshots, checksummed manifest) and import it back.
import { createReadStream, createWriteStream, promises as fs, existsSync } from 'node:fs';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { createGzip, createGunzip, constants as zc } from 'node:zlib';
import { z } from 'zod';
import { VmConfig, type Disk, type VmInfo } from '../../api/schema.js';
import { VmdeskError, ErrorCode } from '../../api/errors.js';
import { writeJsonAtomic } from '../../platform/atomic.js';
import * as img from '../snapshots/qemu-img.js';
import { diskFile, uefiVarsFile, type ProgressFn, type SnapshotCore } from '../snapshots/manager.js';
import { readTree, snapshotDir, thumbnailPath, TREE_FILE } from '../snapshots/store.js';
import { SnapshotTree, isStateFileNode, removeNode } from '../snapshots/tree.js';
import { checkNewVmName, cloneConfig, createVmBundle } from '../snapshots/clone.js';
import { TarWriter, entryStream, hashEntry, readEntry, readTarIndex, type TarEntry } from './tar.js';

export const ARCHIVE_FORMAT = 'vmdesk-export';
export const ARCHIVE_VERSION = 1;
export const ARCHIVE_EXTENSION = '.vmdesk';

const EntryName = z
  .string()
  .regex(/^[A-Za-z0-9][A-Za-z0-9._-]*(\/[A-Za-z0-9][A-Za-z0-9._-]*)?$/, 'unsafe entry name')
  .refine((n) => !n.includes('..'), 'unsafe entry name');

export const Manifest = z.object({
  format: z.literal(ARCHIVE_FORMAT),
  version: z.number().int(),
  createdAt: z.string(),
  vm: z.object({ id: z.string(), name: z.string() }),
  includesSnapshots: z.boolean(),
  files: z.array(
    z.object({
      name: EntryName,
      size: z.number().int().nonnegative(),
      sha256: z.string().regex(/^[0-9a-f]{64}$/),
      /** config | tree | thumbnail | disk | uefi-vars */
      role: z.enum(['config', 'tree', 'thumbnail', 'disk', 'uefi-vars']),
      /** For disks: the disk id, and whether the entry is a gzip of the raw qcow2 file (keeps internal snapshots). */
      diskId: z.string().optional(),
      gzip: z.boolean().optional(),
    }),
  ),
});
export type Manifest = z.infer<typeof Manifest>;

export interface ExportOptions {
  /** Keep the snapshots (and their RAM states) in the archive; without them the disks are compacted. */
  includeSnapshots?: boolean;
  onProgress?: ProgressFn;
}

export async function exportVm(core: SnapshotCore, ref: string, file: string, opts: ExportOptions = {}): Promise<{ file: string; manifest: Manifest; bytes: number }> {
  const progress = opts.onProgress ?? (() => {});
  const entry = await core.resolve(ref);
  if (!entry.config) throw new VmdeskError(ErrorCode.broken, `VM bundle ${entry.dir} is broken: ${entry.broken}`);
  const config = entry.config;
  const out = path.resolve(file);
  if (existsSync(out)) throw new VmdeskError(ErrorCode.exists, `${out} already exists`);
  if (!existsSync(path.dirname(out))) throw new VmdeskError(ErrorCode.invalid, `folder ${path.dirname(out)} does not exist`);

  return core.library.withVmLock(entry.id, config.name, async () => {
    const state = (await core.get(entry.id)).state;
    if (state !== 'stopped' && state !== 'crashed') throw new VmdeskError(ErrorCode.state, `"${config.name}" is ${state}; shut it down before exporting (its disks are changing)`);
    const withSnaps = !!opts.includeSnapshots;
    const tree = withSnaps ? await readTree(entry.dir) : null;
    const files: Manifest['files'] = [];
    const disks: { d: Disk; file: string }[] = config.disks.filter((d) => !(d.readOnly && !d.owned)).map((d) => ({ d, file: diskFile(entry.dir, d) }));
    for (const { d, file: f } of disks) {
      const info = await img.imgInfo(f, { format: d.format });
      if (withSnaps && info.backingFile) throw new VmdeskError(ErrorCode.invalid, `disk ${d.id} is a linked clone's overlay: export without snapshots (they would need its base)`);
    }
    const tmpDir = await fs.mkdtemp(path.join(path.dirname(out), '.vmdesk-export-'));
    const partial = `${out}.partial`;
    let tar: TarWriter | undefined;
    try {
      tar = await TarWriter.create(partial);
      const exportedDisks: Disk[] = [];
      for (const [i, { d, file: f }] of disks.entries()) {
        const share = (x: number) => progress(`exporting disk ${d.id}`, (i + x) / disks.length);
        let name: string;
        let tmp: string;
        if (withSnaps && d.format === 'qcow2') {
          // The qcow2 file as it is (internal snapshots and RAM states inside), gzip-compressed.
          name = `disks/${d.id}.qcow2.gz`;
          tmp = path.join(tmpDir, `${d.id}.qcow2.gz`);
          const { size } = await fs.stat(f);
          let done = 0;
          const src = createReadStream(f, { highWaterMark: 1024 * 1024 });
          src.on('data', (c) => {
            done += c.length;
            share((0.9 * done) / Math.max(1, size));
          });
          await pipeline(src, createGzip({ level: 3 }), createWriteStream(tmp));
        } else {
          // qemu-img convert -c: compressed clusters, flattened backing chain, no snapshots.
          name = `disks/${d.id}.qcow2`;
          tmp = path.join(tmpDir, `${d.id}.qcow2`);
          await img.convert(f, tmp, { srcFormat: d.format, dstFormat: 'qcow2', compress: true, onProgress: (x) => share(0.9 * x) });
        }
        const { size } = await fs.stat(tmp);
        const r = await tar.add(name, { size, stream: createReadStream(tmp, { highWaterMark: 1024 * 1024 }) }, (done) => share(0.9 + (0.1 * done) / size));
        await fs.rm(tmp, { force: true });
        files.push({ name, size: r.size, sha256: r.sha256, role: 'disk', diskId: d.id, gzip: name.endsWith('.gz') });
        exportedDisks.push({ id: d.id, path: `disks/${d.id}.qcow2`, format: 'qcow2', owned: true, readOnly: d.readOnly });
      }
      if (config.firmware === 'uefi' && existsSync(uefiVarsFile(entry.dir))) {
        const data = await fs.readFile(uefiVarsFile(entry.dir));
        const r = await tar.add('uefi-vars.qcow2', data);
        files.push({ name: 'uefi-vars.qcow2', ...r, role: 'uefi-vars' });
      }
      if (tree) {
        // Micro-VM snapshots live in state files of the running host's memory layout: they are not exported.
        const portable = tree.nodes.filter((n) => isStateFileNode(n)).reduce((t, n) => removeNode(t, n.id), tree);
        const kept = { ...portable, pending: [], nodes: portable.nodes.map((n) => ({ ...n, linkedClones: [] })) };
        const r = await tar.add(`snapshots/${TREE_FILE}`, Buffer.from(JSON.stringify(kept, null, 2)));
        files.push({ name: `snapshots/${TREE_FILE}`, ...r, role: 'tree' });
        for (const n of portable.nodes.filter((x) => x.thumbnail)) {
          const png = await fs.readFile(thumbnailPath(entry.dir, n.id)).catch(() => null);
          if (!png) continue;
          const r2 = await tar.add(`snapshots/${n.id}.png`, png);
          files.push({ name: `snapshots/${n.id}.png`, ...r2, role: 'thumbnail' });
        }
      }
      // Kept disks are all owned qcow2 in the archive; shared read-only media stay referenced by path.
      const shared = config.disks.filter((d) => d.readOnly && !d.owned);
      const vmJson = Buffer.from(JSON.stringify({ ...config, disks: [...exportedDisks, ...shared] }, null, 2));
      const rc = await tar.add('vm.json', vmJson);
      files.push({ name: 'vm.json', ...rc, role: 'config' });
      const manifest: Manifest = { format: ARCHIVE_FORMAT, version: ARCHIVE_VERSION, createdAt: new Date().toISOString(), vm: { id: config.id, name: config.name }, includesSnapshots: withSnaps, files };
      await tar.add('manifest.json', Buffer.from(JSON.stringify(manifest, null, 2)));
      await tar.close();
      tar = undefined;
      await fs.rename(partial, out);
      progress('done', 1);
      return { file: out, manifest, bytes: (await fs.stat(out)).size };
    } catch (e) {
      await tar?.abort();
      await fs.rm(partial, { force: true });
      throw e;
    } finally {
      await fs.rm(tmpDir, { recursive: true, force: true });
    }
  });
}

/** Reads and checks an archive completely (manifest, every checksum, config, tree) without writing anything. */
export async function verifyArchive(file: string, onProgress?: ProgressFn): Promise<{ manifest: Manifest; config: VmConfig; tree: SnapshotTree | null; index: Map<string, TarEntry> }> {
  const index = new Map((await readTarIndex(file)).map((e) => [e.name, e]));
  const me = index.get('manifest.json');
  if (!me) throw new VmdeskError(ErrorCode.invalid, `${file} is not a VMDesk export (no manifest.json)`);
  let manifest: Manifest;
  try {
    const raw = JSON.parse((await readEntry(file, me, 1024 * 1024)).toString('utf8')) as { format?: string; version?: number };
    if (raw.format === ARCHIVE_FORMAT && typeof raw.version === 'number' && raw.version > ARCHIVE_VERSION) {
      throw new VmdeskError(ErrorCode.invalid, `${file} was made by a newer VMDesk (archive version ${raw.version}); upgrade VMDesk`);
    }
    manifest = Manifest.parse(raw);
  } catch (e) {
    if (e instanceof VmdeskError) throw e;
    throw new VmdeskError(ErrorCode.invalid, `${file} has an invalid manifest: ${(e as Error).message.split('\n')[0]}`);
  }
  const total = manifest.files.reduce((a, f) => a + f.size, 0) || 1;
  let before = 0;
  for (const f of manifest.files) {
    const e = index.get(f.name);
    if (!e) throw new VmdeskError(ErrorCode.invalid, `archive is incomplete: ${f.name} is missing`);
    if (e.size !== f.size) throw new VmdeskError(ErrorCode.invalid, `archive is damaged: ${f.name} has ${e.size} bytes, the manifest says ${f.size}`);
    const sum = await hashEntry(file, e, 'sha256', (d) => onProgress?.('verifying checksums', (before + d) / total));
    if (sum !== f.sha256) throw new VmdeskError(ErrorCode.invalid, `archive is damaged: checksum of ${f.name} does not match`);
    before += f.size;
  }
  const cfgEntry = manifest.files.find((f) => f.role === 'config');
  if (!cfgEntry) throw new VmdeskError(ErrorCode.invalid, 'archive has no vm.json');
  const cfg = VmConfig.safeParse(JSON.parse((await readEntry(file, index.get(cfgEntry.name)!, 1024 * 1024)).toString('utf8')));
  if (!cfg.success) throw new VmdeskError(ErrorCode.invalid, `archive's vm.json is invalid: ${cfg.error.issues[0]?.path.join('.')}: ${cfg.error.issues[0]?.message}`);
  for (const d of cfg.data.disks.filter((x) => x.owned)) {
    if (!manifest.files.some((f) => f.role === 'disk' && f.diskId === d.id)) throw new VmdeskError(ErrorCode.invalid, `archive lacks disk ${d.id}`);
  }
  let tree: SnapshotTree | null = null;
  const treeEntry = manifest.files.find((f) => f.role === 'tree');
  if (treeEntry) {
    const t = SnapshotTree.safeParse(JSON.parse((await readEntry(file, index.get(treeEntry.name)!)).toString('utf8')));
    if (!t.success) throw new VmdeskError(ErrorCode.invalid, `archive's snapshot tree is invalid`);
    tree = t.data;
  }
  return { manifest, config: cfg.data, tree, index };
}

export interface ImportOptions {
  /** Name of the new VM; the exported VM's name when absent. */
  name?: string;
  onProgress?: ProgressFn;
}

/** Imports an archive as a new VM (new id): verified completely before anything is written. */
export async function importArchive(core: SnapshotCore, file: string, opts: ImportOptions = {}): Promise<VmInfo> {
  const progress = opts.onProgress ?? (() => {});
  const src = path.resolve(file);
  if (!existsSync(src)) throw new VmdeskError(ErrorCode.invalid, `${src} does not exist`);
  const { manifest, config, tree, index } = await verifyArchive(src, (p, f) => progress(p, f === undefined ? undefined : f * 0.4));
  const name = await checkNewVmName(core, opts.name ?? config.name);
  for (const d of config.disks.filter((x) => !x.owned)) {
    if (!existsSync(d.path)) throw new VmdeskError(ErrorCode.invalid, `the exported VM uses ${d.path} (shared, read-only), which does not exist here`);
  }
  const diskFiles = manifest.files.filter((f) => f.role === 'disk');
  const total = diskFiles.reduce((a, f) => a + f.size, 0) || 1;
  let done = 0;
  return createVmBundle(core, name, async (staging, id) => {
    await fs.mkdir(path.join(staging, 'disks'), { recursive: true });
    for (const f of diskFiles) {
      const e = index.get(f.name)!;
      const dst = path.join(staging, 'disks', `${f.diskId}.qcow2`);
      const s = entryStream(src, e);
      let mine = 0;
      s.on('data', (c) => {
        mine += (c as Buffer).length;
        progress(`importing disk ${f.diskId}`, 0.4 + (0.6 * (done + mine)) / total);
      });
      if (f.gzip) await pipeline(s, createGunzip({ finishFlush: zc.Z_SYNC_FLUSH }), createWriteStream(dst));
      else await pipeline(s, createWriteStream(dst));
      done += f.size;
      // A last sanity check of what was written: qemu-img must read it as qcow2.
      const info = await img.imgInfo(dst, { format: 'qcow2' });
      if (info.format !== 'qcow2') throw new VmdeskError(ErrorCode.invalid, `disk ${f.diskId} in the archive is not qcow2`);
    }
    const uefi = manifest.files.find((f) => f.role === 'uefi-vars');
    if (uefi) await pipeline(entryStream(src, index.get(uefi.name)!), createWriteStream(uefiVarsFile(staging)));
    if (tree) {
      await fs.mkdir(snapshotDir(staging), { recursive: true });
      await writeJsonAtomic(path.join(snapshotDir(staging), TREE_FILE), tree);
      for (const t of manifest.files.filter((f) => f.role === 'thumbnail')) {
        await pipeline(entryStream(src, index.get(t.name)!), createWriteStream(path.join(staging, t.name)));
      }
    }
    if (config.engine !== 'qemu') {
      // The micro-VMM reads raw images only: turn the archive's qcow2 disks back into raw ones.
      const disks: Disk[] = [];
      for (const d of config.disks) {
        if (!d.owned) {
          disks.push(d);
          continue;
        }
        const q = path.join(staging, 'disks', `${d.id}.qcow2`);
        await img.convert(q, path.join(staging, 'disks', `${d.id}.img`), { srcFormat: 'qcow2', dstFormat: 'raw' });
        await fs.rm(q, { force: true });
        disks.push({ ...d, path: `disks/${d.id}.img`, format: 'raw' });
      }
      return cloneConfig(config, id, name, disks);
    }
    return cloneConfig(config, id, name, config.disks);
  });
}
