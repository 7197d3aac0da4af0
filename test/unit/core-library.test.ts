import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { mkdtemp, rm, readFile, writeFile, readdir, mkdir } from 'node:fs/promises';
import { spawn } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';
import { writeFileAtomic } from '../../main/platform/atomic.js';
import { acquireLock } from '../../main/platform/lock.js';
import { Core } from '../../main/core/core.js';
import { VmLibrary } from '../../main/core/library.js';

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'vmdesk-lib-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('atomic writes', () => {
  it('a process killed mid-write leaves the previous file intact', async () => {
    const file = path.join(dir, 'vm.json');
    await writeFileAtomic(file, JSON.stringify({ generation: 0 }));
    // A child rewrites the file with large contents in a loop; SIGKILL lands somewhere inside a write.
    const script = `
      import { writeFileAtomic } from ${JSON.stringify(path.resolve('main/platform/atomic.ts'))};
      const big = 'x'.repeat(8 * 1024 * 1024);
      for (let g = 1; ; g++) await writeFileAtomic(${JSON.stringify(file)}, JSON.stringify({ generation: g, big }));
    `;
    for (let round = 0; round < 3; round++) {
      const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { stdio: 'ignore' });
      await new Promise((r) => setTimeout(r, 700 + round * 150));
      child.kill('SIGKILL');
      await new Promise((r) => child.once('exit', r));
      const parsed = JSON.parse(await readFile(file, 'utf8'));
      expect(typeof parsed.generation).toBe('number');
    }
  });

  it('a failed write leaves no temp file behind', async () => {
    const file = path.join(dir, 'sub', 'vm.json');
    await expect(writeFileAtomic(file, 'x')).rejects.toThrow();
    await mkdir(path.join(dir, 'sub'));
    await writeFileAtomic(file, 'ok');
    expect((await readdir(path.join(dir, 'sub')))).toEqual(['vm.json']);
  });
});

describe('locks', () => {
  it('a second holder waits and then fails with EBUSY; a dead owner\'s lock is taken over', async () => {
    const release = await acquireLock(dir, 'VM "a"');
    await expect(acquireLock(dir, 'VM "a"', 200)).rejects.toMatchObject({ code: 'EBUSY' });
    await release();
    await writeFile(path.join(dir, '.lock'), '999999999\n');
    const again = await acquireLock(dir, 'VM "a"', 200);
    await again();
  });
});

describe('library', () => {
  it('reports a corrupt or future-version vm.json as broken and still lists the others', async () => {
    const core = new Core({ home: dir });
    await core.boot();
    await core.create({ name: 'good', memoryMiB: 64 });
    const lib = new VmLibrary(dir);
    await mkdir(path.join(lib.vmsDir, 'corrupt'));
    await writeFile(path.join(lib.vmsDir, 'corrupt', 'vm.json'), '{"schemaVersion": 1, "name": ');
    await mkdir(path.join(lib.vmsDir, 'future'));
    await writeFile(path.join(lib.vmsDir, 'future', 'vm.json'), JSON.stringify({ schemaVersion: 99, name: 'x' }));
    const list = await core.list();
    expect(list.map((v) => v.name).sort()).toEqual(['corrupt', 'future', 'good']);
    expect(list.find((v) => v.id === 'corrupt')!.broken).toMatch(/not valid JSON/);
    expect(list.find((v) => v.id === 'future')!.broken).toMatch(/schema version 99.*upgrade/);
    await expect(core.start('future')).rejects.toMatchObject({ code: 'EBROKEN' });
    await core.shutdown();
  });

  it('sweeps half-made bundles left by a crash at start-up', async () => {
    const lib = new VmLibrary(dir);
    await mkdir(path.join(lib.vmsDir, '.creating-abc'), { recursive: true });
    await mkdir(path.join(lib.vmsDir, '.deleting-def'), { recursive: true });
    const core = new Core({ home: dir });
    await core.boot();
    expect(await readdir(lib.vmsDir)).toEqual([]);
    await core.shutdown();
  });

  it('creates, renames, updates and deletes with events', async () => {
    const core = new Core({ home: dir });
    await core.boot();
    const events: string[] = [];
    core.on('event', (e) => events.push(e.type));
    const vm = await core.create({ name: 'one', memoryMiB: 64, diskBytes: 16 * 1024 * 1024 });
    expect(vm.config!.disks).toHaveLength(1);
    await expect(core.create({ name: 'ONE', memoryMiB: 64 })).rejects.toMatchObject({ code: 'EEXIST' });
    await core.rename('one', 'two');
    const updated = await core.update('two', { cpus: 2, memoryMiB: 128 });
    expect(updated.config).toMatchObject({ cpus: 2, memoryMiB: 128, name: 'two' });
    await expect(core.update('two', { cpus: 0 })).rejects.toMatchObject({ code: 'EINVAL' });
    const kept = await core.delete('two', { keepDisks: true });
    expect(kept.keptDisks).toHaveLength(1);
    expect(await core.list()).toEqual([]);
    expect(events).toEqual(['vm-created', 'vm-updated', 'vm-updated', 'vm-deleted']);
    await core.shutdown();
  });
});
