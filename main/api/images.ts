// The image gallery, the image cache, downloads, VMs made from images and what VMDesk knows of a running
// guest: zod schemas shared by the core (main/core/images), the daemon, the CLI's types and the renderer.
// Everything here describes values that come from outside (the catalogue, user sources, upstream files):
// every string is bounded and every URL is checked before anything is fetched.
import { z } from 'zod';
import { Accel, Firmware, LIMITS, NetAdapter, OsType, VmName } from './schema.js';

/** A gallery entry's or user source's id: it names cache files, so a conservative character set. */
export const ImageId = z
  .string()
  .min(1, 'an image id is required')
  .max(48)
  .regex(/^[a-z0-9][a-z0-9._-]*$/, 'an image id has lower-case letters, digits and . _ - and starts with a letter or digit')
  .refine((s) => !s.includes('..'), 'an image id must not contain ".."');

/** An http(s) URL without credentials or control characters, at most 2 KiB. */
export const ImageUrl = z
  .string()
  .max(2048)
  .refine((s) => !/[\u0000-\u0020\u007f]/.test(s), 'a URL must not contain spaces or control characters')
  .refine((s) => {
    try {
      const u = new URL(s.replace('{file}', 'x'));
      return (u.protocol === 'https:' || u.protocol === 'http:') && !u.username && !u.password && !!u.hostname;
    } catch {
      return false;
    }
  }, 'must be an http:// or https:// URL without a user name or password');

export const ChecksumAlgorithm = z.enum(['sha256', 'sha512']);
export type ChecksumAlgorithm = z.infer<typeof ChecksumAlgorithm>;

/** How an upstream signs its checksums: a detached signature of the SUMS file, a clear-signed SUMS file, or a signature of the image itself. */
export const SignatureSpec = z
  .object({
    type: z.enum(['detached', 'clearsigned', 'detached-image']),
    url: ImageUrl.optional(),
    /** A keyring file (gpgv --keyring) that holds the upstream's key, from a Debian package where one exists. */
    keyring: z.string().max(4096).refine((p) => p.startsWith('/') && !/[\u0000-\u001f\u007f]/.test(p), 'keyring must be an absolute path').optional(),
    /** The Debian package that installs the keyring, for the message when it is missing. */
    package: z.string().max(64).regex(/^[a-z0-9][a-z0-9+.-]*$/).optional(),
  })
  .strict()
  .refine((s) => s.type === 'clearsigned' || !!s.url, 'a detached signature needs its url');
export type SignatureSpec = z.infer<typeof SignatureSpec>;

/** The upstream checksum file an image is checked against, or a checksum the user gave. */
export const VerifySpec = z.union([
  z
    .object({
      sums: ImageUrl,
      algorithm: ChecksumAlgorithm,
      signature: SignatureSpec.optional(),
      /** What is and is not verified, in a sentence (shown by image lists). */
      note: z.string().max(400).optional(),
    })
    .strict(),
  z
    .object({
      checksum: z.string().regex(/^(sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128})$/, 'checksum must be sha256:<64 hex digits> or sha512:<128 hex digits>'),
      note: z.string().max(400).optional(),
    })
    .strict(),
]);
export type VerifySpec = z.infer<typeof VerifySpec>;

/** OS presets: what a gallery entry sets up (the VM's osType follows from it). */
export const OsPreset = z.enum(['debian', 'ubuntu', 'fedora', 'alpine', 'linux', 'windows11', 'other']);
export type OsPreset = z.infer<typeof OsPreset>;

export const ImageDefaults = z
  .object({
    cpus: z.number().int().min(1).max(LIMITS.cpusMax),
    memoryMiB: z.number().int().min(LIMITS.memoryMinMiB).max(LIMITS.memoryMaxMiB),
    diskBytes: z.number().int().min(LIMITS.diskMinBytes).max(LIMITS.diskMaxBytes),
    firmware: Firmware,
    preset: OsPreset,
  })
  .strict();
export type ImageDefaults = z.infer<typeof ImageDefaults>;

/** The most bytes any one image may have; an entry's maxBytes is its own, tighter, bound. */
export const IMAGE_MAX_BYTES = 16 * 1024 ** 3;

