// A new VM from a gallery image, in one call: the image is pulled into the cache if needed, then
// - a cloud image is copied into the new bundle (never used in place, never resized in the cache), checked
//   by the gate again, grown to the requested size, and given a cloud-init NoCloud seed (a read-only raw
//   disk labelled cidata) with a user, the VM's own SSH key and a host name; its NAT adapter forwards a
//   port on 127.0.0.1 to the guest's SSH server, which `vmdesk shell` and the GUI's terminal use;
// - an installer ISO becomes the VM's CD-ROM (from the cache), with a new empty disk.
import { constants, promises as fs } from 'node:fs';
import { createServer } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { z } from 'zod';
import { CreateFromImageRequest, GuestUserName, type CachedImage } from '../../api/images.js';
import { VM_SCHEMA_VERSION, type Disk, type NetAdapter, type VmConfig, type VmInfo } from '../../api/schema.js';
import { ErrorCode, VmdeskError } from '../../api/errors.js';
import { writeJsonAtomic } from '../../platform/atomic.js';
import { convert } from '../../platform/qemu-img.js';
import { engine as engineModule } from '../../engines/registry.js';
import type { Core } from '../core.js';
import { checkResources, hostCapacity, parseOrThrow } from '../validate.js';
import { admitImage } from './gate.js';
import { findEntry, presetOsType } from './catalogue.js';
import { buildSeedIso, hostnameFor, makeSshKey, SSH_KEY_FILE } from './cloud-init.js';
import { imagesOf } from './service.js';

export type Progress = (phase: string, fraction?: number) => void;

/** What a bundle made from an image remembers (image.json): where it came from, and how to log in. */
export const ImageRecord = z.object({
  image: z.string(),
  source: z.enum(['gallery', 'user']),
  digest: z.string(),
  verification: z.string(),
  fetchedAt: z.string(),
  ssh: z.object({ user: GuestUserName, keyFile: z.literal(SSH_KEY_FILE) }).optional(),
});
export type ImageRecord = z.infer<typeof ImageRecord>;
export const IMAGE_RECORD_FILE = 'image.json';

/** Host ports VMDesk picks SSH forwards from (127.0.0.1 only), away from the kernel's ephemeral range. */
const SSH_PORTS = { first: 42200, last: 42999 };

function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = createServer();
    srv.once('error', () => resolve(false));
    srv.listen(port, '127.0.0.1', () => srv.close(() => resolve(true)));
  });
}

/** A port no VM forwards and nothing listens on now. */
async function pickSshPort(core: Core): Promise<number> {
  const taken = new Set((await core.list()).flatMap((v) => v.config?.network.flatMap((n) => n.forwards.map((f) => f.hostPort)) ?? []));
  const span = SSH_PORTS.last - SSH_PORTS.first + 1;
  const start = Math.floor(Math.random() * span);
  for (let i = 0; i < span; i++) {
    const port = SSH_PORTS.first + ((start + i) % span);
    if (!taken.has(port) && (await portFree(port))) return port;
  }
  throw new VmdeskError(ErrorCode.busy, `no free port for SSH between ${SSH_PORTS.first} and ${SSH_PORTS.last} on 127.0.0.1; give one with --ssh-port`);
}

function defaultUser(): string {
  try {
    const u = os.userInfo().username;
    if (GuestUserName.safeParse(u).success) return u;
  } catch {
    /* no passwd entry */
  }
  return 'user';
}

