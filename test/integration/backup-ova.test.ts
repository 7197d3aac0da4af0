// OVA/OVF import and export with real qemu-img, on appliances and images the tests build themselves:
// VMDesk's own OVA re-imported (disk contents compared with qemu-img compare), OVF folders with manifests,
// hostile appliances (backing files, VMDK extents and parents, symlinks out of the folder, duplicate
// descriptors, incomplete manifests, gzip bombs), fixed VHDs, disguised .img files and absurd disk sizes.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import { gzipSync } from 'node:zlib';
import type { Core } from '../../main/core/core.js';
import { EXIT_CODES, VmdeskError } from '../../main/api/errors.js';
import { diskFile } from '../../main/core/snapshots/manager.js';
import { TarWriter, readEntry, readTarIndex } from '../../main/core/backup/tar.js';
import { importAppliance, importDiskImage, parseOvf } from '../../main/core/backup/ovf.js';
import { exportOva } from '../../main/core/backup/ova-export.js';
import { runSnapshotCli } from '../../main/cli/snapshot.js';
import { createGuestVm, inProcessRpc, killVm, makeCore } from './snapshot-harness.js';

const MiB = 1024 * 1024;
const sha256 = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');

let core: Core;
let cleanup: () => Promise<void>;
let work: string;

beforeAll(async () => {
  ({ core, cleanup } = await makeCore('vmdesk-ova-'));
  work = mkdtempSync(path.join(tmpdir(), 'vmdesk-ovat-'));
});
afterAll(async () => {
  await cleanup();
  rmSync(work, { recursive: true, force: true });
});

/** A raw image with a recognisable pattern: random-looking blocks with holes, so conversions must keep both. */
function patternRaw(file: string, size: number, seed: string): void {
  const b = Buffer.alloc(size);
  for (let off = 0; off < size; off += 64 * 1024) {
    if ((off / (64 * 1024)) % 3 === 1) continue;
    const block = createHash('sha512').update(`${seed}:${off}`).digest();
    for (let i = 0; i < 64 * 1024 && off + i < size; i += block.length) block.copy(b, off + i);
  }
  writeFileSync(file, b);
}

function qemuImg(...args: string[]): string {
  return execFileSync('qemu-img', args, { encoding: 'utf8' });
}

/** qemu-img compare: exit 0 when the guest-visible contents are identical. */
function sameContents(a: string, aFormat: string, b: string, bFormat: string): boolean {
  return spawnSync('qemu-img', ['compare', '-f', aFormat, '-F', bFormat, a, b]).status === 0;
}

async function vmCount(): Promise<number> {
  return (await core.list()).length;
}

/** The staging folders an import leaves when it fails half-way must be gone. */
function noLeftovers(): void {
  expect(readdirSync(path.join(core.home, 'vms')).filter((n) => n.startsWith('.creating-') || n.startsWith('.deleting-'))).toEqual([]);
}

async function expectRefused(run: () => Promise<unknown>, message: RegExp): Promise<void> {
  const before = await vmCount();
  const err = await run().then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(VmdeskError);
  expect(err).toMatchObject({ code: 'EINVAL' });
  expect((err as Error).message).toMatch(message);
  expect(await vmCount()).toBe(before);
  noLeftovers();
}

const NS = `xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData"`;

/** A minimal VirtualBox-style descriptor for one disk on SATA. */
function ovfFor(href: string, o: { capacity?: number; compression?: string; name?: string } = {}): string {
  return `<?xml version="1.0"?>
<Envelope ovf:version="1.0" ${NS}>
  <References><File ovf:id="file1" ovf:href="${href}"${o.compression ? ` ovf:compression="${o.compression}"` : ''}/></References>
  <DiskSection><Info>disks</Info><Disk ovf:capacity="${o.capacity ?? 8 * MiB}" ovf:diskId="vmdisk1" ovf:fileRef="file1"/></DiskSection>
  <VirtualSystem ovf:id="${o.name ?? 'appliance'}"><Info>vm</Info>
    <VirtualHardwareSection><Info>hw</Info>
      <Item><rasd:InstanceID>1</rasd:InstanceID><rasd:ResourceType>3</rasd:ResourceType><rasd:VirtualQuantity>1</rasd:VirtualQuantity></Item>
      <Item><rasd:AllocationUnits>MegaBytes</rasd:AllocationUnits><rasd:InstanceID>2</rasd:InstanceID><rasd:ResourceType>4</rasd:ResourceType><rasd:VirtualQuantity>256</rasd:VirtualQuantity></Item>
      <Item><rasd:InstanceID>3</rasd:InstanceID><rasd:ResourceSubType>AHCI</rasd:ResourceSubType><rasd:ResourceType>20</rasd:ResourceType></Item>
      <Item><rasd:HostResource>/disk/vmdisk1</rasd:HostResource><rasd:InstanceID>4</rasd:InstanceID><rasd:Parent>3</rasd:Parent><rasd:ResourceType>17</rasd:ResourceType></Item>
      <Item><rasd:InstanceID>5</rasd:InstanceID><rasd:ResourceSubType>E1000</rasd:ResourceSubType><rasd:ResourceType>10</rasd:ResourceType></Item>
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>`;
}

