// Export a VM to one .vmdesk archive (tar: config, compressed disks, snapshots, checksummed manifest) and import it back.
// An archive is input from anywhere: import rebuilds a VM from validated values with VMDesk's own file names,
// writes only under the new bundle's staging folder (containedPath), and passes every disk through the image
// gate. Nothing path-like in an archive (disk paths, base images, CD-ROM, kernel) reaches the host.
import { createReadStream, createWriteStream, promises as fs, existsSync } from 'node:fs';
import path from 'node:path';
import { Transform, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGzip, createGunzip, constants as zc } from 'node:zlib';
import { z } from 'zod';
import { LIMITS, VmConfig, VM_SCHEMA_VERSION, type Disk, type DiskFormat, type VmInfo } from '../../api/schema.js';
import { VmdeskError, ErrorCode } from '../../api/errors.js';
import { fsyncDir, writeJsonAtomic } from '../../platform/atomic.js';
import { containedPath } from '../../platform/contain.js';
import { admitImage, qemuImgSource } from '../images/gate.js';
import * as img from '../../platform/qemu-img.js';
import type { ProgressFn, SnapshotCore } from '../services.js';
import { uefiVarsFile } from '../snapshots/vm.js';
import { readTree, thumbnailPath, TREE_FILE } from '../snapshots/store.js';
import { SnapshotNode, SnapshotTree, isStateFileNode, normalizeTree, removeNode } from '../snapshots/tree.js';
import { isStalePartial, partialPath, vmDiskSource, writerAlive, writerTag } from '../snapshots/sources.js';
import { TarWriter, entryStream, hashEntry, readEntry, readTarIndex, type TarEntry } from './tar.js';
import { TPM_STATE_DIR, TPM_STATE_FILES, TPM_STATE_FILE_MAX } from '../../platform/tpm-state.js';

export const ARCHIVE_FORMAT = 'vmdesk-export';
export const ARCHIVE_VERSION = 1;
export const ARCHIVE_EXTENSION = '.vmdesk';

const MiB = 1024 * 1024;
/** Disk ids as vm.json allows them; they become file names (disks/<id>.qcow2), so nothing else is accepted. */
const DISK_ID = /^[a-z0-9-]{1,40}$/;
/** Snapshot tags are handed to qemu-img (`-l snapshot.name=TAG`): no commas, equals signs or control characters. */
const SAFE_TAG = /^[A-Za-z0-9][A-Za-z0-9 ._+:@-]{0,127}$/;
const THUMBNAIL_ENTRY = /^snapshots\/([a-z0-9]{4,32})\.png$/;
const PNG_MAGIC = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
const MAX_THUMBNAIL_BYTES = 8 * MiB;
/** OVMF's variable store is a few hundred KiB; anything near this is not one. */
const MAX_UEFI_VARS_BYTES = 64 * MiB;
const MAX_ENTRIES = 256;

const EntryName = z
  .string()
  .regex(/^[A-Za-z0-9][A-Za-z0-9._-]*(\/[A-Za-z0-9][A-Za-z0-9._-]*)?$/, 'unsafe entry name')
  .refine((n) => !n.includes('..'), 'unsafe entry name');

const ManifestFile = z.object({
  name: EntryName,
  size: z.number().int().nonnegative(),
  sha256: z.string().regex(/^[0-9a-f]{64}$/),
  /** config | tree | thumbnail | disk | uefi-vars | tpm (a TPM state file: tpm/<file>, or tpm/<snapshot id>--<file> for a disk snapshot's copy) */
  role: z.enum(['config', 'tree', 'thumbnail', 'disk', 'uefi-vars', 'tpm']),
  /** For disks: the disk id, and whether the entry is a gzip of the raw qcow2 file (keeps internal snapshots). */
  diskId: z.string().regex(DISK_ID, 'unsafe disk id').optional(),
  gzip: z.boolean().optional(),
});
export type ManifestFile = z.infer<typeof ManifestFile>;

export const Manifest = z
  .object({
    format: z.literal(ARCHIVE_FORMAT),
    version: z.number().int(),
    createdAt: z.string(),
    vm: z.object({ id: z.string(), name: z.string() }),
    includesSnapshots: z.boolean(),
    files: z.array(ManifestFile).max(MAX_ENTRIES),
  })
  .superRefine((m, ctx) => {
    // One meaning per entry and per disk: a second entry of the same name or disk id could be read in
    // one place and written in another.
    const names = new Set<string>();
    const disks = new Set<string>();
    const single = new Map<string, number>();
    m.files.forEach((f, i) => {
      if (names.has(f.name)) ctx.addIssue({ code: 'custom', path: ['files', i, 'name'], message: `${f.name} is listed twice` });
      names.add(f.name);
      if (f.role === 'disk') {
        if (!f.diskId) ctx.addIssue({ code: 'custom', path: ['files', i, 'diskId'], message: 'a disk entry needs a disk id' });
        else if (disks.has(f.diskId)) ctx.addIssue({ code: 'custom', path: ['files', i, 'diskId'], message: `disk ${f.diskId} is listed twice` });
        else disks.add(f.diskId);
      } else if (f.role !== 'thumbnail' && f.role !== 'tpm') {
        single.set(f.role, (single.get(f.role) ?? 0) + 1);
        if (single.get(f.role)! > 1) ctx.addIssue({ code: 'custom', path: ['files', i, 'role'], message: `more than one ${f.role} entry` });
      }
    });
  });
