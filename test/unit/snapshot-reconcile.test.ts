// Reconciliation is generic over SnapshotProvider.stored(): interrupted takes of a 'full' engine are
// recorded, kept while the engine still works or while a running guest holds a partial tag, and dropped
// (with the partial tag) once the VM is stopped; snapshots found only in storage are adopted. A fake engine
// stands in for QEMU, so every branch runs without a guest.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Core } from '../../main/core/core.js';
import { registerEngine, unregisterEngine } from '../../main/engines/registry.js';
import { SnapshotManager } from '../../main/core/snapshots/manager.js';
import { FAKE_FULL_KIND, fakeFull, fakeFullEngine } from './snapshot-fake-engine.js';

describe('reconciliation over a provider', () => {
  let home: string;
  let core: Core;
  let snaps: SnapshotManager;
  let treeFile: string;
  const VM = 'full';
  const now = () => Math.floor(Date.now() / 1000);

  /** Puts a take into tree.json's pending list, as a daemon that died mid-save leaves it. */
  function pend(id: string, name: string): void {
    const tree = JSON.parse(readFileSync(treeFile, 'utf8'));
    tree.pending.push({ ...tree.nodes[0], id, tag: `vmdesk-${id}`, name, parent: tree.current, disks: ['disk0', 'disk1'], adopted: false, linkedClones: [] });
    writeFileSync(treeFile, JSON.stringify(tree));
  }
  const pending = () => JSON.parse(readFileSync(treeFile, 'utf8')).pending.map((p: { name: string }) => p.name);

  beforeAll(async () => {
    registerEngine(fakeFullEngine);
    home = mkdtempSync(path.join(tmpdir(), 'vmdesk-snaprec-'));
    core = new Core({ home });
    await core.boot();
    const info = await core.create({ name: VM, engine: FAKE_FULL_KIND, diskBytes: 1024 * 1024, memoryMiB: 64, network: [{ mode: 'none', forwards: [] }] });
    await core.diskCreate(VM, 1024 * 1024);
    treeFile = path.join(info.bundle, 'snapshots', 'tree.json');
    snaps = new SnapshotManager(core);
    await core.start(VM);
    const first = await snaps.take(VM, { name: 'first' });
    expect(first).toMatchObject({ kind: 'live', vmStateBytes: 1000, disks: ['disk0', 'disk1'] });
  });
  afterAll(async () => {
    await core.shutdown();
    unregisterEngine(FAKE_FULL_KIND);
    rmSync(home, { recursive: true, force: true });
  });

  it('keeps a pending take while the engine still works, and records it once saved everywhere', async () => {
    pend('slowsave01', 'slow');
    fakeFull.busy = ['vmdesk-save-slowsave01 (snapshot-save)'];
    let list = await snaps.list(VM);
    expect(list.notes.join('\n')).toMatch(/"slow" is still being saved by the engine/);
    expect(pending()).toEqual(['slow']);
    fakeFull.stored.set('vmdesk-slowsave01', new Map([['disk0', { vmStateBytes: 500, dateSec: now() }], ['disk1', { vmStateBytes: 0, dateSec: now() }]]));
    fakeFull.busy = [];
    list = await snaps.list(VM);
    expect(list.notes.join('\n')).toMatch(/"slow" was interrupted after it was saved; it has been recorded/);
    expect(list.snapshots.find((s) => s.name === 'slow')).toMatchObject({ vmStateBytes: 500, isCurrent: true });
    expect(pending()).toEqual([]);
  });

  it('keeps a partial take while the guest holds its disks, then drops it and its tag once stopped', async () => {
    pend('partial001', 'partial');
    fakeFull.stored.set('vmdesk-partial001', new Map([['disk0', { vmStateBytes: 500, dateSec: now() }]]));
    let list = await snaps.list(VM);
    expect(list.notes.join('\n')).toMatch(/disk disk0 still holds the partial snapshot vmdesk-partial001; it will be removed when the VM is stopped/);
    expect(list.snapshots.some((s) => s.tag === 'vmdesk-partial001')).toBe(false); // not adopted either
    expect(pending()).toEqual(['partial']);
    await core.kill(VM);
    list = await snaps.list(VM);
    expect(list.notes.join('\n')).toMatch(/"partial" was interrupted before it was completely saved and was not kept/);
    expect(fakeFull.deleted).toContain('vmdesk-partial001');
    expect(fakeFull.stored.has('vmdesk-partial001')).toBe(false);
    expect(pending()).toEqual([]);
  });

  it('adopts what only the storage holds, reports what it lacks, and a second list finds nothing new', async () => {
    fakeFull.stored.set('by-hand', new Map([['disk0', { vmStateBytes: 0, dateSec: now() + 5 }], ['disk1', { vmStateBytes: 0, dateSec: now() + 5 }]]));
    fakeFull.stored.get(`vmdesk-${(await snaps.list(VM)).snapshots.find((s) => s.name === 'first')!.id}`)!.delete('disk1');
    const list = await snaps.list(VM);
    expect(list.snapshots.find((s) => s.name === 'by-hand')).toMatchObject({ adopted: true, kind: 'disk-only', disks: ['disk0', 'disk1'], isCurrent: true });
    expect(list.snapshots.find((s) => s.name === 'first')!.missingOn).toEqual(['disk1']);
    expect(list.notes.join('\n')).toMatch(/"first" is missing from disk disk1; restoring it would be incomplete/);
    await expect(snaps.restore(VM, 'first', { snapshotCurrent: false })).rejects.toMatchObject({ code: 'EBROKEN', message: expect.stringMatching(/missing from disk disk1/) });
    const again = await snaps.list(VM);
    expect(again.notes.filter((n) => /adopted/.test(n))).toEqual([]);
  });
});
