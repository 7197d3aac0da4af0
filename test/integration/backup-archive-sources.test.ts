// What clones and exports read: attached files pass the image gate, owned disks must lie in their bundle,
// a linked clone reads the base recorded in its Disk (never the backing file its overlay's header names).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { Core } from '../../main/core/core.js';
import type { VmConfig } from '../../main/api/schema.js';
import { exportVm, importArchive } from '../../main/core/backup/archive.js';
import { cloneVm } from '../../main/core/snapshots/clone.js';
import { SnapshotManager, diskFile } from '../../main/core/snapshots/manager.js';
import { makeCore } from './snapshot-harness.js';
import { MiB, makeQcow2, qemuImg, qemuIo } from './backup-archive-helpers.js';

describe('clone and export sources', () => {
  let core: Core;
  let home: string;
  let cleanup: () => Promise<void>;
  let reopen: () => Promise<Core>;
  let work: string;
  let snaps: SnapshotManager;
  let secret: string;

  const vms = () => readdirSync(path.join(home, 'vms')).sort();
  /**
   * Rewrites a VM's vm.json as an older VMDesk (or a hand edit) could have left it, bypassing the schema,
   * and starts a new core (a daemon restart), which indexes the bundle as it finds it.
   */
  async function setDisks(vm: string, disks: (c: VmConfig) => VmConfig['disks']): Promise<void> {
    const e = await core.resolve(vm);
    writeFileSync(path.join(e.dir, 'vm.json'), JSON.stringify({ ...e.config!, disks: disks(e.config!) }, null, 2));
    core = await reopen();
    snaps = new SnapshotManager(core);
  }

  beforeAll(async () => {
    ({ core, home, cleanup, reopen } = await makeCore('vmdesk-bks-'));
    work = mkdtempSync(path.join(tmpdir(), 'vmdesk-src-'));
    snaps = new SnapshotManager(core);
    secret = path.join(work, 'secret.raw');
    writeFileSync(secret, Buffer.alloc(MiB, 's'));
  });
  afterAll(async () => {
    await cleanup();
    rmSync(work, { recursive: true, force: true });
  });

  it('refuses to clone or export an attached disk that names a backing file, before writing anything', async () => {
    await core.create({ name: 'holder', cpus: 1, memoryMiB: 64, diskBytes: 2 * MiB, network: [{ mode: 'none', forwards: [] }] });
    const ext = path.join(work, 'attached.qcow2');
    makeQcow2(ext, '1M', '-b', secret, '-F', 'raw');
    await setDisks('holder', (c) => [...c.disks, { id: 'ext0', path: ext, format: 'qcow2', owned: false, readOnly: false }]);
    const before = vms();
    await expect(cloneVm(core, snaps, 'holder', { name: 'leak' })).rejects.toMatchObject({ code: 'EINVAL', message: expect.stringMatching(/disk ext0 of "holder" refers to other files \(backing file/) });
    expect(vms()).toEqual(before);
    const out = path.join(work, 'holder.vmdesk');
    await expect(exportVm(core, 'holder', out)).rejects.toMatchObject({ code: 'EINVAL', message: expect.stringMatching(/refers to other files/) });
    expect(readdirSync(work).sort()).toEqual(['attached.qcow2', 'secret.raw']);
  });

  it('refuses an owned disk whose path leaves the bundle (an older import could have written one)', async () => {
    const stray = await core.create({ name: 'stray', cpus: 1, memoryMiB: 64, diskBytes: 2 * MiB, network: [{ mode: 'none', forwards: [] }] });
    const own = path.join(work, 'own.qcow2');
    makeQcow2(own);
    for (const p of [own, '../../../outside.qcow2']) {
      await setDisks(stray.id, () => [{ id: 'disk0', path: p, format: 'qcow2', owned: true, readOnly: false }]);
      const before = vms();
      // Today's schema already calls such a bundle broken; clone and export refuse it either way.
      await expect(cloneVm(core, snaps, stray.id, { name: 'stray-copy' })).rejects.toMatchObject({ code: expect.stringMatching(/^(EINVAL|EBROKEN)$/) });
      await expect(exportVm(core, stray.id, path.join(work, 'stray.vmdesk'))).rejects.toMatchObject({ code: expect.stringMatching(/^(EINVAL|EBROKEN)$/) });
      expect(vms()).toEqual(before);
    }
  });

  it("a linked clone's export and full clone read the recorded base, not the backing file its overlay names", async () => {
    const src = await core.create({ name: 'lsrc', cpus: 1, memoryMiB: 64, diskBytes: 4 * MiB, network: [{ mode: 'none', forwards: [] }] });
    qemuIo(diskFile(src.bundle, src.config!.disks[0]!), 'write -P 0x41 0 64k');
    await snaps.take('lsrc', { name: 'S' });
    const clone = await cloneVm(core, snaps, 'lsrc', { name: 'lclone', snapshot: 'S', mode: 'linked' });
    const overlay = diskFile(clone.bundle, clone.config!.disks[0]!);
    // The overlay's header now names a decoy holding other bytes (and the base's own name is never read).
    const decoy = path.join(work, 'decoy.raw');
    writeFileSync(decoy, Buffer.alloc(4 * MiB, 0x5a));
    qemuImg('rebase', '-u', '-f', 'qcow2', '-F', 'raw', '-b', decoy, overlay);

    const out = path.join(work, 'lclone.vmdesk');
    await exportVm(core, 'lclone', out);
    const imported = await importArchive(core, out, { name: 'lcopy' });
    const copyDisk = diskFile(imported.bundle, imported.config!.disks[0]!);
    expect(qemuIo(copyDisk, 'read -P 0x41 0 64k')).not.toMatch(/verification failed/);
    expect(qemuImg('info', '--output=json', '-f', 'qcow2', copyDisk)).not.toMatch(/backing/);

    const full = await cloneVm(core, snaps, 'lclone', { name: 'lfull' });
    const fullDisk = diskFile(full.bundle, full.config!.disks[0]!);
    expect(qemuIo(fullDisk, 'read -P 0x41 0 64k')).not.toMatch(/verification failed/);
    expect(full.config!.disks[0]!.base).toBeUndefined();

    // With snapshots, the overlay cannot be exported at all (its snapshots need the base).
    await expect(exportVm(core, 'lclone', path.join(work, 'lclone-snaps.vmdesk'), { includeSnapshots: true })).rejects.toMatchObject({ code: 'EINVAL', message: expect.stringMatching(/linked clone's overlay/) });
    expect(existsSync(path.join(work, 'lclone-snaps.vmdesk'))).toBe(false);
  });
});
