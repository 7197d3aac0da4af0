// Forged .vmdesk archives (built here, checksums and all) must not reach the host: no write outside the new
// bundle, no host file attached, moved or read, no disk that names another file, no gzip bomb filling the disk.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { Core } from '../../main/core/core.js';
import { importArchive } from '../../main/core/backup/archive.js';
import { SnapshotManager, diskFile } from '../../main/core/snapshots/manager.js';
import { makeCore } from './snapshot-harness.js';
import { MiB, buildArchive, gzipBomb, makeQcow2, qemuImg, sha256, vmJson, type ArchiveEntry } from './backup-archive-helpers.js';

describe('importing forged archives', () => {
  let core: Core;
  let cleanup: () => Promise<void>;
  let work: string;
  let victimDisk: string;
  let victimSum: string;
  let legit: Buffer;
  /** Host files an archive must never attach, move or read. */
  let secret: string;
  let n = 0;

  const vms = () => readdirSync(path.join(core.home, 'vms')).sort();
  const file = () => path.join(work, `forged-${++n}.vmdesk`);

  async function archive(entries: ArchiveEntry[], opts?: { includesSnapshots?: boolean }): Promise<string> {
    const f = file();
    await buildArchive(f, entries, opts);
    return f;
  }

  beforeAll(async () => {
    ({ core, cleanup } = await makeCore('vmdesk-bkh-'));
    work = mkdtempSync(path.join(tmpdir(), 'vmdesk-forge-'));
    const victim = await core.create({ name: 'victim', cpus: 1, memoryMiB: 64, diskBytes: 2 * MiB, network: [{ mode: 'none', forwards: [] }] });
    victimDisk = diskFile(victim.bundle, victim.config!.disks[0]!);
    victimSum = sha256(readFileSync(victimDisk));
    legit = makeQcow2(path.join(work, 'legit.qcow2'));
    secret = path.join(work, 'secret.raw');
    writeFileSync(secret, Buffer.alloc(MiB, 's'));
  });
  afterAll(async () => {
    await cleanup();
    rmSync(work, { recursive: true, force: true });
  });

  it('refuses a diskId that climbs into another VM or out of the library, and writes nothing anywhere', async () => {
    const before = vms();
    const evil = makeQcow2(path.join(work, 'evil.qcow2'), '4M');
    const staging = path.join(core.home, 'vms', '.creating-x', 'disks');
    const intoVictim = path.relative(staging, victimDisk).replace(/\.qcow2$/, '');
    const plantDir = path.join(work, 'plant');
    mkdirSync(plantDir);
    const outOfLibrary = path.relative(staging, path.join(plantDir, 'planted'));
    for (const diskId of [intoVictim, outOfLibrary]) {
      const f = await archive([
        { name: 'vm.json', data: vmJson(), role: 'config' },
        { name: 'disks/disk0.qcow2', data: legit, role: 'disk', diskId: 'disk0' },
        { name: 'disks/evil.qcow2', data: evil, role: 'disk', diskId },
      ]);
      await expect(importArchive(core, f, { name: `trav-${n}` })).rejects.toMatchObject({ code: 'EINVAL', message: expect.stringMatching(/invalid manifest: files\.2\.diskId: unsafe disk id/) });
    }
    expect(sha256(readFileSync(victimDisk))).toBe(victimSum);
    expect(readdirSync(plantDir)).toEqual([]);
    expect(vms()).toEqual(before);
  });

  it('refuses an owned disk that vm.json places outside the bundle (delete --keep-disks would move that file)', async () => {
    const before = vms();
    for (const p of [secret, `../../${path.basename(path.dirname(path.dirname(victimDisk)))}/disks/disk0.qcow2`]) {
      const f = await archive([
        { name: 'vm.json', data: vmJson({ disks: [{ id: 'disk0', path: p, format: 'qcow2', owned: true, readOnly: false }] }), role: 'config' },
        { name: 'disks/disk0.qcow2', data: legit, role: 'disk', diskId: 'disk0' },
      ]);
      await expect(importArchive(core, f, { name: `owned-${n}` })).rejects.toMatchObject({ code: 'EINVAL', message: expect.stringMatching(/outside its own bundle|relative path inside the VM bundle/) });
    }
    expect(readFileSync(secret)).toEqual(Buffer.alloc(MiB, 's'));
    expect(vms()).toEqual(before);
  });

  it('drops attached disks, the CD/DVD image and the kernel the archive names, with warnings; nothing of the host is touched later', async () => {
    const f = await archive([
      {
        name: 'vm.json',
        data: vmJson({
          disks: [
            { id: 'disk0', path: 'disks/disk0.qcow2', format: 'qcow2', owned: true, readOnly: false },
            { id: 'ext0', path: secret, format: 'raw', owned: false, readOnly: false },
          ],
          cdrom: secret,
          directKernel: { kernel: secret, initrd: secret, cmdline: 'console=ttyS0' },
          network: [{ mode: 'nat', forwards: [], mac: '52:54:00:aa:bb:cc' }],
        }),
        role: 'config',
      },
      { name: 'disks/disk0.qcow2', data: legit, role: 'disk', diskId: 'disk0' },
    ]);
    const info = await importArchive(core, f, { name: 'dropped' });
    expect(info.config!.disks).toEqual([{ id: 'disk0', path: 'disks/disk0.qcow2', format: 'qcow2', owned: true, readOnly: false }]);
    expect(info.config!.cdrom).toBeUndefined();
    expect(info.config!.directKernel).toBeUndefined();
    // A card of its own: a new MAC address, nothing from the archive.
    expect(info.config!.network).toEqual([{ mode: 'nat', forwards: [], mac: expect.stringMatching(/^52:54:00(:[0-9a-f]{2}){3}$/) }]);
    const w = info.warnings.join('\n');
    expect(w).toMatch(/disk ext0 was the file .*secret\.raw of the exporting machine; it was not attached/);
    expect(w).toMatch(/CD\/DVD image .*secret\.raw of the exporting machine was not kept/);
    expect(w).toMatch(/direct kernel boot named files of the exporting machine .* set the kernel and initrd again/);
    const { keptDisks } = await core.delete('dropped', { keepDisks: true });
    expect(keptDisks).toHaveLength(1);
    expect(keptDisks[0]!.startsWith(path.join(core.home, 'kept-disks'))).toBe(true);
    expect(readFileSync(secret)).toEqual(Buffer.alloc(MiB, 's'));
  });

  it('writes thumbnails only as snapshots/<id>.png: an entry called like a disk cannot replace the checked disk', async () => {
    const hostile = makeQcow2(path.join(work, `backed-${n}.qcow2`), '1M', '-b', secret, '-F', 'raw');
    const f = await archive([
      { name: 'vm.json', data: vmJson(), role: 'config' },
      { name: 'disks/disk0.img', data: legit, role: 'disk', diskId: 'disk0' },
      { name: 'snapshots/tree.json', data: Buffer.from(JSON.stringify({ version: 1, current: null, nodes: [], pending: [] })), role: 'tree' },
      { name: 'disks/disk0.qcow2', data: hostile, role: 'thumbnail' },
    ]);
    const info = await importArchive(core, f, { name: 'thumbs' });
    const disk = path.join(info.bundle, 'disks', 'disk0.qcow2');
    expect(JSON.parse(qemuImg('info', '--output=json', '-f', 'qcow2', disk))['backing-filename']).toBeUndefined();
    expect(readFileSync(disk).equals(legit)).toBe(true);
    expect(info.warnings.join('\n')).toMatch(/entry disks\/disk0.qcow2 is not the thumbnail of an imported snapshot/);
    await core.delete('thumbs');
  });

  it("rebuilds the snapshots' saved settings: restoring one cannot bring back a host path, and a snapshot that claims a host file is refused", async () => {
    const d = path.join(work, `snapdisk-${n}.qcow2`);
    makeQcow2(d);
    qemuImg('snapshot', '-c', 'vmdesk-aaaa1111', d);
    qemuImg('snapshot', '-c', 'vmdesk-bbbb1111', d);
    const bad = JSON.parse(vmJson({ disks: [{ id: 'disk0', path: secret, format: 'qcow2', owned: true, readOnly: false }] }).toString());
    const kernel = JSON.parse(vmJson({ directKernel: { kernel: secret, cmdline: '' } }).toString());
    const node = (id: string, config: unknown) => ({ id, tag: `vmdesk-${id}`, name: `snap ${id}`, description: '', time: new Date().toISOString(), parent: null, kind: 'disk-only', config, thumbnail: false, vmStateBytes: 0, disks: ['disk0'], adopted: false, linkedClones: [] });
    // A saved setting that makes a host file the VM's own disk: the snapshot tree is invalid, the import refused.
    const before = vms();
    const refused = await archive(
      [
        { name: 'vm.json', data: vmJson(), role: 'config' },
        { name: 'disks/disk0.qcow2', data: readFileSync(d), role: 'disk', diskId: 'disk0' },
        { name: 'snapshots/tree.json', data: Buffer.from(JSON.stringify({ version: 1, current: 'aaaa1111', nodes: [node('aaaa1111', bad)], pending: [] })), role: 'tree' },
      ],
      { includesSnapshots: true },
    );
    await expect(importArchive(core, refused, { name: 'snapcfg-bad' })).rejects.toMatchObject({ code: 'EINVAL', message: expect.stringMatching(/relative path inside the VM bundle/) });
    expect(vms()).toEqual(before);
    // A saved kernel path of the exporting machine: dropped from the rebuilt settings, with a warning.
    const tree = { version: 1, current: 'aaaa1111', nodes: [node('aaaa1111', JSON.parse(vmJson().toString())), node('bbbb1111', kernel)], pending: [] };
    const f = await archive(
      [
        { name: 'vm.json', data: vmJson(), role: 'config' },
        { name: 'disks/disk0.qcow2', data: readFileSync(d), role: 'disk', diskId: 'disk0' },
        { name: 'snapshots/tree.json', data: Buffer.from(JSON.stringify(tree)), role: 'tree' },
      ],
      { includesSnapshots: true },
    );
    const info = await importArchive(core, f, { name: 'snapcfg' });
    const snaps = new SnapshotManager(core);
    const r = await snaps.restore('snapcfg', 'aaaa1111', { snapshotCurrent: false });
    expect(r.info.config!.disks).toEqual([{ id: 'disk0', path: 'disks/disk0.qcow2', format: 'qcow2', owned: true, readOnly: false }]);
    const r2 = await snaps.restore('snapcfg', 'bbbb1111', { snapshotCurrent: false });
    expect(r2.info.config!.directKernel).toBeUndefined();
    expect(info.warnings.join('\n')).toMatch(/settings saved with snapshot "snap bbbb1111" named files of the exporting machine/);
    await core.delete('snapcfg', { keepDisks: true });
    expect(readFileSync(secret)).toEqual(Buffer.alloc(MiB, 's'));
  });

  it('passes every disk through the image gate once written: backing files and external data files are refused, nothing remains', async () => {
    const before = vms();
    const backed = makeQcow2(path.join(work, `b-${n}.qcow2`), '1M', '-b', secret, '-F', 'raw');
    const dataFile = path.join(work, `data-${n}.raw`);
    const external = makeQcow2(path.join(work, `d-${n}.qcow2`), '1M', '-o', `data_file=${dataFile},data_file_raw=on`);
    const cases: [Buffer, boolean, RegExp][] = [
      [backed, false, /refers to other files \(backing file/],
      [await gzipBomb(backed, 0), true, /refers to other files \(backing file/],
      [external, false, /refers to other files .*data file/],
    ];
    for (const [data, gzip, message] of cases) {
      const f = await archive([
        { name: 'vm.json', data: vmJson(), role: 'config' },
        { name: gzip ? 'disks/disk0.qcow2.gz' : 'disks/disk0.qcow2', data, role: 'disk', diskId: 'disk0', gzip },
      ]);
      await expect(importArchive(core, f, { name: `gate-${n}` })).rejects.toMatchObject({ code: 'EINVAL', message: expect.stringMatching(message) });
    }
    expect(vms()).toEqual(before);
  });

  it('stops a gzip bomb at a bound from its qcow2 header and removes what it wrote', async () => {
    const before = vms();
    // A 1 MiB qcow2 followed by 400 MiB of zeros: a few hundred KiB compressed. The bound for a 1 MiB disk
    // without snapshots and 16 MiB of RAM is about 97 MiB.
    const bomb = await gzipBomb(legit, 400 * MiB);
    expect(bomb.length).toBeLessThan(2 * MiB);
    const f = await archive([
      { name: 'vm.json', data: vmJson(), role: 'config' },
      { name: 'disks/disk0.qcow2.gz', data: bomb, role: 'disk', diskId: 'disk0', gzip: true },
    ]);
    await expect(importArchive(core, f, { name: 'bomb' })).rejects.toMatchObject({ code: 'EINVAL', message: expect.stringMatching(/expands past 10\d{7} bytes.*decompression bomb/) });
    // Not qcow2 at all inside the gzip: refused from its first bytes.
    const notQcow = await archive([
      { name: 'vm.json', data: vmJson(), role: 'config' },
      { name: 'disks/disk0.qcow2.gz', data: await gzipBomb(Buffer.alloc(0), 64 * MiB), role: 'disk', diskId: 'disk0', gzip: true },
    ]);
    await expect(importArchive(core, notQcow, { name: 'bomb2' })).rejects.toMatchObject({ code: 'EINVAL', message: expect.stringMatching(/disk disk0 in the archive is not a qcow2 image/) });
    expect(vms()).toEqual(before);
    expect(existsSync(path.join(core.home, 'vms', 'bomb'))).toBe(false);
  });
});
