// Windows 11 devices, sound and host USB in the core (issue 12, part B): the windows11 preset, what a new VM
// and a settings patch get, what an engine's capabilities refuse (never its name), and USB passthrough
// (kept in vm.json; plugged into a running guest where the engine can hot-plug).
import { AudioBackend, USB_DEVICES_MAX, UsbPassthrough, type CreateVmRequest, type VmConfig, type VmInfo, type VmSettingsPatch } from '../api/schema.js';
import { ErrorCode, VmdeskError } from '../api/errors.js';
import { isAlive } from '../api/states.js';
import type { EngineModule } from '../engines/engine.js';
import { engine as engineModule } from '../engines/registry.js';
import { listUsbDevices, usbDeviceLabel, type HostUsbDevice, type UsbListing } from '../platform/usb-host.js';
import { admitImage } from './images/gate.js';
import type { Core } from './core.js';

export { PRESETS, applyPreset } from '../api/presets.js';

/** The device fields of a new VM (absent stays absent: off, or the tablet's default on). */
export function deviceDefaults(req: Pick<CreateVmRequest, 'tpm' | 'secureBoot' | 'usbTablet' | 'audio' | 'virtioDrivers'>): Partial<VmConfig> {
  const out: Partial<VmConfig> = {};
  if (req.tpm) out.tpm = true;
  if (req.secureBoot) out.secureBoot = true;
  if (req.usbTablet === false) out.usbTablet = false;
  if (req.audio !== undefined) out.audio = req.audio;
  if (req.virtioDrivers) out.virtioDrivers = req.virtioDrivers;
  return out;
}

/** A driver disc goes through the image gate like any ISO. */
export async function admitDriverDisc(file: string | null | undefined): Promise<void> {
  if (file) await admitImage({ path: file }, { what: `driver disc ${file}`, purpose: 'cdrom' });
}

/** The device fields of a settings patch, applied to `next` (off is kept as absent; the tablet's off as false). */
export function applyDevicePatch(next: VmConfig, patch: VmSettingsPatch): void {
  if (patch.tpm !== undefined) {
    if (patch.tpm) next.tpm = true;
    else delete next.tpm;
  }
  if (patch.secureBoot !== undefined) {
    if (patch.secureBoot) next.secureBoot = true;
    else delete next.secureBoot;
  }
  if (patch.usbTablet !== undefined) {
    if (patch.usbTablet) delete next.usbTablet;
    else next.usbTablet = false;
  }
  if (patch.audio !== undefined) {
    if (patch.audio === null) delete next.audio;
    else next.audio = patch.audio;
  }
  if (patch.virtioDrivers !== undefined) {
    if (patch.virtioDrivers === null) delete next.virtioDrivers;
    else next.virtioDrivers = patch.virtioDrivers;
  }
}

/** Why each device waits for the guest to be shut down (vm.update's refusal). */
export const DEVICE_STOPPED_ONLY: Record<string, string> = {
  tpm: 'the TPM is a device the firmware finds at boot',
  secureBoot: 'Secure Boot is the firmware build the guest boots with',
  usbTablet: 'the USB tablet is plugged in at boot',
  audio: 'the sound card is set up at boot',
  virtioDrivers: 'the driver disc is in a drive set up at boot',
};
export const DEVICE_SETTINGS = Object.keys(DEVICE_STOPPED_ONLY);

export function checkDeviceCapabilities(config: VmConfig, eng: EngineModule): void {
  const d = eng.capabilities.devices;
  const lacks = (what: string) => new VmdeskError(ErrorCode.invalid, `the ${eng.kind} engine has no ${what}`);
  if (config.tpm && !d?.tpm) throw lacks('TPM (TPM 2.0 needs the QEMU engine with swtpm)');
  if (config.secureBoot && !d?.secureBoot) throw lacks('Secure Boot');
  if (config.secureBoot && config.firmware !== 'uefi') throw new VmdeskError(ErrorCode.invalid, 'Secure Boot needs UEFI firmware: add --firmware uefi (or leave out --secure-boot)');
  if (config.audio !== undefined && !d?.audio) throw lacks('sound card');
  if (config.virtioDrivers && !d?.driverDisc) throw lacks('second CD drive for a driver disc');
  if (config.usb?.length && !d?.usbPassthrough) throw lacks('USB passthrough');
  if (config.usbTablet === true && !eng.capabilities.display) throw lacks('USB tablet (it has no graphical console)');
}

// ---- USB passthrough -----------------------------------------------------------------------------------

/** How a passthrough entry is named in messages and `usb remove`. */
export function usbKey(u: Pick<UsbPassthrough, 'vendorId' | 'productId' | 'bus' | 'addr'>): string {
  return u.vendorId !== undefined ? `${u.vendorId}:${u.productId}` : `bus ${u.bus} address ${u.addr}`;
}

function sameDevice(a: UsbPassthrough, b: Pick<UsbPassthrough, 'vendorId' | 'productId' | 'bus' | 'addr'>): boolean {
  return a.vendorId !== undefined ? a.vendorId === b.vendorId && a.productId === b.productId : a.bus === b.bus && a.addr === b.addr;
}

function findHost(devices: readonly HostUsbDevice[], u: Pick<UsbPassthrough, 'vendorId' | 'productId' | 'bus' | 'addr'>): HostUsbDevice[] {
  return devices.filter((d) => (u.vendorId !== undefined ? d.vendorId === u.vendorId && d.productId === u.productId : d.bus === u.bus && d.addr === u.addr));
}

