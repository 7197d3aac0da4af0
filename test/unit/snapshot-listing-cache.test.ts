// The daemon keeps a VM's reconciled snapshot listing while nothing it was read from changes
// (main/core/snapshots/listing-cache.ts): a second list of an unchanged VM does not ask qemu-img again, and a
// change made by any other path (qemu-img by hand, tree.json edited, a state of the VM) is seen by the next list;
// a list that found the files too fresh to keep lists once more by itself when they have settled.
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Core } from '../../main/core/core.js';
import { SnapshotManager, diskFile } from '../../main/core/snapshots/manager.js';
import { RACY_MS } from '../../main/platform/file-stamp.js';
import { qemuSnapshots } from '../../main/engines/qemu/snapshots.js';

const settle = () => new Promise((r) => setTimeout(r, RACY_MS + 100));

describe('the reconciled listing cache', () => {
  let home: string;
  let core: Core;
  let snaps: SnapshotManager;
  let disk: string;
  let treeFile: string;
  const VM = 'cached';
  const stored = vi.spyOn(qemuSnapshots, 'stored');

  beforeAll(async () => {
    home = mkdtempSync(path.join(tmpdir(), 'vmdesk-snapcache-'));
    core = new Core({ home });
    await core.boot();
    const info = await core.create({ name: VM, diskBytes: 16 * 1024 * 1024, memoryMiB: 128, network: [{ mode: 'none', forwards: [] }] });
    snaps = new SnapshotManager(core);
    disk = diskFile(info.bundle, info.config!.disks[0]!);
    treeFile = path.join(info.bundle, 'snapshots', 'tree.json');
    await snaps.take(VM, { name: 'one' });
    await snaps.take(VM, { name: 'two' });
  });
  afterAll(async () => {
    stored.mockRestore();
    await core.shutdown();
    rmSync(home, { recursive: true, force: true });
  });

  it('answers an unchanged VM without reading its storage again', async () => {
    await settle();
    const a = await snaps.list(VM);
    stored.mockClear();
    const b = await snaps.list(VM);
    expect(stored).not.toHaveBeenCalled();
    expect(b.snapshots.map((s) => s.name)).toEqual(['one', 'two']);
    expect(b).toEqual(a);
    // The GUI's brief listing: the same but for each snapshot's settings (snapshot.info has them).
    const brief = await snaps.list(VM, { brief: true });
    expect(a.snapshots.every((s) => s.config?.name === VM)).toBe(true);
    expect(brief.snapshots.every((s) => s.config === null)).toBe(true);
    expect(brief.snapshots).toEqual(a.snapshots.map((s) => ({ ...s, config: null })));
  });

  it('does not trust files changed within the last second (their times are coarse)', async () => {
    await snaps.take(VM, { name: 'three' });
    stored.mockClear();
    await snaps.list(VM);
    await snaps.list(VM);
    expect(stored).toHaveBeenCalledTimes(2);
  });

  it('lists once more by itself when the files have settled, so the next visit finds the listing ready', async () => {
    await snaps.take(VM, { name: 'four' });
    await snaps.list(VM); // too fresh to keep: asks for one more list in RACY_MS
    await new Promise((r) => setTimeout(r, RACY_MS + 600));
    stored.mockClear();
    expect((await snaps.list(VM)).snapshots.map((s) => s.name)).toContain('four');
    expect(stored).not.toHaveBeenCalled();
  });

  it('sees a snapshot made and one deleted by hand with qemu-img', async () => {
    await settle();
    await snaps.list(VM);
    const two = (await snaps.list(VM)).snapshots.find((s) => s.name === 'two')!;
    execFileSync('qemu-img', ['snapshot', '-c', 'by-hand', disk]);
    let l = await snaps.list(VM);
    expect(l.notes.join('\n')).toMatch(/"by-hand" found on the disks and adopted/);
    expect(l.snapshots.some((s) => s.name === 'by-hand')).toBe(true);
    await settle();
    await snaps.list(VM);
    execFileSync('qemu-img', ['snapshot', '-d', two.tag, disk]);
    l = await snaps.list(VM);
    expect(l.snapshots.find((s) => s.name === 'two')!.missingOn).toEqual(['disk0']);
  });

  it('sees tree.json edited by another hand, and an operation of its own', async () => {
    await settle();
    await snaps.list(VM);
    const tree = JSON.parse(readFileSync(treeFile, 'utf8'));
    tree.nodes.find((n: { name: string }) => n.name === 'one').name = 'renamed by hand';
    writeFileSync(treeFile, JSON.stringify(tree));
    expect((await snaps.list(VM)).snapshots.map((s) => s.name)).toContain('renamed by hand');
    await settle();
    await snaps.list(VM);
    await snaps.rename(VM, 'renamed by hand', 'renamed again');
    expect((await snaps.list(VM)).snapshots.map((s) => s.name)).toContain('renamed again');
  });
});
