// Live and offline snapshots of the real test guest (QEMU TCG): RAM and disk markers survive restore.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import type { Core } from '../../main/core/core.js';
import { SnapshotManager, diskFile } from '../../main/core/snapshots/manager.js';
import { killVm, bootGuest, createGuestVm, GuestConsole, makeCore, shell, readDiskMarker, readRamMarker, writeDiskMarker, writeRamMarker } from './snapshot-harness.js';

describe('live snapshots of a running guest', () => {
  let core: Core;
  let cleanup: () => Promise<void>;
  let snaps: SnapshotManager;
  let con: GuestConsole;

  beforeAll(async () => {
    ({ core, cleanup } = await makeCore());
    snaps = new SnapshotManager(core);
    await createGuestVm(core, 'live');
    con = await bootGuest(core, 'live');
  });
  afterAll(async () => {
    con?.close();
    await cleanup();
  });

  it('restores RAM and disk markers in the running VM', async () => {
    await writeRamMarker(con, 'ram-one');
    await writeDiskMarker(con, 'disk-one');
    const phases: string[] = [];
    const s1 = await snaps.take('live', { name: 'one', onProgress: (p) => phases.push(p) });
    expect(s1.kind).toBe('live');
    expect(s1.vmStateBytes).toBeGreaterThan(0);
    expect(s1.thumbnail).toBe(true);
    expect(phases).toContain('saving memory and disks');
    await writeRamMarker(con, 'ram-two');
    await writeDiskMarker(con, 'disk-two');
    expect(await readRamMarker(con)).toBe('ram-two');
    expect(await readDiskMarker(con)).toBe('disk-two');

    const r = await snaps.restore('live', 'one');
    expect(r.info.state).toBe('running');
    expect(r.safety?.kind).toBe('live');
    // The guest resumes where the snapshot was taken: the shell is alive and sees the old markers.
    con.close();
    con = await shell(core, 'live');
    expect(await readRamMarker(con)).toBe('ram-one');
    expect(await readDiskMarker(con)).toBe('disk-one');

    // And back to the safety snapshot.
    await snaps.restore('live', r.safety!.id, { snapshotCurrent: false });
    expect(await readRamMarker(con)).toBe('ram-two');
    expect(await readDiskMarker(con)).toBe('disk-two');
  });

  it('restores a live snapshot into a stopped VM: it comes back running where it was', async () => {
    await killVm(core, 'live');
    const r = await snaps.restore('live', 'one', { snapshotCurrent: false });
    expect(r.info.state).toBe('running');
    con.close();
    con = await shell(core, 'live');
    expect(await readRamMarker(con)).toBe('ram-one');
    expect(await readDiskMarker(con)).toBe('disk-one');
  });

  it('refuses a second live snapshot while a QEMU job runs, and lists while one runs', async () => {
    // Start a save directly in QEMU, then ask VMDesk for another one at once.
    const nodes = ['disk-disk0'];
    await core.command('live', 'snapshot-save', { 'job-id': 'vmdesk-save-outside', tag: 'outside', vmstate: nodes[0], devices: nodes });
    const e = await snaps.take('live', { name: 'while-busy' }).then(() => null, (x: unknown) => x as { code: string; message: string });
    // Saving 256 MiB takes a few hundred ms under TCG: the job is still running when VMDesk checks.
    expect(e?.code).toBe('EBUSY');
    expect(e?.message).toMatch(/busy with QEMU job vmdesk-save-outside/);
    // Let it finish; reconciliation dismisses the finished job and adopts the snapshot.
    await new Promise((r) => setTimeout(r, 1500));
    const list = await snaps.list('live');
    expect(list.snapshots.some((s) => s.name === 'outside' && s.adopted)).toBe(true);
    expect(((await core.command('live', 'query-jobs')) as unknown[]).length).toBe(0);
  });

  it('deletes a live snapshot from the running VM', async () => {
    const before = await snaps.list('live');
    const victim = before.snapshots.find((s) => s.name === 'outside')!;
    await snaps.delete('live', victim.id);
    const file = diskFile((await core.get('live')).bundle, (await core.get('live')).config!.disks[0]!);
    expect(execFileSync('qemu-img', ['snapshot', '-U', '-l', file], { encoding: 'utf8' })).not.toContain(victim.tag);
  });

  it('takes a disk-only snapshot when stopped and restores it from stopped and from running', async () => {
    await writeDiskMarker(con, 'disk-offline');
    await killVm(core, 'live');
    const s = await snaps.take('live', { name: 'stopped-state' });
    expect(s.kind).toBe('disk-only');
    con.close();
    con = await bootGuest(core, 'live');
    await writeDiskMarker(con, 'disk-later');
    // From running: the VM is powered off (state saved first), the disk reverted, and it stays off.
    const r = await snaps.restore('live', 'stopped-state');
    expect(r.info.state).toBe('stopped');
    expect(r.safety?.kind).toBe('live');
    con.close();
    con = await bootGuest(core, 'live');
    expect(await readDiskMarker(con)).toBe('disk-offline');
    await killVm(core, 'live');
    // From stopped.
    await snaps.restore('live', 'stopped-state', { snapshotCurrent: false });
    expect((await core.get('live')).state).toBe('stopped');
  });
});