export type Manifest = z.infer<typeof Manifest>;

function refuse(message: string, details: string[] = []): VmdeskError {
  return new VmdeskError(ErrorCode.invalid, message, details);
}

/** Printable, bounded rendering of a value from an archive, for warnings. */
function shown(s: string): string {
  const clean = s.replace(/[^\x20-\x7e]/g, '?');
  return clean.length > 120 ? `${clean.slice(0, 117)}...` : clean;
}

// ---- export -----------------------------------------------------------------------------------------

export interface ExportOptions {
  /** Keep the snapshots (and their RAM states) in the archive; without them the disks are compacted. */
  includeSnapshots?: boolean;
  onProgress?: ProgressFn;
}

/** Folder of an export's compressed disks while it runs; the writer's pid and start time are in the name. */
const EXPORT_TMP = /^\.vmdesk-export-(\d{1,10})-(\d*)-[A-Za-z0-9]{6}$/;

/**
 * Removes what crashed exports left in `dir`: `<file>.partial-<pid>-<start>` archives and
 * `.vmdesk-export-<pid>-<start>-XXXXXX` folders whose writer is no longer running. Files of a live
 * writer (another export in progress, in this process or another) are left alone. A later export to the
 * same folder calls it; it may also be called on its own (a "clean up" action). Returns what was removed.
 */
export async function sweepStaleExports(dir: string): Promise<string[]> {
  const removed: string[] = [];
  for (const name of await fs.readdir(dir).catch(() => [] as string[])) {
    const p = path.join(dir, name);
    const tmp = EXPORT_TMP.exec(name);
    if (tmp) {
      if (writerAlive(Number(tmp[1]), tmp[2]!)) continue;
      const st = await fs.lstat(p).catch(() => null);
      if (!st?.isDirectory()) continue;
      await fs.rm(p, { recursive: true, force: true });
      removed.push(p);
      continue;
    }
    if (!isStalePartial(name)) continue;
    // Only a regular file that is (the start of) a tar archive: a user's own file of a similar name stays.
    const st = await fs.lstat(p).catch(() => null);
    if (!st?.isFile()) continue;
    if (st.size >= 512) {
      const fh = await fs.open(p, 'r');
      const b = Buffer.alloc(5);
      await fh.read(b, 0, 5, 257).finally(() => fh.close());
      if (b.toString('latin1') !== 'ustar') continue;
    }
    await fs.rm(p, { force: true });
    removed.push(p);
  }
  return removed;
}

/** Moves the finished archive into place without replacing a file someone created meanwhile. */
async function publish(partial: string, out: string): Promise<void> {
  try {
    await fs.link(partial, out);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'EEXIST') throw new VmdeskError(ErrorCode.exists, `${out} already exists`);
    // File systems without hard links (FAT on a USB stick): check, then rename.
    if (existsSync(out)) throw new VmdeskError(ErrorCode.exists, `${out} already exists`);
    await fs.rename(partial, out);
  }
  await fs.rm(partial, { force: true });
  // The archive's bytes were synced as it was closed; its name is on the disk too once "done" is said.
  await fsyncDir(path.dirname(out));
}

