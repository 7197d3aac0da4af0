// Automatic snapshots from the CLI on the QEMU engine's real storage (qemu-img on a qcow2 disk, no guest):
// retention of "Before restoring" snapshots in tree.json and in the disk's own snapshot table, the retention
// preference, prune, keep, restore --dry-run, compare in words, and schedule set/show/off.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import { Core } from '../../main/core/core.js';
import { parseEvery, runSnapshotCli } from '../../main/cli/snapshot.js';
import { EXIT_CODES, VmdeskError } from '../../main/api/errors.js';
import { inProcessRpc } from '../integration/snapshot-harness.js';

let home: string;
let core: Core;

async function cli(args: string[], json = false): Promise<{ code: number; out: string; err: string }> {
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  let out = '';
  let err = '';
  stdout.on('data', (d) => (out += d));
  stderr.on('data', (d) => (err += d));
  try {
    const code = await runSnapshotCli(async () => inProcessRpc(core), 'snapshot', args, { stdout, stderr, json });
    return { code, out, err };
  } catch (e) {
    if (e instanceof VmdeskError) return { code: EXIT_CODES[e.code], out, err: err + e.message };
    throw e;
  }
}

/** Tags in the qcow2's own snapshot table, as qemu-img lists them. */
function diskTags(): string[] {
  const vm = (core as unknown as { vms: Map<string, { dir: string }> }).vms.values().next().value!;
  const out = execFileSync('qemu-img', ['info', '-U', '-f', 'qcow2', '--output=json', path.join(vm.dir, 'disks', 'disk0.qcow2')], { encoding: 'utf8' });
  return ((JSON.parse(out) as { snapshots?: { name: string }[] }).snapshots ?? []).map((s) => s.name);
}

beforeAll(async () => {
  home = mkdtempSync(path.join(tmpdir(), 'vmdesk-snapauto-cli-'));
  core = new Core({ home });
  await core.boot();
  await core.create({ name: 'box', diskBytes: 32 * 1024 * 1024, memoryMiB: 128 });
});
afterAll(async () => {
  await core.shutdown();
  rmSync(home, { recursive: true, force: true });
});

