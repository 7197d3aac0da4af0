// The wizard's "From the gallery" choice: an entry's defaults applied to the form, the cloud-init fields and a
// user-added source checked with the daemon's own schemas, the vm.createFromImage request, and the words for
// sizes, speeds and times left of a download.
import '../zod-config';
import { CloudInitOptions, CreateFromImageRequest, UserSourceInput, type DownloadInfo, type GalleryEntry, type ImageListing } from '../../../main/api/images';
import { formatBytes } from '../format';
import type { VmSettingsPatch } from '../../../main/api/schema';
import { networkOf, toCreateRequest, type FieldErrors, type VmForm } from './vm-form';

export type ListingItem = ImageListing['images'][number];

export interface GalleryChoice {
  /** The entry chosen (its id). */
  image: string;
  /** cloud-init: the user made in the guest (empty: the daemon's default), host name, packages (space or comma separated). */
  user: string;
  hostname: string;
  packages: string;
  /** The user's own user-data file, read in the page (it is sent as text), and its name for the summary. */
  userData: string;
  userDataName: string;
  /** A vendor-page entry (Windows 11): the ISO the user downloaded from the vendor. */
  vendorIso: string;
}

export function emptyGalleryChoice(): GalleryChoice {
  return { image: '', user: '', hostname: '', packages: '', userData: '', userDataName: '', vendorIso: '' };
}

/** The most user-data the daemon takes. */
export const USER_DATA_MAX = 256 * 1024;

/** The guest OS type a gallery preset stands for (as the daemon decides it for the VM). */
export function osTypeOfPreset(preset: GalleryEntry['defaults']['preset']): VmForm['osType'] {
  return preset === 'windows11' ? 'windows' : preset === 'other' ? 'other' : 'linux';
}

/** An entry's defaults on the form's hardware fields, except those the user changed (edited), bounded by the host's CPUs. */
export function applyEntryDefaults(form: VmForm, entry: GalleryEntry, edited: ReadonlySet<string>, hostCpus?: number): void {
  const d = entry.defaults;
  form.osType = osTypeOfPreset(d.preset);
  if (!edited.has('cpus')) form.cpus = Math.max(1, Math.min(d.cpus, hostCpus ?? d.cpus));
  if (!edited.has('memoryMiB')) form.memoryMiB = d.memoryMiB;
  if (!edited.has('firmware')) form.firmware = d.firmware;
  if (!edited.has('diskGiB')) form.diskGiB = Math.round((d.diskBytes / 1024 ** 3) * 10) / 10;
}

export function parsePackages(text: string): string[] {
  return text
    .split(/[\s,]+/)
    .map((s) => s.trim())
    .filter(Boolean);
}

/** A host name from a VM name, as the daemon would make it (lower case, digits and -). */
export function hostnameFromName(name: string): string {
  return name
    .toLowerCase()
    .replace(/[^a-z0-9-]+/g, '-')
    .replace(/^-+|-+$/g, '')
    .slice(0, 63)
    .replace(/-+$/, '');
}

function cloudInitOf(g: GalleryChoice): CloudInitOptions {
  const ci: CloudInitOptions = {};
  if (g.user.trim()) ci.user = g.user.trim();
  if (g.hostname.trim()) ci.hostname = g.hostname.trim();
  const pkgs = parsePackages(g.packages);
  if (pkgs.length) ci.packages = pkgs;
  if (g.userData) ci.userData = g.userData;
  return ci;
}

/** The request for vm.createFromImage: the form's hardware, cloud-init for cloud images. */
export function toCreateFromImage(form: VmForm, g: GalleryChoice, entry: GalleryEntry): CreateFromImageRequest {
  const req: CreateFromImageRequest = {
    name: form.name,
    image: entry.id,
    cpus: form.cpus,
    memoryMiB: form.memoryMiB,
    firmware: form.firmware,
    osType: form.osType,
    accel: form.accel,
    network: networkOf(form),
  };
  const gib = Number(form.diskGiB);
  if (Number.isFinite(gib) && gib > 0) req.diskBytes = Math.round(gib * 1024 ** 3);
  if (entry.kind === 'cloud') {
    const ci = cloudInitOf(g);
    if (Object.keys(ci).length) req.cloudInit = ci;
  }
  return req;
}