export async function exportVm(core: SnapshotCore, ref: string, file: string, opts: ExportOptions = {}): Promise<{ file: string; manifest: Manifest; bytes: number }> {
  const progress = opts.onProgress ?? (() => {});
  const entry = await core.usable(ref);
  const config = entry.config;
  const out = path.resolve(file);
  const folder = path.dirname(out);
  if (existsSync(out)) throw new VmdeskError(ErrorCode.exists, `${out} already exists`);
  if (!existsSync(folder)) throw new VmdeskError(ErrorCode.invalid, `folder ${folder} does not exist`);
  // What an earlier export killed half-way left here (a dead writer's files only).
  await sweepStaleExports(folder);

  // No VM lock: the daemon runs one job per VM, so the VM cannot start while this export reads its disks.
  const state = (await core.get(entry.id)).state;
  if (state !== 'stopped' && state !== 'crashed') throw new VmdeskError(ErrorCode.state, `"${config.name}" is ${state}; shut it down before exporting (its disks are changing)`);
  const withSnaps = !!opts.includeSnapshots;
  const tree = withSnaps ? await readTree(entry.dir) : null;
  const files: Manifest['files'] = [];
  const disks = config.disks.filter((d) => !(d.readOnly && !d.owned));
  // Every disk is read with its format stated and backing files off (a linked clone's base given
  // explicitly); attached files pass the image gate first. Checked before anything is written.
  const sources = new Map<string, string>();
  for (const d of disks) {
    if (withSnaps && d.base) throw new VmdeskError(ErrorCode.invalid, `disk ${d.id} is a linked clone's overlay: export without snapshots (they would need its base)`);
    sources.set(d.id, await vmDiskSource(entry.dir, d, { what: `disk ${d.id} of "${config.name}"`, vmsDir: core.library.vmsDir }));
  }
  const tmpDir = await fs.mkdtemp(path.join(folder, `.vmdesk-export-${writerTag()}-`));
  const partial = partialPath(out);
  let tar: TarWriter | undefined;
  try {
    tar = await TarWriter.create(partial);
    const exportedDisks: Disk[] = [];
    for (const [i, d] of disks.entries()) {
      const share = (x: number) => progress(`exporting disk ${d.id}`, (i + x) / disks.length);
      let name: string;
      let tmp: string;
      if (withSnaps && d.format === 'qcow2') {
        // The qcow2 file as it is (internal snapshots and RAM states inside), gzip-compressed. Its bytes
        // were admitted by vmDiskSource above (no backing or data file).
        const f = d.owned ? await containedPath(entry.dir, d.path) : d.path;
        name = `disks/${d.id}.qcow2.gz`;
        tmp = path.join(tmpDir, `${d.id}.qcow2.gz`);
        const { size } = await fs.stat(f);
        let done = 0;
        const src = createReadStream(f, { highWaterMark: 1024 * 1024 });
        src.on('data', (c) => {
          done += c.length;
          share((0.9 * done) / Math.max(1, size));
        });
        await pipeline(src, createGzip({ level: 3 }), createWriteStream(tmp, { flags: 'wx' }));
      } else {
        // qemu-img convert -c: compressed clusters, flattened onto its base for a linked clone, no snapshots.
        name = `disks/${d.id}.qcow2`;
        tmp = path.join(tmpDir, `${d.id}.qcow2`);
        await img.convert(sources.get(d.id)!, tmp, { dstFormat: 'qcow2', compress: true, onProgress: (x) => share(0.9 * x) });
      }
      const { size } = await fs.stat(tmp);
      const r = await tar.add(name, { size, stream: createReadStream(tmp, { highWaterMark: 1024 * 1024 }) }, (done) => share(0.9 + (0.1 * done) / size));
      await fs.rm(tmp, { force: true });
      files.push({ name, size: r.size, sha256: r.sha256, role: 'disk', diskId: d.id, gzip: name.endsWith('.gz') });
      exportedDisks.push({ id: d.id, path: `disks/${d.id}.qcow2`, format: 'qcow2', owned: true, readOnly: d.readOnly, ...(d.bus ? { bus: d.bus } : {}) });
    }
    if (config.firmware === 'uefi' && existsSync(uefiVarsFile(entry.dir))) {
      const data = await fs.readFile(uefiVarsFile(entry.dir));
      const r = await tar.add('uefi-vars.qcow2', data);
      files.push({ name: 'uefi-vars.qcow2', ...r, role: 'uefi-vars' });
    }
    // The TPM's state (issue 12): its files as they are, and the copies disk snapshots keep (tpm.ts).
    if (config.tpm) {
      const tpmDir = path.join(entry.dir, TPM_STATE_DIR);
      const sources: [string, string][] = TPM_STATE_FILES.map((f) => [`${TPM_STATE_DIR}/${f}`, path.join(tpmDir, f)]);
      if (tree) for (const n of tree.nodes) for (const f of TPM_STATE_FILES) sources.push([`${TPM_STATE_DIR}/${n.id}--${f}`, path.join(tpmDir, 'snapshots', n.id, f)]);
      for (const [name, file] of sources) {
        const st = await fs.lstat(file).catch(() => null);
        if (!st || !st.isFile() || st.size > TPM_STATE_FILE_MAX) continue;
        const r = await tar.add(name, await fs.readFile(file));
        files.push({ name, ...r, role: 'tpm' });
      }
    }
    if (tree) {
      // Memory snapshots live in state files of one engine's memory layout: they are not exported.
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
    // Kept disks are all owned qcow2 in the archive; shared read-only media stay referenced by path (an
    // importer shows them to the user and attaches nothing by path).
    const shared = config.disks.filter((d) => d.readOnly && !d.owned);
    const vmJson = Buffer.from(JSON.stringify({ ...config, disks: [...exportedDisks, ...shared] }, null, 2));
    const rc = await tar.add('vm.json', vmJson);
    files.push({ name: 'vm.json', ...rc, role: 'config' });
    const manifest: Manifest = { format: ARCHIVE_FORMAT, version: ARCHIVE_VERSION, createdAt: new Date().toISOString(), vm: { id: config.id, name: config.name }, includesSnapshots: withSnaps, files };
    await tar.add('manifest.json', Buffer.from(JSON.stringify(manifest, null, 2)));
    await tar.close();
    tar = undefined;
    await publish(partial, out);
    progress('done', 1);
    return { file: out, manifest, bytes: (await fs.stat(out)).size };
  } catch (e) {
    await tar?.abort();
    await fs.rm(partial, { force: true });
    throw e;
  } finally {
    await fs.rm(tmpDir, { recursive: true, force: true });
  }
}

// ---- import -----------------------------------------------------------------------------------------

function parseJsonEntry(what: string, buf: Buffer): unknown {
  try {
    return JSON.parse(buf.toString('utf8'));
  } catch (e) {
    throw refuse(`archive's ${what} is not valid JSON: ${(e as Error).message.split('\n')[0]}`);
  }
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
    const first = e instanceof z.ZodError ? e.issues[0] : undefined;
    throw new VmdeskError(ErrorCode.invalid, `${file} has an invalid manifest: ${first ? `${first.path.join('.')}: ${first.message}` : (e as Error).message.split('\n')[0]}`);
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
  const cfg = VmConfig.safeParse(parseJsonEntry('vm.json', await readEntry(file, index.get(cfgEntry.name)!, 1024 * 1024)));
  if (!cfg.success) throw new VmdeskError(ErrorCode.invalid, `archive's vm.json is invalid: ${cfg.error.issues[0]?.path.join('.')}: ${cfg.error.issues[0]?.message}`);
  for (const d of cfg.data.disks.filter((x) => x.owned)) {
    if (!manifest.files.some((f) => f.role === 'disk' && f.diskId === d.id)) throw new VmdeskError(ErrorCode.invalid, `archive lacks disk ${d.id}`);
  }
  let tree: SnapshotTree | null = null;
  const treeEntry = manifest.files.find((f) => f.role === 'tree');
  if (treeEntry) {
    const t = SnapshotTree.safeParse(parseJsonEntry('snapshot tree', await readEntry(file, index.get(treeEntry.name)!, 16 * MiB)));
    if (!t.success) throw new VmdeskError(ErrorCode.invalid, `archive's snapshot tree is invalid: ${t.error.issues[0]?.path.join('.')}: ${t.error.issues[0]?.message}`);
    tree = t.data;
  }
  return { manifest, config: cfg.data, tree, index };
}

/** The settings an import keeps: plain validated values, copied field by field (never a spread of the archive's). */
type Settings = Pick<VmConfig, 'osType' | 'engine' | 'accel' | 'firmware' | 'cpus' | 'memoryMiB' | 'network' | 'display' | 'balloon' | 'guestAgent' | 'tags' | 'tpm' | 'secureBoot' | 'usbTablet' | 'audio'>;

function settingsOf(c: VmConfig): Settings {
  return {
    osType: c.osType,
    engine: c.engine,
    accel: c.accel,
    firmware: c.firmware,
    cpus: c.cpus,
    memoryMiB: c.memoryMiB,
    // Device models the guest's saved memory expects (a live snapshot restores only onto the same devices).
    // The clipboard is not among them: it is off for an imported guest until the user turns it on.
    ...(c.display ? { display: c.display } : {}),
    ...(c.balloon !== undefined ? { balloon: c.balloon } : {}),
    ...(c.guestAgent !== undefined ? { guestAgent: c.guestAgent } : {}),
    // Windows 11 devices and the sound card (issue 12): the guest and its snapshots expect them.
    ...(c.tpm ? { tpm: true } : {}),
    ...(c.secureBoot ? { secureBoot: true } : {}),
    ...(c.usbTablet === false ? { usbTablet: false } : {}),
    ...(c.audio !== undefined ? { audio: c.audio } : {}),
    ...(c.tags?.length ? { tags: [...c.tags] } : {}),
    // No MAC addresses: two VMs on one host must not share one.
    network: c.network.map((n) => ({
      mode: n.mode,
      ...(n.network ? { network: n.network } : {}),
      forwards: n.forwards.map((f) => ({ protocol: f.protocol, hostPort: f.hostPort, guestPort: f.guestPort })),
      ...(n.model ? { model: n.model } : {}),
    })),
  };
}

/** What an import will write, decided from the verified archive before anything is written. */
export interface ImportPlan {
  settings: Settings;
  /** Each disk: the archive entry it comes from and the Disk the new VM gets (VMDesk's own file name). */
  disks: { id: string; entry: ManifestFile; disk: Disk }[];
  uefiVars?: ManifestFile;
  /** TPM state files: where each goes inside the bundle's tpm/ folder (its name, or snapshots/<id>/<name>). */
  tpm: { entry: ManifestFile; to: string[] }[];
  /** The snapshot tree rebuilt from validated nodes (thumbnail flags are set as thumbnails are written). */
  tree: SnapshotTree | null;
  thumbnails: { id: string; entry: ManifestFile }[];
  /** What was left out, in words for the user (host files the archive named, unusable snapshots). */
  warnings: string[];
}

/**
 * Decides what an import makes of a verified archive. Pure: no I/O. Refuses (EINVAL) what only a forged
 * archive contains (a disk id twice, an owned disk outside its bundle); drops with a warning what names
 * files of the exporting machine (attached disks, CD/DVD image, kernel and initrd), since an archive must
 * never make VMDesk read, move or delete a file of this host.
 */
export function planImport(manifest: Manifest, config: VmConfig, tree: SnapshotTree | null, diskFormat: DiskFormat = 'qcow2'): ImportPlan {
  const warnings: string[] = [];
  const settings = settingsOf(config);
  const entries = new Map(manifest.files.filter((f) => f.role === 'disk').map((f) => [f.diskId!, f]));
  const disks: ImportPlan['disks'] = [];
  const seen = new Set<string>();
  for (const d of config.disks) {
    if (seen.has(d.id)) throw refuse(`archive's vm.json lists disk ${d.id} twice`);
    seen.add(d.id);
    if (!d.owned) {
      warnings.push(`disk ${d.id} was the file ${shown(d.path)} of the exporting machine; it was not attached (attach it again if you trust that file)`);
      continue;
    }
    // Exports name their disks disks/<id>.qcow2; anything absolute or climbing out is a forged archive.
    if (path.isAbsolute(d.path) || d.path.startsWith('\\') || d.path.split(/[\\/]/).includes('..')) {
      throw refuse(`archive's vm.json places disk ${d.id} at "${shown(d.path)}", outside its own bundle; refused`);
    }
    const entry = entries.get(d.id);
    if (!entry) throw refuse(`archive lacks disk ${d.id}`);
    if (d.base) warnings.push(`disk ${d.id} named a base image (${shown(d.base)}); it was ignored (exported disks are complete on their own)`);
    // Disks arrive as qcow2 and are kept in the format the VM's engine makes (converted after the gate).
    const ext = diskFormat === 'raw' ? 'img' : diskFormat;
    const disk: Disk = { id: d.id, path: `disks/${d.id}.${ext}`, format: diskFormat, owned: true, readOnly: d.readOnly, ...(d.bus ? { bus: d.bus } : {}) };
    disks.push({ id: d.id, entry, disk });
  }
  for (const id of entries.keys()) if (!seen.has(id)) warnings.push(`the archive holds disk ${id}, which its vm.json does not use; it was not imported`);
  if (config.cdrom) warnings.push(`the CD/DVD image ${shown(config.cdrom)} of the exporting machine was not kept; choose one again if the VM needs it`);
  if (config.clipboard) warnings.push('clipboard sharing is off for the imported VM (a guest from an archive is not trusted with your clipboard); turn it on in Settings if you trust it, before restoring a live snapshot taken with it on');
  if (config.virtioDrivers) warnings.push(`the driver disc ${shown(config.virtioDrivers)} of the exporting machine was not kept; choose one again if the VM needs it`);
  if (config.usb?.length) warnings.push(`the exporting machine's USB devices passed through (${config.usb.map((u) => (u.vendorId !== undefined ? `${u.vendorId}:${u.productId}` : `bus ${u.bus} addr ${u.addr}`)).join(', ')}) were not kept; add this computer's again if the VM needs them`);
  if (config.shares?.length) warnings.push(`the shared folders of the exporting machine (${config.shares.map((f) => shown(f.hostPath)).join(', ')}) were not kept; share folders of this computer again if the VM needs them`);
  if (config.directKernel) {
    const k = config.directKernel;
    warnings.push(
      `direct kernel boot named files of the exporting machine (kernel ${shown(k.kernel)}${k.initrd ? `, initrd ${shown(k.initrd)}` : ''}${k.cmdline ? `, command line "${shown(k.cmdline)}"` : ''}); it was not kept: set the kernel and initrd again before starting the VM`,
    );
  }
  let uefiVars = manifest.files.find((f) => f.role === 'uefi-vars');
  if (uefiVars && settings.firmware !== 'uefi') uefiVars = undefined;
  if (uefiVars && uefiVars.size > MAX_UEFI_VARS_BYTES) {
    warnings.push(`the UEFI variable store in the archive is ${uefiVars.size} bytes, too large to be one; the VM starts with fresh UEFI variables`);
    uefiVars = undefined;
  }

  const finals = new Map(disks.map((d) => [d.id, d.disk]));
  let outTree: SnapshotTree | null = null;
  const thumbnails: ImportPlan['thumbnails'] = [];
  if (tree) {
    const drop: string[] = [];
    const hostFiles: string[] = [];
    const ids = new Set<string>();
    const nodes: SnapshotNode[] = [];
    for (const n of tree.nodes) {
      if (ids.has(n.id)) {
        warnings.push(`snapshot id ${n.id} appears twice in the archive; only the first was kept`);
        continue;
      }
      ids.add(n.id);
      const name = n.name.replace(/[\u0000-\u001f\u007f]/g, ' ').trim() || n.id;
      if (isStateFileNode(n) || !SAFE_TAG.test(n.tag)) {
        warnings.push(`snapshot "${shown(name)}" was not imported (${isStateFileNode(n) ? 'a memory snapshot\'s state file is not portable' : 'its tag is not one VMDesk uses'})`);
        drop.push(n.id);
      }
      let cfg: VmConfig | null = null;
      if (n.config) {
        if (n.config.directKernel || n.config.cdrom) hostFiles.push(name);
        else {
          const c = n.config;
          cfg = {
            schemaVersion: VM_SCHEMA_VERSION,
            id: c.id,
            name: c.name,
            ...settingsOf(c),
            // The snapshot's disks as this VM has them: VMDesk's own names, nothing the archive named.
            disks: c.disks.flatMap((d) => (d.owned && finals.has(d.id) ? [finals.get(d.id)!] : [])),
            createdAt: c.createdAt,
            modifiedAt: c.modifiedAt,
          };
        }
      }
      nodes.push({
        id: n.id,
        tag: n.tag,
        name,
        description: n.description.replace(/[\u0000-\u0008\u000b-\u001f\u007f]/g, ' '),
        time: n.time,
        parent: n.parent,
        kind: n.kind,
        config: cfg,
        thumbnail: false,
        vmStateBytes: n.vmStateBytes,
        disks: n.disks.filter((id) => DISK_ID.test(id)),
        adopted: n.adopted,
        linkedClones: [],
      });
    }
    if (hostFiles.length) {
      warnings.push(`the settings saved with snapshot${hostFiles.length > 1 ? 's' : ''} ${hostFiles.map((x) => `"${shown(x)}"`).join(', ')} named files of the exporting machine (kernel, CD/DVD image) and were not kept; restoring ${hostFiles.length > 1 ? 'them' : 'it'} keeps the VM's current settings`);
    }
    let t: SnapshotTree = { version: tree.version, current: tree.current, nodes, pending: [] };
    for (const id of drop) t = removeNode(t, id);
    outTree = SnapshotTree.parse(normalizeTree(t));
    const kept = new Set(outTree.nodes.map((n) => n.id));
    const done = new Set<string>();
    for (const f of manifest.files.filter((x) => x.role === 'thumbnail')) {
      const m = THUMBNAIL_ENTRY.exec(f.name);
      const id = m?.[1];
      if (!id || !SnapshotNode.shape.id.safeParse(id).success || !kept.has(id) || done.has(id) || f.size > MAX_THUMBNAIL_BYTES) {
        warnings.push(`archive entry ${shown(f.name)} is not the thumbnail of an imported snapshot; it was ignored`);
        continue;
      }
      done.add(id);
      thumbnails.push({ id, entry: f });
    }
  }
  // TPM state files by their names only: one of swtpm's, current or for a snapshot the tree keeps.
  const tpm: ImportPlan['tpm'] = [];
  if (settings.tpm) {
    const kept = new Set((outTree?.nodes ?? []).map((n) => n.id));
    for (const f of manifest.files.filter((x) => x.role === 'tpm')) {
      const m = /^tpm\/(?:([a-z0-9]{4,32})--)?([A-Za-z0-9.-]+)$/.exec(f.name);
      if (!m || !(TPM_STATE_FILES as readonly string[]).includes(m[2]!) || f.size > TPM_STATE_FILE_MAX) {
        warnings.push(`the archive entry ${shown(f.name)} is not a TPM state file VMDesk writes; it was ignored`);
        continue;
      }
      if (m[1] && !kept.has(m[1])) continue;
      tpm.push({ entry: f, to: m[1] ? ['snapshots', m[1], m[2]!] : [m[2]!] });
    }
  }
  return { settings, disks, uefiVars, tpm, tree: outTree, thumbnails, warnings };
}

/** Free space kept on the library's file system whatever an archive says it needs. */
export function spaceReserve(totalBytes: number): number {
  return Math.max(1024 * MiB, Math.floor(totalBytes * 0.02));
}

/**
 * How many bytes a gzip'd qcow2 disk from an archive may expand to, from its first bytes (the qcow2
 * header): the virtual size plus an eighth for metadata, once for the current state and once per internal
 * snapshot (each may hold a full copy and a RAM state as large as the VM's memory), plus 64 MiB. Never more
 * than the largest disk VMDesk makes, nor than the free space minus a reserve: a gzip bomb is cut off
 * there and removed, it cannot fill the disk. `head` shorter than the header means a truncated entry.
 */
export function expansionLimit(head: Buffer, o: { ramBytes: number; freeBytes: number; totalBytes: number }): { limit: number; by: 'header' | 'space' | 'hard' } {
  if (head.length < 72 || head.toString('latin1', 0, 4) !== 'QFI\xfb') throw refuse('is not a qcow2 image');
  const big = head.readBigUInt64BE(24);
  const virtual = big > BigInt(LIMITS.diskMaxBytes) ? LIMITS.diskMaxBytes : Number(big);
  const snapshots = Math.min(head.readUInt32BE(60), 1000);
  const byHeader = (snapshots + 1) * (virtual * 1.125 + o.ramBytes + 16 * MiB) + 64 * MiB;
  const bySpace = Math.max(0, o.freeBytes - spaceReserve(o.totalBytes));
  const hard = LIMITS.diskMaxBytes;
  const limit = Math.floor(Math.min(byHeader, bySpace, hard));
  return { limit, by: limit === Math.floor(byHeader) ? 'header' : limit === Math.floor(bySpace) ? 'space' : 'hard' };
}

/** Counts what the decompressor produces and stops it past the limit decided from the first bytes. */
class ExpansionGuard extends Transform {
  private head: Buffer[] = [];
  private headBytes = 0;
  private limit = -1;
  private total = 0;

  constructor(private readonly decide: (head: Buffer) => number) {
    super();
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.total += chunk.length;
    if (this.limit < 0) {
      this.head.push(chunk);
      this.headBytes += chunk.length;
      if (this.headBytes < 4096) return cb();
      try {
        this.limit = this.decide(Buffer.concat(this.head));
      } catch (e) {
        return cb(e as Error);
      }
      const held = Buffer.concat(this.head);
      this.head = [];
      if (this.total > this.limit) return cb(this.tooBig());
      return cb(null, held);
    }
    if (this.total > this.limit) return cb(this.tooBig());
    cb(null, chunk);
  }

  override _flush(cb: TransformCallback): void {
    if (this.limit < 0) {
      try {
        this.limit = this.decide(Buffer.concat(this.head));
      } catch (e) {
        return cb(e as Error);
      }
      if (this.total > this.limit) return cb(this.tooBig());
      this.push(Buffer.concat(this.head));
    }
    cb();
  }

  private tooBig(): Error {
    return Object.assign(new Error(`expands past ${this.limit} bytes`), { code: 'EXPANSION' });
  }
}

/** Writes one disk entry (gunzipped with a bounded output when it is gzip'd) to a new file in staging. */
async function writeDiskEntry(archive: string, e: TarEntry, f: ManifestFile, dst: string, ramBytes: number, onBytes: (n: number) => void): Promise<void> {
  const s = entryStream(archive, e);
  s.on('data', (c) => onBytes((c as Buffer).length));
  // 'wx': a file (or link) already at the destination is never written through.
  const out = createWriteStream(dst, { flags: 'wx' });
  if (!f.gzip) {
    await pipeline(s, out);
    return;
  }
  const space = await fs.statfs(path.dirname(dst));
  const freeBytes = space.bavail * space.bsize;
  const totalBytes = space.blocks * space.bsize;
  const decided: { by: 'header' | 'space' | 'hard' } = { by: 'header' };
  const guard = new ExpansionGuard((head) => {
    let r: ReturnType<typeof expansionLimit>;
    try {
      r = expansionLimit(head, { ramBytes, freeBytes, totalBytes });
    } catch (err) {
      throw refuse(`disk ${f.diskId} in the archive ${(err as Error).message}`);
    }
    decided.by = r.by;
    return r.limit;
  });
  try {
    await pipeline(s, createGunzip({ finishFlush: zc.Z_SYNC_FLUSH }), guard, out);
  } catch (err) {
    if ((err as { code?: string }).code !== 'EXPANSION') throw err;
    const why = (err as Error).message;
    if (decided.by === 'space') throw new VmdeskError(ErrorCode.noSpace, `disk ${f.diskId} in the archive ${why}, more than the free space allows (VMDesk keeps a reserve free); make room and import again`);
    throw refuse(`disk ${f.diskId} in the archive ${why}, far more than its qcow2 header allows; refused as damaged or a decompression bomb`);
  }
}

export interface ImportOptions {
  /** Name of the new VM; the exported VM's name when absent. */
  name?: string;
  onProgress?: ProgressFn;
}

/**
 * Imports an archive as a new VM (new id): verified completely before anything is written, rebuilt from
 * validated values (planImport), every file written under the staging bundle through containedPath, every
 * disk admitted by the image gate. What was left out is in the returned info's `warnings` (shown by the
 * CLI and GUI like any VM warning) ahead of the VM's own.
 */
export async function importArchive(core: SnapshotCore, file: string, opts: ImportOptions = {}): Promise<VmInfo> {
  const progress = opts.onProgress ?? (() => {});
  const src = path.resolve(file);
  if (!existsSync(src)) throw new VmdeskError(ErrorCode.invalid, `${src} does not exist`);
  const { manifest, config, tree, index } = await verifyArchive(src, (p, f) => progress(p, f === undefined ? undefined : f * 0.4));
  // The engine the archive names must exist here; its own disk format is what the new VM gets.
  const diskFormat = (await core.engineOf(config)).capabilities.nativeDiskFormat;
  const plan = planImport(manifest, config, tree, diskFormat);
  const name = await core.checkNewVmName(opts.name ?? config.name);
  const total = plan.disks.reduce((a, d) => a + d.entry.size, 0) || 1;
  let done = 0;
  const info = await core.createVmBundle(name, async (staging, id) => {
    // Every destination below is resolved inside the staging bundle; names come from validated ids only.
    const at = (...segments: string[]) => containedPath(staging, ...segments);
    await fs.mkdir(await at('disks'), { recursive: true });
    for (const d of plan.disks) {
      const q = await at('disks', `${d.id}.qcow2`);
      await writeDiskEntry(src, index.get(d.entry.name)!, d.entry, q, plan.settings.memoryMiB * MiB, (n) => {
        done += n;
        progress(`importing disk ${d.id}`, 0.4 + (0.6 * done) / total);
      });
      // The gate decides from the written bytes: qcow2, no backing file, no external data file.
      const admitted = await admitImage({ path: q }, { what: `disk ${d.id} in the archive`, stated: 'qcow2', allow: ['qcow2'], within: staging });
      // And qemu-img must open it as that (a last sanity check of the rest of its structure).
      await img.imgInfo(qemuImgSource(admitted));
      if (d.disk.format !== 'qcow2') {
        await img.convert(qemuImgSource(admitted), await at(d.disk.path), { dstFormat: d.disk.format });
        await fs.rm(q, { force: true });
      }
    }
    if (plan.uefiVars) {
      const dst = await at(path.basename(uefiVarsFile(staging)));
      await pipeline(entryStream(src, index.get(plan.uefiVars.name)!), createWriteStream(dst, { flags: 'wx' }));
      await admitImage({ path: dst }, { what: 'the UEFI variable store in the archive', stated: 'qcow2', allow: ['qcow2'], within: staging, maxVirtualBytes: MAX_UEFI_VARS_BYTES });
    }
    for (const t of plan.tpm) {
      const dst = await at(TPM_STATE_DIR, ...t.to);
      await fs.mkdir(path.dirname(dst), { recursive: true, mode: 0o700 });
      await fs.writeFile(dst, await readEntry(src, index.get(t.entry.name)!, TPM_STATE_FILE_MAX), { flag: 'wx', mode: 0o600 });
    }
    if (plan.tree) {
      await fs.mkdir(await at('snapshots'), { recursive: true });
      const withThumb = new Set<string>();
      for (const t of plan.thumbnails) {
        const png = await readEntry(src, index.get(t.entry.name)!, MAX_THUMBNAIL_BYTES);
        if (!png.subarray(0, 8).equals(PNG_MAGIC)) {
          plan.warnings.push(`the thumbnail of snapshot ${t.id} is not a PNG image; it was ignored`);
          continue;
        }
        await fs.writeFile(await at('snapshots', `${t.id}.png`), png, { flag: 'wx' });
        withThumb.add(t.id);
      }
      const tree = { ...plan.tree, nodes: plan.tree.nodes.map((n) => ({ ...n, thumbnail: withThumb.has(n.id) })) };
      await writeJsonAtomic(await at('snapshots', TREE_FILE), SnapshotTree.parse(tree));
    }
    const now = new Date().toISOString();
    return { schemaVersion: VM_SCHEMA_VERSION, id, name, ...plan.settings, disks: plan.disks.map((d) => d.disk), createdAt: now, modifiedAt: now };
  });
  return { ...info, warnings: [...plan.warnings, ...info.warnings] };
}
