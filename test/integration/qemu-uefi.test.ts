// Boots the test guest through OVMF (UEFI) with the VM's own qcow2 variable store in its bundle.
import { randomUUID } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { VmConfig } from '../../main/api/schema.js';
import type { VmHandle } from '../../main/engines/engine.js';
import { checkFree, convert as imgConvert, createImage, imgInfo } from '../../main/platform/qemu-img.js';
const createQcow2 = (p: string, bytes: number) => createImage(p, bytes, 'qcow2');
const info = (p: string, format: string) => imgInfo(p, { format, shared: true });
const checkInUse = (p: string, format: string) => checkFree(p, format);
const convert = (src: string, srcFormat: string, dst: string, dstFormat: 'qcow2' | 'raw' | 'vpc') => imgConvert(src, dst, { srcFormat, dstFormat });
import { QemuEngine } from '../../main/engines/qemu/engine.js';
import { findUefiFirmware } from '../../main/engines/qemu/host.js';
import { GUEST_READY_MARKER, guestPaths } from '../guest/guest.js';

const root = mkdtempSync(join(tmpdir(), 'vmdesk-qu-'));
let handle: VmHandle | undefined;

afterAll(async () => {
  await handle?.kill().catch(() => undefined);
  handle?.close();
  rmSync(root, { recursive: true, force: true });
});

describe.runIf(findUefiFirmware())('QemuEngine with UEFI firmware', () => {
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
    const started = await new QemuEngine().start({ config, bundleDir, runtimeDir: join(root, 'rt') });
    handle = started.handle;
    const vars = join(bundleDir, 'uefi-vars.qcow2');
    expect(existsSync(vars)).toBe(true);
    expect((await info(vars, 'qcow2')).format).toBe('qcow2');
    const serial = await handle.openSerial();
    let text = '';
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no marker; console tail:\n${text.slice(-500)}`)), 150_000);
      serial.on('data', (d: Buffer) => {
        text += d.toString();
        if (text.includes(GUEST_READY_MARKER)) {
          clearTimeout(timer);
          resolve();
        }
      });
    });
    serial.destroy();
    expect((await handle.kill()).reason).toBe('killed');
  }, 180_000);
});
