// A daemon killed in the middle of a live snapshot: QEMU runs on (it is no child that dies with its parent), the
// next daemon adopts it, and its first list reconciles metadata with the disks.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { existsSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Core } from '../../main/core/core.js';
import { SnapshotManager } from '../../main/core/snapshots/manager.js';
import { bootGuest, createGuestVm, makeCore, qmp, readRamMarker, shell, writeRamMarker, type GuestConsole } from './snapshot-harness.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const jiti = path.resolve(here, '../../node_modules/.bin/jiti');

describe('crash in the middle of a live snapshot', () => {
  let core: Core;
  let home: string;
  let cleanup: () => Promise<void>;
  let reopen: () => Promise<Core>;
  let con: GuestConsole;

  /** A new daemon on the home; QEMU's monitor may be slow to answer while it saves, so adoption is retried. */
  async function adoptingCore(): Promise<Core> {
    const deadline = Date.now() + 90_000;
    for (;;) {
      const c = await reopen();
      const state = (await c.get('crashy')).state;
      if (state === 'running' || state === 'paused') return c;
      if (Date.now() > deadline) throw new Error(`the new core did not adopt the running QEMU (state ${state})`);
      await new Promise((r) => setTimeout(r, 1000));
    }
  }

  beforeAll(async () => {
    ({ core, home, cleanup, reopen } = await makeCore());
    // 1 GiB of RAM, mostly dirtied, so that saving takes long enough to be interrupted.
    await createGuestVm(core, 'crashy', { memoryMiB: 1024 });
    con = await bootGuest(core, 'crashy');
    // Random bytes are slow to make under TCG: make 1 MiB once and copy it (QEMU only skips zero pages).
    await con.run('head -c 1048576 /dev/urandom > /tmp/r; i=0; while [ $i -lt 400 ]; do cat /tmp/r; i=$((i+1)); done > /tmp/fill', 180_000);
    await writeRamMarker(con, 'before-crash');
  });
  afterAll(async () => {
    con?.close();
    await cleanup();
  });

  it('records the snapshot QEMU finished after its daemon died, and dismisses the orphaned job', async () => {
    // The child plays the daemon: this core lets go of the guest (it keeps running) for the child to adopt.
    con.close();
    await core.shutdown();
    const child = spawn(jiti, [path.join(here, 'snapshot-crash-child.ts'), home, 'crashy', 'interrupted'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let err = "";
    child.stdout.on("data", (d) => (err += d));
    child.stderr.on('data', (d) => (err += d));
    // Kill the child just after it records its intent (tree.json "pending") and sends snapshot-save: the
    // job goes on inside QEMU without it.
    const treeFile = path.join((await core.get('crashy')).bundle, 'snapshots', 'tree.json');
    const deadline = Date.now() + 60_000;
    for (;;) {
      if (Date.now() > deadline) throw new Error(`the child never started a snapshot; output: ${err}`);
      if (child.exitCode !== null) throw new Error(`child exited (${child.exitCode}) too early: ${err}`);
      const text = existsSync(treeFile) ? readFileSync(treeFile, 'utf8') : '';
      if (text.includes('"interrupted"')) break;
      await new Promise((r) => setTimeout(r, 2));
    }
    // Kill it once QEMU is writing the RAM into the disk (the qcow2 grows), well before 400 MiB of noise is
    // saved: a fixed delay was too short on a slow machine, where the child had not yet sent snapshot-save.
    const info = await core.get('crashy');
    const disk = path.join(info.bundle, info.config.disks[0]!.path);
    const before = statSync(disk).size;
    for (;;) {
      if (Date.now() > deadline + 60_000) throw new Error(`QEMU never started writing the snapshot; output: ${err}`);
      if (child.exitCode !== null) throw new Error(`child exited (${child.exitCode}) too early: ${err}`);
      if (statSync(disk).size > before + 16 * 1024 * 1024) break;
      await new Promise((r) => setTimeout(r, 5));
    }
    child.kill('SIGKILL');
    await new Promise((r) => child.once('exit', r));
    expect(err).not.toMatch(/done/);
    const raw = JSON.parse(readFileSync(treeFile, 'utf8'));
    expect(raw.pending.map((p: { name: string }) => p.name)).toEqual(['interrupted']);
    expect(raw.nodes).toEqual([]);
    // The next daemon adopts the QEMU the dead one left running; wait for QEMU to finish its job.
    core = await adoptingCore();
    for (;;) {
      const jobs = (await qmp(core, 'crashy', 'query-jobs')) as { status: string }[];
      if (jobs.every((j) => j.status === 'concluded')) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    const snaps = new SnapshotManager(core);
    const list = await snaps.list('crashy');
    expect(list.notes.join('\n')).toMatch(/"interrupted" was interrupted after it was saved; it has been recorded/);
    const s = list.snapshots.find((x) => x.name === 'interrupted')!;
    expect(s.kind).toBe('live');
    expect(list.current).toBe(s.id);
    expect((await qmp(core, 'crashy', 'query-jobs')) as unknown[]).toEqual([]);

    // And the recorded snapshot restores.
    con = await shell(core, 'crashy');
    await writeRamMarker(con, 'after-crash');
    await snaps.restore('crashy', 'interrupted', { snapshotCurrent: false });
    con.close();
    con = await shell(core, 'crashy');
    expect(await readRamMarker(con)).toBe('before-crash');
  });
});
