// Memory-only live snapshots (what the micro-VM engine offers) through the real core and snapshot modules,
// on a fake engine registered under its own kind: the core must go by capabilities and the snapshot
// provider alone. Take, list, restore in place / into a stopped VM / with other settings, delete, lost and
// interrupted state files, adoption, and a list running while a take is in progress.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync, mkdtempSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Core } from '../../main/core/core.js';
import { registerEngine, unregisterEngine } from '../../main/engines/registry.js';
import { MEMORY_SNAPSHOT_NOTE, SnapshotManager } from '../../main/core/snapshots/manager.js';
import { FAKE_KIND, fakeHooks, fakeMemoryEngine, fakeRuntimes } from './snapshot-fake-engine.js';

describe('memory-only snapshots on an engine that offers nothing else', () => {
  let home: string;
  let core: Core;
  let snaps: SnapshotManager;
  let vmId: string;
  let bundle: string;
  const VM = 'mem';
  const guest = () => fakeRuntimes.get(vmId)!;
  const stateFile = (id: string) => path.join(bundle, 'snapshots', `${id}.vmstate`);

  beforeAll(async () => {
    registerEngine(fakeMemoryEngine);
    home = mkdtempSync(path.join(tmpdir(), 'vmdesk-snapmem-'));
    core = new Core({ home });
    await core.boot();
    const info = await core.create({ name: VM, engine: FAKE_KIND, diskBytes: 4 * 1024 * 1024, memoryMiB: 64, network: [{ mode: 'none', forwards: [] }] });
    vmId = info.id;
    bundle = info.bundle;
    expect(info.config!.disks[0]).toMatchObject({ format: 'raw', path: 'disks/disk0.img' });
    snaps = new SnapshotManager(core);
  });
  afterAll(async () => {
    await core.shutdown();
    unregisterEngine(FAKE_KIND);
    rmSync(home, { recursive: true, force: true });
  });

  it('refuses the stopped VM, then snapshots the running one into a state file', async () => {
    await expect(snaps.take(VM, { name: 'cold' })).rejects.toMatchObject({ code: 'EINVAL', message: expect.stringMatching(/raw disks cannot hold snapshots: only live snapshots of the running VM/) });
    await core.start(VM);
    guest().counter = 41;
    const phases: string[] = [];
    const node = await snaps.take(VM, { name: 'mid', description: 'halfway', onProgress: (p) => phases.push(p) });
    expect(node).toMatchObject({ kind: 'live', thumbnail: false, disks: [], stateFile: `${node.id}.vmstate` });
    expect(node.description).toBe(`halfway\n\n${MEMORY_SNAPSHOT_NOTE}`);
    expect(node.vmStateBytes).toBe(statSync(stateFile(node.id)).size);
    expect(phases).toContain('saving memory and CPU state');
    expect(phases).not.toContain('capturing screen');

    const listing = await snaps.list(VM);
    expect(listing.snapshots).toHaveLength(1);
    expect(listing.snapshots[0]).toMatchObject({ id: node.id, isCurrent: true, missingOn: [] });
    expect(listing.notes).toEqual([]);
    expect(listing.unsupported[0]).toMatchObject({ diskId: 'disk0', format: 'raw' });
  });

  it('restores in place: the same guest loads the state file and runs on; the current state was saved first', async () => {
    const rt = guest();
    rt.counter = 99;
    const r = await snaps.restore(VM, 'mid');
    expect(guest()).toBe(rt);
    expect(rt.counter).toBe(41);
    expect(rt.state).toBe('running');
    expect(r.info.state).toBe('running');
    expect(r.safety).toMatchObject({ kind: 'live', name: 'Before restoring mid' });
    expect(r.safety!.stateFile).toBeTruthy();
    expect(r.warnings.join('\n')).toMatch(/disks were not reverted/);
    expect(readFileSync(stateFile(r.safety!.id), 'utf8').split('\n')[0]).toBe('99');
    const list = await snaps.list(VM);
    expect(list.current).toBe(r.restored.id);
    expect(list.snapshots.find((s) => s.id === r.safety!.id)!.parent).toBe(r.restored.id);
  });

  it('restores into the stopped VM: started paused, loaded, resumed; nothing to save first', async () => {
    await core.kill(VM);
    const before = guest();
    const r = await snaps.restore(VM, 'mid');
    expect(r.safety).toBeUndefined();
    expect(r.info.state).toBe('running');
    expect(guest()).not.toBe(before);
    expect(guest().counter).toBe(41);
    expect(guest().loads).toEqual([stateFile(r.restored.id)]);
  });

  it('restoring a snapshot with other settings powers off, writes them back, and starts from the state file', async () => {
    await core.kill(VM);
    await core.update(VM, { memoryMiB: 96 });
    await core.start(VM);
    const before = guest();
    const r = await snaps.restore(VM, 'mid', { snapshotCurrent: false });
    expect(guest()).not.toBe(before);
    expect(before.state).toBe('stopped');
    expect(guest().counter).toBe(41);
    expect(r.info).toMatchObject({ state: 'running', config: { memoryMiB: 64 } });
  });

  it('reports a lost state file and refuses to restore it; deleting removes node and file', async () => {
    const mid = (await snaps.list(VM)).snapshots.find((s) => s.name === 'mid')!;
    renameSync(stateFile(mid.id), `${stateFile(mid.id)}.away`);
    const lost = await snaps.list(VM);
    expect(lost.snapshots.find((s) => s.id === mid.id)!.missingOn).toEqual(['vmstate']);
    expect(lost.notes.join('\n')).toMatch(/lost its state file/);
    await expect(snaps.restore(VM, 'mid', { snapshotCurrent: false })).rejects.toMatchObject({ code: 'EBROKEN' });
    renameSync(`${stateFile(mid.id)}.away`, stateFile(mid.id));
    const safety = lost.snapshots.find((s) => s.name !== 'mid')!;
    expect((await snaps.delete(VM, safety.id)).deleted).toEqual([safety.id]);
    expect(existsSync(stateFile(safety.id))).toBe(false);
    expect((await snaps.list(VM)).snapshots.map((s) => s.name)).toEqual(['mid']);
  });

  it('a list while a take is saving reports without adopting the half-made state file; a second take is refused', async () => {
    let release!: () => void;
    let reached!: () => void;
    const atMid = new Promise<void>((r) => (reached = r));
    fakeHooks.midSave = () => {
      reached();
      return new Promise<void>((r) => (release = r));
    };
    try {
      const taking = snaps.take(VM, { name: 'slow' });
      await atMid;
      const during = await snaps.list(VM);
      expect(during.snapshots.map((s) => s.name)).toEqual(['mid']);
      expect(during.notes.join('\n')).toMatch(/a snapshot operation is in progress/);
      expect(during.notes.join('\n')).not.toMatch(/adopted/);
      await expect(snaps.take(VM, { name: 'other' })).rejects.toMatchObject({ code: 'EBUSY', message: expect.stringMatching(/another snapshot operation is running: taking snapshot "slow"/) });
      release();
      await taking;
    } finally {
      fakeHooks.midSave = undefined;
    }
    const after = await snaps.list(VM);
    expect(after.snapshots.map((s) => s.name).sort()).toEqual(['mid', 'slow']);
    expect(after.notes).toEqual([]);
  });

  it('drops a take a dead daemon interrupted (with its partial state file) and adopts a state file found alone', async () => {
    const treeFile = path.join(bundle, 'snapshots', 'tree.json');
    const tree = JSON.parse(readFileSync(treeFile, 'utf8'));
    const mid = tree.nodes.find((n: { name: string }) => n.name === 'mid');
    tree.pending = [{ ...mid, id: 'crashpend1', tag: 'vmdesk-crashpend1', name: 'interrupted', stateFile: 'crashpend1.vmstate' }];
    writeFileSync(treeFile, JSON.stringify(tree));
    writeFileSync(stateFile('crashpend1'), '7\n');
    writeFileSync(stateFile('strayfile1'), '8\n....');
    const list = await snaps.list(VM);
    expect(list.notes.join('\n')).toMatch(/"interrupted" was interrupted while its state file was being saved and was not kept/);
    expect(existsSync(stateFile('crashpend1'))).toBe(false);
    const stray = list.snapshots.find((s) => s.id === 'strayfile1')!;
    expect(stray).toMatchObject({ adopted: true, kind: 'live', stateFile: 'strayfile1.vmstate', disks: [] });
    expect(JSON.parse(readFileSync(treeFile, 'utf8')).pending).toEqual([]);
    // An adopted state file restores like any other.
    const r = await snaps.restore(VM, stray.id, { snapshotCurrent: false });
    expect(guest().counter).toBe(8);
    expect(r.info.state).toBe('running');
  });
});
