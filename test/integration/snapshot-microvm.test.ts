// Live snapshots of a running micro-VM in the snapshot tree: the compute test guest is snapshotted mid-run,
// runs on, and after restore (in place, and into the stopped VM) its output continues from the snapshot point.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { Core } from '../../main/core/core.js';
import { MEMORY_SNAPSHOT_NOTE, SnapshotManager } from '../../main/core/snapshots/manager.js';
import { ensureTestGuest, kvmSkipReason } from '../native-guests/harness.js';
import { killVm, makeCore } from './snapshot-harness.js';

const skip = kvmSkipReason();
if (skip) console.log(`[snapshot-microvm] skipped: ${skip}`);

/** "STEP n hash" lines of the compute guest, in the order printed. */
function steps(text: string): { n: number; hash: string }[] {
  return [...text.matchAll(/STEP (\d+) ([0-9a-f]{16})/g)].map((m) => ({ n: Number(m[1]), hash: m[2]! }));
}

describe.skipIf(!!skip)('micro-VM snapshots in the snapshot tree', () => {
  let core: Core;
  let cleanup: () => Promise<void>;
  let snaps: SnapshotManager;
  let scratch: string;
  const VM = 'micro';
  /** Step -> hash as the guest first computed them, and the last step printed before the snapshot. */
  let original = new Map<number, string>();
  let before = 0;

  const log = async () => (await core.serialLog(VM, 4 * 1024 * 1024)).toString('latin1');
  async function waitFor<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 30_000): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const v = await probe();
      if (v !== undefined) return v;
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; serial tail: ${(await log()).slice(-400)}`);
      await new Promise((r) => setTimeout(r, 25));
    }
  }
  const lastStep = async () => steps(await log()).at(-1)?.n ?? 0;

  beforeAll(async () => {
    ({ core, cleanup } = await makeCore('vmd-snapmv-'));
    snaps = new SnapshotManager(core);
    scratch = mkdtempSync(path.join(tmpdir(), 'vmd-snapmv-disk-'));
    const raw = path.join(scratch, 'data.img');
    execFileSync('qemu-img', ['create', '-f', 'raw', raw, '8M']);
    // Practically endless: thousands of steps of a deterministic hash chain, one progress line per step.
    await core.create({
      name: VM,
      engine: 'microvm',
      cpus: 1,
      memoryMiB: 32,
      attachDisks: [raw],
      directKernel: { kernel: ensureTestGuest(), cmdline: 'mode=compute steps=100000 iters=20000' },
      network: [],
    });
  });
  afterAll(async () => {
    await cleanup?.();
    if (scratch) rmSync(scratch, { recursive: true, force: true });
  });

  it('refuses a snapshot of the stopped micro-VM (raw disks), then snapshots it running, mid-computation', async () => {
    await expect(snaps.take(VM, { name: 'cold' })).rejects.toMatchObject({ code: 'EINVAL', message: expect.stringMatching(/raw disks cannot hold snapshots/) });

    await core.start(VM);
    await waitFor('a few steps', async () => ((await lastStep()) >= 3 ? true : undefined));
    before = await lastStep();
    const phases: string[] = [];
    const node = await snaps.take(VM, { name: 'mid', description: 'halfway', onProgress: (p) => phases.push(p) });
    const after = await lastStep();
    expect(node.kind).toBe('live');
    expect(node.thumbnail).toBe(false);
    expect(node.disks).toEqual([]);
    expect(node.config?.engine).toBe('microvm');
    expect(node.description).toBe(`halfway\n\n${MEMORY_SNAPSHOT_NOTE}`);
    expect(node.description).toMatch(/disk contents are not captured/);
    expect(phases).toContain('saving memory and CPU state');
    const file = path.join((await core.get(VM)).bundle, 'snapshots', `${node.id}.vmstate`);
    expect(node.stateFile).toBe(`${node.id}.vmstate`);
    expect(existsSync(file)).toBe(true);
    expect(node.vmStateBytes).toBe(statSync(file).size);
    expect(node.vmStateBytes).toBeGreaterThan(0);

    // The guest goes on computing.
    await waitFor('progress after the snapshot', async () => ((await lastStep()) >= after + 3 ? true : undefined));
    original = new Map(steps(await log()).map((s) => [s.n, s.hash]));

    // The tree lists it, with nothing missing and no complaint about the (raw, uncapturable) disks.
    const listing = await snaps.list(VM);
    expect(listing.snapshots.map((s) => s.name)).toEqual(['mid']);
    expect(listing.snapshots[0]).toMatchObject({ id: node.id, kind: 'live', isCurrent: true, missingOn: [], stateFile: node.stateFile });
    expect(listing.current).toBe(node.id);
    expect(listing.notes).toEqual([]);
    expect(listing.unsupported[0]).toMatchObject({ format: 'raw' });

    // Restore in place: the running guest is replaced by the snapshot's and prints from where it was.
    const mark = (await log()).length;
    const r = await snaps.restore(VM, 'mid');
    expect(r.info.state).toBe('running');
    expect(r.safety?.kind).toBe('live');
    expect(r.safety?.stateFile).toBeTruthy();
    expect(r.warnings.join('\n')).toMatch(/disks were not reverted/);
    // The old guest only printed steps beyond after+3; the first step at or below after+1 is the restored guest's.
    const resumed = await waitFor('the restored guest to print', async () => {
      const s = steps((await log()).slice(mark));
      const i = s.findIndex((x) => x.n <= after + 1);
      return i >= 0 && s.length > i + 2 ? s.slice(i) : undefined;
    });
    expect(resumed[0]!.n).toBeGreaterThan(before); // continued from the snapshot point, not rebooted
    // The same hash chain, picked up mid-way: these steps were computed before, with the same results.
    expect(resumed[0]!.hash).toBe(original.get(resumed[0]!.n));
    expect(resumed[1]!.hash).toBe(original.get(resumed[1]!.n));
    expect(resumed[1]!.n).toBe(resumed[0]!.n + 1);
    expect(resumed[2]!.n).toBe(resumed[0]!.n + 2);
    const tree = await snaps.list(VM);
    expect(tree.current).toBe(node.id);
    expect(tree.snapshots.find((s) => s.id === r.safety!.id)?.parent).toBe(node.id);
  });

  it('restores into the stopped micro-VM: it starts and continues from the snapshot point', async () => {
    await killVm(core, VM);
    expect((await core.get(VM)).state).toBe('stopped');
    await expect(snaps.take(VM, { name: 'cold again' })).rejects.toMatchObject({ code: 'EINVAL' });
    const mid = (await snaps.list(VM)).snapshots.find((s) => s.name === 'mid')!;
    const r = await snaps.restore(VM, 'mid');
    expect(r.safety).toBeUndefined(); // nothing but raw disks to save in a stopped micro-VM
    expect(r.info.state).toBe('running');
    // The host truncates serial.log when it starts; the kernel it booted paused never ran.
    const out = await waitFor('the restored guest to print', async () => {
      const s = steps(await log());
      return s.length >= 3 ? s : undefined;
    });
    expect(out[0]!.n).toBeGreaterThan(before);
    expect(out[0]!.hash).toBe(original.get(out[0]!.n));
    expect(out[1]!.n).toBe(out[0]!.n + 1);
    expect((await log())).not.toMatch(/STEP 1 /);
    expect((await snaps.list(VM)).current).toBe(mid.id);
  });

  it('deletes a micro-VM snapshot and its state file; a lost state file is reported, not restored', async () => {
    const listing = await snaps.list(VM);
    const bundle = (await core.get(VM)).bundle;
    const safety = listing.snapshots.find((s) => s.name !== 'mid')!;
    const safetyFile = path.join(bundle, 'snapshots', `${safety.id}.vmstate`);
    expect(existsSync(safetyFile)).toBe(true);
    const res = await snaps.delete(VM, safety.id);
    expect(res.deleted).toEqual([safety.id]);
    expect(existsSync(safetyFile)).toBe(false);
    expect((await snaps.list(VM)).snapshots.map((s) => s.name)).toEqual(['mid']);

    const mid = listing.snapshots.find((s) => s.name === 'mid')!;
    const midFile = path.join(bundle, 'snapshots', `${mid.id}.vmstate`);
    const moved = `${midFile}.away`;
    execFileSync('mv', [midFile, moved]);
    const lost = await snaps.list(VM);
    expect(lost.snapshots[0]!.missingOn).toEqual(['vmstate']);
    expect(lost.notes.join('\n')).toMatch(/lost its state file/);
    await expect(snaps.restore(VM, 'mid', { snapshotCurrent: false })).rejects.toMatchObject({ code: 'EBROKEN' });
    execFileSync('mv', [moved, midFile]);

    // Deleting while the VM runs from that very file is fine: the guest keeps its own mapping.
    expect((await core.get(VM)).state).toBe('running');
    await snaps.delete(VM, 'mid');
    expect(existsSync(midFile)).toBe(false);
    const empty = await snaps.list(VM);
    expect(empty.snapshots).toEqual([]);
    expect(empty.current).toBeNull();
    const n = await lastStep();
    await waitFor('the guest to keep computing', async () => ((await lastStep()) > n ? true : undefined));
  });
});
