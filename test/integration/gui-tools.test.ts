// What the GUI asks of the daemon beyond the VM verbs (main/api/rpc-tools.ts), through dispatch as a client
// would: the file picker's listing (readable entries only, ~ expanded, bounded), port checks, VMDesk's own
// history and log tails, a failed start that leaves the VM stopped (not crashed), the CD drive of a running
// QEMU, disks detached (own disks kept) and reordered, and job.cancel.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chmod, mkdir, mkdtemp, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { Core } from '../../main/core/core.js';
import { dispatch } from '../../main/daemon/dispatch.js';
import { expandUserPath, listFiles } from '../../main/core/tools.js';
import type { VmEvent } from '../../main/api/events.js';
import type { RpcMethod, RpcParams, RpcResult } from '../../main/api/rpc.js';
import { guestPaths } from '../guest/guest.js';

let home: string;
let core: Core;
const events: VmEvent[] = [];

function call<M extends RpcMethod>(method: M, params: RpcParams<M>, opId?: string): Promise<RpcResult<M>> {
  return dispatch(core, method, params, { opId, emit: (ev) => events.push(ev) }) as Promise<RpcResult<M>>;
}

/** A port nobody listens on now, and a server holding another. */
async function listening(): Promise<{ server: Server; port: number }> {
  const server = createServer();
  await new Promise<void>((r) => server.listen({ port: 0, host: '127.0.0.1' }, r));
  return { server, port: (server.address() as { port: number }).port };
}

beforeAll(async () => {
  home = await mkdtemp(path.join(os.tmpdir(), 'vmd-tools-'));
  core = new Core({ home });
  await core.boot();
  core.on('event', (ev) => events.push(ev));
});

afterAll(async () => {
  for (const vm of await core.list()) if (vm.state !== 'stopped' && vm.state !== 'crashed') await core.kill(vm.id).catch(() => {});
  await core.shutdown();
  await rm(home, { recursive: true, force: true });
});

describe('files.list and files.stat', () => {
  it('lists folders first, then files of the kind asked for, only what may be read, hidden ones on request', async () => {
    const dir = path.join(home, 'pick');
    await mkdir(path.join(dir, 'sub'), { recursive: true });
    await writeFile(path.join(dir, 'debian.iso'), 'x'.repeat(10));
    await writeFile(path.join(dir, 'notes.txt'), 'x');
    await writeFile(path.join(dir, '.hidden.iso'), 'x');
    await symlink('/nonexistent/target', path.join(dir, 'dangling.iso'));
    const r = await call('files.list', { path: dir, show: 'iso' });
    expect(r.path).toBe(dir);
    expect(r.parent).toBe(home);
    expect(r.entries.map((e) => `${e.kind}:${e.name}`)).toEqual(['dir:sub', 'file:debian.iso']);
    expect(r.entries[1]!.size).toBe(10);
    expect(r.truncated).toBe(false);
    const all = await call('files.list', { path: dir, hidden: true });
    expect(all.entries.map((e) => e.name)).toEqual(['sub', '.hidden.iso', 'debian.iso', 'notes.txt']);
  });

  it('hides what the daemon user may not read (when not root: root reads everything)', async () => {
    if (process.getuid?.() === 0) return;
    const dir = path.join(home, 'private');
    await mkdir(dir);
    await writeFile(path.join(dir, 'secret.iso'), 'x');
    await chmod(path.join(dir, 'secret.iso'), 0o000);
    const r = await call('files.list', { path: dir });
    expect(r.entries).toEqual([]);
  });

  it('expands ~, refuses relative paths and control characters, and says what is missing', async () => {
    expect(expandUserPath('~/x.iso', '/home/me')).toBe('/home/me/x.iso');
    expect(expandUserPath('~', '/home/me')).toBe('/home/me');
    expect(expandUserPath('/a/b/../c//d', '/home/me')).toBe('/a/c/d');
    expect(() => expandUserPath('x.iso')).toThrow(/absolute/);
    await expect(call('files.stat', { path: 'relative.iso' })).rejects.toMatchObject({ code: 'EINVAL' });
    await expect(call('files.stat', { path: '/tmp/a\nb' })).rejects.toMatchObject({ code: 'EINVAL' });
    const home0 = (await call('files.list', {})).home;
    expect(home0).toBe(os.homedir());
    expect(await call('files.stat', { path: '~' })).toMatchObject({ path: os.homedir(), exists: true, kind: 'dir' });
    expect(await call('files.stat', { path: path.join(home, 'nope.iso') })).toMatchObject({ exists: false, reason: expect.stringMatching(/does not exist/) });
    await expect(call('files.list', { path: path.join(home, 'nope') })).rejects.toMatchObject({ code: 'ENOTFOUND' });
  });

  it('stops at the cap and says so', async () => {
    const dir = path.join(home, 'many');
    await mkdir(dir);
    await Promise.all(Array.from({ length: 2100 }, (_, i) => writeFile(path.join(dir, `f${i}.iso`), '')));
    const r = await listFiles({ path: dir });
    expect(r.entries).toHaveLength(2000);
    expect(r.truncated).toBe(true);
  });
});

