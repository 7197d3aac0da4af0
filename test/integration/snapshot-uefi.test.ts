// A UEFI (OVMF) guest's live snapshot includes the qcow2 UEFI variable store alongside its disk.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import type { Core } from '../../main/core/core.js';
import { SnapshotManager } from '../../main/core/snapshots/manager.js';
import { bootGuest, createGuestVm, killVm, makeCore, readDiskMarker, readRamMarker, shell, writeDiskMarker, writeRamMarker, type GuestConsole } from './snapshot-harness.js';

const ovmf = ['/usr/share/OVMF/OVMF_CODE_4M.fd', '/usr/share/OVMF/OVMF_CODE.fd', '/usr/share/ovmf/OVMF.fd'].some((f) => existsSync(f));

describe.skipIf(!ovmf)('UEFI guest', () => {
  let core: Core;
  let cleanup: () => Promise<void>;
  let con: GuestConsole;

  beforeAll(async () => {
    ({ core, cleanup } = await makeCore());
    await createGuestVm(core, 'efi', { firmware: 'uefi' });
    con = await bootGuest(core, 'efi');
  }, 300_000);
  afterAll(async () => {
    con?.close();
    await cleanup();
  });

  it('live snapshot covers disk and UEFI vars, and restores', async () => {
    const snaps = new SnapshotManager(core);
    await writeRamMarker(con, 'efi-ram');
    await writeDiskMarker(con, 'efi-disk');
    const s = await snaps.take('efi', { name: 'efi live' });
    expect(s.kind).toBe('live');
    expect(s.disks.sort()).toEqual(['disk0', 'uefi-vars']);
    const vars = path.join((await core.get('efi')).bundle, 'uefi-vars.qcow2');
    expect(execFileSync('qemu-img', ['snapshot', '-U', '-l', vars], { encoding: 'utf8' })).toContain(s.tag);
    await writeRamMarker(con, 'efi-ram-2');
    await writeDiskMarker(con, 'efi-disk-2');
    await snaps.restore('efi', 'efi live', { snapshotCurrent: false });
    con.close();
    con = await shell(core, 'efi');
    expect(await readRamMarker(con)).toBe('efi-ram');
    expect(await readDiskMarker(con)).toBe('efi-disk');
    // From stopped too: starts paused, loads, resumes.
    await killVm(core, 'efi');
    await snaps.restore('efi', 'efi live', { snapshotCurrent: false });
    con.close();
    con = await shell(core, 'efi');
    expect(await readRamMarker(con)).toBe('efi-ram');
  }, 300_000);
});
