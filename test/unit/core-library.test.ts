import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { mkdtemp, rm, readFile, writeFile, readdir, mkdir, stat, symlink, utimes } from 'node:fs/promises';
import { promises as fsp } from 'node:fs';
import { spawn } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';
import { writeFileAtomic } from '../../main/platform/atomic.js';
import { acquireLock, processStartTime } from '../../main/platform/lock.js';
import { ensurePrivateDir, makeFilesPrivate, runtimeRoot } from '../../main/platform/paths.js';
import { fromOsError } from '../../main/platform/os-errors.js';
import { EXIT_CODES } from '../../main/api/errors.js';
import { terminalSafe } from '../../main/cli/format.js';
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
    await writeFile(path.join(dir, '.lock'), '999999999 1\n');
    const again = await acquireLock(dir, 'VM "a"', 200);
    await again();
  });
});

describe('library', () => {
  it('reports a corrupt or future-version vm.json as broken and still lists the others', async () => {
    let core = new Core({ home: dir });
    await core.boot();
    await core.create({ name: 'good', memoryMiB: 64 });
    const lib = new VmLibrary(dir);
    await mkdir(path.join(lib.vmsDir, 'corrupt'));
    await writeFile(path.join(lib.vmsDir, 'corrupt', 'vm.json'), '{"schemaVersion": 1, "name": ');
    await mkdir(path.join(lib.vmsDir, 'future'));
    await writeFile(path.join(lib.vmsDir, 'future', 'vm.json'), JSON.stringify({ schemaVersion: 99, name: 'x' }));
    // The daemon is the library's only writer and keeps it in memory: bundles changed behind its back are
    // seen when it starts again.
    await core.shutdown();
    core = new Core({ home: dir });
    await core.boot();
    const list = await core.list();
    expect(list.map((v) => v.name).sort()).toEqual(['corrupt', 'future', 'good']);
    expect(list.find((v) => v.id === 'corrupt')!.broken).toMatch(/not valid JSON/);
    expect(list.find((v) => v.id === 'future')!.broken).toMatch(/schema version 99.*upgrade/);
    await expect(core.start('future')).rejects.toMatchObject({ code: 'EBROKEN' });
    await core.shutdown();
  });

  it('sweeps half-made bundles whose process died, and leaves one being made by a live process alone', async () => {
    const lib = new VmLibrary(dir);
    const old = new Date(Date.now() - 120_000);
    for (const [name, owner] of [
      ['.creating-dead', '999999 1\n'],
      ['.deleting-dead', '999999 1\n'],
      ['.creating-live', `${process.pid} ${processStartTime(process.pid) ?? ''}\n`],
      ['.creating-ownerless-old', null],
      ['.creating-ownerless-new', null],
    ] as const) {
      await mkdir(path.join(lib.vmsDir, name), { recursive: true });
      if (owner) await writeFile(path.join(lib.vmsDir, name, '.owner'), owner);
      if (name.endsWith('-old')) await utimes(path.join(lib.vmsDir, name), old, old);
    }
    const core = new Core({ home: dir });
    await core.boot();
    // `vmdesk list` while the GUI imports must not kill the import: a live owner's staging dir stays.
    expect((await readdir(lib.vmsDir)).sort()).toEqual(['.creating-live', '.creating-ownerless-new']);
    await core.shutdown();
  });

  it('puts a new VM on the disk before its bundle appears: every file and folder synced, then the rename, then the library folder', async () => {
    const core = new Core({ home: dir });
    await core.boot();
    // What the library asks of the file system, in order: which paths were synced, and the bundle's rename.
    const log: string[] = [];
    const realOpen = fsp.open;
    const openSpy = vi.spyOn(fsp, 'open').mockImplementation(async (...args: Parameters<typeof fsp.open>) => {
      const fh = await realOpen(...args);
      const p = String(args[0]);
      const sync = fh.sync.bind(fh);
      fh.sync = async () => {
        await sync();
        log.push(`sync ${p}`);
      };
      return fh;
    });
    const realRename = fsp.rename;
    const renameSpy = vi.spyOn(fsp, 'rename').mockImplementation(async (from, to) => {
      await realRename(from, to);
      log.push(`rename ${String(from)} -> ${String(to)}`);
    });
    let vm;
    try {
      vm = await core.create({ name: 'durable', memoryMiB: 64, diskBytes: 16 * 1024 * 1024 });
    } finally {
      openSpy.mockRestore();
      renameSpy.mockRestore();
    }
    const appear = log.findIndex((l) => l.startsWith('rename ') && l.endsWith(` -> ${vm.bundle}`));
    expect(appear, log.join('\n')).toBeGreaterThan(0);
    const staging = log[appear]!.slice('rename '.length).split(' -> ')[0]!;
    const synced = new Set(log.slice(0, appear).filter((l) => l.startsWith('sync ')).map((l) => l.slice(5)));
    // Each file of the new bundle, and each folder, was synced under its staging name before the rename.
    const walk = async (d: string): Promise<string[]> => [d, ...(await Promise.all((await readdir(d, { withFileTypes: true })).map((e) => (e.isDirectory() ? walk(path.join(d, e.name)) : [path.join(d, e.name)])))).flat()];
    for (const p of await walk(vm.bundle)) expect(synced, `${p} was not synced before the bundle appeared`).toContain(path.join(staging, path.relative(vm.bundle, p)));
    expect(log.slice(appear + 1)).toContain(`sync ${path.join(dir, 'vms')}`);
    await core.shutdown();
  });

  it('keeps the library private: 0700 directories and 0600 files, including the disks qemu-img makes', async () => {
    const prev = process.umask();
    makeFilesPrivate();
    try {
      const core = new Core({ home: dir });
      await core.boot();
      const vm = await core.create({ name: 'private', memoryMiB: 64, diskBytes: 16 * 1024 * 1024 });
      const mode = async (p: string) => (await stat(p)).mode & 0o777;
      expect(await mode(path.join(dir, 'vms'))).toBe(0o700);
      expect(await mode(vm.bundle)).toBe(0o700);
      expect(await mode(path.join(vm.bundle, 'vm.json'))).toBe(0o600);
      expect(await mode(path.join(vm.bundle, 'disks', 'disk0.qcow2'))).toBe(0o600);
      await core.shutdown();
    } finally {
      process.umask(prev);
    }
  });

  it('refuses a runtime dir that another user made or that is a symlink, and picks the next candidate', async () => {
    const tmp = path.join(dir, 'shared-tmp');
    await mkdir(tmp);
    const uid = process.getuid!();
    const env = { VMDESK_TMPDIR: tmp } as NodeJS.ProcessEnv;
    expect(runtimeRoot('/home/x', env)).toMatch(new RegExp(`/vmdesk-${uid}/`));
    // Another local user got there first: a symlink (or a dir owned by them) under our name.
    await symlink('/', path.join(tmp, `vmdesk-${uid}`));
    expect(runtimeRoot('/home/x', env)).toMatch(new RegExp(`/vmdesk-${uid}\\.1/`));
    expect(() => ensurePrivateDir(path.join(tmp, `vmdesk-${uid}`))).toThrow(/symbolic link/);
  });

  it('reports OS errors with their own codes and exit codes, not as internal errors', () => {
    expect(fromOsError(Object.assign(new Error('x'), { code: 'ENOSPC', path: '/lib/vm.json' }), 'cannot save')).toMatchObject({ code: 'ENOSPC', message: 'cannot save: no space left on the device; free some space and try again (/lib/vm.json)' });
    expect(fromOsError(Object.assign(new Error('x'), { code: 'EROFS' }))).toMatchObject({ code: 'EACCES' });
    expect(fromOsError(Object.assign(new Error('x'), { code: 'EISDIR', path: '/tmp' }))).toMatchObject({ code: 'EINVAL', message: 'is a directory, not a file (/tmp)' });
    expect(fromOsError(Object.assign(new Error('x'), { code: 'ENOTDIR' }))).toMatchObject({ code: 'EINVAL' });
    expect(EXIT_CODES.ENOSPC).toBe(12);
    expect(EXIT_CODES.EACCES).toBe(13);
  });

  it('shows names and descriptions with control characters escaped on a terminal', () => {
    expect(terminalSafe('snap \u001b]0;pwned\u0007 \u001b[31mred\r\nok\tfine')).toBe('snap \\x1b]0;pwned\\x07 \\x1b[31mred\\x0d\nok\tfine');
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