describe('ports, failed starts, history and logs', () => {
  it('host.ports tells free from in use; a start on a busy port leaves the VM stopped with "start-failed"', { timeout: 60_000 }, async () => {
    const { kernel, initrd } = guestPaths();
    const busy = await listening();
    try {
      const free = await listening();
      free.server.close();
      const report = await call('host.ports', { forwards: [{ protocol: 'tcp', hostPort: busy.port }, { protocol: 'tcp', hostPort: free.port }] });
      expect(report.map((p) => p.status)).toEqual(['in-use', 'free']);
      expect(report[0]!.message).toMatch(/already in use by another program/);

      const vm = await call('vm.create', { name: 'busy-port', memoryMiB: 64, accel: 'tcg', directKernel: { kernel, initrd, cmdline: 'console=ttyS0' }, network: [{ mode: 'nat', forwards: [{ protocol: 'tcp', hostPort: busy.port, guestPort: 22 }] }] });
      const err = await call('vm.start', { id: vm.id }).catch((e: unknown) => e as { code: string; message: string });
      expect(err).toMatchObject({ code: 'EBUSY', message: expect.stringMatching(new RegExp(`host port ${busy.port} .*already in use`)) });
      const after = await call('vm.get', { id: vm.id });
      expect(after.state).toBe('stopped');
      expect(after.lastExit).toMatchObject({ reason: 'start-failed', detail: expect.stringMatching(/already in use/) });
      // The next daemon reads the same from last-exit.json.
      const again = new Core({ home });
      await again.boot();
      expect((await again.get(vm.id)).state).toBe('stopped');
      expect((await again.get(vm.id)).lastExit?.reason).toBe('start-failed');
      await again.shutdown();

      const history = await call('vm.logs', { id: vm.id, source: 'events' });
      expect(history.text).toMatch(/created "busy-port"/);
      expect(history.text).toMatch(/vm\.start failed: cannot start "busy-port": host port/);
      const qemuLog = await call('vm.logs', { id: vm.id, source: 'qemu', maxBytes: 100 });
      expect(qemuLog.file).toBe(path.join(vm.bundle, 'logs', 'qemu.log'));
    } finally {
      busy.server.close();
    }
  });
});

