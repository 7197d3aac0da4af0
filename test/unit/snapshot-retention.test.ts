// Automatic snapshots through the real core and snapshot modules on a fake engine (full live snapshots kept
// in memory, so time and storage are the test's): retention of safety snapshots (the newest N, a library
// preference), "Keep", restore plans in words, compare, and the scheduler with a clock the test moves.
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Core } from '../../main/core/core.js';
import { registerEngine, unregisterEngine } from '../../main/engines/registry.js';
import { SnapshotManager } from '../../main/core/snapshots/manager.js';
import { SnapshotScheduler } from '../../main/core/snapshots/scheduler.js';
import { pruneCandidates } from '../../main/core/snapshots/retention.js';
import { configChanges, changeText } from '../../main/core/snapshots/words.js';
import { readTree } from '../../main/core/snapshots/store.js';
import { FAKE_FULL_KIND, fakeFull, fakeFullEngine } from './snapshot-fake-engine.js';

describe('automatic snapshots: retention, plans, schedules', () => {
  let home: string;
  let core: Core;
  let snaps: SnapshotManager;
  const VM = 'auto';

  beforeAll(async () => {
    registerEngine(fakeFullEngine);
    home = mkdtempSync(path.join(tmpdir(), 'vmdesk-snapauto-'));
    core = new Core({ home });
    await core.boot();
    await core.create({ name: VM, engine: FAKE_FULL_KIND, diskBytes: 4 * 1024 * 1024, memoryMiB: 256, network: [{ mode: 'none', forwards: [] }] });
    snaps = new SnapshotManager(core);
  });
  afterAll(async () => {
    await core.shutdown();
    unregisterEngine(FAKE_FULL_KIND);
    rmSync(home, { recursive: true, force: true });
  });
  beforeEach(() => {
    fakeFull.deleted.length = 0;
  });

  it('keeps the newest 3 "Before restoring" snapshots by default, and only those', async () => {
    await core.start(VM);
    await snaps.take(VM, { name: 'A' });
    const results = [];
    for (let i = 0; i < 5; i++) results.push(await snaps.restore(VM, 'A'));
    const list = await snaps.list(VM);
    const safety = list.snapshots.filter((s) => s.auto === 'safety');
    expect(safety.map((s) => s.id)).toEqual(results.slice(2).map((r) => r.safety!.id));
    expect(list.safetyKeep).toBe(3);
    // The 4th and 5th restores each pruned the oldest one, from the engine's storage too (a pruned name is free again).
    expect(results.map((r) => r.pruned)).toEqual([[], [], [], ['Before restoring A'], ['Before restoring A (2)']]);
    expect(results.map((r) => r.safety!.name)).toEqual(['Before restoring A', 'Before restoring A (2)', 'Before restoring A (3)', 'Before restoring A (4)', 'Before restoring A']);
    await snaps.rename(VM, results[4]!.safety!.id, 'Before restoring A (5)');
    expect(fakeFull.deleted).toHaveLength(2);
    // A person's snapshot is never pruned.
    expect(list.snapshots.find((s) => s.name === 'A')).toBeTruthy();
  });

  it('follows the preference, prunes on demand, and never prunes what was kept', async () => {
    expect(await snaps.preferences({ safetyKeep: 1 })).toEqual({ safetyKeep: 1 });
    expect(JSON.parse(readFileSync(path.join(home, 'snapshot-preferences.json'), 'utf8'))).toEqual({ safetyKeep: 1 });
    const kept = await snaps.keep(VM, 'Before restoring A (3)');
    expect(kept.auto).toBeUndefined();
    await expect(snaps.keep(VM, 'A')).rejects.toMatchObject({ code: 'EINVAL' });
    const r = await snaps.prune(VM);
    expect(r.deleted.map((n) => n.name)).toEqual(['Before restoring A (4)']);
    const names = (await snaps.list(VM)).snapshots.map((s) => s.name);
    expect(names).toEqual(['A', 'Before restoring A (3)', 'Before restoring A (5)']);
    await expect(snaps.preferences({ safetyKeep: 0 })).rejects.toMatchObject({ code: 'EINVAL' });
    await snaps.preferences({ safetyKeep: null });
    expect(pruneCandidates(await readTree((await core.usable(VM)).dir), 'safety', null)).toEqual([]);
    await snaps.preferences({ safetyKeep: 3 });
  });

  it('recognises safety snapshots written before the auto flag by their description', async () => {
    const dir = (await core.usable(VM)).dir;
    const tree = await readTree(dir);
    const legacy = { ...tree.nodes.find((n) => n.name === 'Before restoring A (5)')!, auto: undefined };
    expect(pruneCandidates({ ...tree, nodes: [...tree.nodes.filter((n) => n.id !== legacy.id), legacy] }, 'safety', 0).map((n) => n.name)).toEqual(['Before restoring A (5)']);
  });

  it('plans a restore of a live snapshot into the stopped VM: it will run, settings revert, in words', async () => {
    await core.kill(VM);
    await core.update(VM, { memoryMiB: 384, cpus: 2 });
    await snaps.preferences({ safetyKeep: 1 });
    const plan = await snaps.restorePlan(VM, 'A');
    expect(plan).toMatchObject({ stateNow: 'stopped', stateAfter: 'running', starts: true, powersOff: false, inPlace: false, disksRevert: true, blockers: [] });
    expect(plan.settings.map(changeText)).toEqual(['Processors 2 → 1', 'Memory 384 MiB → 256 MiB']);
    expect(plan.safety).toMatchObject({ taken: true, name: 'Before restoring A', kind: 'disk-only' });
    expect(plan.steps.join('\n')).toMatch(/is stopped now and will be running afterwards/);
    expect(plan.steps.join('\n')).toMatch(/These settings go back to the snapshot's: Processors 2 → 1; Memory 384 MiB → 256 MiB/);
    // Keep 1: the one this restore adds stays, the older unkept one goes.
    expect(plan.prunes.map((p) => p.name)).toEqual(['Before restoring A (5)']);
    const none = await snaps.restorePlan(VM, 'A', { snapshotCurrent: false });
    expect(none.safety).toEqual({ taken: false, reason: 'you chose not to save the current state' });
    expect(none.prunes).toEqual([]);

    const cmp = await snaps.compare(VM, 'A');
    expect(cmp.changes.map(changeText)).toEqual(['Processors 1 → 2', 'Memory 256 MiB → 384 MiB']);
    expect((await snaps.info(VM, 'A')).changes.map(changeText)).toEqual(['Processors 1 → 2', 'Memory 256 MiB → 384 MiB']);

    const r = await snaps.restore(VM, 'A');
    expect(r.info.state).toBe('running');
    expect(r.info.config).toMatchObject({ cpus: 1, memoryMiB: 256 });
    expect(r.pruned).toEqual(['Before restoring A (5)']);
    await snaps.preferences({ safetyKeep: 3 });
  });

  it('keeps the VM\'s schedule across a restore and leaves it out of differences', async () => {
    const info = await snaps.setSchedule(VM, { everyMinutes: 30, keep: 2 });
    expect(info.config!.snapshotSchedule).toEqual({ everyMinutes: 30, keep: 2 });
    expect((await snaps.info(VM, 'A')).configDiff).toEqual([]);
    await snaps.restore(VM, 'A', { snapshotCurrent: false });
    expect((await core.get(VM)).config!.snapshotSchedule).toEqual({ everyMinutes: 30, keep: 2 });
  });

  it('scheduler: nothing before the interval, one snapshot when due, the newest K kept, none while stopped', async () => {
    let now = Date.now();
    const sched = new SnapshotScheduler(core, snaps, { now: () => now, tickMs: 3_600_000 }).start();
    try {
      expect(await sched.runDue(now)).toEqual([]);
      const listing = await snaps.list(VM);
      expect(listing.schedule).toMatchObject({ everyMinutes: 30, keep: 2 });
      expect(Date.parse(listing.schedule!.nextAt!) - now).toBe(30 * 60_000);

      now += 29 * 60_000;
      expect(await sched.runDue(now)).toEqual([]);
      const taken: string[] = [];
      for (let i = 0; i < 3; i++) {
        now += 31 * 60_000;
        const runs = await sched.runDue(now);
        expect(runs).toHaveLength(1);
        expect(runs[0]!.error).toBeUndefined();
        taken.push(runs[0]!.taken!.name);
        // The next one is counted from this one (taken at the real clock, which is behind the test's).
        now = Date.now();
        expect(await sched.runDue(now + 29 * 60_000)).toEqual([]);
      }
      const auto = (await snaps.list(VM)).snapshots.filter((s) => s.auto === 'scheduled');
      expect(auto.map((s) => s.name)).toEqual(taken.slice(1));
      expect(auto.every((s) => s.kind === 'live')).toBe(true);
      // Scheduled snapshots become "you are here", as any take does.
      expect((await snaps.list(VM)).current).toBe(auto.at(-1)!.id);

      // A busy VM is tried again at the next tick; a stopped one is not snapshotted at all.
      let release!: () => void;
      const held = core.job(VM, 'rename', 'vm.rename', () => new Promise<void>((r) => (release = r)));
      const busy = await sched.runDue(Date.now() + 31 * 60_000);
      expect(busy[0]!.error).toMatch(/busy/);
      release();
      await held;
      await core.kill(VM);
      expect(await sched.runDue(Date.now() + 120 * 60_000)).toEqual([]);
      expect((await snaps.list(VM)).schedule!.nextAt).toBeNull();
    } finally {
      await sched.stop();
    }
  });

  it('refuses a schedule on an engine without live snapshots and turns one off', async () => {
    expect((await snaps.setSchedule(VM, null)).config!.snapshotSchedule).toBeUndefined();
    expect((await snaps.list(VM)).schedule).toBeNull();
  });
});

describe('settings in words', () => {
  const base = {
    schemaVersion: 1 as const,
    id: '00000000-0000-4000-8000-000000000001',
    name: 'w',
    osType: 'linux' as const,
    engine: 'qemu',
    accel: 'auto' as const,
    firmware: 'bios' as const,
    cpus: 1,
    memoryMiB: 256,
    disks: [{ id: 'disk0', path: 'disks/disk0.qcow2', format: 'qcow2' as const, owned: true, readOnly: false }],
    network: [{ mode: 'nat' as const, forwards: [] }],
    createdAt: '2026-01-01T00:00:00.000Z',
    modifiedAt: '2026-01-01T00:00:00.000Z',
  };
  it('says what changed as a person names it, never as JSON', () => {
    const next = {
      ...base,
      name: 'renamed',
      memoryMiB: 1536,
      firmware: 'uefi' as const,
      disks: [...base.disks, { id: 'disk1', path: 'disks/disk1.qcow2', format: 'qcow2' as const, owned: true, readOnly: false }],
      network: [{ mode: 'nat' as const, forwards: [{ protocol: 'tcp' as const, hostPort: 8080, guestPort: 80 }] }],
      directKernel: { kernel: '/boot/vmlinuz', cmdline: 'console=ttyS0' },
      limits: { cpuCapPercent: 50 },
      snapshotSchedule: { everyMinutes: 60, keep: 3 },
    };
    expect(configChanges(base, next).map(changeText)).toEqual([
      'Firmware BIOS → UEFI',
      'Memory 256 MiB → 1.5 GiB',
      'Disk disk1 absent → disks/disk1.qcow2 (qcow2)',
      'Direct kernel boot off → kernel /boot/vmlinuz',
      'Network adapter 1 port forward absent → tcp host 8080 → guest 80',
      'CPU cap none → 50 %',
    ]);
    expect(configChanges(base, base)).toEqual([]);
    expect(configChanges(null, base)).toEqual([]);
  });
});
