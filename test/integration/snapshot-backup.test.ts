// Export/import round trips, damaged archives, bare VMDK/VDI/VHDX/raw images and an OVA, each booted on the real guest.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { closeSync, openSync, readFileSync, readSync, statSync, existsSync, mkdtempSync, writeFileSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { Core } from '../../main/core/core.js';
import { SnapshotManager, diskFile } from '../../main/core/snapshots/manager.js';
import { exportVm, importArchive } from '../../main/core/backup/archive.js';
import { importAppliance, importDiskImage } from '../../main/core/backup/ovf.js';
import { TarWriter, readTarIndex } from '../../main/core/backup/tar.js';
import { guestPaths } from '../guest/guest.js';
import { bootGuest, createGuestVm, killVm, makeCore, readDiskMarker, readRamMarker, shell, writeDiskMarker, writeRamMarker, type GuestConsole } from './snapshot-harness.js';

async function markerOf(core: Core, vm: string): Promise<string> {
  const con: GuestConsole = await bootGuest(core, vm);
  try {
    return await readDiskMarker(con);
  } finally {
    con.close();
    await killVm(core, vm);
  }
}

/** Imported images carry no kernel: point them at the test guest's so they boot. */
async function useTestKernel(core: Core, vm: string): Promise<void> {
  const { kernel, initrd } = guestPaths();
  await core.update(vm, { accel: 'tcg', memoryMiB: 256, network: [{ mode: 'none', forwards: [] }], directKernel: { kernel, initrd, cmdline: 'console=ttyS0 panic=-1' } });
}