export const GalleryEntry = z
  .object({
    id: ImageId,
    name: z.string().min(1).max(120).refine((s) => !/[\u0000-\u001f\u007f]/.test(s), 'name must not contain control characters'),
    /** cloud: a disk image with cloud-init (NoCloud seed made by VMDesk); installer: an ISO to boot; vendor-page: a page to download from by hand. */
    kind: z.enum(['cloud', 'installer', 'vendor-page']),
    format: z.enum(['qcow2', 'raw', 'iso']),
    /** The image; "{file}" stands for the name found in the checksum file by `file`. */
    url: ImageUrl,
    /** A regular expression the image's file name must match in the checksum file (for names with a point release). */
    file: z.string().max(200).optional(),
    maxBytes: z.number().int().positive().max(IMAGE_MAX_BYTES).optional(),
    verify: VerifySpec.optional(),
    defaults: ImageDefaults,
    note: z.string().max(600).optional(),
    homepage: ImageUrl.optional(),
  })
  .strict()
  .refine((e) => e.kind === 'vendor-page' || (!!e.verify && !!e.maxBytes), 'an image VMDesk downloads needs verify and maxBytes')
  .refine((e) => !e.url.includes('{file}') || !!e.file, 'a url with {file} needs a file pattern')
  .refine((e) => !e.file || (e.url.includes('{file}') && 'sums' in (e.verify ?? {})), 'a file pattern needs "{file}" in the url and a checksum file')
  .refine((e) => e.kind !== 'cloud' || e.format !== 'iso', 'a cloud image is a disk image (qcow2 or raw)')
  .refine((e) => e.kind !== 'installer' || e.format === 'iso', 'an installer is an ISO');
export type GalleryEntry = z.infer<typeof GalleryEntry>;

export const Catalogue = z
  .object({
    catalogueVersion: z.literal(1),
    updated: z.string().regex(/^\d{4}-\d{2}-\d{2}$/),
    images: z.array(GalleryEntry).max(500),
  })
  .strict()
  .refine((c) => new Set(c.images.map((i) => i.id)).size === c.images.length, 'image ids must be unique');
export type Catalogue = z.infer<typeof Catalogue>;

/** A source the user adds (vmdesk images add): a URL with a checksum, or with an upstream checksum file. */
export const UserSourceInput = z
  .object({
    id: ImageId,
    name: z.string().min(1).max(120).refine((s) => !/[\u0000-\u001f\u007f]/.test(s), 'name must not contain control characters').optional(),
    kind: z.enum(['cloud', 'installer']).default('cloud'),
    format: z.enum(['qcow2', 'raw', 'iso']),
    url: ImageUrl.refine((u) => !u.includes('{file}'), 'a user source names its file'),
    verify: VerifySpec,
    maxBytes: z.number().int().positive().max(IMAGE_MAX_BYTES).optional(),
    defaults: ImageDefaults.partial().optional(),
  })
  .strict();
export type UserSourceInput = z.input<typeof UserSourceInput>;

/** What was checked about a downloaded image, in words a user can act on. */
export const Verification = z.object({
  algorithm: ChecksumAlgorithm,
  digest: z.string(),
  /** Where the expected checksum came from. */
  source: z.enum(['sums-file', 'user-checksum']),
  /** signed: the checksum file's signature was checked with gpgv; unsigned: upstream does not sign it; unchecked: it is signed but VMDesk could not check it (no keyring); none: the user gave the checksum. */
  signature: z.enum(['signed', 'unsigned', 'unchecked', 'none']),
  /** One sentence: what is and is not verified. */
  summary: z.string(),
});
export type Verification = z.infer<typeof Verification>;

export const CachedImage = z.object({
  id: ImageId,
  file: z.string(),
  format: z.enum(['qcow2', 'raw', 'iso']),
  bytes: z.number(),
  virtualSize: z.number(),
  url: z.string(),
  fetchedAt: z.string(),
  verification: Verification,
});
export type CachedImage = z.infer<typeof CachedImage>;

export const DownloadState = z.enum(['connecting', 'running', 'verifying', 'paused', 'done', 'failed', 'cancelled']);
export const DownloadInfo = z.object({
  image: ImageId,
  state: DownloadState,
  bytes: z.number(),
  totalBytes: z.number().optional(),
  /** Bytes per second over the last few seconds. */
  bytesPerSecond: z.number(),
  etaSeconds: z.number().optional(),
  /** Bytes that came from an earlier, interrupted download (HTTP Range). */
  resumedFrom: z.number().optional(),
  startedAt: z.string(),
  error: z.string().optional(),
});
export type DownloadInfo = z.infer<typeof DownloadInfo>;

