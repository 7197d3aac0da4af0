// Guest integration with real QEMU (issue 12, part A), through dispatch as a client would, on the test guest
// (test/guest/build.sh: qemu-ga, vdagent-test, virtiofs and virtio_console modules):
// - virtiofs shares mounted in the guest read and write host files; a read-only share refuses writes even when
//   the guest mounts it read-write (enforced on the host);
// - the clipboard both ways: a VNC client speaking the extended clipboard pseudo-encoding (as noVNC does) and
//   the guest's vdagent-test on com.redhat.spice.0 (QEMU's qemu-vdagent in between);
// - SetDesktopSize reaches QEMU: forwarded to the guest for virtio-vga, refused as "invalid layout" for VGA;
// - the guest agent (the real qemu-ga) answers with host name and addresses; live snapshots freeze the guest's
//   file systems (its fsfreeze hook prints on the console) only while the agent answers.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Core } from '../../main/core/core.js';
import { dispatch } from '../../main/daemon/dispatch.js';
import type { RpcMethod, RpcParams, RpcResult } from '../../main/api/rpc.js';
import { SerialConsole as Console, until } from '../helpers/serial-console.js';
import { guestPaths, GUEST_READY_MARKER } from '../guest/guest.js';
import { VncTestClient } from '../helpers/vnc-client.js';

let tmp: string;
let home: string;
let core: Core;

function call<M extends RpcMethod>(method: M, params: RpcParams<M>): Promise<RpcResult<M>> {
  return dispatch(core, method, params, { emit: () => {} }) as Promise<RpcResult<M>>;
}

const { kernel, initrd } = guestPaths();

async function bootVm(name: string, extra: Record<string, unknown>): Promise<Console> {
  await call('vm.create', { name, memoryMiB: 256, diskBytes: 16 * 1024 * 1024, directKernel: { kernel, initrd, cmdline: 'console=ttyS0 quiet' }, ...extra } as never);
  await call('vm.start', { id: name });
  const con = new Console(core.openSerial(name));
  await con.waitFor(new RegExp(GUEST_READY_MARKER));
  return con;
}

beforeAll(async () => {
  tmp = await mkdtemp(path.join(os.tmpdir(), 'vmd-guest-'));
  home = path.join(tmp, 'home');
  core = new Core({ home });
  await core.boot();
});

afterAll(async () => {
  for (const vm of await core.list()) if (vm.state !== 'stopped' && vm.state !== 'crashed') await core.kill(vm.id).catch(() => {});
  await core.shutdown();
  await rm(tmp, { recursive: true, force: true });
});

