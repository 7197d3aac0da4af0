// Full and linked clones of the real guest, from a snapshot and from the current state; linked bases are protected.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync } from 'node:fs';
import type { Core } from '../../main/core/core.js';
import { SnapshotManager } from '../../main/core/snapshots/manager.js';
import { cloneVm, linkedClonesOf } from '../../main/core/snapshots/clone.js';
import { VmdeskError } from '../../main/api/errors.js';
import { bootGuest, createGuestVm, killVm, makeCore, readDiskMarker, writeDiskMarker, type GuestConsole } from './snapshot-harness.js';

async function markerOf(core: Core, vm: string): Promise<string> {
  const con: GuestConsole = await bootGuest(core, vm);
  try {
    return await readDiskMarker(con);
  } finally {
    con.close();
    await killVm(core, vm);
  }
}

describe('clones', () => {
  let core: Core;
  let cleanup: () => Promise<void>;
  let snaps: SnapshotManager;

  beforeAll(async () => {
    ({ core, cleanup } = await makeCore());
    snaps = new SnapshotManager(core);
    await createGuestVm(core, 'src');
    const con = await bootGuest(core, 'src');
    await writeDiskMarker(con, 'base-state');
    con.close();
    await killVm(core, 'src');
    await snaps.take('src', { name: 'S' });
    const con2 = await bootGuest(core, 'src');
    await writeDiskMarker(con2, 'later-state');
    con2.close();
    await killVm(core, 'src');
  });
  afterAll(async () => cleanup());

  it('full clone from a snapshot boots with the snapshot disk, independent of the source', async () => {
    const phases: string[] = [];
    const info = await cloneVm(core, snaps, 'src', { name: 'full-from-S', snapshot: 'S', mode: 'full', onProgress: (p) => phases.push(p) });
    expect(info.config!.disks[0]!.path).toBe('disks/disk0.qcow2');
    expect(info.config!.id).not.toBe((await core.get('src')).id);
    expect(phases.some((p) => p.startsWith('copying disk'))).toBe(true);
    expect(await markerOf(core, 'full-from-S')).toBe('base-state');
  });

  it('full clone from the current state of a stopped VM', async () => {
    await cloneVm(core, snaps, 'src', { name: 'full-now' });
    expect(await markerOf(core, 'full-now')).toBe('later-state');
  });

  it('linked clone from a snapshot boots, writes its own overlay, and protects its base', async () => {
    const info = await cloneVm(core, snaps, 'src', { name: 'linked-S', snapshot: 'S', mode: 'linked' });
    // The base is recorded in the Disk: QEMU is given it explicitly (the overlay's own header is not followed).
    const s0 = (await snaps.list('src')).snapshots.find((x) => x.name === 'S')!;
    expect(info.config!.disks[0]!.base).toBe(`${(await core.get('src')).bundle}/snapshots/bases/${s0.id}/disk0.qcow2`);
    const con = await bootGuest(core, 'linked-S');
    expect(await readDiskMarker(con)).toBe('base-state');
    await writeDiskMarker(con, 'clone-own');
    con.close();
    await killVm(core, 'linked-S');
    expect(await markerOf(core, 'linked-S')).toBe('clone-own');
    expect(await markerOf(core, 'src')).toBe('later-state');

    const s = (await snaps.list('src')).snapshots.find((x) => x.name === 'S')!;
    expect(s.linkedClones).toEqual([info.id]);
    expect(await linkedClonesOf(core, (await core.get('src')).bundle)).toEqual(['linked-S']);
    const e = await snaps.delete('src', 'S').then(() => null, (x: unknown) => x as VmdeskError);
    expect(e?.code).toBe('EBUSY');
    expect(e?.message).toMatch(/base of linked clone linked-S/);

    // Once the clone is gone, the snapshot (and its base image) can go.
    await core.delete('linked-S');
    const baseDir = `${(await core.get('src')).bundle}/snapshots/bases/${s.id}`;
    expect(existsSync(baseDir)).toBe(true);
    await snaps.delete('src', 'S');
    expect(existsSync(baseDir)).toBe(false);
  });

  it('linked clone from the current state snapshots it first', async () => {
    await cloneVm(core, snaps, 'src', { name: 'linked-now', mode: 'linked' });
    const list = await snaps.list('src');
    expect(list.snapshots.some((x) => x.name === 'Linked base for linked-now')).toBe(true);
    expect(await markerOf(core, 'linked-now')).toBe('later-state');
  });

  it('refuses bad clones without creating anything', async () => {
    const before = (await core.list()).length;
    await expect(cloneVm(core, snaps, 'src', { name: 'src' })).rejects.toMatchObject({ code: 'EEXIST' });
    await expect(cloneVm(core, snaps, 'src', { name: '../evil' })).rejects.toMatchObject({ code: 'EINVAL' });
    await expect(cloneVm(core, snaps, 'src', { name: 'x', snapshot: 'nope' })).rejects.toMatchObject({ code: 'ENOTFOUND' });
    const con = await bootGuest(core, 'src');
    con.close();
    await expect(cloneVm(core, snaps, 'src', { name: 'while-running' })).rejects.toMatchObject({ code: 'ESTATE' });
    await killVm(core, 'src');
    expect((await core.list()).length).toBe(before);
  });
});