export const ImageListingEntry = z.object({
  entry: GalleryEntry,
  source: z.enum(['gallery', 'user']),
  cached: CachedImage.optional(),
  /** Bytes of an interrupted or paused download (resumed by the next pull). */
  partialBytes: z.number().optional(),
  download: DownloadInfo.optional(),
  /** VMs whose CD-ROM is this cached ISO (it cannot be removed while they use it). */
  usedBy: z.array(z.string()).default([]),
});
export const ImageListing = z.object({
  cacheDir: z.string(),
  catalogueVersion: z.number(),
  /** Bytes of cached images and partial downloads. */
  cacheBytes: z.number(),
  images: z.array(ImageListingEntry),
});
export type ImageListing = z.infer<typeof ImageListing>;

/** A Linux user name cloud-init creates (not one a system already has). */
export const GuestUserName = z
  .string()
  .regex(/^[a-z_][a-z0-9_-]{0,31}$/, 'a user name has lower-case letters, digits, _ and -, starts with a letter or _, at most 32 characters')
  .refine((s) => !['root', 'daemon', 'bin', 'sys', 'sync', 'games', 'man', 'lp', 'mail', 'news', 'uucp', 'proxy', 'www-data', 'backup', 'list', 'irc', 'nobody', 'sshd', 'systemd-network'].includes(s), 'that user name belongs to the system');

export const GuestHostname = z.string().regex(/^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/, 'a host name has lower-case letters, digits and -, at most 63 characters');

/** What cloud-init is told (NoCloud seed ISO, volume label cidata). */
export const CloudInitOptions = z
  .object({
    user: GuestUserName.optional(),
    hostname: GuestHostname.optional(),
    packages: z.array(z.string().regex(/^[a-z0-9][a-z0-9+.:=~-]{0,99}$/, 'not a package name')).max(64).optional(),
    /** The user's own user-data (a #cloud-config document or a script), merged after VMDesk's. */
    userData: z.string().max(256 * 1024).optional(),
  })
  .strict();
export type CloudInitOptions = z.infer<typeof CloudInitOptions>;

export const CreateFromImageRequest = z
  .object({
    name: VmName,
    image: ImageId,
    cpus: z.number().int().min(1).max(LIMITS.cpusMax).optional(),
    memoryMiB: z.number().int().min(LIMITS.memoryMinMiB).max(LIMITS.memoryMaxMiB).optional(),
    /** Cloud images: the disk is grown to this size; installers: the size of the new empty disk. */
    diskBytes: z.number().int().min(LIMITS.diskMinBytes).max(LIMITS.diskMaxBytes).optional(),
    firmware: Firmware.optional(),
    osType: OsType.optional(),
    cloudInit: CloudInitOptions.optional(),
    /** Host port (127.0.0.1) forwarded to the guest's SSH port; a free one is picked when absent. */
    sshPort: z.number().int().min(1024).max(65535).optional(),
    accel: Accel.optional(),
    /** The network cards (default: one nat). A cloud image's SSH forward goes to the first nat/nat-host card. */
    network: z.array(NetAdapter).min(1).max(4).optional(),
  })
  .strict();
export type CreateFromImageRequest = z.input<typeof CreateFromImageRequest>;

export const GuestAddress = z.object({
  address: z.string(),
  prefix: z.number().optional(),
  family: z.enum(['ipv4', 'ipv6']),
  interface: z.string().optional(),
  /** guest-agent: reported by the QEMU guest agent; nat-dhcp: the address the NAT's DHCP server hands the guest. */
  source: z.enum(['guest-agent', 'nat-dhcp']),
});
export const GuestInfo = z.object({
  addresses: z.array(GuestAddress),
  /** The guest's host name, as its QEMU guest agent reports it. */
  hostname: z.string().optional(),
  /** How `vmdesk shell` reaches the guest: 127.0.0.1 and the forwarded port, the user and the key made for this VM. */
  ssh: z.object({ host: z.string(), port: z.number(), user: z.string(), keyFile: z.string() }).optional(),
  notes: z.array(z.string()),
});
export type GuestInfo = z.infer<typeof GuestInfo>;

/** Limits of terminal streams (term.* frames). */
export const TERM_LIMITS = { colsMax: 1000, rowsMax: 1000, argsMax: 64, argMax: 4096 } as const;
