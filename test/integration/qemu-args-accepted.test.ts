// Feeds real QEMU the command lines buildQemuArgs makes (odd paths included) and checks it builds the machine.
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { VmConfig } from '../../main/api/schema.js';
import { buildQemuArgs } from '../../main/engines/qemu/args.js';
import { checkFree, convert as imgConvert, createImage, imgInfo } from '../../main/platform/qemu-img.js';
const createQcow2 = (p: string, bytes: number) => createImage(p, bytes, 'qcow2');
const info = (p: string, format: string) => imgInfo(p, { format, shared: true });
const checkInUse = (p: string, format: string) => checkFree(p, format);
const convert = (src: string, srcFormat: string, dst: string, dstFormat: 'qcow2' | 'raw' | 'vpc') => imgConvert(src, dst, { srcFormat, dstFormat });
import { findUefiFirmware, qemuCapabilities, requireQemuSystem } from '../../main/engines/qemu/host.js';
import { runtimeFiles } from '../../main/engines/qemu/layout.js';
import { QmpClient } from '../../main/engines/qemu/qmp.js';
import { guestPaths } from '../guest/guest.js';
import { freePort } from '../helpers/ports.js';

const root = mkdtempSync(join(tmpdir(), 'vmdesk-qa-'));
// A bundle path with a comma and a space: both must survive QEMU's option parsing.
const bundleDir = join(root, 'My VM, copy');
const odd = join(root, 'odd,dir');

afterAll(() => rmSync(root, { recursive: true, force: true }));

beforeAll(async () => {
  mkdirSync(join(bundleDir, 'disks'), { recursive: true });
  mkdirSync(join(bundleDir, 'logs'), { recursive: true });
  mkdirSync(odd, { recursive: true });
  await createQcow2(join(bundleDir, 'disks', 'root.qcow2'), 16 * 1024 * 1024);
  writeFileSync(join(odd, 'data,old.img'), Buffer.alloc(1024 * 1024));
  writeFileSync(join(odd, 'install.iso'), Buffer.alloc(1024 * 1024));
  const { kernel, initrd } = guestPaths();
  copyFileSync(kernel, join(odd, 'vmlinuz'));
  copyFileSync(initrd, join(odd, 'initrd,gz'));
  const fw = findUefiFirmware();
  if (fw) await convert(fw.varsTemplate, 'raw', join(bundleDir, 'uefi-vars.qcow2'), 'qcow2');
});

function config(extra: Record<string, unknown>): VmConfig {
  const now = new Date().toISOString();
  return VmConfig.parse({ schemaVersion: 1, id: randomUUID(), name: 'args check', cpus: 1, memoryMiB: 128, createdAt: now, modifiedAt: now, ...extra });
}