describe('vmdesk snapshot: automatic snapshots', () => {
  it('parses schedule intervals', () => {
    expect([parseEvery('30m'), parseEvery('2h'), parseEvery('1d'), parseEvery('1h30m'), parseEvery('45')]).toEqual([30, 120, 1440, 90, 45]);
    expect(() => parseEvery('30s')).toThrow(/duration such as 30m/);
    expect(() => parseEvery('')).toThrow(/duration/);
  });

  it('keeps the newest 3 "Before restoring" snapshots, in tree.json and on the disk', async () => {
    expect((await cli(['take', 'box', 'base'])).code).toBe(0);
    for (let i = 0; i < 6; i++) {
      const r = await cli(['restore', 'box', 'base']);
      expect(r.code, r.err).toBe(0);
      if (i >= 3) expect(r.out).toMatch(/retention removed older automatic snapshots: Before restoring base/);
    }
    const l = JSON.parse((await cli(['list', 'box'], true)).out);
    const auto = l.snapshots.filter((s: { auto?: string }) => s.auto === 'safety');
    expect(auto).toHaveLength(3);
    expect(l.safetyKeep).toBe(3);
    const tags = diskTags();
    expect(tags.sort()).toEqual(l.snapshots.map((s: { tag: string }) => s.tag).sort());
    expect(tags).toHaveLength(4);
    expect((await cli(['list', 'box'])).out).toMatch(/automatic: before a restore/);
  });

  it('changes the preference, keeps one for good and prunes the rest on demand', async () => {
    expect((await cli(['retention'])).out).toMatch(/keeps its newest 3 automatic/);
    expect((await cli(['retention', '--keep', '1'])).out).toMatch(/keeps its newest 1 automatic "Before restoring" snapshot$/m);
    const l = JSON.parse((await cli(['list', 'box'], true)).out);
    const oldest = l.snapshots.find((s: { auto?: string }) => s.auto === 'safety');
    expect((await cli(['keep', 'box', oldest.id])).out).toMatch(/is kept: retention will not delete it/);
    const pruned = await cli(['prune', 'box']);
    expect(pruned.out).toMatch(/removed 1 old automatic snapshot: /);
    const after = JSON.parse((await cli(['list', 'box'], true)).out);
    expect(after.snapshots.map((s: { id: string }) => s.id)).toContain(oldest.id);
    expect(after.snapshots.filter((s: { auto?: string }) => s.auto === 'safety')).toHaveLength(1);
    expect(diskTags()).toHaveLength(3);
    expect((await cli(['prune', 'box'])).out).toMatch(/nothing to remove/);
    expect((await cli(['retention', '--keep', '0'])).code).toBe(EXIT_CODES.EINVAL);
    expect((await cli(['retention', '--keep', 'all'])).out).toMatch(/every automatic "Before restoring" snapshot is kept/);
    await cli(['retention', '--keep', '3']);
  });

  it('says what a restore would do without doing it, and compares settings in words', async () => {
    await core.update('box', { memoryMiB: 384, cpus: 2 });
    const before = JSON.parse((await cli(['list', 'box'], true)).out);
    const dry = await cli(['restore', 'box', 'base', '--dry-run']);
    expect(dry.code).toBe(0);
    expect(dry.out).toMatch(/^restoring "base" would:/);
    expect(dry.out).toMatch(/The current state is saved first as "Before restoring base.*" \(disks only\)/);
    expect(dry.out).toMatch(/The disks go back to "base"; "box" stays stopped/);
    expect(dry.out).toMatch(/These settings go back to the snapshot's: Processors 2 → 1; Memory 384 MiB → 128 MiB/);
    expect(JSON.parse((await cli(['list', 'box'], true)).out)).toEqual(before);
    expect((await cli(['compare', 'box', 'base'])).out).toBe('"base" → now:\n  Processors: 1 → 2\n  Memory: 128 MiB → 384 MiB\n');
    const safety = before.snapshots.find((s: { auto?: string }) => s.auto === 'safety');
    expect((await cli(['compare', 'box', 'base', safety.id])).out).toMatch(/"base" and "Before restoring base.*" have the same settings/);
    expect((await cli(['info', 'box', 'base'])).out).toMatch(/settings at the snapshot → now:\n  Processors: 1 → 2\n  Memory: 128 MiB → 384 MiB/);
  });

  it('sets, shows and removes a schedule; refuses nonsense', async () => {
    expect((await cli(['schedule', 'box'])).out).toMatch(/"box" has no snapshot schedule/);
    expect((await cli(['schedule', 'box', '--every', '30m', '--keep', '5'])).out).toMatch(/snapshotted every 30m while it runs; the last 5 scheduled snapshots are kept/);
    expect((await core.get('box')).config!.snapshotSchedule).toEqual({ everyMinutes: 30, keep: 5 });
    expect((await cli(['schedule', 'box', '--every', '2h'])).out).toMatch(/every 2h .* last 5/);
    expect((await cli(['schedule', 'box'])).out).toMatch(/^every 2h, the last 5 kept; the next one is taken once it has run that long/);
    expect((await cli(['list', 'box'])).out).toMatch(/^schedule: every 2h, the last 5 kept \(while running\)$/m);
    expect((await cli(['schedule', 'box', '--every', '1m'])).code).toBe(EXIT_CODES.EINVAL);
    expect((await cli(['schedule', 'box', '--every', '30m', '--off'])).code).toBe(EXIT_CODES.EINVAL);
    expect((await cli(['schedule', 'box', '--off'])).out).toMatch(/has no snapshot schedule now/);
    expect((await core.get('box')).config!.snapshotSchedule).toBeUndefined();
  });
});
