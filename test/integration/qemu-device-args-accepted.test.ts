// Real QEMU builds the machine for the device command lines of issue 12 part B that the guest tests do not
// boot: SATA disk + install disc + driver disc (odd paths), e1000e/e1000/rtl8139, SCSI and IDE disks, the sound
// card on the "none" backend, no tablet, and a host USB device (by vendor:product) that this host does not have. Started with -S; QMP answers only once every device is built.
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { VmConfig } from '../../main/api/schema.js';
import { buildQemuArgs } from '../../main/engines/qemu/args.js';
import { qemuCapabilities, requireQemuSystem } from '../../main/engines/qemu/host.js';
import { runtimeFiles } from '../../main/engines/qemu/layout.js';
import { QmpClient } from '../../main/engines/qemu/qmp.js';
import { createImage } from '../../main/platform/qemu-img.js';

const root = mkdtempSync(join(tmpdir(), 'vmdesk-qda-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

describe('real QEMU accepts the device command lines', () => {
  it('builds a Windows-style machine with sound, a driver disc and absent host USB devices', async () => {
    const bundleDir = join(root, 'My VM, copy');
    mkdirSync(join(bundleDir, 'disks'), { recursive: true });
    mkdirSync(join(bundleDir, 'logs'), { recursive: true });
    for (const d of ['a', 'b', 'c']) await createImage(join(bundleDir, 'disks', `${d}.qcow2`), 16 * 1024 * 1024, 'qcow2');
    const odd = join(root, 'odd,dir');
    mkdirSync(odd);
    writeFileSync(join(odd, 'install.iso'), Buffer.alloc(1024 * 1024));
    writeFileSync(join(odd, 'virtio-win,1.iso'), Buffer.alloc(1024 * 1024));
    const now = new Date().toISOString();
    const config = VmConfig.parse({
      schemaVersion: 1,
      id: randomUUID(),
      name: 'devices check',
      osType: 'windows',
      cpus: 1,
      memoryMiB: 128,
      cdrom: join(odd, 'install.iso'),
      virtioDrivers: join(odd, 'virtio-win,1.iso'),
      usbTablet: false,
      audio: 'none',
      // (by bus/address only a device that is there: QEMU refuses to start without it, so start leaves one out)
      usb: [{ vendorId: 'fffe', productId: 'fffd' }],
      disks: [
        { id: 'a', path: 'disks/a.qcow2', format: 'qcow2', owned: true, bus: 'sata' },
        { id: 'b', path: 'disks/b.qcow2', format: 'qcow2', owned: true, bus: 'scsi' },
        { id: 'c', path: 'disks/c.qcow2', format: 'qcow2', owned: true, bus: 'ide' },
      ],
      network: [
        { mode: 'nat', model: 'e1000e', forwards: [] },
        { mode: 'nat', model: 'e1000', forwards: [] },
        { mode: 'nat', model: 'rtl8139', forwards: [] },
      ],
      createdAt: now,
      modifiedAt: now,
    });
    const qemu = requireQemuSystem();
    const caps = await qemuCapabilities(qemu);
    const runtimeDir = mkdtempSync(join(root, 'rt-'));
    const args = buildQemuArgs({ config, bundleDir, runtimeDir, accel: 'tcg', capabilities: { sandbox: caps.sandbox }, paused: true, audio: { driver: 'none' } });
    let stderr = '';
    const child = spawn(qemu, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    child.stderr.on('data', (d) => (stderr += d));
    const exited = new Promise<void>((r) => child.on('exit', () => r()));
    try {
      const qmpPath = runtimeFiles(runtimeDir).qmp;
      for (let i = 0; i < 200 && !existsSync(qmpPath) && child.exitCode === null; i++) await new Promise((r) => setTimeout(r, 50));
      if (child.exitCode !== null || !existsSync(qmpPath)) throw new Error(`QEMU rejected the arguments: ${stderr}`);
      const qmp = await QmpClient.connect(qmpPath).catch((e: Error) => {
        throw new Error(`${e.message}; QEMU said: ${stderr}`);
      });
      expect(await qmp.execute('query-status')).toMatchObject({ status: 'prelaunch' });
      const devices = ((await qmp.execute('qom-list', { path: '/machine/peripheral' })) as { name: string }[]).map((d) => d.name);
      expect(devices).toEqual(expect.arrayContaining(['cdrom0', 'cdrom1', 'sound0', 'sound0-codec0', 'usbhost-fffe-fffd', 'nic0', 'nic1', 'nic2', 'vd-a', 'vd-b', 'vd-c']));
      expect(devices).not.toContain('tablet0');
      expect(await qmp.execute('qom-get', { path: '/machine/peripheral/nic0', property: 'type' })).toBe('e1000e');
      await qmp.execute('quit').catch(() => undefined);
      qmp.close();
      await exited;
    } finally {
      child.kill('SIGKILL');
    }
  }, 60_000);
});
