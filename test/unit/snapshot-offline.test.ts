// Offline snapshots of a stopped VM through the real core and qemu-img: take, restore, branch, delete, reconcile.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Core } from '../../main/core/core.js';
import { registerEngine, unregisterEngine } from '../../main/engines/registry.js';
import { SnapshotManager, diskFile } from '../../main/core/snapshots/manager.js';
import { VmdeskError } from '../../main/api/errors.js';
import { FAKE_KIND, fakeMemoryEngine } from './snapshot-fake-engine.js';

// These tests never run a guest: the real QEMU engine module only makes and snapshots disks (qemu-img).

function writePattern(file: string, byte: number): void {
  execFileSync('qemu-io', ['-f', 'qcow2', '-c', `write -P ${byte} 0 64k`, file], { stdio: 'ignore' });
}
function hasPattern(file: string, byte: number): boolean {
  return spawnSync('qemu-io', ['-f', 'qcow2', '-c', `read -P ${byte} 0 64k`, file], { encoding: 'utf8' }).stdout.includes('read 65536') &&
    !spawnSync('qemu-io', ['-f', 'qcow2', '-c', `read -P ${byte} 0 64k`, file], { encoding: 'utf8' }).stdout.includes('failed');
}
function tags(file: string): string[] {
  return execFileSync('qemu-img', ['snapshot', '-l', file], { encoding: 'utf8' }).split('\n').slice(2).map((l) => l.trim().split(/\s+/)[1]).filter((x): x is string => !!x);
}

async function expectError(p: Promise<unknown>, code: string, re: RegExp): Promise<void> {
  const e = await p.then(() => null, (x: unknown) => x);
  expect(e).toBeInstanceOf(VmdeskError);
  expect((e as VmdeskError).code).toBe(code);
  expect((e as VmdeskError).message).toMatch(re);
}