describe('shared folders are checked before they are kept', () => {
  it('refuses the library, folders holding it, files, missing paths, and keeps the real path', async () => {
    await call('vm.create', { name: 'checks', memoryMiB: 64, directKernel: { kernel, initrd, cmdline: '' } });
    const share = (hostPath: string, more: Record<string, unknown> = {}) => call('share.add', { id: 'checks', hostPath, ...more } as never);
    await expect(share(home)).rejects.toMatchObject({ code: 'EINVAL', message: expect.stringMatching(/inside the VMDesk library/) });
    await expect(share(path.join(home, 'vms'))).rejects.toMatchObject({ code: 'EINVAL' });
    await expect(share(tmp)).rejects.toMatchObject({ code: 'EINVAL', message: expect.stringMatching(/holds the VMDesk library/) });
    await expect(share('/')).rejects.toMatchObject({ code: 'EINVAL' });
    await expect(share(path.join(tmp, 'nope'))).rejects.toMatchObject({ code: 'ENOTFOUND' });
    await writeFile(path.join(tmp, 'file.txt'), 'x');
    await expect(share(path.join(tmp, 'file.txt'))).rejects.toMatchObject({ code: 'EINVAL', message: expect.stringMatching(/not a folder/) });
    await expect(share('relative/dir')).rejects.toMatchObject({ code: 'EINVAL' });
    await expect(share('/tmp/a\nb')).rejects.toMatchObject({ code: 'EINVAL' });
    // A folder reached through a symlink is kept by its real path; its tag comes from that folder's name.
    const outside = await mkdtemp(path.join(os.tmpdir(), 'vmd-share-real '));
    await symlink(outside, path.join(tmp, 'link'));
    try {
      const info = await share(path.join(tmp, 'link'), { readOnly: true });
      expect(info.config?.shares).toEqual([{ tag: path.basename(outside).replace(/ /g, ''), hostPath: outside, readOnly: true }]);
      await expect(share(outside)).rejects.toMatchObject({ code: 'EEXIST' });
      await expect(share(os.tmpdir(), { tag: 'bad,tag' })).rejects.toMatchObject({ code: 'EINVAL' });
      const listing = await call('share.list', { id: 'checks' });
      expect(listing.shares[0]!.mount).toMatch(/^mount -t (virtiofs|9p) .*-o ro|,ro /);
      await call('share.remove', { id: 'checks', tag: listing.shares[0]!.tag });
      expect((await call('vm.get', { id: 'checks' })).config?.shares).toBeUndefined();
      await expect(call('share.remove', { id: 'checks', tag: 'gone' })).rejects.toMatchObject({ code: 'ENOTFOUND' });
    } finally {
      await rm(outside, { recursive: true, force: true });
    }
  });

  it('the micro-VMM says it has none of the guest integration devices', async () => {
    const dk = { kernel, initrd, cmdline: '' };
    await expect(call('vm.create', { name: 'mv1', engine: 'microvm', memoryMiB: 64, directKernel: dk, clipboard: true })).rejects.toMatchObject({ code: 'EINVAL', message: expect.stringMatching(/microvm engine has no shared clipboard/) });
    await expect(call('vm.create', { name: 'mv2', engine: 'microvm', memoryMiB: 64, directKernel: dk, display: 'virtio' })).rejects.toMatchObject({ message: expect.stringMatching(/no resizable display/) });
    const mv = await call('vm.create', { name: 'mv3', engine: 'microvm', memoryMiB: 64, directKernel: dk });
    expect(mv.config?.guestAgent).toBeUndefined();
    await expect(call('share.add', { id: 'mv3', hostPath: os.tmpdir() })).rejects.toMatchObject({ code: 'EINVAL', message: expect.stringMatching(/has no shared folders/) });
    await expect(call('vm.update', { id: 'mv3', patch: { guestAgent: true } })).rejects.toMatchObject({ message: expect.stringMatching(/no guest agent channel/) });
  });
});

