// VMs on libvirt hosts through the `vmdesk` binary, against two private libvirt daemons on this machine
// (test/helpers/libvirtd.ts: root, each in its own mount namespace with its own host UUID), TCG domains of the
// test guest: hosts add/list/remove (bad URIs refused, an unreachable host fails fast, nothing secret stored),
// the golden definitions accepted by libvirt, create on a host, start, serial console round trip, live
// snapshot take/restore, live migration between the two hosts, stop, move to this machine and back with the
// disk's bytes intact, delete. One guest throughout.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import path from 'node:path';
import { guestPaths, GUEST_READY_MARKER } from '../guest/guest.js';
import { ConsoleSession, stopDaemon, tempHome, vmdesk, vmdeskJson } from '../helpers/cli.js';
import { libvirtdMissing, startLibvirtd, type PrivateLibvirtd } from '../helpers/libvirtd.js';

const missing = libvirtdMissing();
const goldenDir = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..', 'golden', 'libvirt');

describe.skipIf(!!missing)(`VMs on libvirt hosts${missing ? ` (skipped: ${missing})` : ''}`, () => {
  let home: string;
  let lab: PrivateLibvirtd;
  let lab2: PrivateLibvirtd;
  const { kernel, initrd } = guestPaths();

  beforeAll(async () => {
    home = await tempHome();
    [lab, lab2] = await Promise.all([startLibvirtd(), startLibvirtd()]);
  }, 120_000);

  afterAll(async () => {
    await vmdesk(home, ['kill', 'lv']).catch(() => {});
    await stopDaemon(home);
    await Promise.all([lab?.stop(), lab2?.stop()]);
    await rm(home, { recursive: true, force: true });
  });

  /** Runs commands on the guest's serial console (vmdesk console) and returns the output of the last. */
  async function onConsole(cmds: { send: string; expect: RegExp }[], ready = false): Promise<RegExpExecArray> {
    const con = new ConsoleSession(home, 'lv');
    try {
      if (ready) await con.waitFor(new RegExp(GUEST_READY_MARKER), 90_000);
      else {
        // A prompt to know the console is attached (the guest is idle: nothing else would come).
        con.send('\n');
        await con.waitFor(/# /, 30_000);
      }
      let m!: RegExpExecArray;
      for (const c of cmds) {
        con.send(c.send);
        m = await con.waitFor(c.expect, 30_000);
      }
      return m;
    } finally {
      await con.close();
    }
  }

  it('refuses bad host URIs and names, stores no secrets, and fails fast on a host that is not there', async () => {
    for (const [uri, why] of [
      ['qemu+ssh://alice:secret@lab/system', /password/],
      ['qemu+ssh://lab/system?no_verify=1', /verification/],
      ['qemu+ssh://lab/system?command=/bin/sh', /command/],
      ['http://lab/', /scheme/],
    ] as const) {
      const r = await vmdesk(home, ['hosts', 'add', 'bad', uri]);
      expect(r.code, r.stderr).toBe(2);
      expect(r.stderr).toMatch(why);
    }
    expect((await vmdesk(home, ['hosts', 'add', 'local', lab.uri])).stderr).toMatch(/local library/);
    const t0 = Date.now();
    const gone = await vmdesk(home, ['hosts', 'add', 'gone', `qemu+unix:///system?socket=${path.join(lab.dir, 'nothing-here')}`]);
    expect(Date.now() - t0).toBeLessThan(10_000);
    expect(gone.code).toBe(7);
    expect(gone.stderr).toMatch(/cannot reach host "gone".*nothing-here/);
    // Over ssh the same: ssh's own refusal, in seconds (no terminal to ask for a password on).
    const far = await vmdesk(home, ['hosts', 'add', 'far', 'qemu+ssh://nobody@127.0.0.1:1/system']);
    expect(far.code).toBe(7);
    expect(far.stderr).toMatch(/cannot reach host "far".*(ssh|refused)/);
    expect(await vmdeskJson(home, ['hosts', 'list'])).toEqual([]);
  });

  it('adds hosts, lists them with a check, and keeps only names, URIs and pools', async () => {
    expect((await vmdesk(home, ['hosts', 'add', 'lab', lab.uri])).code).toBe(0);
    expect((await vmdesk(home, ['hosts', 'add', 'lab2', lab2.uri])).code).toBe(0);
    const again = await vmdesk(home, ['hosts', 'add', 'other', lab.uri]);
    expect(again.code).toBe(4);
    expect(again.stderr).toMatch(/already added as host "lab"/);
    const hosts = await vmdeskJson(home, ['hosts', 'list', '--check']);
    expect(hosts.map((h: { name: string; reachable: boolean; version: string }) => [h.name, h.reachable, /libvirt \d/.test(h.version)])).toEqual([
      ['lab', true, true],
      ['lab2', true, true],
    ]);
    const file = path.join(home, 'hosts.json');
    expect(statSync(file).mode & 0o077).toBe(0);
    const stored = JSON.parse(readFileSync(file, 'utf8'));
    expect(Object.keys(stored.hosts[0]).sort()).toEqual(['addedAt', 'name', 'pool', 'uri']);
  });

  it('has libvirt accept every golden definition', () => {
    for (const f of readdirSync(goldenDir).filter((x: string) => x.endsWith('.xml'))) {
      // This machine has no KVM: the same definition as a TCG domain.
      const xml = readFileSync(path.join(goldenDir, f), 'utf8').replace("<domain type='kvm'>", "<domain type='qemu'>");
      const file = path.join(lab.dir, f);
      writeFileSync(file, xml);
      expect(lab.virsh('define', file)).toMatch(/defined/);
      const back = lab.virsh('dumpxml', '0b6e2d4e-6a1f-4d8e-9a51-3f1c2b7d9e10');
      expect(back).toContain('vmdesk.invalid/xmlns/libvirt/1');
      lab.virsh('undefine', '0b6e2d4e-6a1f-4d8e-9a51-3f1c2b7d9e10', '--nvram');
    }
  });

  it('creates a VM on a host, boots it, talks on its serial console, and snapshots and restores it live', async () => {
    const created = await vmdeskJson(home, ['create', 'lv', '--host', 'lab', '--memory', '256', '--disk', '64M', '--kernel', kernel, '--initrd', initrd, '--cmdline', 'console=ttyS0 quiet']);
    expect(created).toMatchObject({ name: 'lv', host: 'lab', state: 'stopped', config: { engine: 'libvirt', host: 'lab' } });
    expect(lab.virsh('list', '--all', '--name')).toMatch(/^lv$/m);
    expect(lab.virsh('vol-list', 'default')).toMatch(/-disk0\.qcow2/);

    const t0 = Date.now();
    const start = await vmdesk(home, ['start', 'lv']);
    expect(start.code, start.stderr).toBe(0);
    expect(start.stdout).toMatch(/on host lab/);
    expect(start.stderr).toMatch(/accelerator: tcg/);
    console.log(`libvirt: vmdesk start ${Date.now() - t0} ms`);
    expect((await vmdeskJson(home, ['list', '--host', 'lab'])).map((v: { name: string; state: string }) => [v.name, v.state])).toEqual([['lv', 'running']]);

    // The disk gets bytes that must survive every move below.
    await onConsole(
      [
        { send: 'echo result=$((6*7))\n', expect: /result=42/ },
        { send: 'echo vmdesk-moved-bytes | dd of=/dev/vda conv=fsync 2>/dev/null; echo before > /tmp/mark; echo wrote=$(head -c 18 /dev/vda)\n', expect: /wrote=vmdesk-moved-bytes/ },
      ],
      true,
    );

    const snap = await vmdeskJson(home, ['snapshot', 'take', 'lv', 's1']);
    expect(snap).toMatchObject({ name: 's1', kind: 'live' });
    expect(lab.virsh('snapshot-list', 'lv', '--name')).toMatch(/\S/);
    await onConsole([{ send: 'echo after > /tmp/mark; echo mark=$(cat /tmp/mark)\n', expect: /mark=after/ }]);
    const restored = await vmdesk(home, ['snapshot', 'restore', 'lv', 's1']);
    expect(restored.code, restored.stderr).toBe(0);
    expect((await vmdeskJson(home, ['info', 'lv'])).state).toBe('running');
    await onConsole([{ send: 'echo mark=$(cat /tmp/mark)\n', expect: /mark=before/ }]);

    // Snapshots stay with the disks they were taken in: a move refuses them, by name.
    const refused = await vmdesk(home, ['migrate', 'lv', '--to', 'lab2', '--live']);
    expect(refused.code).toBe(2);
    expect(refused.stderr).toMatch(/snapshots do not move/);
    const list = await vmdeskJson(home, ['snapshot', 'list', 'lv']);
    for (const s of list.snapshots ?? list) expect((await vmdesk(home, ['snapshot', 'delete', 'lv', s.id])).code).toBe(0);
    expect(lab.virsh('snapshot-list', 'lv', '--name').trim()).toBe('');
  }, 240_000);

  it('moves the running VM live to another libvirt host', async () => {
    const t0 = Date.now();
    const moved = await vmdesk(home, ['migrate', 'lv', '--to', 'lab2', '--live']);
    expect(moved.code, moved.stderr).toBe(0);
    expect(moved.stderr).toMatch(/moving "lv" to lab2: \d+%/);
    console.log(`libvirt: live migration lab -> lab2 ${Date.now() - t0} ms`);
    expect(await vmdeskJson(home, ['info', 'lv'])).toMatchObject({ host: 'lab2', state: 'running' });
    expect(lab.virsh('list', '--all', '--name').trim()).toBe('');
    expect(lab.virsh('vol-list', 'default')).not.toMatch(/vmdesk-/);
    expect(lab2.virsh('list', '--name')).toMatch(/^lv$/m);
    // The same guest, not a new boot: what it held in memory is still there, and its console follows it.
    await onConsole([{ send: 'echo mark=$(cat /tmp/mark)\n', expect: /mark=before/ }]);
    // The daemon goes and the guest stays; the next daemon finds it on its host again and follows it.
    expect((await vmdesk(home, ['daemon', 'stop'])).code).toBe(0);
    expect(await vmdeskJson(home, ['info', 'lv'])).toMatchObject({ host: 'lab2', state: 'running' });
    await onConsole([{ send: 'echo adopted=$((40+2))\n', expect: /adopted=42/ }]);
    // --host picks the VM on that host, and says where it is when it is not there.
    expect((await vmdeskJson(home, ['info', 'lv', '--host', 'lab2'])).state).toBe('running');
    const wrong = await vmdesk(home, ['info', 'lv', '--host', 'lab']);
    expect(wrong.code).toBe(3);
    expect(wrong.stderr).toMatch(/on host "lab2"/);
  }, 240_000);

  it('stops it, moves it to this machine and back with its disk, and deletes it from the host', async () => {
    const stopped = await vmdeskJson(home, ['stop', 'lv', '--timeout', '60']);
    expect(stopped).toMatchObject({ state: 'stopped', lastExit: { reason: 'shutdown' } });
    const busy = await vmdesk(home, ['hosts', 'remove', 'lab2']);
    expect(busy.code).toBe(5);
    expect(busy.stderr).toMatch(/VMs live on host "lab2": lv/);

    const home1 = await vmdesk(home, ['migrate', 'lv', '--to', 'local', '--no-start']);
    expect(home1.code, home1.stderr).toBe(0);
    expect(home1.stderr).toMatch(/copying disk disk0 from lab2/);
    const here = await vmdeskJson(home, ['info', 'lv']);
    expect(here.host).toBeUndefined();
    expect(here.config.engine).toBe('qemu');
    const disk = path.join(here.bundle, here.config.disks[0].path);
    expect(readFileSync(disk).subarray(0, 4)).toEqual(Buffer.from([0x51, 0x46, 0x49, 0xfb]));
    expect(lab2.virsh('list', '--all', '--name').trim()).toBe('');
    expect(lab2.virsh('vol-list', 'default')).not.toMatch(/vmdesk-/);

    const t0 = Date.now();
    const there = await vmdesk(home, ['migrate', 'lv', '--to', 'lab']);
    expect(there.code, there.stderr).toBe(0);
    expect(there.stderr).toMatch(/copying disk disk0 to lab: \d+%/);
    console.log(`libvirt: stopped move local -> lab and start ${Date.now() - t0} ms`);
    expect(await vmdeskJson(home, ['info', 'lv'])).toMatchObject({ host: 'lab', state: 'running' });
    // Booted afresh on lab from the disk that went lab -> lab2 -> here -> lab.
    await onConsole([{ send: 'echo got=$(head -c 18 /dev/vda)\n', expect: /got=vmdesk-moved-bytes/ }], true);

    expect((await vmdesk(home, ['kill', 'lv'])).code).toBe(0);
    const del = await vmdesk(home, ['delete', 'lv']);
    expect(del.code, del.stderr).toBe(0);
    expect(lab.virsh('list', '--all', '--name').trim()).toBe('');
    expect(lab.virsh('vol-list', 'default')).not.toMatch(/vmdesk-/);
    expect((await vmdesk(home, ['hosts', 'remove', 'lab'])).code).toBe(0);
    expect((await vmdeskJson(home, ['hosts', 'list'])).map((h: { name: string }) => h.name)).toEqual(['lab2']);
  }, 240_000);
});