/** Writes an OVA from [name, bytes] entries in this order (TarWriter does not judge what it is given). */
async function ova(file: string, entries: [string, Buffer | string][]): Promise<string> {
  const w = await TarWriter.create(file);
  for (const [n, b] of entries) await w.add(n, Buffer.isBuffer(b) ? b : Buffer.from(b));
  await w.close();
  return file;
}

const mf = (files: [string, Buffer | string][]) => files.map(([n, b]) => `SHA256(${n})= ${sha256(b)}\n`).join('');

describe('OVA export and re-import', () => {
  let raw0: string;
  let raw1: string;

  beforeAll(async () => {
    raw0 = path.join(work, 'source0.raw');
    patternRaw(raw0, 8 * MiB, 'disk0');
    raw1 = path.join(work, 'source1.raw');
    patternRaw(raw1, 4 * MiB, 'disk1');
    const q1 = path.join(work, 'source1.qcow2');
    qemuImg('convert', '-f', 'raw', '-O', 'qcow2', raw1, q1);
    await importDiskImage(core, raw0, { name: 'exported', cpus: 2, memoryMiB: 384 });
    await core.update('exported', { osType: 'linux', network: [{ mode: 'nat', forwards: [], model: 'e1000' }] });
    await core.diskAttach('exported', q1, { bus: 'sata' });
  });

  it('writes an OVA (descriptor first, streamOptimized VMDKs, SHA256 manifest last) that VMDesk imports with the same disks and devices', async () => {
    const file = path.join(work, 'exported.ova');
    const phases = new Set<string>();
    const r = await exportOva(core, 'exported', file, { onProgress: (p) => phases.add(p) });
    expect(r.entries).toEqual(['exported.ovf', 'exported-disk001.vmdk', 'exported-disk002.vmdk', 'exported.mf']);
    expect([...phases]).toEqual(expect.arrayContaining(['exporting disk disk0', 'exporting disk ext0', 'done']));
    expect(r.bytes).toBe(statSync(file).size);

    // The system tar reads it, descriptor first.
    const listing = execFileSync('tar', ['-tvf', file], { encoding: 'utf8' }).trim().split('\n');
    expect(listing).toHaveLength(4);
    expect(listing[0]).toMatch(/ exported\.ovf$/);
    expect(listing[3]).toMatch(/ exported\.mf$/);

    // The descriptor reads back as the VM; the disks are streamOptimized VMDKs; the manifest covers everything.
    const idx = await readTarIndex(file);
    const byName = new Map(idx.map((e) => [e.name, e]));
    const ovfText = (await readEntry(file, byName.get('exported.ovf')!)).toString('utf8');
    const app = parseOvf(ovfText);
    expect(app).toMatchObject({ name: 'exported', cpus: 2, memoryMiB: 384, osType: 'linux', firmware: 'bios', warnings: [] });
    expect(app.disks.map((d) => [d.href, d.capacityBytes, d.bus])).toEqual([
      ['exported-disk001.vmdk', 8 * MiB, 'virtio'],
      ['exported-disk002.vmdk', 4 * MiB, 'sata'],
    ]);
    expect(app.adapters).toEqual([{ model: 'e1000', subtype: 'E1000' }]);
    for (const d of ['exported-disk001.vmdk', 'exported-disk002.vmdk']) {
      const e = byName.get(d)!;
      const spec = { driver: 'vmdk', file: { driver: 'raw', offset: e.offset, size: e.size, file: { driver: 'file', filename: file } } };
      const info = JSON.parse(qemuImg('info', '--output=json', `json:${JSON.stringify(spec)}`)) as { format: string; 'format-specific': { data: { 'create-type': string } } };
      expect(info['format-specific'].data['create-type']).toBe('streamOptimized');
    }
    const manifest = (await readEntry(file, byName.get('exported.mf')!)).toString('utf8').trim().split('\n');
    expect(manifest).toHaveLength(3);
    for (const line of manifest) {
      const m = /^SHA256\((.+)\)= ([0-9a-f]{64})$/.exec(line)!;
      expect(sha256(await readEntry(file, byName.get(m[1]!)!, 64 * MiB))).toBe(m[2]);
    }

    const { info, warnings } = await importAppliance(core, file, { name: 'reimported' });
    expect(warnings).toEqual([]);
    expect(info.config).toMatchObject({ cpus: 2, memoryMiB: 384, osType: 'linux', firmware: 'bios' });
    expect(info.config!.disks.map((d) => d.bus)).toEqual(['virtio', 'sata']);
    // The card's model comes through the OVF; its MAC address is new, as for any imported VM.
    expect(info.config!.network).toEqual([{ mode: 'nat', forwards: [], model: 'e1000', mac: expect.stringMatching(/^52:54:00(:[0-9a-f]{2}){3}$/) }]);
    const [d0, d1] = info.config!.disks.map((d) => diskFile(info.bundle, d));
    expect(sameContents(raw0, 'raw', d0!, 'qcow2')).toBe(true);
    expect(sameContents(raw1, 'raw', d1!, 'qcow2')).toBe(true);
    expect(sameContents(raw1, 'raw', d0!, 'qcow2')).toBe(false);
  });

  it('refuses a running VM, an existing file and a name that is not .ova', async () => {
    await expect(exportOva(core, 'exported', path.join(work, 'exported.ova'))).rejects.toMatchObject({ code: 'EEXIST' });
    await expect(exportOva(core, 'exported', path.join(work, 'exported.tar'))).rejects.toMatchObject({ code: 'EINVAL' });
    await createGuestVm(core, 'running');
    await core.start('running');
    try {
      await expect(exportOva(core, 'running', path.join(work, 'running.ova'))).rejects.toMatchObject({ code: 'ESTATE' });
    } finally {
      await killVm(core, 'running');
    }
    expect(existsSync(path.join(work, 'running.ova'))).toBe(false);
    expect(readdirSync(work).filter((n) => n.includes('.partial') || n.startsWith('.vmdesk-ova-'))).toEqual([]);
  });

  it('the CLI exports by extension and imports with --cpus/--memory overrides', async () => {
    const io = () => {
      const stdout = new PassThrough();
      const stderr = new PassThrough();
      let out = '';
      let err = '';
      stdout.on('data', (d) => (out += d));
      stderr.on('data', (d) => (err += d));
      return { io: { stdout, stderr, json: false }, text: () => ({ out, err }) };
    };
    const run = async (verb: 'export' | 'import', args: string[]) => {
      const x = io();
      try {
        return { code: await runSnapshotCli(async () => inProcessRpc(core), verb, args, x.io), ...x.text() };
      } catch (e) {
        if (e instanceof VmdeskError) return { code: EXIT_CODES[e.code], ...x.text(), err: x.text().err + e.message };
        throw e;
      }
    };
    const file = path.join(work, 'cli.ova');
    const ex = await run('export', ['exported', file]);
    expect(ex.out).toMatch(/exported "exported" to .*cli\.ova .*OVA/);
    expect((await run('export', ['exported', path.join(work, 'snap.ova'), '--with-snapshots'])).code).toBe(EXIT_CODES.EINVAL);
    const im = await run('import', [file, '--name', 'from cli', '--cpus', '1', '--memory', '200']);
    expect(im.code).toBe(0);
    expect((await core.get('from cli')).config).toMatchObject({ cpus: 1, memoryMiB: 200 });
    for (const bad of [['--cpus', '0'], ['--cpus', '999'], ['--memory', '8'], ['--format', 'qcow2']]) {
      const r = await run('import', [file, '--name', 'bad one', ...bad]);
      expect(r.code, bad.join(' ')).toBe(EXIT_CODES.EINVAL);
    }
    // More CPUs than this host has is refused like `create` refuses it.
    const many = String((await core.host()).cpus + 1);
    expect((await run('import', [file, '--name', 'bad one', '--cpus', many])).err).toMatch(/CPUs requested but this host has only/);
    expect((await run('import', [raw1, '--name', 'bad one', '--cpus', many])).code).toBe(EXIT_CODES.EINVAL);
  });
});