describe('offline snapshots', () => {
  let home: string;
  let core: Core;
  let snaps: SnapshotManager;
  let disk: string;

  beforeAll(async () => {
    home = mkdtempSync(path.join(tmpdir(), 'vmdesk-snap-'));
    registerEngine(fakeMemoryEngine);
    core = new Core({ home });
    await core.boot();
    const info = await core.create({ name: 'offline', diskBytes: 64 * 1024 * 1024, memoryMiB: 128 });
    snaps = new SnapshotManager(core);
    disk = diskFile(info.bundle, info.config!.disks[0]!);
  });
  afterAll(async () => {
    await core.shutdown();
    unregisterEngine(FAKE_KIND);
    rmSync(home, { recursive: true, force: true });
  });

  it('takes, branches, restores and reports progress', async () => {
    writePattern(disk, 1);
    const phases: string[] = [];
    const a = await snaps.take('offline', { name: 'A', description: 'first', onProgress: (p) => phases.push(p) });
    expect(a.kind).toBe('disk-only');
    expect(phases.at(-1)).toBe('done');
    writePattern(disk, 2);
    const b = await snaps.take('offline', { name: 'B' });
    writePattern(disk, 3);
    expect(hasPattern(disk, 3)).toBe(true);

    const r = await snaps.restore('offline', 'A', { snapshotCurrent: false });
    expect(r.restored.id).toBe(a.id);
    expect(hasPattern(disk, 1)).toBe(true);
    // A branch: new work on top of A.
    writePattern(disk, 4);
    const c = await snaps.take('offline', { name: 'C' });
    const list = await snaps.list('offline');
    const byName = Object.fromEntries(list.snapshots.map((s) => [s.name, s]));
    expect(byName.B!.parent).toBe(a.id);
    expect(byName.C!.parent).toBe(a.id);
    expect(byName.A!.children.sort()).toEqual([b.id, c.id].sort());
    expect(list.current).toBe(c.id);

    await snaps.restore('offline', 'B', { snapshotCurrent: false });
    expect(hasPattern(disk, 2)).toBe(true);
  });

  it('restore saves the current state first by default', async () => {
    writePattern(disk, 5);
    const r = await snaps.restore('offline', 'A');
    expect(r.safety?.name).toBe('Before restoring A');
    expect(hasPattern(disk, 1)).toBe(true);
    await snaps.restore('offline', r.safety!.id, { snapshotCurrent: false });
    expect(hasPattern(disk, 5)).toBe(true);
  });

  it('deleting a middle snapshot keeps its children restorable', async () => {
    const before = await snaps.list('offline');
    const a = before.snapshots.find((s) => s.name === 'A')!;
    await snaps.delete('offline', 'A');
    const after = await snaps.list('offline');
    expect(after.snapshots.some((s) => s.name === 'A')).toBe(false);
    expect(tags(disk)).not.toContain(a.tag);
    for (const child of a.children) expect(after.snapshots.find((s) => s.id === child)!.parent).toBe(a.parent);
    await snaps.restore('offline', 'B', { snapshotCurrent: false });
    expect(hasPattern(disk, 2)).toBe(true);
  });

  it('rejects bad input and changes nothing', async () => {
    const treeFile = path.join((await core.get('offline')).bundle, 'snapshots', 'tree.json');
    const before = readFileSync(treeFile, 'utf8');
    const tagsBefore = tags(disk);
    await expectError(snaps.take('offline', { name: '' }), 'EINVAL', /empty/);
    await expectError(snaps.take('offline', { name: 'B' }), 'EEXIST', /already exists/);
    await expectError(snaps.take('offline', { name: 'n'.repeat(100) }), 'EINVAL', /at most 64/);
    await expectError(snaps.restore('offline', 'nope'), 'ENOTFOUND', /no snapshot "nope"/);
    await expectError(snaps.delete('offline', 'nope'), 'ENOTFOUND', /no snapshot/);
    await expectError(snaps.rename('offline', 'B', 'C'), 'EEXIST', /already exists/);
    expect(readFileSync(treeFile, 'utf8')).toBe(before);
    expect(tags(disk)).toEqual(tagsBefore);
  });

  it('renames and describes without touching the disks', async () => {
    const tagsBefore = tags(disk);
    const n = await snaps.rename('offline', 'B', 'Base system');
    expect(n.name).toBe('Base system');
    await snaps.describe('offline', 'Base system', 'clean install + updates');
    const d = await snaps.info('offline', 'base system');
    expect(d.description).toBe('clean install + updates');
    expect(tags(disk)).toEqual(tagsBefore);
  });

  it('reconciles: adopts snapshots made by hand, reports ones missing from the disk', async () => {
    execFileSync('qemu-img', ['snapshot', '-c', 'by-hand', disk]);
    let list = await snaps.list('offline');
    const adopted = list.snapshots.find((s) => s.name === 'by-hand');
    expect(adopted?.adopted).toBe(true);
    expect(list.notes.join('\n')).toMatch(/by-hand.*adopted/);
    // Remove one VMDesk snapshot behind its back.
    const victim = list.snapshots.find((s) => s.name === 'C')!;
    execFileSync('qemu-img', ['snapshot', '-d', victim.tag, disk]);
    list = await snaps.list('offline');
    expect(list.snapshots.find((s) => s.name === 'C')!.missingOn).toEqual(['disk0']);
    expect(list.notes.join('\n')).toMatch(/"C" is missing from disk disk0/);
    await expectError(snaps.restore('offline', 'C', { snapshotCurrent: false }), 'EBROKEN', /missing/);
    // Deleting it clears the metadata even though the disk no longer has it.
    await snaps.delete('offline', 'C');
    expect((await snaps.list('offline')).snapshots.some((s) => s.name === 'C')).toBe(false);
  });

  it('finishes or drops a take interrupted by a crash (pending entries)', async () => {
    const bundle = (await core.get('offline')).bundle;
    const treeFile = path.join(bundle, 'snapshots', 'tree.json');
    const tree = JSON.parse(readFileSync(treeFile, 'utf8'));
    const mk = (id: string, name: string) => ({ ...tree.nodes[0], id, tag: `vmdesk-${id}`, name, parent: tree.current, adopted: false, linkedClones: [] });
    tree.pending = [mk('crashsaved', 'saved before crash'), mk('crashlost1', 'lost in crash')];
    writeFileSync(treeFile, JSON.stringify(tree));
    execFileSync('qemu-img', ['snapshot', '-c', 'vmdesk-crashsaved', disk]);
    const list = await snaps.list('offline');
    expect(list.snapshots.find((s) => s.id === 'crashsaved')?.name).toBe('saved before crash');
    expect(list.current).toBe('crashsaved');
    expect(list.snapshots.some((s) => s.id === 'crashlost1')).toBe(false);
    expect(list.notes.join('\n')).toMatch(/lost in crash.*not kept/);
    expect(JSON.parse(readFileSync(treeFile, 'utf8')).pending).toEqual([]);
  });

  it('deletes a whole branch', async () => {
    const list = await snaps.list('offline');
    const root = list.snapshots.find((s) => s.parent === null)!;
    const res = await snaps.delete('offline', root.id, { branch: true });
    expect(res.deleted.length).toBeGreaterThan(1);
    const after = await snaps.list('offline');
    expect(after.snapshots.every((s) => !res.deleted.includes(s.id))).toBe(true);
    for (const id of res.deleted) expect(tags(disk)).not.toContain(list.snapshots.find((s) => s.id === id)!.tag);
  });

  it('refuses raw disks with the fix, and converts them', async () => {
    const raw = path.join(home, 'raw.img');
    execFileSync('qemu-img', ['create', '-f', 'raw', raw, '16M']);
    const info = await core.create({ name: 'rawvm', attachDisks: [raw], memoryMiB: 128 });
    await expectError(snaps.take('rawvm', { name: 'x' }), 'EINVAL', /raw, which does not support snapshots.*convert-disk/);
    expect(existsSync(path.join(info.bundle, 'snapshots', 'tree.json'))).toBe(false);
    const listing = await snaps.list('rawvm');
    expect(listing.unsupported[0]).toMatchObject({ diskId: 'ext0', format: 'raw' });
    await snaps.convertDisk('rawvm', 'ext0');
    const t = await snaps.take('rawvm', { name: 'after conversion' });
    expect(t.disks).toEqual(['ext0']);
    expect(existsSync(raw)).toBe(true); // attached images belong to the user
  });

  it('refuses disk-only snapshots of a stopped VM whose engine has memory snapshots only, saying why and what works', async () => {
    const kernel = path.join(home, 'vmlinuz');
    writeFileSync(kernel, 'not really a kernel');
    const raw = path.join(home, 'micro.img');
    execFileSync('qemu-img', ['create', '-f', 'raw', raw, '16M']);
    await core.create({ name: 'micro', engine: FAKE_KIND, attachDisks: [raw], memoryMiB: 64, directKernel: { kernel, cmdline: '' } });
    await expectError(snaps.take('micro', { name: 'x' }), 'EINVAL', /stopped and runs on the fakemem engine, whose raw disks cannot hold snapshots: only live snapshots of the running VM/);
    const listing = await snaps.list('micro');
    expect(listing.snapshots).toEqual([]);
    expect(listing.unsupported[0]).toMatchObject({ diskId: 'ext0', format: 'raw' });
    // Its clones and exports keep disks in its engine's own format (raw), and it has no linked clones.
    const { cloneVm } = await import('../../main/core/snapshots/clone.js');
    const { exportVm, importArchive } = await import('../../main/core/backup/archive.js');
    const c = await cloneVm(core, snaps, 'micro', { name: 'micro2' });
    expect(c.config!.disks[0]).toMatchObject({ format: 'raw', path: 'disks/ext0.img', owned: true });
    await expect(cloneVm(core, snaps, 'micro', { name: 'micro3', mode: 'linked' })).rejects.toMatchObject({ code: 'EINVAL', message: expect.stringMatching(/no linked clones/) });
    const file = path.join(home, 'micro.vmdesk');
    await exportVm(core, 'micro', file);
    const im = await importArchive(core, file, { name: 'micro4' });
    expect(im.config!.disks[0]).toMatchObject({ format: 'raw', path: 'disks/ext0.img' });
    expect(existsSync(path.join(im.bundle, 'disks', 'ext0.img'))).toBe(true);
  });
});
