// The gallery's form logic: defaults applied without overriding the user's changes, cloud-init checked with the
// daemon's schema, user sources from a checksum or a checksum file, and words for downloads.
import { describe, expect, it } from 'vitest';
import type { GalleryEntry } from '../../../main/api/images';
import { CreateFromImageRequest, UserSourceInput } from '../../../main/api/images';
import { emptyForm } from './vm-form';
import { applyEntryDefaults, downloadLine, emptyGalleryChoice, emptySourceDraft, formatEta, galleryErrors, hostnameFromName, sourceErrors, sourceIdFor, imageFollowUpPatch, toCreateFromImage, toUserSource } from './gallery-form';
import { VmSettingsPatch } from '../../../main/api/schema';

const GiB = 1024 ** 3;
const debian: GalleryEntry = {
  id: 'debian-12',
  name: 'Debian 12',
  kind: 'cloud',
  format: 'qcow2',
  url: 'https://cloud.debian.org/x.qcow2',
  maxBytes: 2 * GiB,
  verify: { sums: 'https://cloud.debian.org/SHA512SUMS', algorithm: 'sha512' },
  defaults: { cpus: 2, memoryMiB: 2048, diskBytes: 20 * GiB, firmware: 'bios', preset: 'debian' },
};

describe('gallery form', () => {
  it('applies an entry\'s defaults except to fields the user changed, bounded by the host\'s CPUs', () => {
    const f = emptyForm();
    f.memoryMiB = 700;
    applyEntryDefaults(f, { ...debian, defaults: { ...debian.defaults, cpus: 8, firmware: 'uefi' } }, new Set(['memoryMiB']), 4);
    expect([f.osType, f.cpus, f.memoryMiB, f.diskGiB, f.firmware]).toEqual(['linux', 4, 700, 20, 'uefi']);
    applyEntryDefaults(f, { ...debian, defaults: { ...debian.defaults, preset: 'windows11' } }, new Set());
    expect(f.osType).toBe('windows');
  });

  it('builds a vm.createFromImage request the daemon\'s schema accepts, cloud-init only when given', () => {
    const f = emptyForm();
    f.name = 'web 1';
    applyEntryDefaults(f, debian, new Set());
    const g = emptyGalleryChoice();
    expect(toCreateFromImage(f, g, debian)).toEqual({ name: 'web 1', image: 'debian-12', cpus: 2, memoryMiB: 2048, firmware: 'bios', osType: 'linux', accel: 'auto', network: [{ mode: 'nat', forwards: [] }], diskBytes: 20 * GiB });
    // The network page counts for an image too.
    f.adapters[0]!.mode = 'internal';
    f.adapters[0]!.network = 'lab';
    f.accel = 'tcg';
    expect(toCreateFromImage(f, g, debian)).toMatchObject({ accel: 'tcg', network: [{ mode: 'internal', network: 'lab', forwards: [] }] });
    expect(CreateFromImageRequest.safeParse(toCreateFromImage(f, g, debian)).success).toBe(true);
    f.adapters[0]!.mode = 'nat';
    f.accel = 'auto';
    Object.assign(g, { user: 'alice', hostname: 'web-1', packages: 'git, curl  htop', userData: '#cloud-config\n' });
    const req = toCreateFromImage(f, g, debian);
    expect(req.cloudInit).toEqual({ user: 'alice', hostname: 'web-1', packages: ['git', 'curl', 'htop'], userData: '#cloud-config\n' });
    expect(CreateFromImageRequest.safeParse(req).success).toBe(true);
    expect(galleryErrors(f, g, debian)).toEqual({});
    // An installer takes no cloud-init.
    expect(toCreateFromImage(f, g, { ...debian, kind: 'installer', format: 'iso' }).cloudInit).toBeUndefined();
  });

  it('carries what vm.createFromImage does not take (limits, integration, devices) in a follow-up patch', () => {
    const f = emptyForm();
    f.name = 'web 1';
    applyEntryDefaults(f, debian, new Set());
    expect(imageFollowUpPatch(f)).toBeUndefined();
    f.clipboard = true;
    f.tpm = true;
    expect(imageFollowUpPatch(f)).toEqual({ clipboard: true, tpm: true });
    expect(VmSettingsPatch.strict().safeParse(imageFollowUpPatch(f)).success).toBe(true);
  });

  it('says what is wrong with the cloud-init fields, the choice and the disk size', () => {
    const f = emptyForm();
    f.name = 'x';
    const g = { ...emptyGalleryChoice(), user: 'root', hostname: 'Bad_Host', packages: 'git rm;-rf' };
    const e = galleryErrors(f, g, debian);
    expect(e.ciUser).toMatch(/belongs to the system/);
    expect(e.ciHostname).toMatch(/host name/);
    expect(e.ciPackages).toBe('“rm;-rf” is not a package name');
    f.diskGiB = 0;
    expect(galleryErrors(f, emptyGalleryChoice(), debian).diskGiB).toMatch(/grown to this size/);
    expect(galleryErrors(f, emptyGalleryChoice(), undefined).image).toBe('choose an image');
    const vendor: GalleryEntry = { ...debian, id: 'windows-11', kind: 'vendor-page', format: 'iso', defaults: { ...debian.defaults, preset: 'windows11' } };
    expect(galleryErrors(f, emptyGalleryChoice(), vendor).vendorIso).toMatch(/download the ISO/);
    expect(galleryErrors(f, { ...emptyGalleryChoice(), vendorIso: 'Win11.iso' }, vendor).vendorIso).toMatch(/absolute/);
    expect(galleryErrors(f, { ...emptyGalleryChoice(), vendorIso: '/home/a/Win11.iso' }, vendor)).toEqual({});
  });

  it('makes a user source from a checksum, bare hex or a checksum file URL', () => {
    const hex = 'ab'.repeat(32);
    const d = { ...emptySourceDraft(), name: 'My Image', url: 'https://example.org/img/disk.qcow2', check: hex.toUpperCase() };
    const src = toUserSource(d, ['my-image']);
    expect(src).toEqual({ id: 'my-image-2', name: 'My Image', kind: 'cloud', format: 'qcow2', url: d.url, verify: { checksum: `sha256:${hex}` } });
    expect(UserSourceInput.safeParse(src).success).toBe(true);
    expect(toUserSource({ ...d, check: 'https://example.org/img/SHA512SUMS' }, []).verify).toEqual({ sums: 'https://example.org/img/SHA512SUMS', algorithm: 'sha512' });
    expect(toUserSource({ ...d, format: 'iso', name: '' }, []).kind).toBe('installer');
    expect(sourceIdFor({ ...d, name: '' }, [])).toBe('disk');
    expect(sourceIdFor({ ...d, name: '..Weird Name!!' }, [])).toBe('weird-name');
    expect(sourceErrors(d, [])).toEqual({});
    expect(sourceErrors({ ...d, url: 'ftp://x/y', check: 'md5:1234' }, [])).toMatchObject({ url: expect.stringMatching(/http/), check: expect.stringMatching(/sha256/) });
    expect(sourceErrors(emptySourceDraft(), [])).toMatchObject({ url: 'give the image’s URL', check: expect.stringMatching(/checksum/) });
  });

  it('words downloads and host names', () => {
    const base = { image: 'd', bytes: 50 * 1024 ** 2, totalBytes: 200 * 1024 ** 2, bytesPerSecond: 10 * 1024 ** 2, etaSeconds: 15, startedAt: '' };
    expect(downloadLine({ ...base, state: 'running' })).toMatch(/^50(\.0)? MiB of 200(\.0)? MiB · 10(\.0)? MiB\/s · 15 s left$/);
    expect(downloadLine({ ...base, state: 'paused' })).toMatch(/^paused at 50/);
    expect(downloadLine({ ...base, state: 'failed', error: 'checksum mismatch' })).toBe('failed: checksum mismatch');
    expect(formatEta(3725)).toBe('1 h 2 min left');
    expect(formatEta(undefined)).toBe('time left unknown');
    expect(hostnameFromName('My Web_VM 1.')).toBe('my-web-vm-1');
  });
});