describe('OVF folders with a manifest', () => {
  let dir: string;
  let vmdk: string;
  let raw: string;

  beforeAll(() => {
    dir = path.join(work, 'folder');
    mkdirSync(dir);
    raw = path.join(work, 'folder-src.raw');
    patternRaw(raw, 4 * MiB, 'folder');
    vmdk = path.join(dir, 'disk1.vmdk');
    qemuImg('convert', '-f', 'raw', '-O', 'vmdk', raw, vmdk);
  });

  it('imports when the manifest lists and matches the descriptor and the disk', async () => {
    const ovf = ovfFor('disk1.vmdk', { name: 'folder app' });
    writeFileSync(path.join(dir, 'app.ovf'), ovf);
    writeFileSync(path.join(dir, 'app.mf'), `SHA1 (app.ovf) = ${createHash('sha1').update(ovf).digest('hex')}\nSHA256 (disk1.vmdk) = ${sha256(readFileSync(vmdk))}\n`);
    const { info } = await importAppliance(core, path.join(dir, 'app.ovf'));
    expect(info.name).toBe('folder app');
    expect(info.config!.disks[0]!.bus).toBe('sata');
    expect(info.config!.network[0]!.model).toBe('e1000');
    expect(sameContents(raw, 'raw', diskFile(info.bundle, info.config!.disks[0]!), 'qcow2')).toBe(true);
  });

  it('refuses a manifest that omits the disk, a digest that does not match, and a line that does not parse', async () => {
    const ovf = ovfFor('disk1.vmdk', { name: 'folder app 2' });
    writeFileSync(path.join(dir, 'app2.ovf'), ovf);
    writeFileSync(path.join(dir, 'app2.mf'), `SHA256(app2.ovf)= ${sha256(ovf)}\n`);
    await expectRefused(async () => importAppliance(core, path.join(dir, 'app2.ovf')), /does not list disk1\.vmdk/);
    writeFileSync(path.join(dir, 'app2.mf'), `SHA256(app2.ovf)= ${sha256(ovf)}\nSHA256(disk1.vmdk)= ${sha256('other')}\n`);
    await expectRefused(async () => importAppliance(core, path.join(dir, 'app2.ovf')), /checksum of disk1\.vmdk does not match/);
    writeFileSync(path.join(dir, 'app2.mf'), `SHA256(app2.ovf)= ${sha256(ovf)}\nSHA256(disk1.vmdk)= ${sha256(readFileSync(vmdk))}\nnot a manifest line\n`);
    await expectRefused(async () => importAppliance(core, path.join(dir, 'app2.ovf')), /line 3 of the manifest/);
  });

  it('refuses a disk that is a symbolic link out of the folder', async () => {
    const outside = path.join(work, 'outside.vmdk');
    qemuImg('convert', '-f', 'raw', '-O', 'vmdk', raw, outside);
    const sub = path.join(work, 'linked');
    mkdirSync(sub);
    symlinkSync(outside, path.join(sub, 'disk1.vmdk'));
    writeFileSync(path.join(sub, 'app.ovf'), ovfFor('disk1.vmdk'));
    await expectRefused(async () => importAppliance(core, path.join(sub, 'app.ovf')), /outside .* symbolic link/);
    writeFileSync(path.join(sub, 'up.ovf'), ovfFor('../outside.vmdk'));
    await expectRefused(async () => importAppliance(core, path.join(sub, 'up.ovf')), /not a file in its folder/);
  });
});