describe('a guest with shares, clipboard, virtio-vga and the agent', () => {
  let con: Console;
  let rw: string;
  let ro: string;

  beforeAll(async () => {
    rw = path.join(tmp, 'rw');
    ro = path.join(tmp, 'ro');
    await mkdir(rw);
    await mkdir(ro);
    await writeFile(path.join(rw, 'from-host.txt'), 'hello from the host\n');
    await writeFile(path.join(ro, 'keep.txt'), 'read me only\n');
    const info = await call('vm.create', { name: 'gi', memoryMiB: 256, diskBytes: 16 * 1024 * 1024, directKernel: { kernel, initrd, cmdline: 'console=ttyS0 quiet' }, clipboard: true });
    // New Linux VMs get the agent channel and virtio-vga; the clipboard only because it was asked for.
    expect(info.config).toMatchObject({ guestAgent: true, display: 'virtio', clipboard: true });
    await call('share.add', { id: 'gi', hostPath: rw, tag: 'rw' });
    await call('share.add', { id: 'gi', hostPath: ro, tag: 'ro', readOnly: true });
    await call('vm.start', { id: 'gi' });
    con = new Console(core.openSerial('gi'));
    await con.waitFor(new RegExp(GUEST_READY_MARKER));
  }, 240_000);

  afterAll(() => con?.close());

  it('lists the shares with the driver the running guest has and the mount command', async () => {
    const l = await call('share.list', { id: 'gi' });
    expect(l.shares.map((s) => [s.tag, s.active?.driver, s.mount])).toEqual([
      ['rw', 'virtiofs', 'mount -t virtiofs rw /mnt/rw'],
      ['ro', 'virtiofs', 'mount -t virtiofs -o ro ro /mnt/ro'],
    ]);
    await expect(call('share.add', { id: 'gi', hostPath: os.tmpdir() })).rejects.toMatchObject({ code: 'ESTATE' });
  });

  it('reads and writes host files through a virtiofs share', async () => {
    expect((await con.run('mkdir -p /mnt/rw && mount -t virtiofs rw /mnt/rw')).status).toBe(0);
    expect((await con.run('cat /mnt/rw/from-host.txt')).output).toContain('hello from the host');
    expect((await con.run('echo written-by-guest > /mnt/rw/from-guest.txt && sync')).status).toBe(0);
    expect(await readFile(path.join(rw, 'from-guest.txt'), 'utf8')).toBe('written-by-guest\n');
    await writeFile(path.join(rw, 'later.txt'), 'changed on the host');
    expect((await con.run('cat /mnt/rw/later.txt')).output).toContain('changed on the host');
  }, 120_000);

  it('keeps a read-only share read-only even when the guest mounts it read-write', async () => {
    // No "-o ro" here: the refusal comes from the host side (virtiofsd serves a read-only bind mount).
    expect((await con.run('mkdir -p /mnt/ro && mount -t virtiofs ro /mnt/ro')).status).toBe(0);
    expect((await con.run('cat /mnt/ro/keep.txt')).output).toContain('read me only');
    const w = await con.run('echo nope > /mnt/ro/new.txt');
    expect(w.status).not.toBe(0);
    expect(w.output).toMatch(/Read-only file system/);
    expect((await con.run('rm /mnt/ro/keep.txt')).status).not.toBe(0);
    expect(await readFile(path.join(ro, 'keep.txt'), 'utf8')).toBe('read me only\n');
  }, 120_000);

  it('refuses a live snapshot plainly while virtiofs shares are attached', async () => {
    await expect(call('snapshot.take', { id: 'gi', name: 'with-shares' })).rejects.toMatchObject({ code: 'EINVAL', message: expect.stringMatching(/virtiofs shared folders \(rw, ro\)/) });
  });

  it('reports the guest agent\'s host name and addresses', async () => {
    const r = await until('the guest agent', () => call('vm.guestAgent', { id: 'gi' }), (x) => x.ok, 60_000);
    expect(r.hostname).toBe('vmdesk-guest');
    const eth0 = r.interfaces.find((i) => i.name === 'eth0');
    expect(eth0?.addresses).toContainEqual({ address: '10.0.2.15', prefix: 24, family: 'ipv4' });
    expect(eth0?.mac).toBe((await call('vm.get', { id: 'gi' })).config?.network[0]?.mac);
    const info = await call('vm.guestInfo', { id: 'gi' });
    expect(info.hostname).toBe('vmdesk-guest');
    expect(info.addresses).toContainEqual(expect.objectContaining({ address: '10.0.2.15', source: 'guest-agent', interface: 'eth0' }));
  }, 90_000);

  it('carries clipboard text from the host to the guest and back through the VNC clipboard extension', async () => {
    await con.waitFor(/vmdesk-clip: ready/);
    const vnc = await VncTestClient.connect((await call('vm.vncSocket', { id: 'gi' })).path);
    try {
      await until('the server\'s clipboard capabilities', () => vnc.serverCaps, (x) => x, 10_000);
      vnc.setClipboard('vmdesk host text 4711');
      await con.waitFor(/vmdesk-clip: from host: vmdesk host text 4711/, 30_000);
      await con.run('echo "guest says 0815" > /tmp/clip-to-host');
      const got = await until('the guest\'s clipboard on the VNC client', () => vnc.clipboardFromServer, (l) => l.includes('guest says 0815'), 30_000);
      expect(got).toContain('guest says 0815');
    } finally {
      vnc.close();
    }
  }, 90_000);

  it('forwards a display size request to the guest for virtio-vga', async () => {
    const vnc = await VncTestClient.connect((await call('vm.vncSocket', { id: 'gi' })).path);
    try {
      vnc.requestSize(1024, 768);
      const replies = await until('the ExtendedDesktopSize reply', () => vnc.resizes, (l) => l.some((r) => r.reason === 1), 10_000);
      // 4: "request forwarded" (the display device takes the size; its guest driver sets the mode).
      expect(replies.find((r) => r.reason === 1)?.status).toBe(4);
    } finally {
      vnc.close();
    }
  }, 30_000);
});

