// Host USB devices in a running guest: usb-host plugged into the xHCI controller with QMP device_add and taken
// out with device_del, by the stable id devices.ts gives each (the same id the command line uses at start).
import { ErrorCode, VmdeskError } from '../../api/errors.js';
import type { UsbPassthrough } from '../../api/schema.js';
import { usbDeviceAdd, usbDeviceId, usbKey } from './devices.js';

/** What usb.ts needs of a running QEMU: raw QMP. */
export interface QmpCommander {
  command<T = unknown>(execute: string, args?: Record<string, unknown>, timeoutMs?: number): Promise<T>;
}

/**
 * Plugs a host device in. QEMU's usb-host does not fail when the device is absent or cannot be opened: it
 * waits for it (a vendor:product device plugged in later arrives then); the core checks presence and
 * permissions against sysfs beforehand and says what it found.
 */
export async function usbHotplug(q: QmpCommander, device: UsbPassthrough): Promise<void> {
  try {
    await q.command('device_add', usbDeviceAdd(device), 10_000);
  } catch (e) {
    const msg = (e as Error).message;
    if (/Duplicate (ID|device ID)|already exists/i.test(msg)) throw new VmdeskError(ErrorCode.exists, `USB device ${usbKey(device)} is already plugged into the guest`);
    if (/usb0\.0|bus.*not found|No 'usb-bus' bus/i.test(msg)) throw new VmdeskError(ErrorCode.state, 'the guest has no USB controller to plug the device into; restart the VM');
    if (/free port|no free/i.test(msg)) throw new VmdeskError(ErrorCode.busy, `the guest's USB controller has no free port for ${usbKey(device)}; take another device out first`);
    throw new VmdeskError(ErrorCode.engine, `QEMU could not plug in USB device ${usbKey(device)}: ${msg}`);
  }
}

/** Takes a passed-through device out of the running guest. */
export async function usbUnplug(q: QmpCommander, device: UsbPassthrough): Promise<void> {
  const id = usbDeviceId(device);
  try {
    await q.command('device_del', { id }, 10_000);
  } catch (e) {
    const msg = (e as Error).message;
    // Not plugged into this run (added while it ran and failed, or the guest started before it was added).
    if (/not found/i.test(msg)) return;
    throw new VmdeskError(ErrorCode.engine, `QEMU could not take out USB device ${usbKey(device)}: ${msg}`);
  }
  // USB devices go at once (no guest handshake as with PCI); wait briefly until QEMU no longer lists the id.
  for (let i = 0; i < 40; i++) {
    const gone = await q
      .command<{ id?: string }[]>('qom-list', { path: `/machine/peripheral/${id}` }, 5000)
      .then(
        () => false,
        () => true,
      );
    if (gone) return;
    await new Promise((r) => setTimeout(r, 25));
  }
}