describe('hostile OVAs', () => {
  let vmdk: Buffer;
  let raw: string;

  beforeAll(() => {
    raw = path.join(work, 'hostile-src.raw');
    patternRaw(raw, 2 * MiB, 'hostile');
    const f = path.join(work, 'hostile.vmdk');
    qemuImg('convert', '-f', 'raw', '-O', 'vmdk', '-o', 'subformat=streamOptimized', raw, f);
    vmdk = readFileSync(f);
  });

  it('refuses two descriptors, two manifests, and a manifest that omits the disk', async () => {
    const ovf = ovfFor('disk1.vmdk');
    await expectRefused(async () => importAppliance(core, await ova(path.join(work, 'two-ovf.ova'), [['a.ovf', ovf], ['b.ovf', ovf], ['disk1.vmdk', vmdk]])), /2 \.ovf descriptors/);
    const m = mf([['a.ovf', ovf], ['disk1.vmdk', vmdk]]);
    await expectRefused(async () => importAppliance(core, await ova(path.join(work, 'two-mf.ova'), [['a.ovf', ovf], ['disk1.vmdk', vmdk], ['a.mf', m], ['b.mf', m]])), /2 manifests/);
    await expectRefused(async () => importAppliance(core, await ova(path.join(work, 'omit.ova'), [['a.ovf', ovf], ['disk1.vmdk', vmdk], ['a.mf', mf([['a.ovf', ovf]])]])), /does not list disk1\.vmdk/);
    await expectRefused(async () => importAppliance(core, await ova(path.join(work, 'omit-ovf.ova'), [['a.ovf', ovf], ['disk1.vmdk', vmdk], ['a.mf', mf([['disk1.vmdk', vmdk]])]])), /does not list a\.ovf/);
    // The same entries with a complete manifest import.
    const good = await ova(path.join(work, 'good.ova'), [['a.ovf', ovf], ['disk1.vmdk', vmdk], ['a.mf', m]]);
    const { info } = await importAppliance(core, good, { name: 'good ova' });
    expect(sameContents(raw, 'raw', diskFile(info.bundle, info.config!.disks[0]!), 'qcow2')).toBe(true);
  });

  it('refuses a qcow2 with a backing file, a VMDK descriptor with host extents, a VMDK with a parent, and a fake .vmdk', async () => {
    const q = path.join(work, 'backed.qcow2');
    qemuImg('create', '-f', 'qcow2', '-b', '/etc/hostname', '-F', 'raw', q, '2M');
    await expectRefused(async () => importAppliance(core, await ova(path.join(work, 'backing.ova'), [['a.ovf', ovfFor('disk1.qcow2')], ['disk1.qcow2', readFileSync(q)]])), /refers to other files \(backing file "\/etc\/hostname"\)/);

    const descriptor = '# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType="monolithicFlat"\n\n# Extent description\nRW 4096 FLAT "/etc/passwd" 0\n';
    await expectRefused(async () => importAppliance(core, await ova(path.join(work, 'extent.ova'), [['a.ovf', ovfFor('disk1.vmdk')], ['disk1.vmdk', descriptor]])), /extent "\/etc\/passwd"/);

    const parent = path.join(work, 'parent.vmdk');
    const child = path.join(work, 'child.vmdk');
    qemuImg('create', '-f', 'vmdk', parent, '2M');
    qemuImg('create', '-f', 'vmdk', '-b', parent, '-F', 'vmdk', child);
    expect(readFileSync(child).toString('latin1')).toContain('parentFileNameHint');
    await expectRefused(async () => importAppliance(core, await ova(path.join(work, 'parent.ova'), [['a.ovf', ovfFor('disk1.vmdk')], ['disk1.vmdk', readFileSync(child)]])), /parent disk/);

    await expectRefused(async () => importAppliance(core, await ova(path.join(work, 'fake.ova'), [['a.ovf', ovfFor('disk1.vmdk')], ['disk1.vmdk', readFileSync(raw)]])), /is called vmdk but its contents are raw/);
  });

  it('refuses an OVA whose disk entry is a symbolic link', async () => {
    const d = path.join(work, 'symova');
    mkdirSync(d);
    writeFileSync(path.join(d, 'a.ovf'), ovfFor('disk1.vmdk'));
    symlinkSync('/etc/passwd', path.join(d, 'disk1.vmdk'));
    const file = path.join(work, 'symlink.ova');
    execFileSync('tar', ['-cf', file, '-C', d, 'a.ovf', 'disk1.vmdk']);
    await expectRefused(async () => importAppliance(core, file), /"disk1\.vmdk" is a symbolic link/);
  });

  it('imports a gzip-compressed disk (ovf:compression="gzip") and refuses a gzip bomb without filling the disk', async () => {
    const gz = gzipSync(vmdk);
    const ovf = ovfFor('disk1.vmdk.gz', { compression: 'gzip', capacity: 2 * MiB });
    const file = await ova(path.join(work, 'gz.ova'), [['a.ovf', ovf], ['disk1.vmdk.gz', gz], ['a.mf', mf([['a.ovf', ovf], ['disk1.vmdk.gz', gz]])]]);
    const { info } = await importAppliance(core, file, { name: 'gzipped' });
    expect(sameContents(raw, 'raw', diskFile(info.bundle, info.config!.disks[0]!), 'qcow2')).toBe(true);
    noLeftovers();

    // 256 MiB of zeros in ~250 KB, declared as a 1 MiB disk: stops after ~17 MiB of output.
    const bomb = gzipSync(Buffer.alloc(256 * MiB), { level: 9 });
    expect(bomb.length).toBeLessThan(MiB);
    const t0 = Date.now();
    await expectRefused(async () => importAppliance(core, await ova(path.join(work, 'bomb.ova'), [['a.ovf', ovfFor('disk1.raw.gz', { compression: 'gzip', capacity: MiB })], ['disk1.raw.gz', bomb]])), /decompresses to more than \d+ bytes.*gzip bomb/);
    expect(Date.now() - t0).toBeLessThan(20_000);
  });
});