describe('the CD drive and the disks', () => {
  it('inserts and ejects a disc in a running (paused) QEMU, and keeps it in vm.json', { timeout: 90_000 }, async () => {
    const { kernel, initrd } = guestPaths();
    const isoA = path.join(home, 'a.iso');
    const isoB = path.join(home, 'b.iso');
    await writeFile(isoA, Buffer.alloc(64 * 1024));
    await writeFile(isoB, Buffer.alloc(64 * 1024));
    const vm = await call('vm.create', { name: 'cd', memoryMiB: 64, accel: 'tcg', iso: isoA, directKernel: { kernel, initrd, cmdline: 'console=ttyS0' }, network: [{ mode: 'none', forwards: [] }] });
    // Stopped: only vm.json changes.
    expect((await call('vm.media', { id: vm.id, cdrom: null })).config?.cdrom).toBeUndefined();
    expect((await call('vm.media', { id: vm.id, cdrom: isoA })).config?.cdrom).toBe(isoA);
    await call('vm.start', { id: vm.id, paused: true });
    try {
      const rt = core.runtime(vm.id) as unknown as { command<T>(c: string): Promise<T> };
      const inserted = async () => (await rt.command<{ qdev: string; inserted?: { file: string } }[]>('query-block')).find((b) => b.qdev === 'cdrom0')?.inserted?.file;
      expect(await inserted()).toBe(isoA);
      expect((await call('vm.media', { id: vm.id, cdrom: isoB })).config?.cdrom).toBe(isoB);
      expect(await inserted()).toBe(isoB);
      expect((await call('vm.media', { id: vm.id, cdrom: null })).config?.cdrom).toBeUndefined();
      expect(await inserted()).toBeUndefined();
      await expect(call('vm.media', { id: vm.id, cdrom: path.join(home, 'missing.iso') })).rejects.toMatchObject({ code: 'EINVAL', message: expect.stringMatching(/does not exist/) });
      // A disk's bus is hardware: not while the guest runs.
      await expect(call('disk.set', { id: vm.id, disk: 'disk0', bus: 'sata' })).rejects.toMatchObject({ code: 'ESTATE' });
    } finally {
      await call('vm.kill', { id: vm.id });
    }
    // A guest started without a drive says how to get one.
    await call('vm.start', { id: vm.id, paused: true });
    try {
      await expect(call('vm.media', { id: vm.id, cdrom: isoA })).rejects.toMatchObject({ code: 'EINVAL', message: expect.stringMatching(/started without a CD drive/) });
    } finally {
      await call('vm.kill', { id: vm.id });
    }
  });

  it('reorders the disks (boot order) and detaches them: an attached one stays, the own one is kept aside', async () => {
    const ext = path.join(home, 'ext.qcow2');
    const made = await call('vm.create', { name: 'disks', memoryMiB: 64, diskBytes: 16 * 1024 * 1024, network: [{ mode: 'none', forwards: [] }] });
    const { execFileSync } = await import('node:child_process');
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', ext, '16M']);
    const attached = await call('disk.attach', { id: made.id, file: ext });
    expect(attached.config?.disks.map((d) => d.id)).toEqual(['disk0', 'ext0']);
    const reordered = await call('disk.reorder', { id: made.id, order: ['ext0', 'disk0'] });
    expect(reordered.config?.disks.map((d) => d.id)).toEqual(['ext0', 'disk0']);
    await expect(call('disk.reorder', { id: made.id, order: ['ext0'] })).rejects.toMatchObject({ code: 'EINVAL' });
    // Another bus and read-only, one disk at a time; a missing disk or an empty change is refused.
    const sata = await call('disk.set', { id: made.id, disk: 'ext0', bus: 'sata', readOnly: true });
    expect(sata.config?.disks.find((d) => d.id === 'ext0')).toMatchObject({ bus: 'sata', readOnly: true });
    expect(sata.config?.disks.find((d) => d.id === 'disk0')?.bus).toBeUndefined();
    expect((await call('disk.set', { id: made.id, disk: 'ext0', readOnly: false })).config?.disks.find((d) => d.id === 'ext0')).toMatchObject({ bus: 'sata', readOnly: false });
    await expect(call('disk.set', { id: made.id, disk: 'nope', bus: 'ide' })).rejects.toMatchObject({ code: 'ENOTFOUND', message: expect.stringMatching(/no disk "nope" \(disks: ext0, disk0\)/) });
    await expect(call('disk.set', { id: made.id, disk: 'ext0' } as never)).rejects.toMatchObject({ code: 'EINVAL', message: expect.stringMatching(/bus or readOnly/) });

    const d1 = await call('disk.detach', { id: made.id, disk: 'ext0' });
    expect(d1.keptFile).toBeUndefined();
    expect((await stat(ext)).isFile()).toBe(true);
    const d2 = await call('disk.detach', { id: made.id, disk: 'disk0' });
    expect(d2.info.config?.disks).toEqual([]);
    expect(d2.keptFile).toMatch(new RegExp(`^${home}/kept-disks/disks-disk0-`));
    expect((await stat(d2.keptFile!)).isFile()).toBe(true);
    // Undo: attach the kept file again.
    const back = await call('disk.attach', { id: made.id, file: d2.keptFile! });
    expect(back.config?.disks.map((d) => d.path)).toEqual([d2.keptFile]);
  });

  it('job.cancel says when there is nothing to cancel', async () => {
    expect(await call('job.cancel', { opId: 'nothing-here' })).toMatchObject({ cancelled: false });
  });
});