/**
 * What the wizard's other pages set that vm.createFromImage does not take (limits, guest integration, devices):
 * applied with vm.update right after, as Settings would; undefined when all are at their defaults.
 */
export function imageFollowUpPatch(form: VmForm): VmSettingsPatch | undefined {
  const all = toCreateRequest(form);
  const patch: VmSettingsPatch = {};
  for (const k of ['limits', 'clipboard', 'guestAgent', 'display', 'tpm', 'secureBoot', 'usbTablet', 'audio', 'virtioDrivers'] as const) {
    if (all[k] !== undefined) (patch as Record<string, unknown>)[k] = all[k];
  }
  return Object.keys(patch).length ? patch : undefined;
}

/** Field errors of the gallery page (keys: image, ciUser, ciHostname, ciPackages, ciUserData, vendorIso) and of the disk size. */
export function galleryErrors(form: VmForm, g: GalleryChoice, entry: GalleryEntry | undefined): FieldErrors {
  const errors: FieldErrors = {};
  if (!entry) {
    errors.image = g.image ? `the image "${g.image}" is no longer in the gallery` : 'choose an image';
    return errors;
  }
  if (entry.kind === 'vendor-page') {
    const iso = g.vendorIso.trim();
    if (!iso) errors.vendorIso = 'download the ISO from the vendor page, then choose it here';
    else if (!iso.startsWith('/') && !iso.startsWith('~/')) errors.vendorIso = 'must be an absolute path';
    return errors;
  }
  if (entry.kind === 'cloud') {
    const r = CloudInitOptions.safeParse(cloudInitOf(g));
    if (!r.success) {
      for (const issue of r.error.issues) {
        const key = issue.path[0] === 'user' ? 'ciUser' : issue.path[0] === 'hostname' ? 'ciHostname' : issue.path[0] === 'packages' ? 'ciPackages' : 'ciUserData';
        const bad = issue.path[0] === 'packages' && typeof issue.path[1] === 'number' ? parsePackages(g.packages)[issue.path[1]] : undefined;
        errors[key] ??= bad !== undefined ? `“${bad}” is not a package name` : issue.message;
      }
    }
    if (g.userData.length > USER_DATA_MAX) errors.ciUserData = `user-data is at most ${USER_DATA_MAX / 1024} KiB`;
    if (!(Number(form.diskGiB) > 0)) errors.diskGiB = 'a cloud image’s disk is grown to this size: give one';
  }
  // What the daemon's schema says about the request as a whole (names, CPU and memory bounds).
  const r = CreateFromImageRequest.safeParse(toCreateFromImage(form, g, entry));
  if (!r.success) for (const issue of r.error.issues) if (issue.path[0] === 'diskBytes') errors.diskGiB ??= issue.message;
  return errors;
}

// ---- a source the user adds ----------------------------------------------------------------------------

export interface SourceDraft {
  name: string;
  url: string;
  /** A checksum (sha256:…, sha512:… or bare hex) or the URL of an upstream checksum file. */
  check: string;
  format: 'qcow2' | 'raw' | 'iso';
}

export function emptySourceDraft(): SourceDraft {
  return { name: '', url: '', check: '', format: 'qcow2' };
}