describe('export and import', () => {
  let core: Core;
  let cleanup: () => Promise<void>;
  let snaps: SnapshotManager;
  let work: string;
  let srcDisk: string;

  beforeAll(async () => {
    ({ core, cleanup } = await makeCore());
    work = mkdtempSync(path.join(tmpdir(), 'vmdesk-exp-'));
    snaps = new SnapshotManager(core);
    const info = await createGuestVm(core, 'orig');
    srcDisk = diskFile(info.bundle, info.config!.disks[0]!);
    const con = await bootGuest(core, 'orig');
    await writeRamMarker(con, 'ram-at-live');
    await writeDiskMarker(con, 'disk-at-live');
    await snaps.take('orig', { name: 'live one', description: 'with RAM' });
    await writeDiskMarker(con, 'disk-final');
    con.close();
    await killVm(core, 'orig');
    await snaps.take('orig', { name: 'powered off' });
  });
  afterAll(async () => cleanup());

  it('round-trips a VM with its snapshots; the imported live snapshot restores RAM and disk', async () => {
    const file = path.join(work, 'orig.vmdesk');
    const phases = new Set<string>();
    const r = await exportVm(core, 'orig', file, { includeSnapshots: true, onProgress: (p) => phases.add(p) });
    expect(r.manifest.includesSnapshots).toBe(true);
    expect(r.manifest.files.map((f) => f.name)).toEqual(expect.arrayContaining(['disks/disk0.qcow2.gz', 'vm.json', 'snapshots/tree.json']));
    expect(r.manifest.files.some((f) => f.role === 'thumbnail')).toBe(true);
    expect([...phases]).toContain('exporting disk disk0');
    // The manifest's checksums are the archive entries' own.
    const idx = await readTarIndex(file);
    const vmJson = idx.find((e) => e.name === 'vm.json')!;
    const buf = Buffer.alloc(vmJson.size);
    const fd = openSync(file, 'r');
    readSync(fd, buf, 0, vmJson.size, vmJson.offset);
    closeSync(fd);
    expect(createHash('sha256').update(buf).digest('hex')).toBe(r.manifest.files.find((f) => f.name === 'vm.json')!.sha256);

    const imported = await importArchive(core, file, { name: 'copy' });
    expect(imported.id).not.toBe((await core.get('orig')).id);
    // Host files an archive names (here the kernel and initrd) are never taken over: the user sets them again.
    expect(imported.config!.directKernel).toBeUndefined();
    expect(imported.warnings.join('\n')).toMatch(/direct kernel boot named files of the exporting machine/);
    await useTestKernel(core, 'copy');
    const list = await snaps.list('copy');
    expect(list.snapshots.map((s) => s.name).sort()).toEqual(['live one', 'powered off']);
    expect(list.notes).toEqual([]);
    expect(await markerOf(core, 'copy')).toBe('disk-final');
    await snaps.restore('copy', 'live one', { snapshotCurrent: false });
    const con = await shell(core, 'copy');
    expect(await readRamMarker(con)).toBe('ram-at-live');
    expect(await readDiskMarker(con)).toBe('disk-at-live');
    con.close();
    await killVm(core, 'copy');
  });

  it('exports without snapshots as compact compressed qcow2 and imports it', async () => {
    const file = path.join(work, 'compact.vmdesk');
    const r = await exportVm(core, 'orig', file);
    expect(r.manifest.files.find((f) => f.role === 'disk')!.name).toBe('disks/disk0.qcow2');
    const info = await importArchive(core, file, { name: 'compact' });
    expect((await snaps.list('compact')).snapshots).toEqual([]);
    await useTestKernel(core, 'compact');
    expect(await markerOf(core, info.name)).toBe('disk-final');
  });

  it('refuses damaged, truncated or foreign archives before writing anything', async () => {
    const good = path.join(work, 'orig.vmdesk');
    const vmsBefore = readdirSync(path.join(core.home, 'vms')).sort();
    // Invert one byte inside the disk entry. (Writing a fixed value left the archive intact whenever that
    // byte of the compressed disk already held it: one run in 256.)
    const bad = path.join(work, 'bad.vmdesk');
    const damaged = readFileSync(good);
    const disk = (await readTarIndex(good)).find((e) => e.name.startsWith('disks/'))!;
    const at = disk.offset + Math.floor(disk.size / 2);
    damaged[at] = damaged[at]! ^ 0xff;
    writeFileSync(bad, damaged);
    await expect(importArchive(core, bad, { name: 'bad' })).rejects.toMatchObject({ code: 'EINVAL', message: expect.stringMatching(/checksum of disks\/disk0.qcow2.gz does not match/) });
    const cut = path.join(work, 'cut.vmdesk');
    writeFileSync(cut, readFileSync(good).subarray(0, Math.floor(statSync(good).size / 2)));
    await expect(importArchive(core, cut, { name: 'cut' })).rejects.toMatchObject({ code: 'EINVAL' });
    const foreign = path.join(work, 'foreign.vmdesk');
    const w = await TarWriter.create(foreign);
    await w.add('hello.txt', Buffer.from('hi'));
    await w.close();
    await expect(importArchive(core, foreign)).rejects.toMatchObject({ code: 'EINVAL', message: expect.stringMatching(/not a VMDesk export/) });
    await expect(importArchive(core, good)).rejects.toMatchObject({ code: 'EEXIST' });
    expect(readdirSync(path.join(core.home, 'vms')).sort()).toEqual(vmsBefore);
  });

  it('refuses to export a running VM or over an existing file', async () => {
    await expect(exportVm(core, 'orig', path.join(work, 'orig.vmdesk'))).rejects.toMatchObject({ code: 'EEXIST' });
    const con = await bootGuest(core, 'orig');
    con.close();
    await expect(exportVm(core, 'orig', path.join(work, 'running.vmdesk'))).rejects.toMatchObject({ code: 'ESTATE' });
    await killVm(core, 'orig');
    expect(existsSync(path.join(work, 'running.vmdesk'))).toBe(false);
    expect(readdirSync(work).some((n) => n.includes('.partial') || n.startsWith('.vmdesk-export-'))).toBe(false);
  });

  for (const [ext, args] of [
    ['vmdk', ['-O', 'vmdk']],
    ['vdi', ['-O', 'vdi']],
    ['vhdx', ['-O', 'vhdx']],
    ['img', ['-O', 'raw']],
  ] as const) {
    it(`imports a bare .${ext} image and boots it`, async () => {
      const file = path.join(work, `image-${ext}.${ext}`);
      execFileSync('qemu-img', ['convert', '-f', 'qcow2', ...args, srcDisk, file]);
      const info = await importDiskImage(core, file);
      expect(info.name).toBe(`image-${ext}`);
      expect(info.config!.disks[0]!.format).toBe('qcow2');
      await useTestKernel(core, info.name);
      expect(await markerOf(core, info.name)).toBe('disk-final');
    });
  }

  it('refuses an image whose extension lies about its content', async () => {
    const file = path.join(work, 'liar.vdi');
    execFileSync('qemu-img', ['convert', '-f', 'qcow2', '-O', 'qcow2', srcDisk, file]);
    await expect(importDiskImage(core, file)).rejects.toMatchObject({ code: 'EINVAL', message: expect.stringMatching(/is called vdi but its contents are qcow2/) });
  });

  it('imports an OVA (OVF + streamOptimized VMDK + SHA256 manifest): CPUs, memory, NICs, disk; boots', async () => {
    const vmdk = path.join(work, 'appliance-disk1.vmdk');
    execFileSync('qemu-img', ['convert', '-f', 'qcow2', '-O', 'vmdk', '-o', 'subformat=streamOptimized', srcDisk, vmdk]);
    const ovf = `<?xml version="1.0" encoding="UTF-8"?>
<Envelope ovf:version="1.0" xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1"
  xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData">
  <References><File ovf:id="file1" ovf:href="appliance-disk1.vmdk"/></References>
  <DiskSection><Info>Virtual disks</Info>
    <Disk ovf:capacity="64" ovf:capacityAllocationUnits="byte * 2^20" ovf:diskId="vmdisk1" ovf:fileRef="file1"
      ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"/>
  </DiskSection>
  <NetworkSection><Info>Networks</Info><Network ovf:name="NAT"><Description>NAT</Description></Network></NetworkSection>
  <VirtualSystem ovf:id="Test Appliance">
    <Info>A test appliance</Info>
    <Name>Test Appliance &amp; Co</Name>
    <OperatingSystemSection ovf:id="96"><Info>OS</Info><Description>Debian_64</Description></OperatingSystemSection>
    <VirtualHardwareSection>
      <Info>Hardware</Info>
      <Item><rasd:Caption>2 virtual CPU</rasd:Caption><rasd:InstanceID>1</rasd:InstanceID><rasd:ResourceType>3</rasd:ResourceType><rasd:VirtualQuantity>2</rasd:VirtualQuantity></Item>
      <Item><rasd:AllocationUnits>MegaBytes</rasd:AllocationUnits><rasd:InstanceID>2</rasd:InstanceID><rasd:ResourceType>4</rasd:ResourceType><rasd:VirtualQuantity>320</rasd:VirtualQuantity></Item>
      <Item><rasd:InstanceID>3</rasd:InstanceID><rasd:ResourceType>10</rasd:ResourceType><rasd:Connection>NAT</rasd:Connection></Item>
      <Item><rasd:InstanceID>4</rasd:InstanceID><rasd:ResourceType>20</rasd:ResourceType></Item>
      <Item><rasd:HostResource>/disk/vmdisk1</rasd:HostResource><rasd:InstanceID>5</rasd:InstanceID><rasd:Parent>4</rasd:Parent><rasd:ResourceType>17</rasd:ResourceType></Item>
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>`;
    const vmdkBuf = readFileSync(vmdk);
    const sha = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');
    const mf = `SHA256(appliance.ovf)= ${sha(ovf)}\nSHA256(appliance-disk1.vmdk)= ${sha(vmdkBuf)}\n`;
    const ova = path.join(work, 'appliance.ova');
    const w = await TarWriter.create(ova);
    await w.add('appliance.ovf', Buffer.from(ovf));
    await w.add('appliance.mf', Buffer.from(mf));
    await w.add('appliance-disk1.vmdk', vmdkBuf);
    await w.close();
    // The system tar reads what TarWriter wrote.
    expect(execFileSync('tar', ['-tf', ova], { encoding: 'utf8' }).trim().split('\n')).toEqual(['appliance.ovf', 'appliance.mf', 'appliance-disk1.vmdk']);

    const phases = new Set<string>();
    const { info, warnings } = await importAppliance(core, ova, { onProgress: (p) => phases.add(p) });
    expect(warnings).toEqual([]);
    expect(info.name).toBe('Test Appliance - Co');
    expect(info.config).toMatchObject({ cpus: 2, memoryMiB: 320, osType: 'linux', firmware: 'bios' });
    expect(info.config!.network).toHaveLength(1);
    expect(info.config!.disks).toHaveLength(1);
    // The appliance's disk hangs on a SATA controller (ResourceType 20), and keeps it.
    expect(info.config!.disks[0]!.bus).toBe('sata');
    expect([...phases]).toEqual(expect.arrayContaining(['verifying checksums', 'converting disk appliance-disk1.vmdk']));
    // The test guest carries virtio drivers only: move the disk to virtio to boot it.
    await core.saveConfig(info.id, { ...info.config!, disks: info.config!.disks.map((d) => ({ ...d, bus: 'virtio' as const })) });
    await useTestKernel(core, info.name);
    await core.update(info.name, { cpus: 1 });
    expect(await markerOf(core, info.name)).toBe('disk-final');

    // A damaged OVA is refused by its manifest before anything is created.
    const bad = path.join(work, 'bad.ova');
    const raw = Buffer.from(readFileSync(ova));
    const disk = (await readTarIndex(ova)).find((e) => e.name.endsWith('.vmdk'))!;
    raw[disk.offset + 100] = raw[disk.offset + 100]! ^ 0xff;
    writeFileSync(bad, raw);
    const count = (await core.list()).length;
    await expect(importAppliance(core, bad, { name: 'bad appliance' })).rejects.toMatchObject({ code: 'EINVAL', message: expect.stringMatching(/checksum of appliance-disk1.vmdk/) });
    expect((await core.list()).length).toBe(count);
  });
});