export async function createFromImage(core: Core, input: unknown, progress: Progress): Promise<VmInfo> {
  const req = parseOrThrow(CreateFromImageRequest, input, 'invalid settings');
  await core.checkNewVmName(req.name);
  const images = imagesOf(core);
  const { entry, source } = await findEntry(images.sources, req.image);
  if (entry.kind === 'vendor-page') throw new VmdeskError(ErrorCode.invalid, `"${entry.id}" cannot be downloaded by VMDesk: ${entry.note ?? `get it from ${entry.url}`}`);
  const cloud = entry.kind === 'cloud';
  if (!cloud && req.cloudInit) throw new VmdeskError(ErrorCode.invalid, `"${entry.id}" is an installer: cloud-init settings apply to cloud images only`);
  const d = entry.defaults;
  const cpus = req.cpus ?? Math.min(d.cpus, hostCapacity().cpus);
  const memoryMiB = req.memoryMiB ?? d.memoryMiB;
  const warnings = checkResources({ cpus, memoryMiB }, hostCapacity());
  const eng = await engineModule('qemu');
  for (const mode of new Set((req.network ?? [{ mode: 'nat' as const }]).map((n) => n.mode))) {
    if (!eng.capabilities.networkModes.includes(mode)) throw new VmdeskError(ErrorCode.host, `the QEMU engine offers no "${mode}" network here`);
  }

  let cached: CachedImage;
  if (!(await images.cached(entry.id))) progress('downloading', 0);
  cached = await images.pull(entry.id, (info) => {
    if (info.state === 'running' && info.totalBytes) progress('downloading', info.bytes / info.totalBytes);
  });
  const release = await images.hold(entry.id);
  try {
    // Checked again now: the cache is the user's folder, and the file could have changed since it was fetched.
    await admitImage({ path: cached.file }, { what: `the cached image "${entry.id}"`, purpose: cloud ? 'disk' : 'cdrom', ...(cloud ? { stated: cached.format === 'raw' ? 'raw' : 'qcow2' } : {}) });
    const user = req.cloudInit?.user ?? defaultUser();
    const hostname = req.cloudInit?.hostname ?? hostnameFor(req.name);
    // The SSH forward (cloud images) goes to the first nat/nat-host card, beside the forwards asked for there;
    // without one the guest has no SSH from the host, and `vmdesk shell` uses the serial console.
    const asked: NetAdapter[] = req.network ?? [{ mode: 'nat', forwards: [] }];
    const natIndex = asked.findIndex((n) => n.mode === 'nat' || n.mode === 'nat-host');
    if (cloud && natIndex < 0) warnings.push('no nat or nat-host network card: the guest cannot be reached over SSH from this host; `vmdesk shell` and the Terminal tab use its serial console');
    if (req.sshPort !== undefined && natIndex < 0) throw new VmdeskError(ErrorCode.invalid, 'an SSH port needs a nat or nat-host network card to forward it');
    const sshPort = cloud && natIndex >= 0 ? (req.sshPort ?? (await pickSshPort(core))) : undefined;
    if (sshPort !== undefined && asked[natIndex]!.forwards.some((f) => f.protocol === 'tcp' && (f.hostPort === sshPort || f.guestPort === 22))) {
      throw new VmdeskError(ErrorCode.invalid, `the forwards asked for already use host port ${sshPort} or the guest's SSH port 22, which VMDesk forwards for \`vmdesk shell\`; leave that forward out`);
    }
    const network: NetAdapter[] = asked.map((n, i) => (i === natIndex && sshPort !== undefined ? { ...n, forwards: [{ protocol: 'tcp', hostPort: sshPort, guestPort: 22 }, ...n.forwards] } : n));
    const info = await core.createVmBundle(req.name, async (staging, id) => {
      await fs.mkdir(path.join(staging, 'disks'), { recursive: true, mode: 0o700 });
      const disks: Disk[] = [];
      let cdrom: string | undefined;
      if (cloud) {
        const rel = 'disks/disk0.qcow2';
        const dst = path.join(staging, rel);
        progress('copying the image', 0);
        if (cached.format === 'qcow2') await fs.copyFile(cached.file, dst, constants.COPYFILE_EXCL | constants.COPYFILE_FICLONE);
        else await convert(cached.file, dst, { srcFormat: 'raw', dstFormat: 'qcow2', onProgress: (f) => progress('copying the image', f) });
        progress('copying the image', 1);
        const copy = await admitImage({ path: dst }, { what: `the copy of "${entry.id}"`, stated: 'qcow2' });
        const want = req.diskBytes ?? d.diskBytes;
        if (want > copy.virtualSize) {
          progress('growing the disk');
          await eng.disks.resize(dst, 'qcow2', want);
        } else if (req.diskBytes !== undefined && req.diskBytes < copy.virtualSize) {
          warnings.push(`the image's disk is ${copy.virtualSize} bytes, more than the ${req.diskBytes} asked for; it was kept at its size (disks are never shrunk)`);
        }
        disks.push({ id: 'disk0', path: rel, format: 'qcow2', owned: true, readOnly: false });
        progress('writing the cloud-init seed');
        const publicKey = await makeSshKey(staging, `vmdesk ${req.name}`);
        await fs.mkdir(path.join(staging, 'cloud-init'), { recursive: true, mode: 0o700 });
        const seedRel = 'cloud-init/seed.iso';
        await buildSeedIso(path.join(staging, seedRel), {
          instanceId: `vmdesk-${id}`,
          hostname,
          user,
          publicKey,
          preset: d.preset,
          packages: req.cloudInit?.packages,
          userData: req.cloudInit?.userData,
        });
        await admitImage({ path: path.join(staging, seedRel) }, { what: 'the cloud-init seed', stated: 'raw' });
        disks.push({ id: 'seed', path: seedRel, format: 'raw', owned: true, readOnly: true });
      } else {
        const rel = 'disks/disk0.qcow2';
        progress('creating the disk');
        await eng.disks.create(path.join(staging, rel), req.diskBytes ?? d.diskBytes);
        disks.push({ id: 'disk0', path: rel, format: 'qcow2', owned: true, readOnly: false });
        cdrom = cached.file;
      }
      const record: ImageRecord = {
        image: entry.id,
        source,
        digest: `${cached.verification.algorithm}:${cached.verification.digest}`,
        verification: cached.verification.summary,
        fetchedAt: cached.fetchedAt,
        ...(cloud ? { ssh: { user, keyFile: SSH_KEY_FILE } } : {}),
      };
      await writeJsonAtomic(path.join(staging, IMAGE_RECORD_FILE), record);
      const now = new Date().toISOString();
      const config: VmConfig = {
        schemaVersion: VM_SCHEMA_VERSION,
        id,
        name: req.name,
        osType: req.osType ?? presetOsType(d.preset),
        engine: 'qemu',
        accel: req.accel ?? 'auto',
        firmware: req.firmware ?? d.firmware,
        cpus,
        memoryMiB,
        disks,
        ...(cdrom ? { cdrom } : {}),
        network,
        createdAt: now,
        modifiedAt: now,
      };
      eng.validate(config);
      return config;
    });
    return { ...info, warnings: [...warnings, ...info.warnings] };
  } finally {
    release();
  }
}

/** The image record of a bundle, if it was made from an image (a hand-edited one that fails the schema counts as none). */
export async function readImageRecord(bundleDir: string): Promise<ImageRecord | undefined> {
  try {
    const text = await fs.readFile(path.join(bundleDir, IMAGE_RECORD_FILE), 'utf8');
    if (text.length > 64 * 1024) return undefined;
    const r = ImageRecord.safeParse(JSON.parse(text));
    return r.success ? r.data : undefined;
  } catch {
    return undefined;
  }
}
