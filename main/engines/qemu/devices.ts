// QEMU command-line pieces for the devices of issue 12 part B (pure, pinned by the golden files): Secure Boot
// (SMM and a secure flash for OVMF's secboot build), TPM 2.0 (swtpm through tpm-emulator, a CRB interface),
// a sound card (Intel HDA with a duplex codec on the host's backend), host USB devices (usb-host on the xHCI
// controller) and a driver disc in a second CD drive. Also how a sound backend is chosen at start.
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import type { AudioBackend, UsbPassthrough, VmConfig } from '../../api/schema.js';
import type { HostAudio } from '../../platform/audio-host.js';
import type { HostUsbDevice } from '../../platform/usb-host.js';

const run = promisify(execFile);

/** A value inside a comma-separated QEMU option: no control characters, commas doubled. */
function opt(value: string): string {
  if (/[\u0000-\u001f\u007f]/.test(value)) throw new Error('QEMU option value with control characters');
  return value.replaceAll(',', ',,');
}

// ---- Secure Boot ---------------------------------------------------------------------------------------

export function secureBootOn(config: VmConfig): boolean {
  return config.firmware === 'uefi' && config.secureBoot === true;
}

/** -machine options: OVMF's secboot build keeps its variables in SMM, out of the guest OS's reach. */
export function machineOptions(config: VmConfig): string[] {
  return secureBootOn(config) ? ['smm=on'] : [];
}

/** After -machine: the flash is writable only from SMM, so the OS cannot write the keys behind the firmware's back. */
export function secureBootGlobals(config: VmConfig): string[] {
  return secureBootOn(config) ? ['-global', 'driver=cfi.pflash01,property=secure,value=on'] : [];
}

// ---- TPM -----------------------------------------------------------------------------------------------

/** swtpm's control socket; CRB is the TPM 2.0 interface (Windows and Linux drive it; tpm-tis is TPM 1.2's). */
export function tpmArgs(config: VmConfig, swtpmSocket: string): string[] {
  if (!config.tpm) return [];
  return ['-chardev', `socket,id=chrtpm,path=${opt(swtpmSocket)}`, '-tpmdev', 'emulator,id=tpm0,chardev=chrtpm', '-device', 'tpm-crb,tpmdev=tpm0,id=tpm-crb0'];
}

// ---- sound ---------------------------------------------------------------------------------------------

/** The backend a VM's sound card plays through this run, and why when it is not the one asked for. */
export interface AudioChoice {
  driver: 'pipewire' | 'pa' | 'alsa' | 'none';
  /** The PulseAudio socket (pa). */
  server?: string;
  warning?: string;
}

export function audioArgs(config: VmConfig, choice: AudioChoice | undefined): string[] {
  if (!config.audio) return [];
  const c = choice ?? { driver: 'none' as const };
  const dev = [c.driver, 'id=audio0'];
  if (c.driver === 'pa' && c.server) dev.push(`server=unix:${opt(c.server)}`);
  return ['-audiodev', dev.join(','), '-device', 'intel-hda,id=sound0', '-device', 'hda-duplex,bus=sound0.0,audiodev=audio0,id=sound0-codec0'];
}

/**
 * Picks the backend: auto takes PipeWire where QEMU has it (8.1+) and its socket is there, else PulseAudio's
 * protocol (PulseAudio, or PipeWire's pipewire-pulse), else ALSA, else none (a silent card). A backend asked
 * for by name that this host or QEMU lacks falls back the same way, with a warning: the guest still starts.
 */
export function chooseAudio(requested: AudioBackend, qemuDrivers: readonly string[], host: HostAudio): AudioChoice {
  if (requested === 'none') return { driver: 'none' };
  const has = (d: string) => qemuDrivers.includes(d);
  const options: AudioChoice[] = [];
  if (host.pipewire && has('pipewire')) options.push({ driver: 'pipewire' });
  if (host.pulse && has('pa')) options.push({ driver: 'pa', server: host.pulse });
  if (host.alsa && has('alsa')) options.push({ driver: 'alsa' });
  if (requested === 'auto') return options[0] ?? { driver: 'none', warning: `no sound on the host for the guest's sound card (${missingWhy(qemuDrivers, host)}); it plays into nothing` };
  const exact = options.find((o) => o.driver === requested);
  if (exact) return exact;
  // PipeWire asked for but this QEMU predates its backend: pipewire-pulse speaks PulseAudio's protocol.
  if (requested === 'pipewire' && host.pipewire) {
    const pa = options.find((o) => o.driver === 'pa');
    if (pa) return { ...pa, warning: "this QEMU has no PipeWire backend (QEMU 8.1 added it); sound goes through PipeWire's PulseAudio service instead" };
  }
  const fallback = options[0];
  const what = { pipewire: 'PipeWire', pa: 'PulseAudio', alsa: 'ALSA' }[requested];
  const why = has(requested) ? `the host has no ${what} ${requested === 'alsa' ? 'playback device VMDesk may open' : 'server running for this user'}` : `this QEMU was built without its ${what} backend${requested === 'pa' ? ' (on Debian: sudo apt install qemu-system-gui)' : ''}`;
  return fallback ? { ...fallback, warning: `sound through ${what} is not possible (${why}); using ${fallback.driver} instead` } : { driver: 'none', warning: `sound through ${what} is not possible (${why}); the guest's sound card plays into nothing` };
}

