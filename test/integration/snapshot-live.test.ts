// Live and offline snapshots of the real test guest (QEMU TCG): RAM and disk markers survive restore.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { Core } from '../../main/core/core.js';
import { SnapshotManager, diskFile } from '../../main/core/snapshots/manager.js';
import { killVm, bootGuest, createGuestVm, GuestConsole, makeCore, qmp, shell, readDiskMarker, readRamMarker, writeDiskMarker, writeRamMarker } from './snapshot-harness.js';

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

  it('refuses a snapshot while another one or a QEMU job runs, changing nothing', async () => {
    // Two at once through VMDesk: the second finds the VM's snapshot gate held.
    const [a, b] = await Promise.allSettled([snaps.take('live', { name: 'race-a' }), snaps.take('live', { name: 'race-b' })]);
    const failed = [a, b].filter((r) => r.status === 'rejected') as PromiseRejectedResult[];
    expect(failed).toHaveLength(1);
    expect(failed[0]!.reason).toMatchObject({ code: 'EBUSY', message: expect.stringMatching(/another snapshot operation is running/) });
    await snaps.delete('live', [a, b].find((r) => r.status === 'fulfilled') === a ? 'race-a' : 'race-b');

    // A block job QEMU is running (a throttled backup): VMDesk names it and leaves the disks alone.
    const dir = mkdtempSync(path.join(tmpdir(), 'vmdesk-bk-'));
    const target = path.join(dir, 'backup.qcow2');
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', target, '64M']);
    await qmp(core, 'live', 'blockdev-add', { driver: 'qcow2', 'node-name': 'bk', file: { driver: 'file', filename: target } });
    await qmp(core, 'live', 'blockdev-backup', { 'job-id': 'outside-backup', device: 'disk-disk0', target: 'bk', sync: 'full', speed: 4096 });
    const treeBefore = JSON.stringify((await snaps.list('live')).snapshots.map((s) => s.id));
    await expect(snaps.take('live', { name: 'while-busy' })).rejects.toMatchObject({ code: 'EBUSY', message: expect.stringMatching(/busy with QEMU job outside-backup/) });
    expect(JSON.stringify((await snaps.list('live')).snapshots.map((s) => s.id))).toBe(treeBefore);
    await qmp(core, 'live', 'job-cancel', { id: 'outside-backup' });
    for (let i = 0; ((await qmp(core, 'live', 'query-jobs')) as unknown[]).length && i < 100; i++) await new Promise((r) => setTimeout(r, 50));
    await qmp(core, 'live', 'blockdev-del', { 'node-name': 'bk' });
    rmSync(dir, { recursive: true, force: true });

    // A snapshot saved over QMP directly (job left undismissed) is adopted, and its job cleared.
    const nodes = ['disk-disk0'];
    await qmp(core, 'live', 'snapshot-save', { 'job-id': 'vmdesk-save-outside', tag: 'outside', vmstate: nodes[0], devices: nodes });
    const list = await snaps.list('live');
    expect(list.snapshots.some((s) => s.name === 'outside' && s.adopted && s.kind === 'live')).toBe(true);
    expect(((await qmp(core, 'live', 'query-jobs')) as unknown[]).length).toBe(0);
  });

  it('branches, keeps the tree shape, and still restores after a middle node is deleted', async () => {
    const mark = async (v: string) => {
      await writeRamMarker(con, `ram-${v}`);
      await writeDiskMarker(con, `disk-${v}`);
    };
    await mark('a');
    const a = await snaps.take('live', { name: 'A' });
    await mark('b');
    const b = await snaps.take('live', { name: 'B' });
    await mark('c');
    const c = await snaps.take('live', { name: 'C' });
    await snaps.restore('live', 'A', { snapshotCurrent: false });
    await mark('d');
    const d = await snaps.take('live', { name: 'D' }); // a branch off A
    let list = await snaps.list('live');
    const byId = new Map(list.snapshots.map((s) => [s.id, s]));
    expect(byId.get(b.id)!.parent).toBe(a.id);
    expect(byId.get(c.id)!.parent).toBe(b.id);
    expect(byId.get(d.id)!.parent).toBe(a.id);
    expect(byId.get(a.id)!.children.sort()).toEqual([b.id, d.id].sort());
    expect(list.current).toBe(d.id);

    // Delete B, the middle of A → B → C: C moves up under A and still restores to its own state.
    await snaps.delete('live', 'B');
    list = await snaps.list('live');
    expect(list.snapshots.find((s) => s.id === c.id)!.parent).toBe(a.id);
    await snaps.restore('live', 'C', { snapshotCurrent: false });
    expect(await readRamMarker(con)).toBe('ram-c');
    expect(await readDiskMarker(con)).toBe('disk-c');
    await snaps.restore('live', 'A', { snapshotCurrent: false });
    expect(await readRamMarker(con)).toBe('ram-a');
    expect(await readDiskMarker(con)).toBe('disk-a');
    await snaps.restore('live', 'D', { snapshotCurrent: false });
    expect(await readRamMarker(con)).toBe('ram-d');
    // Clean up the branch for the next test.
    await snaps.delete('live', 'A', { branch: true });
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

  it('restoring a live snapshot brings its settings back (restarting QEMU when they differ)', async () => {
    con.close();
    if ((await core.get('live')).state !== 'stopped') await killVm(core, 'live');
    con = await bootGuest(core, 'live');
    await writeRamMarker(con, 'ram-256');
    const s = await snaps.take('live', { name: 'at 256 MiB' });
    await killVm(core, 'live');
    await core.update('live', { memoryMiB: 320, cpus: 1 });
    con.close();
    con = await bootGuest(core, 'live');
    const d = await snaps.info('live', 'at 256 MiB');
    expect(d.configDiff).toEqual([{ field: 'memoryMiB', from: 256, to: 320 }]);
    const r = await snaps.restore('live', s.id);
    expect(r.info.state).toBe('running');
    expect(r.info.config!.memoryMiB).toBe(256);
    con.close();
    con = await shell(core, 'live');
    expect(await readRamMarker(con)).toBe('ram-256');
    // The safety snapshot kept the 320 MiB settings: restoring it changes them back.
    const back = await snaps.restore('live', r.safety!.id, { snapshotCurrent: false });
    expect(back.info.config!.memoryMiB).toBe(320);
  }, 150_000);
});