describe('bare disk images through the gate', () => {
  it('imports a fixed VHD (footer only at the end, which qemu-img alone takes for raw) as VHD', async () => {
    const raw = path.join(work, 'vhd-src.raw');
    patternRaw(raw, 4 * MiB, 'vhd');
    const vhd = path.join(work, 'fixed.vhd');
    qemuImg('convert', '-f', 'raw', '-O', 'vpc', '-o', 'subformat=fixed,force_size=on', raw, vhd);
    expect(JSON.parse(qemuImg('info', '--output=json', vhd)).format).toBe('raw');
    const info = await importDiskImage(core, vhd);
    const disk = diskFile(info.bundle, info.config!.disks[0]!);
    expect(sameContents(raw, 'raw', disk, 'qcow2')).toBe(true);
    expect(JSON.parse(qemuImg('info', '--output=json', disk))['virtual-size']).toBe(4 * MiB);
  });

  it('refuses a .img that is a qcow2 with a backing file, and a 100 TiB qcow2 before allocating anything', async () => {
    const img = path.join(work, 'disguised.img');
    qemuImg('create', '-f', 'qcow2', '-b', '/etc/hostname', '-F', 'raw', img, '1M');
    await expectRefused(async () => importDiskImage(core, img), /refers to other files \(backing file "\/etc\/hostname"\)/);
    const huge = path.join(work, 'huge.qcow2');
    qemuImg('create', '-f', 'qcow2', huge, '100T');
    const t0 = Date.now();
    await expectRefused(async () => importDiskImage(core, huge), /virtual size of 109951162777600 bytes, more than the limit/);
    expect(Date.now() - t0).toBeLessThan(5000);
  });

  it('decides a .img by its bytes and takes --format for names that say nothing', async () => {
    const raw = path.join(work, 'fmt-src.raw');
    patternRaw(raw, 2 * MiB, 'fmt');
    const img = path.join(work, 'really-qcow2.img');
    qemuImg('convert', '-f', 'raw', '-O', 'qcow2', raw, img);
    const a = await importDiskImage(core, img);
    expect(sameContents(raw, 'raw', diskFile(a.bundle, a.config!.disks[0]!), 'qcow2')).toBe(true);
    const bin = path.join(work, 'disk.bin');
    qemuImg('convert', '-f', 'raw', '-O', 'vdi', raw, bin);
    await expectRefused(async () => importDiskImage(core, bin), /unknown disk image type/);
    await expectRefused(async () => importDiskImage(core, bin, { format: 'qcow2' }), /is called qcow2 but its contents are vdi/);
    const b = await importDiskImage(core, bin, { format: 'vdi', name: 'from bin' });
    expect(sameContents(raw, 'raw', diskFile(b.bundle, b.config!.disks[0]!), 'qcow2')).toBe(true);
  });
});