function missingWhy(qemuDrivers: readonly string[], host: HostAudio): string {
  const parts: string[] = [];
  if (!host.pipewire && !host.pulse) parts.push('no PipeWire or PulseAudio server for this user');
  else if (!qemuDrivers.includes('pa') && !qemuDrivers.includes('pipewire')) parts.push('this QEMU lacks its PipeWire/PulseAudio backends (on Debian: sudo apt install qemu-system-gui)');
  if (!host.alsa) parts.push('no ALSA playback device');
  else if (!qemuDrivers.includes('alsa')) parts.push('this QEMU lacks its ALSA backend');
  return parts.join('; ') || 'nothing usable found';
}

const driverCache = new Map<string, Promise<string[]>>();

/** The audio backends a QEMU binary has (-audiodev help; modules that are not installed are not listed). */
export function qemuAudioDrivers(qemuPath: string): Promise<string[]> {
  let p = driverCache.get(qemuPath);
  if (!p) {
    p = run(qemuPath, ['-audiodev', 'help'], { timeout: 15_000, env: { ...process.env, LC_ALL: 'C' } }).then(
      ({ stdout }) => parseAudioDrivers(stdout),
      () => [],
    );
    driverCache.set(qemuPath, p);
  }
  return p;
}

export function parseAudioDrivers(text: string): string[] {
  const lines = text.split('\n').map((l) => l.trim());
  const start = lines.findIndex((l) => /^Available audio drivers:/i.test(l));
  return lines.slice(start + 1).filter((l) => /^[a-z][a-z0-9]*$/.test(l));
}

// ---- USB -----------------------------------------------------------------------------------------------

/** How a passthrough entry is named to users and in `usb remove`: 046d:c52b, or bus=1,addr=4. */
export function usbKey(u: UsbPassthrough): string {
  return u.vendorId !== undefined ? `${u.vendorId}:${u.productId}` : `bus=${u.bus},addr=${u.addr}`;
}

/** QEMU's id for the passed-through device (stable, so it can be taken out again by id). */
export function usbDeviceId(u: UsbPassthrough): string {
  return u.vendorId !== undefined ? `usbhost-${u.vendorId}-${u.productId}` : `usbhost-b${u.bus}-a${u.addr}`;
}

/** device_add's arguments (QMP takes the ids as numbers). */
export function usbDeviceAdd(u: UsbPassthrough): Record<string, unknown> {
  const where = u.vendorId !== undefined ? { vendorid: parseInt(u.vendorId, 16), productid: parseInt(u.productId!, 16) } : { hostbus: u.bus, hostaddr: u.addr };
  return { driver: 'usb-host', id: usbDeviceId(u), bus: 'usb0.0', ...where };
}

/** The same device on the command line. */
export function usbHostArgs(config: VmConfig): string[] {
  return (config.usb ?? []).flatMap((u) => {
    const where = u.vendorId !== undefined ? `vendorid=0x${u.vendorId},productid=0x${u.productId}` : `hostbus=${u.bus},hostaddr=${u.addr}`;
    return ['-device', `usb-host,bus=usb0.0,${where},id=${usbDeviceId(u)}`];
  });
}

/** The USB tablet unless turned off (absent means on: VMs made before the setting had one). */
export function usbTabletArgs(config: VmConfig): string[] {
  return config.usbTablet === false ? [] : ['-device', 'usb-tablet,bus=usb0.0,id=tablet0'];
}

/**
 * The passed-through devices this start plugs in, from what the host has now: QEMU refuses to start with a
 * bus/address device that is not there (its address changes whenever it is plugged in again), so one that is
 * gone is left out with a warning; a vendor:product device QEMU waits for. A device VMDesk may not open is
 * said with the fix (QEMU would take it silently and the guest would see nothing).
 */
export function usbForRun(config: VmConfig, host: readonly Pick<HostUsbDevice, 'vendorId' | 'productId' | 'bus' | 'addr' | 'usable' | 'problem'>[]): { usb: UsbPassthrough[]; warnings: string[] } {
  const usb: UsbPassthrough[] = [];
  const warnings: string[] = [];
  for (const u of config.usb ?? []) {
    const found = host.filter((d) => (u.vendorId !== undefined ? d.vendorId === u.vendorId && d.productId === u.productId : d.bus === u.bus && d.addr === u.addr));
    if (u.vendorId === undefined && !found.length) {
      warnings.push(`USB device at bus ${u.bus} address ${u.addr}${u.label ? ` (${u.label})` : ''} is not plugged in (its address changes when it is plugged in again); left out: add it again with vmdesk usb add, preferably by VENDOR:PRODUCT`);
      continue;
    }
    if (found.length && !found.some((d) => d.usable)) warnings.push(`USB device ${usbKey(u)}: ${found[0]!.problem ?? 'VMDesk may not open it'}`);
    usb.push(u);
  }
  return { usb, warnings };
}