/** A cache id from a name or URL, not one of `taken`. */
export function sourceIdFor(draft: SourceDraft, taken: readonly string[]): string {
  const base =
    (draft.name.trim() || draft.url.split(/[?#]/)[0]!.split('/').pop() || 'image')
      .toLowerCase()
      .replace(/\.(qcow2|img|raw|iso)$/, '')
      .replace(/[^a-z0-9._-]+/g, '-')
      .replace(/\.\.+/g, '.')
      .replace(/^[^a-z0-9]+/, '')
      .slice(0, 40)
      .replace(/[-.]+$/, '') || 'image';
  let id = base;
  for (let n = 2; taken.includes(id); n++) id = `${base}-${n}`;
  return id;
}

/** The image.addSource request for a draft; `check` decides between a checksum and a checksum file. */
export function toUserSource(draft: SourceDraft, taken: readonly string[]): UserSourceInput {
  const check = draft.check.trim();
  const hex = check.toLowerCase();
  const verify = /^https?:\/\//i.test(check)
    ? { sums: check, algorithm: /512/.test(check.split('/').pop() ?? '') ? ('sha512' as const) : ('sha256' as const) }
    : { checksum: /^[0-9a-f]{64}$/.test(hex) ? `sha256:${hex}` : /^[0-9a-f]{128}$/.test(hex) ? `sha512:${hex}` : hex };
  return {
    id: sourceIdFor(draft, taken),
    ...(draft.name.trim() ? { name: draft.name.trim() } : {}),
    kind: draft.format === 'iso' ? 'installer' : 'cloud',
    format: draft.format,
    url: draft.url.trim(),
    verify,
  };
}

/** Errors by field (name, url, check) of a draft, from the daemon's schema. */
export function sourceErrors(draft: SourceDraft, taken: readonly string[]): FieldErrors {
  const errors: FieldErrors = {};
  if (!draft.url.trim()) errors.url = 'give the image’s URL';
  if (!draft.check.trim()) errors.check = 'give its checksum, or the URL of the checksum file it is listed in';
  const r = UserSourceInput.safeParse(toUserSource(draft, taken));
  if (!r.success) {
    for (const issue of r.error.issues) {
      const key = issue.path[0] === 'url' ? 'url' : issue.path[0] === 'verify' ? 'check' : issue.path[0] === 'name' ? 'name' : 'url';
      errors[key] ??= key === 'check' ? 'a checksum is sha256:<64 hex digits> or sha512:<128 hex digits> (or bare hex), or the http(s) URL of a checksum file' : issue.message;
    }
  }
  return errors;
}

// ---- words -----------------------------------------------------------------------------------------------

export function formatRate(bytesPerSecond: number): string {
  return `${formatBytes(Math.max(0, bytesPerSecond))}/s`;
}

export function formatEta(seconds: number | undefined): string {
  if (seconds === undefined || !Number.isFinite(seconds)) return 'time left unknown';
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s left`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${s % 60} s left`;
  return `${Math.floor(m / 60)} h ${m % 60} min left`;
}

/** One line on a download: state, bytes of total, speed and time left. */
export function downloadLine(d: DownloadInfo): string {
  const of = d.totalBytes ? `${formatBytes(d.bytes)} of ${formatBytes(d.totalBytes)}` : formatBytes(d.bytes);
  switch (d.state) {
    case 'connecting':
      return d.bytes ? `connecting to resume after ${formatBytes(d.bytes)}…` : 'connecting…';
    case 'running':
      return `${of} · ${formatRate(d.bytesPerSecond)} · ${formatEta(d.etaSeconds)}`;
    case 'verifying':
      return `checking the checksum of ${formatBytes(d.bytes)}…`;
    case 'paused':
      return `paused at ${of}`;
    case 'done':
      return `downloaded and verified (${formatBytes(d.bytes)})`;
    case 'cancelled':
      return 'cancelled; the partial file was removed';
    case 'failed':
      return `failed: ${d.error ?? 'unknown error'}`;
  }
}

/** What the list says of an entry's size and cache state. */
export function entryStatus(item: ListingItem): string {
  if (item.entry.kind === 'vendor-page') return 'download from the vendor';
  if (item.cached) return `cached, ${formatBytes(item.cached.bytes)}`;
  if (item.download && ['connecting', 'running', 'verifying'].includes(item.download.state)) return 'downloading';
  if (item.partialBytes) return `partly downloaded (${formatBytes(item.partialBytes)})`;
  return item.entry.maxBytes ? `download, up to ${formatBytes(item.entry.maxBytes)}` : 'download';
}

export const KIND_LABELS: Record<GalleryEntry['kind'], string> = { cloud: 'Cloud image (ready to run, cloud-init)', installer: 'Installer ISO', 'vendor-page': 'From the vendor' };