/** The host's USB devices, for the picker (`vmdesk usb list`). */
export function hostUsb(opts?: Parameters<typeof listUsbDevices>[0]): UsbListing {
  return listUsbDevices(opts);
}

export interface VmUsbListing {
  id: string;
  name: string;
  state: VmInfo['state'];
  devices: (UsbPassthrough & { key: string; present: boolean; usable: boolean; problem?: string })[];
  notes: string[];
}

export async function listVmUsb(core: Core, ref: string, host: UsbListing = listUsbDevices()): Promise<VmUsbListing> {
  const e = await core.usable(ref);
  const info = await core.get(e.id);
  const eng = await engineModule(e.config.engine);
  const notes: string[] = [];
  if (!eng.capabilities.devices?.usbPassthrough) notes.push(`the ${eng.kind} engine has no USB passthrough`);
  const devices = (e.config.usb ?? []).map((u) => {
    const found = findHost(host.devices, u);
    const usable = found.some((d) => d.usable);
    const problem = !found.length ? `not plugged into this host now${u.vendorId !== undefined ? '; it is passed through when it is' : ''}` : usable ? undefined : found[0]!.problem;
    return { ...u, key: usbKey(u), present: found.length > 0, usable, ...(problem ? { problem } : {}) };
  });
  return { id: e.id, name: info.name, state: info.state, devices, notes: [...notes, ...host.notes] };
}

/**
 * Adds a host device: checked against what the host has (a device QEMU cannot open is explained with the
 * udev rule that allows it), kept in vm.json, and plugged into a running guest. Nothing changes on refusal.
 */
export async function addUsb(core: Core, ref: string, input: unknown, host: UsbListing = listUsbDevices()): Promise<VmInfo> {
  const parsed = UsbPassthrough.safeParse(input);
  if (!parsed.success) throw new VmdeskError(ErrorCode.invalid, `invalid USB device: ${parsed.error.issues.map((i) => i.message).join('; ')}`);
  const dev = parsed.data;
  const e = await core.usable(ref);
  const info = await core.get(e.id);
  const eng = await engineModule(e.config.engine);
  const caps = eng.capabilities.devices;
  if (!caps?.usbPassthrough) throw new VmdeskError(ErrorCode.invalid, `the ${eng.kind} engine has no USB passthrough`);
  const list = e.config.usb ?? [];
  if (list.some((u) => sameDevice(u, dev))) throw new VmdeskError(ErrorCode.exists, `USB device ${usbKey(dev)} is already passed through to "${info.name}"`);
  if (list.length >= USB_DEVICES_MAX) throw new VmdeskError(ErrorCode.invalid, `a VM has at most ${USB_DEVICES_MAX} USB devices passed through`);
  const found = findHost(host.devices, dev);
  const warnings: string[] = [];
  const running = isAlive(info.state);
  if (!found.length) {
    if (dev.vendorId === undefined) throw new VmdeskError(ErrorCode.notFound, `no USB device at bus ${dev.bus} address ${dev.addr} on this host (vmdesk usb list shows what is plugged in)`);
    warnings.push(`USB device ${usbKey(dev)} is not plugged into this host now; it is passed through when it is`);
  } else if (!found.some((d) => d.usable)) {
    // QEMU would take it silently and the guest would see nothing: refuse while running, warn otherwise.
    const why = found[0]!.problem!;
    if (running) throw new VmdeskError(ErrorCode.permission, why);
    warnings.push(why);
  }
  const label = dev.label ?? (found[0] ? usbDeviceLabel(found[0]) : undefined);
  const entry: UsbPassthrough = { ...dev, ...(label ? { label: label.slice(0, 128) } : {}) };
  if (running) {
    const rt = core.runtime(e.id);
    if (!caps.usbHotplug || !rt?.usbAttach) throw new VmdeskError(ErrorCode.state, `the ${eng.kind} engine cannot plug a USB device into a running guest; shut "${info.name}" down first`);
    await rt.usbAttach(entry);
  }
  const out = await core.saveConfig(e.id, { ...e.config, usb: [...list, entry] });
  return { ...out, warnings: [...warnings, ...out.warnings] };
}

export async function removeUsb(core: Core, ref: string, which: { vendorId?: string; productId?: string; bus?: number; addr?: number }): Promise<VmInfo> {
  const e = await core.usable(ref);
  const info = await core.get(e.id);
  const list = e.config.usb ?? [];
  const dev = list.find((u) => sameDevice(u, which));
  if (!dev) throw new VmdeskError(ErrorCode.notFound, `"${info.name}" has no USB device ${usbKey(which)} passed through (it has: ${list.map(usbKey).join(', ') || 'none'})`);
  if (isAlive(info.state)) {
    const rt = core.runtime(e.id);
    const eng = await engineModule(e.config.engine);
    if (!eng.capabilities.devices?.usbHotplug || !rt?.usbDetach) throw new VmdeskError(ErrorCode.state, `the ${eng.kind} engine cannot take a USB device out of a running guest; shut "${info.name}" down first`);
    await rt.usbDetach(dev);
  }
  const next: VmConfig = { ...e.config, usb: list.filter((u) => u !== dev) };
  if (!next.usb!.length) delete next.usb;
  return core.saveConfig(e.id, next);
}

/** The audio backends a request may name (for messages). */
export const AUDIO_BACKENDS = AudioBackend.options;
