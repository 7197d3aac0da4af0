// Every kind of bad input gets one clear line on stderr, a specific exit code, and changes nothing on disk.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chmod, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import os from 'node:os';
import { guestPaths } from '../guest/guest.js';
import { stopDaemon, tempHome, treeSnapshot, vmdesk, vmdeskJson } from '../helpers/cli.js';

const { kernel, initrd } = guestPaths();
const hostCpus = os.cpus().length;
const hostMemMiB = Math.floor(os.totalmem() / 1024 / 1024);

describe('bad input', () => {
  let home: string;
  let files: string;

  beforeAll(async () => {
    home = await tempHome();
    files = await tempHome('vmdesk-files-');
    await writeFile(path.join(files, 'disk.raw'), Buffer.alloc(1024 * 1024));
    await mkdir(path.join(files, 'a,b'));
    await writeFile(path.join(files, 'a,b', 'k'), 'x');
    await mkdir(path.join(files, 'adir'));
    const first = await vmdesk(home, ['create', 'taken', '--memory', '64']);
    expect(first.code, first.stderr).toBe(0);
  });

  afterAll(async () => {
    await vmdesk(home, ['kill', 'runner']).catch(() => {});
    await stopDaemon(home);
    await rm(home, { recursive: true, force: true });
    await rm(files, { recursive: true, force: true });
  });

  const cases: [string, () => string[], number, RegExp][] = [
    ['empty name', () => ['create', ''], 2, /name must not be empty/],
    ['duplicate name', () => ['create', 'taken'], 4, /already exists/],
    ['duplicate name, other case', () => ['create', 'TAKEN'], 4, /already exists/],
    ['too long name', () => ['create', 'x'.repeat(65)], 2, /at most 64/],
    ['path-like name ../x', () => ['create', '../x'], 2, /name/],
    ['path-like name a/b', () => ['create', 'a/b'], 2, /name may contain/],
    ['zero CPUs', () => ['create', 'v', '--cpus', '0'], 2, /at least 1 CPU/],
    ['negative CPUs', () => ['create', 'v', '--cpus', '-3'], 2, /CPU/],
    ['absurd CPUs', () => ['create', 'v', '--cpus', '100000'], 2, /at most 256/],
    ['more CPUs than the host', () => ['create', 'v', '--cpus', String(hostCpus + 1)], 2, /this host has only/],
    ['zero memory', () => ['create', 'v', '--memory', '0'], 2, /at least 16/],
    ['absurd memory', () => ['create', 'v', '--memory', '999999999999'], 2, /at most 4 TiB of memory/],
    ['more memory than the host', () => ['create', 'v', '--memory', String(hostMemMiB + 1024)], 2, /this host has only/],
    ['zero disk', () => ['create', 'v', '--disk', '0'], 2, /disk/],
    ['negative disk', () => ['create', 'v', '--disk', '-5G'], 2, /invalid size/],
    ['absurd disk', () => ['create', 'v', '--disk', '999T'], 2, /larger than the limit of 64 TiB/],
    ['disk without a unit', () => ['create', 'v', '--disk', '1'], 2, /at least 1 MiB \(give a unit/],
    ['missing ISO', () => ['create', 'v', '--iso', '/nonexistent/x.iso'], 2, /does not exist/],
    ['ISO that is a directory', () => ['create', 'v', '--iso', path.join(files, 'adir')], 2, /not a regular file/],
    ['missing kernel', () => ['create', 'v', '--kernel', '/nonexistent/vmlinuz'], 2, /kernel .* does not exist/],
    ['missing initrd', () => ['create', 'v', '--kernel', kernel, '--initrd', '/nope/initrd'], 2, /initrd .* does not exist/],
    ['missing disk', () => ['create', 'v', '--attach', '/nonexistent/disk.qcow2'], 2, /does not exist/],
    ['path with a comma', () => ['create', 'v', '--kernel', path.join(files, 'a,b', 'k')], 2, /comma/],
    ['path with a newline', () => ['create', 'v', '--iso', '/tmp/a\nb.iso'], 2, /newline/],
    ['cmdline with a newline', () => ['create', 'v', '--kernel', kernel, '--cmdline', 'a\nb'], 2, /newline/],
    ['bad forward', () => ['create', 'v', '--forward', 'tcp:99999:80'], 2, /ports must be/],
    ['forward without NAT', () => ['create', 'v', '--net', 'none', '--forward', 'tcp:2222:22'], 2, /--forward needs a nat or nat-host adapter \(--net nat\)/],
    ['unknown accel', () => ['create', 'v', '--accel', 'warp'], 2, /accel/],
    ['unknown option', () => ['create', 'v', '--frobnicate'], 2, /frobnicate/],
    ['unknown VM', () => ['start', 'ghost'], 3, /no VM named "ghost"/],
    ['unknown verb', () => ['explode'], 2, /unknown verb/],
    ['stop a stopped VM', () => ['stop', 'taken'], 6, /cannot shut down "taken" while it is stopped/],
    ['bad stop timeout', () => ['stop', 'taken', '--timeout', 'soon'], 2, /whole number/],
    // Issue 12 part B: presets, devices, USB passthrough, save state.
    ['windows11 preset on BIOS', () => ['create', 'v', '--preset', 'windows11', '--firmware', 'bios'], 2, /the windows11 preset needs UEFI firmware .* leave out --firmware bios/],
    ['unknown preset', () => ['create', 'v', '--preset', 'winxp'], 2, /--preset must be one of windows11/],
    ['Secure Boot without UEFI', () => ['create', 'v', '--secure-boot', 'on'], 2, /Secure Boot needs UEFI firmware: add --firmware uefi/],
    ['TPM on the micro-VMM', () => ['create', 'v', '--engine', 'microvm', '--kernel', kernel, '--tpm', 'on'], 2, /the microvm engine has no TPM/],
    ['unknown disk bus', () => ['create', 'v', '--disk', '1G', '--disk-bus', 'nvme'], 2, /--disk-bus must be one of virtio, sata, ide, scsi/],
    ['missing driver disc', () => ['create', 'v', '--virtio-drivers', '/nonexistent/virtio-win.iso'], 2, /does not exist/],
    ['unknown sound backend', () => ['set', 'taken', '--audio', 'oss'], 2, /--audio must be one of auto, pipewire, pa, alsa, none or off/],
    ['short USB id', () => ['usb', 'add', 'taken', '046d:c52'], 2, /VENDOR:PRODUCT in hexadecimal/],
    ['USB id with a comma', () => ['usb', 'add', 'taken', '046d:c52b,hostbus=1'], 2, /VENDOR:PRODUCT in hexadecimal/],
    ['USB bus without address', () => ['usb', 'add', 'taken', '--bus', '1'], 2, /both --bus and --addr/],
    ['USB device not passed through', () => ['usb', 'remove', 'taken', '046d:c52b'], 3, /"taken" has no USB device 046d:c52b passed through/],
    ['suspend a stopped VM', () => ['suspend', 'taken'], 6, /cannot save the state of "taken" while it is stopped/],
    ['discard a state that is not there', () => ['discard-state', 'taken'], 6, /cannot discard the saved state of "taken" while it is stopped/],
  ];

  it.each(cases)('%s', async (_label, args, code, message) => {
    const before = await treeSnapshot(home);
    const r = await vmdesk(home, args());
    expect(r.code, r.stderr).toBe(code);
    expect(r.stderr).toMatch(message);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/^vmdesk: /);
    expect(r.stdout).toBe('');
    expect(await treeSnapshot(home)).toEqual(before);
  });

  it('an unreadable ISO is refused (when not running as root, which reads everything)', async () => {
    if (process.getuid?.() === 0) return;
    const iso = path.join(files, 'secret.iso');
    await writeFile(iso, 'x');
    await chmod(iso, 0);
    const r = await vmdesk(home, ['create', 'v', '--iso', iso]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/not readable/);
  });

  it('a missing QEMU is reported with how to install it, and nothing starts', async () => {
    // QEMU is looked up by the daemon, in its environment: a daemon started where VMDESK_QEMU names nothing.
    await stopDaemon(home);
    const before = await treeSnapshot(home);
    try {
      const r = await vmdesk(home, ['start', 'taken'], { env: { VMDESK_QEMU: '/nonexistent/qemu-system-x86_64' } });
      expect(r.code).toBe(7);
      expect(r.stderr).toMatch(/QEMU.*not found/i);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
      expect(await treeSnapshot(home)).toEqual(before);
      expect((await vmdeskJson(home, ['info', 'taken'])).state).toBe('stopped');
    } finally {
      // The next tests need a daemon that finds QEMU.
      await stopDaemon(home);
    }
  });

  it('a corrupt vm.json marks that VM broken and the others still load', async () => {
    await vmdeskJson(home, ['create', 'victim', '--memory', '64']);
    const victim = await vmdeskJson(home, ['info', 'victim']);
    const file = path.join(victim.bundle, 'vm.json');
    const good = await readFile(file, 'utf8');
    await writeFile(file, good.slice(0, 40));
    // The daemon holds the library in memory: a bundle edited behind its back is read by the next daemon.
    await stopDaemon(home);
    const list = await vmdeskJson<any[]>(home, ['list']);
    expect(list.find((v) => v.id === victim.id).broken).toMatch(/not valid JSON/);
    expect(list.find((v) => v.name === 'taken').state).toBe('stopped');
    const start = await vmdesk(home, ['start', victim.id]);
    expect(start.code).toBe(9);
    expect(start.stderr.trim().split('\n')).toHaveLength(1);
    await writeFile(file, good);
    await stopDaemon(home);
    expect((await vmdeskJson(home, ['info', 'victim'])).broken).toBeUndefined();
  });

  it('a disk used by a running VM cannot be attached or started elsewhere', async () => {
    const disk = path.join(files, 'shared.qcow2');
    const { execFileSync } = await import('node:child_process');
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', disk, '32M']);
    await vmdeskJson(home, ['create', 'runner', '--memory', '128', '--accel', 'tcg', '--attach', disk, '--kernel', kernel, '--initrd', initrd, '--cmdline', 'console=ttyS0', '--net', 'none']);
    await vmdeskJson(home, ['create', 'other', '--memory', '128', '--accel', 'tcg', '--attach', disk, '--kernel', kernel, '--initrd', initrd, '--net', 'none']);
    await vmdeskJson(home, ['start', 'runner']);
    const before = await treeSnapshot(home);
    const attach = await vmdesk(home, ['create', 'third', '--attach', disk]);
    expect(attach.code).toBe(5);
    expect(attach.stderr).toMatch(/in use by running VM "runner"/);
    const start = await vmdesk(home, ['start', 'other']);
    expect(start.code).toBe(5);
    expect(start.stderr).toMatch(/in use/);
    const set = await vmdesk(home, ['set', 'runner', '--cpus', '1']);
    expect(set.code).toBe(6);
    // Which setting, and why it waits for a shutdown.
    expect(set.stderr).toMatch(/cannot change cpus while "runner" is running: .+; shut it down first/);
    const del = await vmdesk(home, ['delete', 'runner']);
    expect(del.code).toBe(6);
    expect(await treeSnapshot(home).then((t) => t.filter((l) => !l.includes('logs/')))).toEqual(before.filter((l) => !l.includes('logs/')));
    await vmdesk(home, ['kill', 'runner']);
  });
});
