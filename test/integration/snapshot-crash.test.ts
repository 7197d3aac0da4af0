// A VMDesk process killed in the middle of a live snapshot: the next list reconciles metadata with the disks.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Core } from '../../main/core/core.js';
import { acquireLock } from '../../main/platform/lock.js';
import { SnapshotManager } from '../../main/core/snapshots/manager.js';
import { bootGuest, createGuestVm, makeCore, readRamMarker, shell, writeRamMarker, type GuestConsole } from './snapshot-harness.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const jiti = path.resolve(here, '../../node_modules/.bin/jiti');

describe('crash in the middle of a live snapshot', () => {
  let core: Core;
  let home: string;
  let cleanup: () => Promise<void>;
  let con: GuestConsole;

  beforeAll(async () => {
    ({ core, home, cleanup } = await makeCore());
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

  it('records the snapshot QEMU finished after its VMDesk process died, and dismisses the orphaned job', async () => {
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
    await new Promise((r) => setTimeout(r, 40));
    child.kill('SIGKILL');
    await new Promise((r) => child.once('exit', r));
    expect(err).not.toMatch(/done/);
    const raw = JSON.parse(readFileSync(treeFile, 'utf8'));
    expect(raw.pending.map((p: { name: string }) => p.name)).toEqual(['interrupted']);
    expect(raw.nodes).toEqual([]);
    // The stale lock of the dead process is taken over; wait for QEMU to finish its job.
    for (;;) {
      const jobs = (await core.command('crashy', 'query-jobs')) as { status: string }[];
      if (jobs.every((j) => j.status === 'concluded')) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    const snaps = new SnapshotManager(core);
    const list = await snaps.list('crashy');
    expect(list.notes.join('\n')).toMatch(/"interrupted" was interrupted after QEMU saved it; it has been recorded/);
    const s = list.snapshots.find((x) => x.name === 'interrupted')!;
    expect(s.kind).toBe('live');
    expect(list.current).toBe(s.id);
    expect((await core.command('crashy', 'query-jobs')) as unknown[]).toEqual([]);
    // The snapshot lock was released (flock: the file stays, the lock is free).
    const release = await acquireLock(path.dirname(treeFile), 'snapshots', 100);
    await release();

    // And the recorded snapshot restores.
    con.close();
    con = await shell(core, 'crashy');
    await writeRamMarker(con, 'after-crash');
    await snaps.restore('crashy', 'interrupted', { snapshotCurrent: false });
    con.close();
    con = await shell(core, 'crashy');
    expect(await readRamMarker(con)).toBe('before-crash');
  });
});