describe('live snapshots and the guest agent', () => {
  let con: Console;
  beforeAll(async () => {
    con = await bootVm('snap', { display: 'vga' });
  }, 240_000);
  afterAll(() => con?.close());

  it('freezes the guest\'s file systems around a live snapshot while the agent answers, and not when it does not', async () => {
    await until('the guest agent', () => call('vm.guestAgent', { id: 'snap' }), (x) => x.ok, 60_000);
    const before = con.out.length;
    await call('snapshot.take', { id: 'snap', name: 'frozen' });
    const during = con.out.slice(before);
    expect(during).toMatch(/fsfreeze-hook freeze[\s\S]*fsfreeze-hook thaw/);
    const bundle = (await call('vm.get', { id: 'snap' })).bundle;
    const qemuLog = await readFile(path.join(bundle, 'logs', 'qemu.log'), 'utf8');
    expect(qemuLog).toMatch(/vmdesk: guest file systems frozen for the snapshot[\s\S]*vmdesk: guest file systems thawed/);

    // No agent in the guest any more: the snapshot is taken at once, without a freeze, and the log says why.
    await con.run('killall qemu-ga; sleep 1');
    const after = con.out.length;
    const t0 = Date.now();
    await call('snapshot.take', { id: 'snap', name: 'not-frozen' });
    expect(con.out.slice(after)).not.toMatch(/fsfreeze-hook/);
    expect(Date.now() - t0).toBeLessThan(60_000);
    const qemuLog2 = await readFile(path.join(bundle, 'logs', 'qemu.log'), 'utf8');
    expect(qemuLog2.slice(qemuLog.length)).toMatch(/snapshot taken without freezing the guest's file systems: no guest agent is running in the guest/);
    const r = await call('vm.guestAgent', { id: 'snap' });
    expect(r).toMatchObject({ ok: false, reason: expect.stringMatching(/no guest agent is running/) });
  }, 240_000);

  it('refuses a display size request for standard VGA (it cannot follow the console)', async () => {
    const vnc = await VncTestClient.connect((await call('vm.vncSocket', { id: 'snap' })).path);
    try {
      vnc.requestSize(1024, 768);
      const replies = await until('the ExtendedDesktopSize reply', () => vnc.resizes, (l) => l.some((r) => r.reason === 1), 10_000);
      expect(replies.find((r) => r.reason === 1)?.status).toBe(3);
    } finally {
      vnc.close();
    }
  }, 30_000);
});

/** The test guest on Debian's generic kernel (VMDESK_GUEST_FLAVOUR=desktop): virtio-gpu and 9p drivers. */
function desktopGuest(): { kernel: string; initrd: string } {
  const dir = path.resolve('.cache', 'guest-desktop');
  const k = path.join(dir, 'vmlinuz');
  const i = path.join(dir, 'initrd.cpio.gz');
  if (!existsSync(k) || !existsSync(i)) throw new Error(`desktop test guest not built (${dir}): run VMDESK_GUEST_FLAVOUR=desktop npm run test:guest`);
  return { kernel: k, initrd: i };
}

describe('a guest with a virtio-gpu driver and 9p shares', () => {
  let con: Console;
  let nine: string;
  let nineRo: string;

  beforeAll(async () => {
    const g = desktopGuest();
    nine = path.join(tmp, 'nine');
    nineRo = path.join(tmp, 'nine-ro');
    await mkdir(nine);
    await mkdir(nineRo);
    await writeFile(path.join(nine, 'host.txt'), 'over 9p\n');
    await writeFile(path.join(nineRo, 'keep.txt'), 'not yours\n');
    await call('vm.create', { name: 'desk', memoryMiB: 256, directKernel: { kernel: g.kernel, initrd: g.initrd, cmdline: 'console=ttyS0 quiet' }, network: [{ mode: 'none', forwards: [] }] });
    await call('share.add', { id: 'desk', hostPath: nine, tag: 'nine', driver: '9p' });
    await call('share.add', { id: 'desk', hostPath: nineRo, tag: 'nine-ro', driver: '9p', readOnly: true });
    await call('vm.start', { id: 'desk' });
    con = new Console(core.openSerial('desk'));
    await con.waitFor(new RegExp(GUEST_READY_MARKER));
  }, 240_000);

  afterAll(() => con?.close());

  it('resizes the guest display when the console asks: the VNC framebuffer follows', async () => {
    // The guest's virtio-gpu driver has taken the display over from the VGA-compatible mode.
    await until('the guest\'s virtio-gpu framebuffer', () => con.run('cat /sys/class/graphics/fb0/name'), (r) => /virtio_gpudrmfb/.test(r.output), 30_000);
    const vnc = await VncTestClient.connect((await call('vm.vncSocket', { id: 'desk' })).path);
    try {
      expect([vnc.width, vnc.height]).toEqual([1280, 800]);
      vnc.requestSize(1024, 768);
      // QEMU forwards the request (status 4); the guest's driver sets the mode; the framebuffer changes.
      await until('the framebuffer to become 1024x768', () => vnc.resizes, (l) => l.some((r) => r.reason !== 1 && r.width === 1024 && r.height === 768), 30_000);
      expect(vnc.resizes.find((r) => r.reason === 1)?.status).toBe(4);
      expect([vnc.width, vnc.height]).toEqual([1024, 768]);
      const shot = Buffer.from((await call('vm.screenshot', { id: 'desk' })).png, 'base64');
      expect([shot.readUInt32BE(16), shot.readUInt32BE(20)]).toEqual([1024, 768]);
      vnc.requestSize(800, 600);
      await until('the framebuffer to become 800x600', () => [vnc.width, vnc.height], ([w, h]) => w === 800 && h === 600, 30_000);
    } finally {
      vnc.close();
    }
  }, 90_000);

  it('reads and writes host files through a 9p share, and a read-only 9p share refuses writes', async () => {
    const l = await call('share.list', { id: 'desk' });
    expect(l.shares.map((s) => s.active?.driver)).toEqual(['9p', '9p']);
    expect((await con.run(`mkdir -p /mnt/nine && ${l.shares[0]!.mount}`)).status).toBe(0);
    expect((await con.run('cat /mnt/nine/host.txt')).output).toContain('over 9p');
    expect((await con.run('echo from-guest > /mnt/nine/guest.txt && sync')).status).toBe(0);
    expect(await readFile(path.join(nine, 'guest.txt'), 'utf8')).toBe('from-guest\n');
    // Mounted without "ro": QEMU's readonly=on refuses the write.
    expect((await con.run('mkdir -p /mnt/ro9 && mount -t 9p -o trans=virtio,version=9p2000.L nine-ro /mnt/ro9')).status).toBe(0);
    expect((await con.run('cat /mnt/ro9/keep.txt')).output).toContain('not yours');
    const w = await con.run('echo x > /mnt/ro9/new.txt');
    expect(w.status).not.toBe(0);
    expect(w.output).toMatch(/Read-only file system/);
    expect(existsSync(path.join(nineRo, 'new.txt'))).toBe(false);
  }, 90_000);
});