/** Starts QEMU stopped (-S) and asks QMP for its status: QMP answers only once the machine is built. */
async function accepted(cfg: VmConfig, uefi = false): Promise<void> {
  const qemu = requireQemuSystem();
  const caps = await qemuCapabilities(qemu);
  const runtimeDir = mkdtempSync(join(root, 'rt-'));
  const fw = findUefiFirmware();
  const args = buildQemuArgs({
    config: cfg,
    bundleDir,
    runtimeDir,
    accel: 'tcg',
    capabilities: { sandbox: caps.sandbox },
    paused: true,
    ...(uefi && fw ? { uefi: { code: fw.code, vars: join(bundleDir, 'uefi-vars.qcow2') } } : {}),
  });
  let stderr = '';
  const child = spawn(qemu, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  child.stderr.on('data', (d) => (stderr += d));
  const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
  try {
    const qmpPath = runtimeFiles(runtimeDir).qmp;
    for (let i = 0; i < 200 && !existsSync(qmpPath) && child.exitCode === null; i++) await new Promise((r) => setTimeout(r, 50));
    if (child.exitCode !== null || !existsSync(qmpPath)) throw new Error(`QEMU rejected the arguments: ${stderr}`);
    const qmp = await QmpClient.connect(qmpPath).catch((e: Error) => {
      throw new Error(`${e.message}; QEMU said: ${stderr}`);
    });
    expect(await qmp.execute('query-status')).toMatchObject({ status: 'prelaunch' });
    await qmp.execute('quit').catch(() => undefined);
    qmp.close();
    await exited;
  } finally {
    child.kill('SIGKILL');
  }
}

describe('real QEMU accepts buildQemuArgs output', () => {
  it('disks (qcow2 + read-only raw with a comma) and a CD-ROM', async () => {
    await accepted(
      config({
        cdrom: join(odd, 'install.iso'),
        disks: [
          { id: 'root', path: 'disks/root.qcow2', format: 'qcow2', owned: true },
          { id: 'data', path: join(odd, 'data,old.img'), format: 'raw', owned: false, readOnly: true },
        ],
      }),
    );
  });

  it('direct kernel boot from comma paths, NAT with forwards, Windows clock', async () => {
    // QEMU binds the forwards' host ports: ports the kernel just handed out, not random ones that may be taken.
    const [tcpPort, udpPort] = [await freePort(), await freePort()];
    await accepted(
      config({
        osType: 'windows',
        directKernel: { kernel: join(odd, 'vmlinuz'), initrd: join(odd, 'initrd,gz'), cmdline: 'console=ttyS0 x=a,b' },
        network: [
          { mode: 'nat', mac: '52:54:00:aa:bb:cc', forwards: [{ protocol: 'tcp', hostPort: tcpPort, guestPort: 22 }] },
          { mode: 'nat', forwards: [{ protocol: 'udp', hostPort: udpPort, guestPort: 53 }] },
        ],
      }),
    );
  });

  it('SATA, IDE and SCSI disks, a linked base, VHD and e1000e/rtl8139/e1000 NICs', async () => {
    const base = join(root, 'base.qcow2');
    if (!existsSync(base)) await createQcow2(base, 16 * 1024 * 1024);
    const overlay = join(bundleDir, 'disks', 'overlay.qcow2');
    if (!existsSync(overlay)) await convert(join(bundleDir, 'disks', 'root.qcow2'), 'qcow2', overlay, 'qcow2');
    const vhd = join(root, 'old.vhd');
    if (!existsSync(vhd)) await convert(join(bundleDir, 'disks', 'root.qcow2'), 'qcow2', vhd, 'vpc');
    await accepted(
      config({
        cdrom: join(odd, 'install.iso'),
        disks: [
          { id: 'root', path: 'disks/overlay.qcow2', format: 'qcow2', owned: true, bus: 'sata', base },
          { id: 'old', path: vhd, format: 'vpc', owned: false, bus: 'ide' },
          { id: 'data', path: 'disks/root.qcow2', format: 'qcow2', owned: true, bus: 'scsi' },
        ],
        network: [
          { mode: 'nat', forwards: [], model: 'e1000e' },
          { mode: 'nat', forwards: [], model: 'rtl8139' },
          { mode: 'nat', forwards: [], model: 'e1000' },
        ],
      }),
    );
  });

  it('never opens a backing file named inside a disk image', async () => {
    const secret = join(root, 'host-secret.raw');
    writeFileSync(secret, Buffer.alloc(1024 * 1024, 0x41));
    const evil = join(bundleDir, 'disks', 'evil.qcow2');
    const { execFileSync } = await import('node:child_process');
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-F', 'raw', '-b', secret, evil, '1M']);
    // With the backing file switched off QEMU starts, and the guest would read zeros, not the host file:
    // proved by QEMU starting even once the named file is gone (an opened backing file would fail).
    rmSync(secret);
    await accepted(config({ disks: [{ id: 'evil', path: 'disks/evil.qcow2', format: 'qcow2', owned: true }] }));
  });

  it('no network', async () => {
    await accepted(config({ network: [{ mode: 'none', forwards: [] }] }));
  });

  it.runIf(findUefiFirmware())('UEFI with a qcow2 vars store', async () => {
    await accepted(config({ firmware: 'uefi' }), true);
  });
});
