// Boots the test guest through OVMF (UEFI) with the VM's own qcow2 variable store in its bundle.
import { randomUUID } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { VmConfig } from '../../main/api/schema.js';
import type { VmRuntime } from '../../main/engines/engine.js';
import { imgInfo } from '../../main/platform/qemu-img.js';
import { qemuEngine } from '../../main/engines/qemu/module.js';
import { SerialHub } from '../../main/core/serial.js';
import { findUefiFirmware } from '../../main/engines/qemu/host.js';
import { GUEST_READY_MARKER, guestPaths } from '../guest/guest.js';

const root = mkdtempSync(join(tmpdir(), 'vmdesk-qu-'));
let handle: VmRuntime | undefined;

afterAll(async () => {
  await handle?.kill().catch(() => undefined);
  rmSync(root, { recursive: true, force: true });
});

describe.runIf(findUefiFirmware())('QEMU engine with UEFI firmware', () => {
  it('boots through OVMF and keeps the vars store as qcow2 in the bundle', async () => {
    const { kernel, initrd } = guestPaths();
    const now = new Date().toISOString();
    const config = VmConfig.parse({
      schemaVersion: 1,
      id: randomUUID(),
      name: 'uefi-test',
      firmware: 'uefi',
      cpus: 1,
      memoryMiB: 256,
      directKernel: { kernel, initrd, cmdline: 'console=ttyS0' },
      network: [{ mode: 'none', forwards: [] }],
      createdAt: now,
      modifiedAt: now,
    });
    const bundleDir = join(root, 'bundle');
    handle = await qemuEngine.start({ config, bundleDir, runtimeDir: join(root, 'rt') });
    const vars = join(bundleDir, 'uefi-vars.qcow2');
    expect(existsSync(vars)).toBe(true);
    expect((await imgInfo(vars, { format: 'qcow2', shared: true })).format).toBe('qcow2');
    const serial = new SerialHub(handle.serial).open();
    let text = serial.history.toString();
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no marker; console tail:\n${text.slice(-500)}`)), 150_000);
      if (text.includes(GUEST_READY_MARKER)) {
        clearTimeout(timer);
        resolve();
      }
      serial.onData((d: Buffer) => {
        text += d.toString();
        if (text.includes(GUEST_READY_MARKER)) {
          clearTimeout(timer);
          resolve();
        }
      });
    });
    serial.close();
    expect((await handle.kill()).reason).toBe('killed');
  }, 180_000);
});
